//! One "pod" of the fleet tests: a process with a `shared` cache on Redis.
//! The first argument picks the mode; a Redis URL there selects the original
//! stampede mode, so its command line is unchanged.
//!
//! **Stampede** — `pod <redis url> <cache name> <key> <callers> <lock_ttl_ms> <load_ms>`
//!
//! Prints `READY` once connected, waits for a line on stdin, then fires
//! `callers` concurrent calls at `key`. The loader INCRs `origin:<cache name>:<key>`
//! in Redis (the fleet's origin-call counter), prints `LOADING`, sleeps
//! `load_ms` and returns `value-<counter>`. At the end it prints
//! `DONE <completed> <distinct values, comma-separated> <loads> <fallbacks>`.
//!
//! **Steady traffic** — `pod steady <redis url> <cache name> <swr|xfetch> <ttl_ms> <load_ms> <period_ms> <duration_ms>`
//!
//! Strategy `swr` (stale window 10 × ttl) or `xfetch` (beta 1), key `hot-key`.
//! The loader takes its start time (ms since the UNIX epoch), INCRs
//! `origin:<cache name>:hot-key`, RPUSHes the start time to
//! `starts:<cache name>:hot-key`, sleeps `load_ms` and returns `value-<counter>`.
//! Prints `READY`, waits for a line on stdin, makes one warm-up call (it may
//! wait for the fleet's first load) and prints `WARM <warm-up call µs>`; then
//! calls every `period_ms` for `duration_ms` and prints
//! `DONE <calls> <longest call µs> <loads> <background_refreshes> <early_refreshes> <fallbacks>`
//! (the warm-up call is not counted in `calls` nor in the longest call).
//!
//! **Failing origin** — `pod failing <redis url> <cache name> <callers> <load_ms>`
//!
//! Like the stampede mode, but the loader INCRs the counter, prints
//! `LOADING`, sleeps `load_ms` and returns `Err`. The cache converts
//! failures of other processes (`remote_errors`). Prints `READY`, waits for
//! a line, fires `callers` calls, then prints
//! `DONE <errors> <slowest call µs> <loads> <remote_failures> <fallbacks>`.
//!
//! **Lock traffic** — `pod lockstep <redis url> <cache name> <ttl_ms> <load_ms> <period_ms> <duration_ms>`
//!
//! Strategy `lock`, key `hot-key`; the loader sleeps `load_ms` and returns
//! `value-<this process's load count>` (it does not touch Redis, which the
//! test freezes). Prints `READY`,
//! waits for a line, then calls every `period_ms` for `duration_ms`. Each
//! call longer than 20 ms prints `SLOW <start, ms since the UNIX epoch>
//! <call µs>`; at the end `DONE <calls> <loads> <fallbacks>`.
//!
//! **Steps** — `pod steps <redis url> <cache name> <ttl_ms> <load_ms>`
//!
//! Key `hot-key`, strategy `lock`, the stampede mode's loader. Prints `READY`,
//! then runs one stdin command per line, each answered by one line:
//! - `CALL` → `VALUE <value> <call µs>`
//! - `PEEK` → `PEEK <value>`, or `PEEK -` when this process holds no live copy
//! - `INVALIDATE` → `INVALIDATED` (the shared-tier delete and the notice to
//!   the other processes run behind, as `Cache::invalidate` does)
//! - `TAG` → `TAGGED`: `invalidate_tag("hot")` (the key carries tag `hot`)
//! - `QUIT` (or end of input) → `BYE <loads> <fallbacks>`, then exits.
//!
//! **Writer** — `pod writer <redis url> <tag>`
//!
//! A service that writes but never reads the cache: it installs the Redis
//! backend and builds no cache. Prints `READY`, waits for a line, calls
//! `invalidate_tag(<tag>)`, flushes its writes and prints `TAGGED <landed>`
//! (`true` when the write reached Redis within 5 s), then exits.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use stampede_cache::redis::RedisBackend;
use stampede_cache::{Cache, RemoteLoadError, Strategy};
use tokio::time::Instant;

const KEY: &str = "hot-key";

