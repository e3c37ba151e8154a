//! A PostgreSQL repository whose reads are `#[stampede_cached]`, proven
//! against a real server: `cargo run --release --example postgres_repo`.
//!
//! Connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1/test`),
//! creates its schema if missing (table `stampede_users`, a counter table
//! `stampede_query_count`, and a SQL function `stampede_find_user(id)` that
//! bumps the counter on the server for every call and returns the row), then:
//!
//! 1. loads user 42 once (the cache is warm), and lets its 1 s TTL expire;
//! 2. resets the server-side counter and fires 1000 concurrent `find_user(42)`
//!    calls — the stampede a hot key sees at expiry;
//! 3. reads the counter back FROM THE DATABASE and exits non-zero unless
//!    exactly one query ran;
//! 4. shows negative caching (an absent id is one query too) and
//!    invalidation after a write;
//! 5. the N+1 list endpoint: 1000 concurrent `find_users(&ids)` requests of
//!    20 ids each (Zipf over 10 000 users, so they overlap as real traffic
//!    does) through `#[stampede_cached(batch)]` — one `WHERE id = ANY($1)`
//!    for the misses of many requests — and exits non-zero unless, counted
//!    ON THE SERVER, every row was read exactly once and there were at most
//!    a tenth as many queries as per-key loads would make (one per
//!    distinct id even with perfect per-key single flight; 20 000 with no
//!    cache).
//!
//! `find_user` is a method of a trait (`UserStore`, native `async fn`), as a
//! repository behind an interface is: `#[stampede_cached(.., trait_impl)]`
//! keeps its cache inside the method, and the write reaches it by name with
//! `stampede_cache::lookup`.
//!
//! `.ci/postgres-example.sh` starts the machine's PostgreSQL, creates the
//! database and runs this example as a CI step.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use stampede_cache::{Cache, stampede_cached};
use tokio_postgres::{Client, NoTls};

/// A row of `stampede_users`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
}

/// Errors are handed to every caller that waited on the failing query, so
/// they must be `Clone`: the driver's error is wrapped in an `Arc`.
#[derive(Clone, Debug)]
pub struct RepoError(pub Arc<tokio_postgres::Error>);

impl From<tokio_postgres::Error> for RepoError {
    fn from(e: tokio_postgres::Error) -> Self {
        RepoError(Arc::new(e))
    }
}

impl std::fmt::Display for RepoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "database error: {}", self.0)
    }
}

impl std::error::Error for RepoError {}

/// The reads the application depends on, behind an interface (a test double
/// can implement it too). Its futures are `Send`, so callers can spawn them;
/// an impl writes `async fn`.
pub trait UserStore {
    /// The user `id`, or `None` when there is no such row.
    fn find_user(&self, id: i64) -> impl Future<Output = Result<Option<User>, RepoError>> + Send;
}

/// The name of `find_user`'s cache (as given to its attribute): the write
/// reaches the cache through it.
const USERS_BY_ID: &str = "example.users.by_id";

/// The repository. `Clone` (an `Arc` inside) because cached loads run
/// detached from their callers and take their own copy of the receiver.
#[derive(Clone)]
pub struct UserRepo {
    db: Arc<Client>,
}

impl UserStore for UserRepo {
    /// One query per id per second, however many callers arrive at once.
    /// `None` (no such user) is cached too, for 500 ms: absent ids cannot
    /// hammer the DB, and a row inserted meanwhile shows up soon.
    #[stampede_cached(
        ttl = "1s",
        none_ttl = "500ms",
        trait_impl,
        name = "example.users.by_id"
    )]
    async fn find_user(&self, id: i64) -> Result<Option<User>, RepoError> {
        let row = self
            .db
            .query_one("SELECT id, name FROM stampede_find_user($1)", &[&id])
            .await?;
        let id: Option<i64> = row.get(0);
        Ok(id.map(|id| User {
            id,
            name: row.get(1),
        }))
    }
}

impl UserRepo {
    /// `find_user`'s cache (a trait impl cannot hold a `find_user_cache()` handle).
    fn users_by_id() -> Cache<i64, Option<User>> {
        stampede_cache::lookup(USERS_BY_ID).expect("find_user has run: its cache is registered")
    }

    /// A write, followed by the invalidation of the cached read.
    pub async fn rename(&self, id: i64, name: &str) -> Result<(), RepoError> {
        self.db
            .execute(
                "UPDATE stampede_users SET name = $2 WHERE id = $1",
                &[&id, &name],
            )
            .await?;
        if let Some(users) = stampede_cache::lookup::<i64, Option<User>>(USERS_BY_ID) {
            users.invalidate(&id);
        }
        Ok(())
    }

