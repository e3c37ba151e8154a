//! trybuild driver: every `fail/*.rs` must fail with its checked-in `.stderr`, every
//! `pass/*.rs` must compile. Regenerate the `.stderr` files with `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("fail/*.rs");
    t.pass("pass/*.rs");
}