fn arg(args: &[String], i: usize, what: &str) -> String {
    args.get(i)
        .cloned()
        .unwrap_or_else(|| panic!("missing argument {i}: {what}"))
}

fn ms_arg(args: &[String], i: usize, what: &str) -> Duration {
    Duration::from_millis(
        arg(args, i, what)
            .parse()
            .unwrap_or_else(|e| panic!("argument {i} ({what}): {e}")),
    )
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

fn wait_for_go() {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}

/// The connection the origin counts its calls on: to the one server, or
/// to the cluster (`<url>,<url>,...` as the Redis URL argument).
#[derive(Clone)]
enum Counter {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Counter {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Counter::Single(c) => c.req_packed_command(cmd),
            Counter::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Counter::Single(c) => c.req_packed_commands(cmd, offset, count),
            Counter::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// A Redis URL argument, or several separated by commas: a Cluster's seeds.
async fn connect(url: &str) -> (RedisBackend, Counter) {
    if url.contains(',') {
        let seeds: Vec<&str> = url.split(',').collect();
        let backend = RedisBackend::connect_cluster(seeds.clone())
            .await
            .expect("connect to the cluster");
        let counter = redis::cluster::ClusterClient::new(seeds)
            .expect("cluster urls")
            .get_async_connection()
            .await
            .expect("counter connection");
        return (backend, Counter::Cluster(counter));
    }
    // A `rediss://` URL: the CA that signed the server's certificate is in
    // the file POD_REDIS_CA names.
    let ca = std::env::var_os("POD_REDIS_CA").map(|path| std::fs::read(path).expect("read the CA"));
    let (backend, client) = match ca {
        Some(ca) => {
            let backend = RedisBackend::builder(url)
                .tls(stampede_cache::redis::RedisTls::new().ca_pem(ca.clone()))
                .connect()
                .await
                .expect("connect to redis over TLS");
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca),
            };
            let client = redis::Client::build_with_tls(url, certificates).expect("redis url");
            (backend, client)
        }
        None => (
            RedisBackend::connect(url).await.expect("connect to redis"),
            redis::Client::open(url).expect("redis url"),
        ),
    };
    let counter = client
        .get_multiplexed_async_connection()
        .await
        .expect("counter connection");
    (backend, Counter::Single(counter))
}

/// The origin: INCRs the fleet's counter (and, with `starts`, RPUSHes the load's
/// start time in ms since the UNIX epoch), sleeps `load`, returns `value-<counter>`.
async fn origin(mut counter: Counter, name: String, starts: bool, load: Duration) -> String {
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let n: u64 = redis::cmd("INCR")
        .arg(format!("origin:{name}:{KEY}"))
        .query_async(&mut counter)
        .await
        .expect("INCR the origin counter");
    if starts {
        let _: u64 = redis::cmd("RPUSH")
            .arg(format!("starts:{name}:{KEY}"))
            .arg(started_ms)
            .query_async(&mut counter)
            .await
            .expect("RPUSH the load's start");
    }
    tokio::time::sleep(load).await;
    format!("value-{n}")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("steady") => steady(&args[1..]).await,
        Some("steps") => steps(&args[1..]).await,
        Some("failing") => failing(&args[1..]).await,
        Some("lockstep") => lockstep(&args[1..]).await,
        Some("writer") => writer(&args[1..]).await,
        _ => stampede(&args).await,
    }
}

