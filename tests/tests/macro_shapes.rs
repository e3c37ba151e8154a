//! `#[stampede_cached]` end to end: every function shape calls its origin once per key, and
//! the generated `<fn>_cache()` handle sees and invalidates what the calls cached.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::{Cache, stampede_cached};
use tokio::time::{sleep, timeout};

/// Bound of every await that could hang (paused clock: costs no real time).
const BOUND: Duration = Duration::from_secs(600);

async fn bounded<F: Future>(f: F) -> F::Output {
    timeout(BOUND, f).await.expect("call hung")
}

// ---- free fn, concurrent callers -------------------------------------------------------

static SQUARE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "30s")]
pub async fn square(x: u64) -> u64 {
    SQUARE_CALLS.fetch_add(1, SeqCst);
    sleep(Duration::from_millis(100)).await;
    x * x
}

#[tokio::test(start_paused = true)]
async fn free_fn_loads_once_for_a_hundred_concurrent_callers() {
    let callers: Vec<_> = (0..100).map(|_| tokio::spawn(square(7))).collect();
    for c in callers {
        assert_eq!(bounded(c).await.unwrap(), 49);
    }
    assert_eq!(SQUARE_CALLS.load(SeqCst), 1);
    assert_eq!(bounded(square(7)).await, 49);
    assert_eq!(bounded(square(8)).await, 64);
    assert_eq!(SQUARE_CALLS.load(SeqCst), 2);
    let handle: &'static Cache<u64, u64> = square_cache();
    assert_eq!(handle.get(&7), Some(49));
    assert_eq!(handle.len(), 2);
    assert!(handle.stats().coalesced >= 99);
}

// ---- &self repository method with skip(db) --------------------------------------------

/// A stand-in connection pool: counts the queries it serves.
pub struct Db {
    queries: AtomicUsize,
}

impl Db {
    async fn query(&self, id: u64) -> Option<String> {
        self.queries.fetch_add(1, SeqCst);
        sleep(Duration::from_millis(10)).await;
        (id != 0).then(|| format!("user {id}"))
    }
}

/// The repository of the README example: `Clone`, state in an `Arc`.
#[derive(Clone)]
pub struct UserRepo {
    db: Arc<Db>,
}

impl UserRepo {
    /// One query per id per 30 s, whichever repo instance asks and whichever `db` it passes.
    #[stampede_cached(ttl = "30s", skip(db))]
    pub async fn find_user(&self, id: u64, db: Arc<Db>) -> Option<String> {
        let _ = &self.db;
        db.query(id).await
    }
}

#[tokio::test(start_paused = true)]
async fn repo_method_with_skip_shares_one_cache_across_instances() {
    let db = Arc::new(Db {
        queries: AtomicUsize::new(0),
    });
    let a = UserRepo { db: db.clone() };
    let b = a.clone();
    let (x, y) = tokio::join!(a.find_user(42, db.clone()), b.find_user(42, db.clone()));
    assert_eq!(
        (x.as_deref(), y.as_deref()),
        (Some("user 42"), Some("user 42"))
    );
    assert_eq!(
        bounded(b.find_user(42, db.clone())).await.as_deref(),
        Some("user 42")
    );
    assert_eq!(db.queries.load(SeqCst), 1);

    // negative caching: `None` is cached like any value
    assert_eq!(bounded(a.find_user(0, db.clone())).await, None);
    assert_eq!(bounded(a.find_user(0, db.clone())).await, None);
    assert_eq!(db.queries.load(SeqCst), 2);

    // invalidation through the handle after a write
    UserRepo::find_user_cache().invalidate(&42);
    assert_eq!(UserRepo::find_user_cache().get(&42), None);
    assert_eq!(
        bounded(a.find_user(42, db.clone())).await.as_deref(),
        Some("user 42")
    );
    assert_eq!(db.queries.load(SeqCst), 3);
}

// ---- &str key ---------------------------------------------------------------------------

static LEN_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "30s")]
async fn name_len(name: &str) -> usize {
    LEN_CALLS.fetch_add(1, SeqCst);
    name.len()
}

#[tokio::test(start_paused = true)]
async fn str_argument_is_an_owned_string_key() {
    let owned = String::from("ada");
    assert_eq!(bounded(name_len(&owned)).await, 3);
    assert_eq!(bounded(name_len("ada")).await, 3);
    assert_eq!(LEN_CALLS.load(SeqCst), 1);
    let handle: &Cache<String, usize> = name_len_cache();
    assert_eq!(handle.get(&"ada".to_string()), Some(3));
    handle.insert("grace".to_string(), 99);
    assert_eq!(bounded(name_len("grace")).await, 99);
    assert_eq!(LEN_CALLS.load(SeqCst), 1);
}

// ---- &[T] and several arguments: tuple key ----------------------------------------------

static SUM_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "30s")]
async fn weighted_sum(items: &[u32], weight: u32) -> u32 {
    SUM_CALLS.fetch_add(1, SeqCst);
    items.iter().sum::<u32>() * weight
}

