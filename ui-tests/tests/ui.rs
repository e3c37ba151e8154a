//! trybuild driver: every `fail/*.rs` must fail with its checked-in `.stderr`, every
//! `pass/*.rs` must compile. Regenerate the `.stderr` files with `TRYBUILD=overwrite`.
//!
//! The expansion snapshots of the macros crate (`macros/tests/expand/`) are compiled too:
//! each fixture, and each pinned `.expanded.rs`, so a pinned expansion is one that builds.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("fail/*.rs");
    t.pass("pass/*.rs");
    t.pass("../macros/tests/expand/*.rs");
}