async fn stampede(args: &[String]) {
    let url = arg(args, 1, "redis url");
    let name = arg(args, 2, "cache name");
    let key = arg(args, 3, "key");
    let callers: usize = arg(args, 4, "callers").parse().expect("callers");
    let lock_ttl = ms_arg(args, 5, "lock_ttl_ms");
    let load = ms_arg(args, 6, "load_ms");

    let (backend, counter) = connect(&url).await;
    let cache: Cache<String, String> = Cache::builder(name.clone())
        .ttl(Duration::from_secs(30))
        .lock_ttl(lock_ttl)
        .backend(backend)
        .build();

    say("READY");
    wait_for_go();

    let counter_key = format!("origin:{name}:{key}");
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (cache, key, counter, counter_key) = (
                cache.clone(),
                key.clone(),
                counter.clone(),
                counter_key.clone(),
            );
            tokio::spawn(async move {
                cache
                    .get_or_load(key, move |_| async move {
                        let mut counter = counter;
                        let n: u64 = redis::cmd("INCR")
                            .arg(&counter_key)
                            .query_async(&mut counter)
                            .await
                            .expect("INCR the origin counter");
                        say("LOADING");
                        tokio::time::sleep(load).await;
                        format!("value-{n}")
                    })
                    .await
            })
        })
        .collect();
    let mut values = BTreeSet::new();
    let mut completed = 0;
    for task in tasks {
        if let Ok(value) = task.await {
            completed += 1;
            values.insert(value);
        }
    }
    let stats = cache.stats();
    let values: Vec<String> = values.into_iter().collect();
    say(&format!(
        "DONE {completed} {} {} {}",
        values.join(","),
        stats.loads,
        stats.fallbacks
    ));
}

async fn steady(args: &[String]) {
    let url = arg(args, 1, "redis url");
    let name = arg(args, 2, "cache name");
    let ttl = ms_arg(args, 4, "ttl_ms");
    let strategy = match arg(args, 3, "strategy").as_str() {
        "swr" => Strategy::Swr { stale: ttl * 10 },
        "xfetch" => Strategy::XFetch { beta: 1.0 },
        other => panic!("strategy must be swr or xfetch, got {other}"),
    };
    let load = ms_arg(args, 5, "load_ms");
    let period = ms_arg(args, 6, "period_ms");
    let duration = ms_arg(args, 7, "duration_ms");

    let (backend, counter) = connect(&url).await;
    let cache: Cache<String, String> = Cache::builder(name.clone())
        .ttl(ttl)
        .strategy(strategy)
        .lock_ttl(Duration::from_secs(2))
        .backend(backend)
        .build();
    let call = || {
        let (counter, name) = (counter.clone(), name.clone());
        cache.get_or_load(KEY.to_owned(), move |_| origin(counter, name, true, load))
    };

    say("READY");
    wait_for_go();

    let at = Instant::now();
    call().await;
    say(&format!("WARM {}", at.elapsed().as_micros()));

    let (mut calls, mut longest) = (0u64, Duration::ZERO);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let at = Instant::now();
        call().await;
        longest = longest.max(at.elapsed());
        calls += 1;
        tokio::time::sleep(period).await;
    }
    let stats = cache.stats();
    say(&format!(
        "DONE {calls} {} {} {} {} {}",
        longest.as_micros(),
        stats.loads,
        stats.background_refreshes,
        stats.early_refreshes,
        stats.fallbacks
    ));
}

async fn steps(args: &[String]) {
    let url = arg(args, 1, "redis url");
    let name = arg(args, 2, "cache name");
    let ttl = ms_arg(args, 3, "ttl_ms");
    let load = ms_arg(args, 4, "load_ms");

    let (backend, counter) = connect(&url).await;
    let cache: Cache<String, String> = Cache::builder(name.clone())
        .ttl(ttl)
        .lock_ttl(Duration::from_secs(5))
        .tags(|_: &String| ["hot"])
        .backend(backend)
        .build();
    let key = KEY.to_owned();

    say("READY");
    // Commands are read on a plain thread: the runtime's workers stay free for
    // the cache's background tasks (notice subscription, write-behinds).
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(command) = commands.recv().await {
        match command.trim() {
            "CALL" => {
                let (counter, name) = (counter.clone(), name.clone());
                let at = Instant::now();
                let value = cache
                    .get_or_load(key.clone(), move |_| origin(counter, name, false, load))
                    .await;
                say(&format!("VALUE {value} {}", at.elapsed().as_micros()));
            }
            "PEEK" => say(&format!(
                "PEEK {}",
                cache.get(&key).unwrap_or_else(|| "-".to_owned())
            )),
            "INVALIDATE" => {
                cache.invalidate(&key);
                say("INVALIDATED");
            }
            "TAG" => {
                stampede_cache::invalidate_tag("hot");
                say("TAGGED");
            }
            "QUIT" => break,
            other => panic!("unknown command {other:?}"),
        }
    }
    let stats = cache.stats();
    say(&format!("BYE {} {}", stats.loads, stats.fallbacks));
}