#[tokio::test(start_paused = true)]
async fn slice_and_value_arguments_form_a_tuple_key() {
    assert_eq!(bounded(weighted_sum(&[1, 2, 3], 2)).await, 12);
    assert_eq!(bounded(weighted_sum(&[1, 2, 3], 2)).await, 12);
    assert_eq!(bounded(weighted_sum(&[1, 2, 3], 3)).await, 18);
    assert_eq!(SUM_CALLS.load(SeqCst), 2);
    let handle: &Cache<(Vec<u32>, u32), u32> = weighted_sum_cache();
    assert_eq!(handle.get(&(vec![1, 2, 3], 3)), Some(18));
}

// ---- key = <expr> ------------------------------------------------------------------------

static REGION_CALLS: AtomicUsize = AtomicUsize::new(0);
static BY_ID_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "30s", key: String = region.to_lowercase())]
async fn region_config(region: &str, request_id: u64) -> String {
    REGION_CALLS.fetch_add(1, SeqCst);
    format!(
        "config for {} (first asked by {request_id})",
        region.to_lowercase()
    )
}

#[stampede_cached(ttl = "30s", key = id)]
async fn by_id(id: u64, verbose: bool) -> String {
    BY_ID_CALLS.fetch_add(1, SeqCst);
    format!("{id} {verbose}")
}

#[tokio::test(start_paused = true)]
async fn key_expression_decides_the_key() {
    let first = bounded(region_config("EU", 1)).await;
    let second = bounded(region_config("eu", 2)).await;
    assert_eq!(first, second);
    assert_eq!(first, "config for eu (first asked by 1)");
    assert_eq!(REGION_CALLS.load(SeqCst), 1);
    assert!(region_config_cache().get(&"eu".to_string()).is_some());

    assert_eq!(bounded(by_id(1, true)).await, "1 true");
    assert_eq!(bounded(by_id(1, false)).await, "1 true");
    assert_eq!(BY_ID_CALLS.load(SeqCst), 1);
}

// ---- handle: invalidate_all, insert, stats ----------------------------------------------

static ANSWER_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "1h", name = "tests.answer")]
async fn answer() -> u32 {
    ANSWER_CALLS.fetch_add(1, SeqCst) as u32 + 41
}

#[tokio::test(start_paused = true)]
async fn handle_invalidates_everything_and_counts() {
    assert_eq!(bounded(answer()).await, 41);
    assert_eq!(bounded(answer()).await, 41);
    let handle: &Cache<(), u32> = answer_cache();
    assert_eq!(handle.name(), "tests.answer");
    assert_eq!(handle.stats().loads, 1);
    assert_eq!(handle.stats().hits, 1);
    handle.invalidate_all();
    assert!(handle.is_empty());
    assert_eq!(bounded(answer()).await, 42);
    assert_eq!(ANSWER_CALLS.load(SeqCst), 2);
}

// ---- a cancelled caller does not cancel the load ----------------------------------------

static SLOW_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "30s")]
async fn slow(id: u64) -> u64 {
    SLOW_CALLS.fetch_add(1, SeqCst);
    sleep(Duration::from_secs(5)).await;
    id
}

#[tokio::test(start_paused = true)]
async fn cancelled_caller_leaves_the_detached_load_running() {
    assert!(timeout(Duration::from_secs(1), slow(3)).await.is_err());
    assert_eq!(bounded(slow(3)).await, 3);
    assert_eq!(SLOW_CALLS.load(SeqCst), 1);
}

// ---- trait impls: native `async fn` (with `trait_impl`) and `#[async_trait]` -------------

/// A repository trait with native `async fn`s; callers are generic over it.
trait UserStore {
    async fn name(&self, id: u64) -> Option<String>;
    async fn region_size(region: &str) -> usize;
}

/// Counts the origin calls of every implementation's methods.
static STORE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone)]
pub struct PgStore {
    prefix: Arc<str>,
}

impl UserStore for PgStore {
    #[stampede_cached(ttl = "30s", trait_impl)]
    async fn name(&self, id: u64) -> Option<String> {
        STORE_CALLS.fetch_add(1, SeqCst);
        sleep(Duration::from_millis(50)).await;
        (id != 0).then(|| format!("{}{id}", self.prefix))
    }

    #[stampede_cached(ttl = "30s", trait_impl, name = "tests.store.region_size")]
    async fn region_size(region: &str) -> usize {
        STORE_CALLS.fetch_add(1, SeqCst);
        region.len()
    }
}