    /// The list endpoint's read: every id it is asked for in ONE query. The
    /// cache calls it with only the ids it does not hold (and whose load no
    /// other request already runs), in chunks of at most 500; ids without a
    /// row are cached as absent.
    #[stampede_cached(ttl = "30s", batch, max_batch = 500, name = "example.users.many")]
    pub async fn find_users(&self, ids: &[i64]) -> Result<HashMap<i64, User>, RepoError> {
        let rows = self
            .db
            .query("SELECT id, name FROM stampede_find_users($1)", &[&ids])
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let id: i64 = row.get(0);
                (
                    id,
                    User {
                        id,
                        name: row.get(1),
                    },
                )
            })
            .collect())
    }

    /// How many times `fn` (`find_user`, `find_users`) ran on the server
    /// since the last reset, and how many rows it read.
    pub async fn server_counts(&self, function: &str) -> Result<(i64, i64), RepoError> {
        let row = self
            .db
            .query_one(
                "SELECT n, rows FROM stampede_query_count WHERE fn = $1",
                &[&function],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// How many times `stampede_find_user` ran on the server since the last reset.
    pub async fn server_query_count(&self) -> Result<i64, RepoError> {
        Ok(self.server_counts("find_user").await?.0)
    }

    pub async fn reset_server_query_count(&self) -> Result<(), RepoError> {
        self.db
            .execute("UPDATE stampede_query_count SET n = 0, rows = 0", &[])
            .await?;
        Ok(())
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS stampede_users (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE IF NOT EXISTS stampede_query_count (fn text PRIMARY KEY, n bigint NOT NULL);
ALTER TABLE stampede_query_count ADD COLUMN IF NOT EXISTS rows bigint NOT NULL DEFAULT 0;
INSERT INTO stampede_query_count VALUES ('find_user', 0, 0), ('find_users', 0, 0) ON CONFLICT DO NOTHING;
INSERT INTO stampede_users VALUES (42, 'Ada'), (7, 'Grace') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name;
-- The list endpoint's users: 10 000 ids (every 10th has no row: deleted).
INSERT INTO stampede_users SELECT i, 'user ' || i FROM generate_series(100000, 109999) i
    WHERE i % 10 <> 0 ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION stampede_find_users(ids bigint[])
RETURNS TABLE (id bigint, name text) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE stampede_query_count SET n = n + 1, rows = rows + cardinality(ids)
        WHERE fn = 'find_users';
    PERFORM pg_sleep(0.02); -- a list query takes a while too
    RETURN QUERY SELECT u.id, u.name FROM stampede_users u WHERE u.id = ANY(ids);
END $$;
CREATE OR REPLACE FUNCTION stampede_find_user(uid bigint)
RETURNS TABLE (id bigint, name text) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE stampede_query_count SET n = n + 1 WHERE fn = 'find_user';
    PERFORM pg_sleep(0.05); -- a query that takes a while, as hot ones do
    RETURN QUERY SELECT u.id, u.name FROM stampede_users u WHERE u.id = uid
        UNION ALL SELECT NULL::bigint, NULL::text
        WHERE NOT EXISTS (SELECT 1 FROM stampede_users u WHERE u.id = uid);
END $$;
"#;

const CALLERS: usize = 1000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".to_owned());
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection error: {e}");
        }
    });
    client.batch_execute(SCHEMA).await?;
    let repo = UserRepo {
        db: Arc::new(client),
    };

    // 1. Warm the cache, then let the entry expire.
    let ada = repo.find_user(42).await?;
    println!("warm: find_user(42) = {ada:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // 2. The stampede: 1000 concurrent lookups of the expired key.
    repo.reset_server_query_count().await?;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..CALLERS)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.find_user(42).await })
        })
        .collect();
    for call in calls {
        let user = call.await??;
        assert_eq!(user.as_ref().map(|u| u.id), Some(42));
    }
    let elapsed = started.elapsed();

    // 3. Ask the database how many queries it ran.
    let ran = repo.server_query_count().await?;
    let stats = UserRepo::users_by_id().stats();
    println!(
        "{CALLERS} concurrent find_user(42) after expiry: {ran} query ran on the server \
         (counted by stampede_find_user), {:.1} ms; cache stats: loads {}, coalesced {}",
        elapsed.as_secs_f64() * 1000.0,
        stats.loads,
        stats.coalesced
    );
    if ran != 1 {
        eprintln!("FAIL: expected exactly 1 query on the server, it ran {ran}");
        std::process::exit(1);
    }

    // 4a. Negative caching: an absent id is cached as `None`.
    repo.reset_server_query_count().await?;
    for _ in 0..100 {
        assert_eq!(repo.find_user(9_999).await?, None);
    }
    let ran = repo.server_query_count().await?;
    println!("100 lookups of an absent id: {ran} query");
    if ran != 1 {
        eprintln!("FAIL: expected exactly 1 query for the absent id, it ran {ran}");
        std::process::exit(1);
    }

    // 4b. A write invalidates the cached read.
    repo.rename(42, "Ada Lovelace").await?;
    let renamed = repo.find_user(42).await?;
    println!("after rename: find_user(42) = {renamed:?}");
    repo.rename(42, "Ada").await?;
    if renamed.map(|u| u.name).as_deref() != Some("Ada Lovelace") {
        eprintln!("FAIL: the rename was not visible after invalidation");
        std::process::exit(1);
    }
    // 5. The N+1 list endpoint.
    if !list_requests(&repo).await? {
        std::process::exit(1);
    }
    println!("OK");
    Ok(())
}