async fn writer(args: &[String]) {
    let url = arg(args, 1, "redis url");
    let tag = arg(args, 2, "tag");
    let backend = stampede_cache::SharedBackend::from(
        RedisBackend::connect(&url).await.expect("connect to redis"),
    );
    stampede_cache::install(backend.clone());
    say("READY");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("read the go line");
    stampede_cache::invalidate_tag(&tag);
    let landed = backend.flush(Duration::from_secs(5)).await;
    say(&format!("TAGGED {landed}"));
}

/// The failing origin's error; another process's failure arrives as `Remote`.
#[derive(Clone, Debug)]
#[allow(dead_code)] // the message is only printed through Debug
enum PodError {
    Down,
    Remote(String),
}

impl From<RemoteLoadError> for PodError {
    fn from(e: RemoteLoadError) -> Self {
        PodError::Remote(e.message().to_owned())
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

async fn failing(args: &[String]) {
    let url = arg(args, 1, "redis url");
    let name = arg(args, 2, "cache name");
    let callers: usize = arg(args, 3, "callers").parse().expect("callers");
    let load = ms_arg(args, 4, "load_ms");

    let (backend, counter) = connect(&url).await;
    let cache: Cache<String, String> = Cache::builder(name.clone())
        .ttl(Duration::from_secs(30))
        .failed_refresh_backoff(Duration::from_secs(5))
        .remote_errors::<PodError>()
        .backend(backend)
        .build();

    say("READY");
    wait_for_go();

    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (cache, counter, name) = (cache.clone(), counter.clone(), name.clone());
            tokio::spawn(async move {
                let result = cache
                    .try_get_or_load(KEY.to_owned(), move |_| async move {
                        let mut counter = counter;
                        let _: u64 = redis::cmd("INCR")
                            .arg(format!("origin:{name}:{KEY}"))
                            .query_async(&mut counter)
                            .await
                            .expect("INCR the origin counter");
                        say("LOADING");
                        tokio::time::sleep(load).await;
                        Err::<String, _>(PodError::Down)
                    })
                    .await;
                (result, started.elapsed())
            })
        })
        .collect();
    let (mut errors, mut slowest) = (0, Duration::ZERO);
    for task in tasks {
        let (result, took) = task.await.expect("a call panicked");
        if let Err(PodError::Down | PodError::Remote(_)) = result {
            errors += 1;
        }
        slowest = slowest.max(took);
    }
    let stats = cache.stats();
    say(&format!(
        "DONE {errors} {} {} {} {}",
        slowest.as_micros(),
        stats.loads,
        stats.remote_failures,
        stats.fallbacks
    ));
}

async fn lockstep(args: &[String]) {
    let url = arg(args, 1, "redis url");
    let name = arg(args, 2, "cache name");
    let ttl = ms_arg(args, 3, "ttl_ms");
    let load = ms_arg(args, 4, "load_ms");
    let period = ms_arg(args, 5, "period_ms");
    let duration = ms_arg(args, 6, "duration_ms");

    let (backend, _) = connect(&url).await;
    let cache: Cache<String, String> = Cache::builder(name)
        .ttl(ttl)
        .lock_ttl(Duration::from_secs(10))
        .backend(backend)
        .build();
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));

    say("READY");
    wait_for_go();

    let mut calls = 0u64;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let loads = loads.clone();
        let (at, at_ms) = (Instant::now(), epoch_ms());
        cache
            .get_or_load(KEY.to_owned(), move |_| async move {
                let n = loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(load).await;
                format!("value-{n}")
            })
            .await;
        let took = at.elapsed();
        if took > Duration::from_millis(20) {
            say(&format!("SLOW {at_ms} {}", took.as_micros()));
        }
        calls += 1;
        tokio::time::sleep(period).await;
    }
    let stats = cache.stats();
    say(&format!("DONE {calls} {} {}", stats.loads, stats.fallbacks));
}