/// What a caller written against the trait does.
async fn names_of<S: UserStore>(store: &S, ids: &[u64]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store.name(*id).await);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn native_trait_impl_methods_are_cached_and_reached_by_name() {
    let store = PgStore {
        prefix: Arc::from("user "),
    };
    // Concurrent calls through the trait: one origin call.
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.name(7).await })
        })
        .collect();
    for c in callers {
        assert_eq!(bounded(c).await.unwrap().as_deref(), Some("user 7"));
    }
    let before = STORE_CALLS.load(SeqCst);
    assert_eq!(
        bounded(names_of(&store, &[7, 7, 0, 0])).await,
        [Some("user 7".into()), Some("user 7".into()), None, None]
    );
    assert_eq!(STORE_CALLS.load(SeqCst), before + 1, "only id 0 was loaded");

    // The cache lives in the method; `lookup` reaches it by its default name.
    let name = format!("{}::name", std::any::type_name::<PgStore>());
    let cache: Cache<u64, Option<String>> = stampede_cache::lookup(&name).expect("registered");
    assert_eq!(cache.name(), name);
    assert_eq!(cache.get(&7), Some(Some("user 7".into())));
    cache.invalidate(&7);
    assert_eq!(bounded(store.name(7)).await.as_deref(), Some("user 7"));
    assert_eq!(
        STORE_CALLS.load(SeqCst),
        before + 2,
        "reloaded after invalidate"
    );

    // A receiver-less associated fn of the impl.
    assert_eq!(bounded(PgStore::region_size("emea")).await, 4);
    assert_eq!(
        bounded(<PgStore as UserStore>::region_size("emea")).await,
        4
    );
    assert_eq!(STORE_CALLS.load(SeqCst), before + 3);
    let sizes = stampede_cache::lookup::<String, usize>("tests.store.region_size").unwrap();
    assert_eq!(sizes.get(&"emea".to_string()), Some(4));
}

/// The same trait through `#[async_trait]` (boxed, `Send` futures).
#[async_trait::async_trait]
pub trait Prices {
    async fn price(&self, sku: &str) -> Result<u64, String>;
    async fn currency(region: u16) -> String
    where
        Self: Sized;
}

static PRICE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone)]
pub struct Catalog {
    markup: u64,
}

#[async_trait::async_trait]
impl Prices for Catalog {
    #[stampede_cached(ttl = "1m", name = "tests.catalog.price")]
    async fn price(&self, sku: &str) -> Result<u64, String> {
        PRICE_CALLS.fetch_add(1, SeqCst);
        sleep(Duration::from_millis(20)).await;
        if sku.is_empty() {
            return Err("no sku".into());
        }
        Ok(sku.len() as u64 + self.markup)
    }

    #[stampede_cached(ttl = "1m")]
    async fn currency(region: u16) -> String
    where
        Self: Sized,
    {
        PRICE_CALLS.fetch_add(1, SeqCst);
        format!("R{region}")
    }
}

#[tokio::test(start_paused = true)]
async fn async_trait_methods_are_cached() {
    let catalog: Arc<dyn Prices + Send + Sync> = Arc::new(Catalog { markup: 100 });
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let catalog = catalog.clone();
            tokio::spawn(async move { catalog.price("abc").await })
        })
        .collect();
    for c in callers {
        assert_eq!(bounded(c).await.unwrap(), Ok(103));
    }
    assert_eq!(
        PRICE_CALLS.load(SeqCst),
        1,
        "through a trait object: one origin call"
    );
    assert_eq!(bounded(catalog.price("")).await, Err("no sku".into()));
    assert_eq!(bounded(catalog.price("")).await, Err("no sku".into()));
    assert_eq!(PRICE_CALLS.load(SeqCst), 3, "an Err is not cached");
    assert_eq!(bounded(Catalog::currency(44)).await, "R44");
    assert_eq!(bounded(<Catalog as Prices>::currency(44)).await, "R44");
    assert_eq!(PRICE_CALLS.load(SeqCst), 4);
    let prices = stampede_cache::lookup::<String, u64>("tests.catalog.price").unwrap();
    assert_eq!(prices.get(&"abc".to_string()), Some(103));
}

// ---- receiver-less associated fn of an inherent impl -----------------------------------

pub struct Pool {
    queries: AtomicUsize,
}

static POOL: Pool = Pool {
    queries: AtomicUsize::new(0),
};

pub struct Accounts;

impl Accounts {
    /// `async fn count(pool: &PgPool) -> i64` in an inherent impl; the body may use `Self`.
    #[stampede_cached(ttl = "30s", skip(pool))]
    pub async fn count(pool: &'static Pool, region: u16) -> i64 {
        pool.queries.fetch_add(1, SeqCst);
        Self::scale() * i64::from(region)
    }

    fn scale() -> i64 {
        10
    }
}

#[tokio::test(start_paused = true)]
async fn receiver_less_associated_fns_have_an_associated_handle() {
    assert_eq!(bounded(Accounts::count(&POOL, 2)).await, 20);
    assert_eq!(bounded(Accounts::count(&POOL, 2)).await, 20);
    assert_eq!(bounded(Accounts::count(&POOL, 3)).await, 30);
    assert_eq!(POOL.queries.load(SeqCst), 2);
    // The fn and its handle share one cache.
    let handle: &'static Cache<u16, i64> = Accounts::count_cache();
    assert_eq!(handle.get(&2), Some(20));
    handle.insert(5, -1);
    assert_eq!(bounded(Accounts::count(&POOL, 5)).await, -1);
    assert_eq!(POOL.queries.load(SeqCst), 2);
    assert!(handle.name().ends_with("::count"), "{}", handle.name());
}
