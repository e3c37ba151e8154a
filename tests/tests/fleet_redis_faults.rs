#![cfg(feature = "redis")]
//! Redis faults and the cost of notices, on a real `redis-server`:
//!
//! - a hung Redis (SIGSTOP) trips each pod's circuit breaker: afterwards a
//!   call skips Redis at once, and the pod pays at most one command timeout
//!   per cool-down; after SIGCONT the fleet coordinates again within about
//!   one cool-down;
//! - a half-open notice connection (a proxy that stops forwarding without
//!   closing) is noticed by the liveness PING, and a pod that missed an
//!   invalidation meanwhile is not served the old value beyond the bound;
//! - notices reach only the processes that need them: per-pod notice counts
//!   for N = 50 and 200 pods, against what a `PSUBSCRIBE <prefix>:*` pod
//!   (the previous scheme) receives for the same traffic.
//!
//! Each pod is a `Cache` on its own `RedisBackend` (own connections and
//! subscription, as a separate process has).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede_cache::redis::{BREAKER_THRESHOLD, RedisBackend};
use stampede_cache::{Cache, Strategy};
use stampede_cache_tests::bounded;
use stampede_cache_tests::redis_server::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

fn pod(
    name: &str,
    ttl: Duration,
    lock_ttl: Duration,
    backend: &RedisBackend,
) -> Cache<String, String> {
    Cache::builder(name.to_owned())
        .ttl(ttl)
        .strategy(Strategy::Lock)
        .lock_ttl(lock_ttl)
        .backend(backend.clone())
        .build()
}

