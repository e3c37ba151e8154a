//! A receiver-less associated fn of an inherent impl: its handle is an associated fn too.
//! The macro cannot tell it from a free fn, so its default name is `<module>::<fn>`; two
//! types of one module with such fns of the same name still get two caches.
use stampede_cache::{Cache, stampede_cached};

pub struct Pool;

pub struct Users;
pub struct Orders;

impl Users {
    #[stampede_cached(ttl = "1m", skip(pool))]
    pub async fn count(pool: &'static Pool, region: u16) -> i64 {
        let _ = pool;
        i64::from(region)
    }

    pub fn helper() -> u8 {
        1
    }

    #[stampede_cached(ttl = "1m")]
    async fn uses_self_type(id: u8) -> u8 {
        Self::helper() + id
    }
}

impl Orders {
    #[stampede_cached(ttl = "1m", skip(pool), name = "orders.count")]
    pub async fn count(pool: &'static Pool, region: u16) -> i64 {
        let _ = pool;
        -i64::from(region)
    }
}

static POOL: Pool = Pool;

#[tokio::main]
async fn main() {
    assert_eq!(Users::count(&POOL, 3).await, 3);
    assert_eq!(Orders::count(&POOL, 3).await, -3);
    let users: &Cache<u16, i64> = Users::count_cache();
    assert_eq!(users.get(&3), Some(3));
    assert_eq!(Orders::count_cache().get(&3), Some(-3));
    assert!(users.name().ends_with("::count"));
    assert_eq!(Users::uses_self_type(1).await, 2);
    let _ = Users::uses_self_type_cache();
}
