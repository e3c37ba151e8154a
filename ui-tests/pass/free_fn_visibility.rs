//! Free functions with every visibility, no arguments (key `()`), one argument (key = that
//! argument), several (tuple key), and the handle beside each.
use stampede_cache::{Cache, stampede_cached};

#[stampede_cached(ttl = "30s")]
async fn private_fn() -> u64 {
    1
}

#[stampede_cached(ttl = "250ms")]
pub async fn public_fn(id: u64) -> u64 {
    id
}

mod inner {
    use stampede_cache::stampede_cached;

    #[stampede_cached(ttl = "1m 30s")]
    pub(crate) async fn crate_fn(a: u32, b: String) -> String {
        format!("{a}{b}")
    }

    #[stampede_cached(ttl = "1h")]
    pub(super) async fn super_fn(a: bool) -> bool {
        !a
    }
}

fn main() {
    let _: &'static Cache<(), u64> = private_fn_cache();
    let _: &'static Cache<u64, u64> = public_fn_cache();
    let _: &'static Cache<(u32, String), String> = inner::crate_fn_cache();
    let _: &'static Cache<bool, bool> = inner::super_fn_cache();
    let _ = (private_fn(), public_fn(1), inner::crate_fn(1, String::new()), inner::super_fn(true));
}