/// Polls `done` every 2 ms until it holds (bounded by the test's hang bound).
async fn until(mut done: impl FnMut() -> bool) {
    bounded(async {
        while !done() {
            sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 1. Circuit breaker
// ---------------------------------------------------------------------------

/// One call of the steady traffic.
#[derive(Clone, Copy)]
struct Call {
    pod: usize,
    start: Instant,
    took: Duration,
    /// This call ran the loader (it missed L1 and did not get L2's value).
    loaded: bool,
}

/// SIGSTOP under steady traffic from 4 pods: each pod's breaker trips once;
/// after the trip a miss skips Redis at once (its only cost is the local
/// load) and at most one call per cool-down waits a command timeout (the
/// probe); after SIGCONT one load per expiry fleet-wide resumes within
/// about one cool-down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_trips_the_breaker_then_costs_one_timeout_per_cooldown() {
    let server = RedisServer::start();
    let command_timeout = Duration::from_millis(200);
    let cooldown = Duration::from_secs(1);
    let ttl = Duration::from_millis(100);
    let load = Duration::from_millis(5);
    let frozen_for = Duration::from_millis(2500);
    let mut backends = Vec::new();
    for _ in 0..4 {
        backends.push(
            RedisBackend::builder(&server.url())
                .command_timeout(command_timeout)
                .breaker_cooldown(cooldown)
                .connect()
                .await
                .expect("connect"),
        );
    }
    let pods: Vec<_> = backends
        .iter()
        .map(|b| pod("faults.breaker", ttl, Duration::from_secs(1), b))
        .collect();

    let loads = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let calls = Arc::new(Mutex::new(Vec::<Call>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<JoinHandle<()>> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            let (pod, loads, calls, stop) =
                (pod.clone(), loads.clone(), calls.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let loaded = Arc::new(AtomicBool::new(false));
                    let (flag, loads) = (loaded.clone(), loads.clone());
                    let start = Instant::now();
                    let value = bounded(pod.get_or_load("k".to_owned(), move |_| async move {
                        flag.store(true, Ordering::Relaxed);
                        loads.lock().unwrap().push(Instant::now());
                        sleep(load).await;
                        "v".to_owned()
                    }))
                    .await;
                    assert_eq!(value, "v");
                    calls.lock().unwrap().push(Call {
                        pod: i,
                        start,
                        took: start.elapsed(),
                        loaded: loaded.load(Ordering::Relaxed),
                    });
                    sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();

    sleep(Duration::from_secs(1)).await;
    server.freeze();
    let frozen = Instant::now();
    // When each pod's breaker opened.
    let mut opened: Vec<Option<Instant>> = vec![None; backends.len()];
    while frozen.elapsed() < frozen_for {
        for (i, backend) in backends.iter().enumerate() {
            if opened[i].is_none() && backend.breaker_is_open() {
                opened[i] = Some(Instant::now());
            }
        }
        sleep(Duration::from_millis(2)).await;
    }
    // Thaw in the middle of an open period, not while a probe is in flight
    // (which would close the breaker at once): half a cool-down after a
    // probe of pod 0 failed.
    let opened_0 = opened[0].expect("pod 0's breaker opened");
    let probes_of_0 = || {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.pod == 0 && c.start >= opened_0 && c.took >= command_timeout / 2)
            .count()
    };
    let seen = probes_of_0();
    until(|| probes_of_0() > seen).await;
    sleep(cooldown / 2).await;
    let open_at_thaw = backends.iter().filter(|b| b.breaker_is_open()).count();
    server.thaw();
    let thawed = Instant::now();
    sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in traffic {
        bounded(task).await.expect("traffic task");
    }

    let calls = calls.lock().unwrap().clone();
    let mut loads = loads.lock().unwrap().clone();
    loads.sort();
    let slow = command_timeout / 2;
    for (i, backend) in backends.iter().enumerate() {
        let opened = opened[i].unwrap_or_else(|| panic!("pod {i}: the breaker never opened"));
        let trip_after = opened - frozen;
        let mine = |c: &&Call| c.pod == i;
        let before_trip = calls
            .iter()
            .filter(mine)
            .filter(|c| c.start >= frozen && c.start < opened && c.took >= slow)
            .count();
        let misses: Vec<&Call> = calls
            .iter()
            .filter(mine)
            .filter(|c| c.start >= opened && c.start < thawed && c.loaded)
            .collect();
        let probes = misses.iter().filter(|c| c.took >= slow).count();
        let mut fast: Vec<Duration> = misses
            .iter()
            .filter(|c| c.took < slow)
            .map(|c| c.took)
            .collect();
        fast.sort();
        let open_for = thawed - opened;
        let allowed = (open_for.as_secs_f64() / cooldown.as_secs_f64()).ceil() as usize + 1;
        eprintln!(
            "pod {i}: breaker opened {trip_after:?} after SIGSTOP ({before_trip} calls waited a timeout before), trips {}, rejections {}; \
             then {} misses in {open_for:?}: {probes} waited a timeout (probes, allowed {allowed}), the others median {:?} max {:?}",
            backend.breaker_trips(),
            backend.breaker_rejections(),
            misses.len(),
            fast.get(fast.len() / 2).copied().unwrap_or_default(),
            fast.last().copied().unwrap_or_default(),
        );
        assert_eq!(backend.breaker_trips(), 1, "pod {i}: one trip per outage");
        assert!(
            before_trip <= BREAKER_THRESHOLD as usize,
            "pod {i}: {before_trip} calls paid a timeout before the trip"
        );
        assert!(
            trip_after < command_timeout * (BREAKER_THRESHOLD + 3),
            "pod {i}: the breaker opened only {trip_after:?} after SIGSTOP"
        );
        assert!(
            misses.len() >= 5,
            "pod {i}: only {} misses while open",
            misses.len()
        );
        assert!(
            probes <= allowed,
            "pod {i}: {probes} calls waited a timeout in {open_for:?} with a {cooldown:?} cool-down"
        );
        let max_fast = fast.last().copied().unwrap_or_default();
        assert!(
            max_fast < command_timeout / 4,
            "pod {i}: a miss took {max_fast:?} with the breaker open (command timeout {command_timeout:?}, load {load:?})"
        );
        assert!(backend.breaker_rejections() > 0);
        assert!(!backend.breaker_is_open(), "pod {i}: closed after the thaw");
    }

    // Coordination after the thaw: the last two loads closer than half a
    // ttl (two pods loading one expiry) mark when it resumed.
    let after: Vec<Instant> = loads.iter().copied().filter(|t| *t >= thawed).collect();
    let resumed = after
        .windows(2)
        .filter(|w| w[1] - w[0] < ttl / 2)
        .map(|w| w[1])
        .next_back()
        .unwrap_or(thawed);
    let resumed_after = resumed - thawed;
    let tail = after.iter().filter(|t| **t > resumed).count();
    let tail_span = Instant::now() - resumed;
    eprintln!(
        "after SIGCONT ({open_at_thaw} of 4 breakers open or probing then): one load per expiry again {resumed_after:?} after the thaw (cool-down {cooldown:?}); then {tail} loads in {tail_span:?} (ttl {ttl:?})"
    );
    assert!(
        resumed_after <= cooldown + Duration::from_millis(800),
        "coordination resumed only {resumed_after:?} after the thaw"
    );
    let expiries = (tail_span.as_secs_f64() / ttl.as_secs_f64()).ceil() as usize;
    assert!(
        tail >= 5 && tail <= expiries + 1,
        "{tail} loads in {tail_span:?}: not one per expiry"
    );
}

// ---------------------------------------------------------------------------
// 2. Liveness of the notice connection
// ---------------------------------------------------------------------------

/// A TCP proxy in front of redis-server that can make the notice
/// connections open now half-open: it stops forwarding on them, in both
/// directions, without closing them (as a NAT or firewall that dropped the
/// connection's state). Connections made later forward normally, and command
/// connections are never touched.
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    next_id: AtomicU64,
    /// Notice connections with a smaller id forward nothing any more.
    blackholed_below: AtomicU64,
    /// Connections that have sent a (P)SUBSCRIBE: notice connections.
    subscribers: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let id = accept_state.next_id.fetch_add(1, Ordering::SeqCst);
                let is_sub = Arc::new(AtomicBool::new(false));
                let (client_r, client_w) = client.into_split();
                let (server_r, server_w) = server.into_split();
                let up = tokio::spawn(pump(
                    client_r,
                    server_w,
                    id,
                    is_sub.clone(),
                    accept_state.clone(),
                    true,
                ));
                let down = tokio::spawn(pump(
                    server_r,
                    client_w,
                    id,
                    is_sub,
                    accept_state.clone(),
                    false,
                ));
                accept_state.tasks.lock().unwrap().extend([up, down]);
            }
        });
        state.tasks.lock().unwrap().push(accept);
        Proxy { addr, state }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Makes every notice connection open now half-open.
    fn blackhole_subscribers(&self) {
        let next = self.state.next_id.load(Ordering::SeqCst);
        self.state.blackholed_below.store(next, Ordering::SeqCst);
    }

    fn subscriber_connections(&self) -> u64 {
        self.state.subscribers.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.state.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    is_sub: Arc<AtomicBool>,
    state: Arc<ProxyState>,
    from_client: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if from_client
            && !is_sub.load(Ordering::SeqCst)
            && buf[..n]
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
        {
            is_sub.store(true, Ordering::SeqCst);
            state.subscribers.fetch_add(1, Ordering::SeqCst);
        }
        if is_sub.load(Ordering::SeqCst) && id < state.blackholed_below.load(Ordering::SeqCst) {
            // Half-open: hold both sockets, forward nothing, never close.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A pod whose notice connection goes half-open misses an `insert` made by
/// another pod. Its liveness PING notices the dead connection within
/// `ping_interval + command_timeout`, drops its L1 copies and reconnects: it
/// is served the old value no longer than that bound (plus scheduling
/// slack), reads the new one from L2 (no load), and hears notices again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_notice_connection_loses_no_invalidation_beyond_the_bound() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let command_timeout = Duration::from_millis(150);
    let ping_interval = Duration::from_millis(300);
    let bound = ping_interval + command_timeout;
    let a_backend = RedisBackend::builder(&proxy.url())
        .command_timeout(command_timeout)
        .ping_interval(ping_interval)
        .connect()
        .await
        .expect("connect through the proxy");
    let b_backend = RedisBackend::connect(&server.url()).await.expect("connect");
    let name = "faults.halfopen";
    let ttl = Duration::from_secs(60);
    let a = pod(name, ttl, Duration::from_secs(5), &a_backend);
    let b = pod(name, ttl, Duration::from_secs(5), &b_backend);
    let key = "k".to_owned();
    let a_loads = Arc::new(AtomicU64::new(0));
    let a_load = |value: &'static str| {
        let a_loads = a_loads.clone();
        move |_: String| async move {
            a_loads.fetch_add(1, Ordering::SeqCst);
            value.to_owned()
        }
    };
    assert_eq!(
        bounded(a.get_or_load(key.clone(), a_load("v1"))).await,
        "v1"
    );
    assert_eq!(
        bounded(b.get_or_load(key.clone(), |_| async { "b-loaded".to_owned() })).await,
        "v1",
        "b reads a's value from L2"
    );
    assert_eq!(
        proxy.subscriber_connections(),
        1,
        "a's notice connection goes through the proxy"
    );
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("stampede:{{{name}:*}}:value"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(value_keys.len(), 1);
    let v1_bytes: Vec<u8> = redis::cmd("GET")
        .arg(&value_keys[0])
        .query_async(&mut raw)
        .await
        .unwrap();

    let notices_before = a_backend.notices_received();
    proxy.blackhole_subscribers();
    let blackholed = Instant::now();
    b.insert(key.clone(), "v2".to_owned());
    // Wait until the insert has landed in Redis (and its notice is published).
    loop {
        let now: Vec<u8> = redis::cmd("GET")
            .arg(&value_keys[0])
            .query_async(&mut raw)
            .await
            .unwrap();
        if now != v1_bytes {
            break;
        }
        assert!(
            blackholed.elapsed() < Duration::from_secs(5),
            "the insert did not land"
        );
        sleep(Duration::from_millis(1)).await;
    }
    let landed = Instant::now();
    let still_old_after_landing = a.get(&key).as_deref() == Some("v1");

    // The pod's callers: the old value until the gap, then the new one.
    let mut last_old = landed;
    bounded(async {
        loop {
            let at = Instant::now();
            let value = a.get_or_load(key.clone(), a_load("a-loaded")).await;
            match value.as_str() {
                "v1" => last_old = at,
                "v2" => break,
                other => panic!("a served {other:?}"),
            }
            sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let stale_for = last_old - landed;
    eprintln!(
        "half-open notice connection: the insert landed {:?} after the blackhole; a still held the old copy then: {still_old_after_landing}; \
         a served the old value for {stale_for:?} after the insert (bound: ping {ping_interval:?} + command timeout {command_timeout:?} = {bound:?}); \
         subscription losses {}, notices received during the outage {}",
        landed - blackholed,
        a_backend.subscription_losses(),
        a_backend.notices_received() - notices_before,
    );
    assert!(
        stale_for <= bound + Duration::from_millis(250),
        "a served the replaced value for {stale_for:?} (bound {bound:?})"
    );
    assert_eq!(
        a_backend.subscription_losses(),
        1,
        "the dead connection was noticed once"
    );
    assert_eq!(
        a_backend.notices_received(),
        notices_before,
        "the insert's notice never reached a: its copy went with the gap"
    );
    assert_eq!(
        a_loads.load(Ordering::SeqCst),
        1,
        "v2 came from L2, not from a load"
    );

    // Re-subscribed through a new (forwarding) connection: notices flow again.
    // (Re-subscribing drops L1 once more: notices of the outage are lost.)
    until(|| proxy.subscriber_connections() == 2 && a_backend.subscribed_channels() >= 2).await;
    assert_eq!(
        bounded(a.get_or_load(key.clone(), a_load("a-loaded"))).await,
        "v2"
    );
    assert_eq!(a_loads.load(Ordering::SeqCst), 1);
    let sent = Instant::now();
    b.invalidate(&key);
    until(|| a.get(&key).is_none()).await;
    let delivered = sent.elapsed();
    eprintln!("after the reconnect: an invalidation reached a in {delivered:?}");
    assert!(delivered < bound, "took {delivered:?}: not by notice");
    assert!(a_backend.notices_received() > notices_before);
    assert!(
        still_old_after_landing || landed - blackholed >= command_timeout * 9 / 10,
        "a dropped its copy before the dead connection could have been noticed: the notice was not lost"
    );
}

// ---------------------------------------------------------------------------
// 3. Who receives a notice
// ---------------------------------------------------------------------------

/// Counts the messages a `PSUBSCRIBE <prefix>:*` connection receives: what
/// every pod received under the previous scheme (one pattern subscription
/// per process), in a thread on the sync client.
struct PatternPod {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PatternPod {
    fn start(url: &str, prefix: &str) -> PatternPod {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        con.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        let (c, s, pattern) = (count.clone(), stop.clone(), format!("{prefix}:*"));
        let thread = std::thread::spawn(move || {
            let mut pubsub = con.as_pubsub();
            pubsub.psubscribe(&pattern).unwrap();
            subscribed_tx.send(()).unwrap();
            while !s.load(Ordering::Relaxed) {
                match pubsub.get_message() {
                    Ok(_) => {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(e) => panic!("pattern subscriber: {e}"),
                }
            }
        });
        subscribed_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        PatternPod {
            count,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for PatternPod {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Per-pod notice counts of one step: each pod's (subscribed channels) and
/// one pattern pod's.
struct Counted {
    per_pod: Vec<u64>,
    pattern: u64,
}

async fn count(
    backends: &[RedisBackend],
    pattern: &PatternPod,
    step: impl std::future::Future<Output = ()>,
) -> Counted {
    let before: Vec<u64> = backends
        .iter()
        .map(RedisBackend::notices_received)
        .collect();
    let pattern_before = pattern.received();
    bounded(step).await;
    // Let every notice arrive.
    sleep(Duration::from_millis(300)).await;
    Counted {
        per_pod: backends
            .iter()
            .zip(before)
            .map(|(b, n)| b.notices_received() - n)
            .collect(),
        pattern: pattern.received() - pattern_before,
    }
}

fn report(n: usize, what: &str, c: &Counted) {
    let total: u64 = c.per_pod.iter().sum();
    let min = c.per_pod.iter().min().unwrap();
    let max = c.per_pod.iter().max().unwrap();
    eprintln!(
        "N={n:>3} {what:<34} per pod: channels min {min} max {max} (fleet {total:>5}) | pattern {} (fleet {:>5})",
        c.pattern,
        c.pattern * n as u64
    );
}

async fn fan_out(server: &RedisServer, n: usize) {
    let prefix = format!("fanout{n}");
    let mut backends = Vec::new();
    for _ in 0..n {
        backends.push(
            RedisBackend::builder(&server.url())
                .prefix(prefix.clone())
                .connect()
                .await
                .expect("connect"),
        );
    }
    let pattern = PatternPod::start(&server.url(), &prefix);
    let ttl = Duration::from_secs(60);
    // A long lease: a waiter that missed its notice would re-read only after 0.5-1.5 s.
    let lock_ttl = Duration::from_secs(60);
    let pods: Vec<_> = backends
        .iter()
        .map(|b| pod("fanout", ttl, lock_ttl, b))
        .collect();
    // The tags channel and the cache's invalidation channel.
    until(|| backends.iter().all(|b| b.subscribed_channels() == 2)).await;

    let cold = count(&backends, &pattern, async {
        pods[0]
            .get_or_load("cold".to_owned(), |_| async { "v".to_owned() })
            .await;
    })
    .await;
    report(n, "one cold fill, nobody waiting", &cold);
    assert!(cold.per_pod.iter().all(|c| *c == 0), "{:?}", cold.per_pod);
    assert_eq!(
        cold.pattern, 1,
        "the fill's ready notice reached every pattern pod"
    );

    let own = count(&backends, &pattern, async {
        let calls: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let pod = pod.clone();
                tokio::spawn(async move {
                    pod.get_or_load(format!("own-{i}"), |_| async { "v".to_owned() })
                        .await
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
    })
    .await;
    report(n, "every pod fills its own key", &own);
    assert!(own.per_pod.iter().all(|c| *c == 0), "{:?}", own.per_pod);
    assert_eq!(
        own.pattern, n as u64,
        "every fill reached every pattern pod: N^2 fleet-wide"
    );

    let load = Duration::from_millis(300);
    let origin = Arc::new(AtomicU64::new(0));
    let longest = Arc::new(Mutex::new(Duration::ZERO));
    let stampede = count(&backends, &pattern, async {
        let calls: Vec<_> = pods
            .iter()
            .map(|pod| {
                let (pod, origin, longest) = (pod.clone(), origin.clone(), longest.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    let v = pod
                        .get_or_load("hot".to_owned(), move |_| async move {
                            origin.fetch_add(1, Ordering::SeqCst);
                            sleep(load).await;
                            "hot".to_owned()
                        })
                        .await;
                    let mut l = longest.lock().unwrap();
                    *l = (*l).max(start.elapsed());
                    v
                })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), "hot");
        }
    })
    .await;
    report(n, "a stampede on one cold key", &stampede);
    let longest = *longest.lock().unwrap();
    let waiters = stampede.per_pod.iter().filter(|c| **c > 0).count();
    eprintln!(
        "N={n:>3}   stampede: {} origin call, {waiters} pods woken by the ready notice, longest call {longest:?} (load {load:?})",
        origin.load(Ordering::SeqCst)
    );
    assert_eq!(origin.load(Ordering::SeqCst), 1);
    assert_eq!(stampede.pattern, 1);
    assert!(
        stampede.per_pod.iter().all(|c| *c <= 1),
        "{:?}",
        stampede.per_pod
    );
    // Waiters were woken by their notice, not by a periodic re-read (≥ 500 ms).
    assert!(
        longest < load + Duration::from_millis(400),
        "a waiter took {longest:?}: its notice was missed"
    );

    let inval = count(&backends, &pattern, async {
        pods[0].invalidate(&"hot".to_owned());
    })
    .await;
    report(n, "one invalidation", &inval);
    assert!(inval.per_pod.iter().all(|c| *c == 1), "{:?}", inval.per_pod);
    assert_eq!(inval.pattern, 2, "ready + invalidation notice");
    until(|| pods.iter().all(|p| p.get(&"hot".to_owned()).is_none())).await;

    // Key subscriptions end with their waits.
    until(|| backends.iter().all(|b| b.subscribed_channels() == 2)).await;
}

/// For 50 and 200 pods: how many notices each pod receives for one cold
/// fill, every pod filling its own key, a stampede on one key, and one
/// invalidation — with per-channel subscriptions vs. what a pattern
/// subscriber (the previous scheme) receives. Each pod then only hears its
/// caches' invalidations and the ready notices of keys it waits on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_only_the_pods_that_need_them() {
    let server = RedisServer::start();
    for n in [50, 200] {
        fan_out(&server, n).await;
    }
}