/// List requests of the N+1 scenario.
const LIST_REQUESTS: usize = 1000;
const IDS_PER_REQUEST: usize = 20;
/// The list endpoint's ids: `FIRST_ID..FIRST_ID + ID_SPACE`.
const FIRST_ID: i64 = 100_000;
const ID_SPACE: usize = 10_000;

#[path = "support/zipf.rs"]
mod zipf;

/// 1000 concurrent list requests of 20 Zipf ids on a cold cache; checks
/// the server's counts. Whether they hold.
async fn list_requests(repo: &UserRepo) -> Result<bool, RepoError> {
    let mut rng = fastrand::Rng::with_seed(7);
    let zipf = zipf::Zipf::new(ID_SPACE);
    let requests: Vec<Vec<i64>> = (0..LIST_REQUESTS)
        .map(|_| {
            (0..IDS_PER_REQUEST)
                .map(|_| FIRST_ID + zipf.draw(&mut rng) as i64)
                .collect()
        })
        .collect();
    let distinct: HashSet<i64> = requests.iter().flatten().copied().collect();
    UserRepo::find_users_cache().invalidate_all();
    repo.reset_server_query_count().await?;
    let started = std::time::Instant::now();
    let calls: Vec<_> = requests
        .iter()
        .map(|ids| {
            let (repo, ids) = (repo.clone(), ids.clone());
            tokio::spawn(async move {
                let users = repo.find_users(&ids).await?;
                for id in &ids {
                    // Every 10th id has no row: absent, every other is found.
                    assert_eq!(users.contains_key(id), id % 10 != 0, "id {id}");
                }
                Ok::<_, RepoError>(())
            })
        })
        .collect();
    for call in calls {
        call.await.expect("a list request panicked")?;
    }
    let elapsed = started.elapsed();
    let (queries, rows) = repo.server_counts("find_users").await?;
    let stats = UserRepo::find_users_cache().stats();
    println!(
        "{LIST_REQUESTS} concurrent list requests x {IDS_PER_REQUEST} ids (Zipf over \
         {ID_SPACE}): {queries} queries, {rows} ids read on the server, {:.1} ms; {} distinct \
         ids (= per-key queries with perfect single flight), {} ids asked; batch calls {}, \
         coalesced {}",
        elapsed.as_secs_f64() * 1000.0,
        distinct.len(),
        LIST_REQUESTS * IDS_PER_REQUEST,
        stats.batch_calls,
        stats.coalesced
    );
    let mut ok = true;
    if rows != distinct.len() as i64 {
        eprintln!(
            "FAIL: {rows} ids read on the server for {} distinct ids",
            distinct.len()
        );
        ok = false;
    }
    if queries * 10 > distinct.len() as i64 {
        eprintln!(
            "FAIL: {queries} queries, more than a tenth of the {} per-key queries",
            distinct.len()
        );
        ok = false;
    }
    // Now all cached, absent ids included: no query at all.
    repo.reset_server_query_count().await?;
    for ids in requests.iter().take(100) {
        repo.find_users(ids).await?;
    }
    let (again, _) = repo.server_counts("find_users").await?;
    println!("100 list requests on the warm cache: {again} queries");
    if again != 0 {
        eprintln!("FAIL: {again} queries on a warm cache");
        ok = false;
    }
    Ok(ok)
}
