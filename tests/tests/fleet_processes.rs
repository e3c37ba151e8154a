#![cfg(feature = "redis")]
//! The fleet as OS processes: pod binaries sharing one real redis-server.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use stampede_cache_tests::redis_server::RedisServer;

const BOUND: Duration = Duration::from_secs(60);

struct Pod {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Pod {
    /// The original stampede mode: `callers` concurrent calls on `go`.
    fn spawn(url: &str, name: &str, callers: usize, lock_ttl_ms: u64, load_ms: u64) -> Pod {
        Pod::spawn_with(url, name, callers, lock_ttl_ms, load_ms, None)
    }

    /// [`Pod::spawn`], trusting the CA in file `ca` for a `rediss://` URL.
    fn spawn_with(
        url: &str,
        name: &str,
        callers: usize,
        lock_ttl_ms: u64,
        load_ms: u64,
        ca: Option<&std::path::Path>,
    ) -> Pod {
        Pod::start_with(
            ca,
            &[
                url.to_owned(),
                name.to_owned(),
                "hot-key".to_owned(),
                callers.to_string(),
                lock_ttl_ms.to_string(),
                load_ms.to_string(),
            ],
        )
    }

    /// Starts `pod <args>` and waits for its `READY`.
    fn start(args: &[String]) -> Pod {
        Pod::start_with(None, args)
    }

    fn start_with(ca: Option<&std::path::Path>, args: &[String]) -> Pod {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pod"));
        if let Some(ca) = ca {
            command.env("POD_REDIS_CA", ca);
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the pod binary");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut pod = Pod {
            child,
            stdin,
            lines,
        };
        pod.expect_line("READY");
        pod
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Sends a steps-mode command and returns the words of its answer, which
    /// must start with `answer`.
    fn ask(&mut self, command: &str, answer: &str) -> Vec<String> {
        self.send(command);
        let line = self.expect_line(answer);
        line.split(' ').skip(1).map(str::to_owned).collect()
    }

    fn go(&mut self) {
        self.send("go");
    }

    /// Waits for a line starting with `prefix`; returns it.
    fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("pod gave no `{prefix}` line within {BOUND:?}: {e}"),
            }
        }
    }

    /// `DONE <completed> <values> <loads> <fallbacks>`.
    fn done(&mut self) -> (usize, Vec<String>, u64) {
        let line = self.expect_line("DONE");
        let parts: Vec<&str> = line.split(' ').collect();
        let completed = parts[1].parse().unwrap();
        let values = parts[2].split(',').map(str::to_owned).collect();
        let loads = parts[3].parse().unwrap();
        let _ = self.child.wait();
        (completed, values, loads)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn origin_calls(url: &str, name: &str) -> u64 {
    let mut con = redis_con(url);
    redis::cmd("GET")
        .arg(format!("origin:{name}:hot-key"))
        .query::<Option<u64>>(&mut con)
        .unwrap()
        .unwrap_or(0)
}

#[test]
fn eight_processes_times_a_hundred_callers_make_one_origin_call() {
    let server = RedisServer::start();
    eight_times_a_hundred(&server.url(), None, || {
        origin_calls(&server.url(), "fleet.8x100")
    });
}

/// The same over TLS: every process connects with `rediss://` and trusts
/// the test's CA.
#[test]
fn eight_processes_times_a_hundred_callers_make_one_origin_call_over_tls() {
    let server = RedisServer::start_tls();
    let ca = stampede_cache_tests::redis_server::temp_dir("pod-ca").join("ca.crt");
    std::fs::write(&ca, server.ca_pem()).unwrap();
    eight_times_a_hundred(&server.tls_url(), Some(&ca), || {
        origin_calls(&server.url(), "fleet.8x100")
    });
}

/// The same on a real 3-primary Redis Cluster: every process its own
/// cluster connection (the pod binary takes the seeds comma-separated).
#[test]
fn eight_processes_times_a_hundred_callers_make_one_origin_call_on_a_cluster() {
    let cluster = stampede_cache_tests::redis_cluster::RedisCluster::start(3, 0);
    let seeds = cluster.urls().join(",");
    eight_times_a_hundred(&seeds, None, || {
        let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
        let mut con = client.get_connection().unwrap();
        redis::cmd("GET")
            .arg("origin:fleet.8x100:hot-key")
            .query::<Option<u64>>(&mut con)
            .unwrap()
            .unwrap_or(0)
    });
}

/// 8 pod processes × 100 callers of one key on `url`: one origin call.
fn eight_times_a_hundred(
    url: &str,
    ca: Option<&std::path::Path>,
    origin_calls: impl FnOnce() -> u64,
) {
    let url = url.to_owned();
    let mut pods: Vec<Pod> = (0..8)
        .map(|_| Pod::spawn_with(&url, "fleet.8x100", 100, 2_000, 200, ca))
        .collect();
    for pod in &mut pods {
        pod.go();
    }
    let mut all_values = std::collections::BTreeSet::new();
    let mut completed = 0;
    let mut loads = 0;
    for pod in &mut pods {
        let (c, values, l) = pod.done();
        completed += c;
        loads += l;
        all_values.extend(values);
    }
    let origin = origin_calls();
    eprintln!(
        "8 processes x 100 callers: origin calls {origin}, completed {completed}, values {all_values:?}"
    );
    assert_eq!(completed, 800);
    assert_eq!(origin, 1, "one origin call for the fleet");
    assert_eq!(loads, 1);
    assert_eq!(
        all_values.len(),
        1,
        "all 800 callers got the same value: {all_values:?}"
    );
}

#[test]
fn a_sigkilled_lock_holder_is_taken_over_after_the_lease() {
    let server = RedisServer::start();
    let url = server.url();
    let name = "fleet.sigkill";
    // The holder's load takes 60 s: it only ends by SIGKILL.
    let mut holder = Pod::spawn(&url, name, 10, 500, 60_000);
    holder.go();
    holder.expect_line("LOADING");
    let mut others: Vec<Pod> = (0..3)
        .map(|_| Pod::spawn(&url, name, 50, 500, 50))
        .collect();
    for pod in &mut others {
        pod.go();
    }
    std::thread::sleep(Duration::from_millis(100)); // the others are waiting on the lock
    holder.child.kill().unwrap(); // SIGKILL: no release, the lease must lapse
    let mut completed = 0;
    let mut values = std::collections::BTreeSet::new();
    for pod in &mut others {
        let (c, v, _) = pod.done();
        completed += c;
        values.extend(v);
    }
    let origin = origin_calls(&url, name);
    eprintln!(
        "SIGKILLed holder: origin calls {origin} (holder's + takeover), completed {completed}"
    );
    assert_eq!(completed, 150, "every call of the surviving pods completed");
    assert_eq!(
        origin, 2,
        "the killed holder's call and exactly one takeover"
    );
    assert_eq!(values.len(), 1);
}

fn redis_con(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// What one steady-traffic run measured.
struct Steady {
    /// Load start times, ms since the UNIX epoch, sorted (warm-up included).
    starts: Vec<u64>,
    /// Per pod: (calls after warm-up, longest of them, warm-up call).
    pods: Vec<(u64, Duration, Duration)>,
    /// Fleet-wide origin calls, from the counter.
    origin: u64,
    fallbacks: u64,
}

const STEADY_PODS: usize = 4;
const STEADY_TTL_MS: u64 = 1_000;
const STEADY_LOAD_MS: u64 = 50;
const STEADY_CYCLES: u64 = 5;

/// `STEADY_PODS` pod processes read one key every 5 ms for five TTL cycles.
fn steady_traffic(strategy: &str) -> Steady {
    let server = RedisServer::start();
    let url = server.url();
    let name = format!("fleet.steady.{strategy}");
    let args: Vec<String> = [
        "steady",
        &url,
        &name,
        strategy,
        &STEADY_TTL_MS.to_string(),
        &STEADY_LOAD_MS.to_string(),
        "5",
        &(STEADY_TTL_MS * STEADY_CYCLES).to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let mut pods: Vec<Pod> = (0..STEADY_PODS).map(|_| Pod::start(&args)).collect();
    for pod in &mut pods {
        pod.go();
    }
    let mut warm = Vec::new();
    for pod in &mut pods {
        let line = pod.expect_line("WARM");
        warm.push(Duration::from_micros(line[5..].parse().unwrap()));
    }
    let mut per_pod = Vec::new();
    let mut fallbacks = 0;
    for (pod, warm) in pods.iter_mut().zip(warm) {
        // DONE <calls> <longest µs> <loads> <background> <early> <fallbacks>
        let line = pod.expect_line("DONE");
        let n: Vec<u64> = line[5..].split(' ').map(|w| w.parse().unwrap()).collect();
        per_pod.push((n[0], Duration::from_micros(n[1]), warm));
        fallbacks += n[5];
    }
    let mut con = redis_con(&url);
    let mut starts: Vec<u64> = redis::cmd("LRANGE")
        .arg(format!("starts:{name}:hot-key"))
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    starts.sort_unstable();
    Steady {
        starts,
        pods: per_pod,
        origin: origin_calls(&url, &name),
        fallbacks,
    }
}

fn assert_one_refresh_per_cycle(strategy: &str, run: &Steady, max_loads: usize) {
    let gaps: Vec<u64> = run.starts.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = run.pods.iter().map(|p| p.1).max().unwrap();
    let calls: u64 = run.pods.iter().map(|p| p.0).sum();
    eprintln!(
        "{strategy} across {STEADY_PODS} processes: {} origin calls (warm-up included) over \
         {STEADY_CYCLES} cycles of {STEADY_TTL_MS} ms, gaps between load starts {gaps:?} ms, \
         {calls} calls after warm-up, longest {longest:?} (per pod: {:?}), warm-up calls {:?}, \
         fallbacks {}",
        run.starts.len(),
        run.pods.iter().map(|p| p.1).collect::<Vec<_>>(),
        run.pods.iter().map(|p| p.2).collect::<Vec<_>>(),
        run.fallbacks,
    );
    assert_eq!(
        run.origin,
        run.starts.len() as u64,
        "{strategy}: every origin call recorded its start"
    );
    // Five cycles of reads hold four expiries after the warm-up load at the
    // least (a refresh starts at the first read past expiry, ≈ TTL + load
    // apart): at least 4 loads even when a loaded machine delays the readers.
    assert!(
        run.starts.len() >= 4,
        "{strategy}: the warm-up load and a refresh in every cycle: {} loads",
        run.starts.len()
    );
    assert!(
        run.starts.len() <= max_loads,
        "{strategy}: at most {max_loads} loads, got {}",
        run.starts.len()
    );
    for gap in &gaps {
        assert!(
            *gap >= 400,
            "{strategy}: two refreshes in one cycle, {gap} ms apart: {gaps:?}"
        );
    }
    for (i, (calls, longest, _)) in run.pods.iter().enumerate() {
        assert!(
            *calls >= 100,
            "{strategy}: pod {i} kept reading: {calls} calls"
        );
        assert!(
            *longest < Duration::from_millis(STEADY_LOAD_MS),
            "{strategy}: a reader of pod {i} waited {longest:?} (a load takes {STEADY_LOAD_MS} ms)"
        );
    }
}

#[test]
fn swr_across_processes_refreshes_once_per_cycle_and_readers_never_wait() {
    let run = steady_traffic("swr");
    // Warm-up, then one refresh per expiry: a cycle is the TTL plus the load.
    assert_one_refresh_per_cycle("swr", &run, STEADY_CYCLES as usize + 2);
}

#[test]
fn xfetch_across_processes_refreshes_once_per_cycle_and_readers_never_wait() {
    let run = steady_traffic("xfetch");
    // XFetch refreshes ahead of expiry: at this read rate the roll fires about
    // 0.2 s early (0.4 s at worst, in about 1% of cycles), so a value lives
    // 0.65–0.9 s and five TTLs hold up to seven refreshes plus the warm-up.
    // Two refreshes of one value would be < 100 ms apart: the gaps tell.
    assert_one_refresh_per_cycle("xfetch", &run, STEADY_CYCLES as usize + 3);
}

#[test]
fn invalidate_in_one_process_makes_the_others_reload() {
    invalidation_in_one_process_makes_the_others_reload(
        "fleet.invalidate",
        "INVALIDATE",
        "INVALIDATED",
    );
}

/// `invalidate_tag` in one process drops the tagged copies of every process
/// and the shared value: the fleet reloads once.
#[test]
fn a_tag_invalidated_in_one_process_makes_the_others_reload() {
    invalidation_in_one_process_makes_the_others_reload("fleet.tag", "TAG", "TAGGED");
}

fn invalidation_in_one_process_makes_the_others_reload(name: &str, command: &str, answer: &str) {
    let server = RedisServer::start();
    let url = server.url();
    // A 30 s TTL: within this test only the invalidation can cause a reload.
    let args = ["steps", &url, name, "30000", "50"].map(str::to_owned);
    let mut pods: Vec<Pod> = (0..3).map(|_| Pod::start(&args)).collect();

    let call_all = |pods: &mut [Pod]| -> Vec<String> {
        for pod in pods.iter_mut() {
            pod.send("CALL");
        }
        pods.iter_mut()
            .map(|pod| {
                pod.expect_line("VALUE")
                    .split(' ')
                    .nth(1)
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let warm = call_all(&mut pods);
    assert_eq!(
        origin_calls(&url, name),
        1,
        "one origin call to warm the fleet"
    );
    assert!(warm.iter().all(|v| v == "value-1"), "{warm:?}");
    for pod in &mut pods {
        assert_eq!(
            pod.ask("PEEK", "PEEK"),
            ["value-1"],
            "every pod holds a copy"
        );
    }

    pods[0].ask(command, answer);
    // The notice travels over pub/sub: wait (bounded) until every process
    // dropped its local copy.
    let invalidated = Instant::now();
    let mut dropped_after = Vec::new();
    for (i, pod) in pods.iter_mut().enumerate() {
        loop {
            if pod.ask("PEEK", "PEEK") == ["-"] {
                dropped_after.push(invalidated.elapsed());
                break;
            }
            assert!(
                invalidated.elapsed() < Duration::from_secs(10),
                "pod {i} still holds its copy 10 s after the invalidation"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(origin_calls(&url, name), 1, "invalidating loads nothing");

    let reloaded = call_all(&mut pods);
    let origin = origin_calls(&url, name);
    let mut loads = 0;
    for pod in &mut pods {
        let bye = pod.ask("QUIT", "BYE");
        loads += bye[0].parse::<u64>().unwrap();
    }
    eprintln!(
        "{command} across processes: local copies dropped after {dropped_after:?}, \
         values after {reloaded:?}, origin calls {origin}, loads {loads}"
    );
    assert_eq!(origin, 2, "one reload for the fleet");
    assert_eq!(loads, 2);
    assert!(
        reloaded.iter().all(|v| v == "value-2"),
        "every pod sees the new value: {reloaded:?}"
    );
}

/// A writer service that never built the cache (it only installed the
/// backend) calls `invalidate_tag`: every reading process drops its tagged
/// copy and the shared one, and the fleet reloads once (v2: the tag reached
/// nobody — only built, tagged, shared caches sent it).
#[test]
fn a_tag_invalidated_by_a_process_without_the_cache_reaches_the_fleet() {
    let server = RedisServer::start();
    let url = server.url();
    let name = "fleet.writer_tag";
    let args = ["steps", &url, name, "30000", "50"].map(str::to_owned);
    let mut readers: Vec<Pod> = (0..2).map(|_| Pod::start(&args)).collect();
    for pod in &mut readers {
        let value = pod.ask("CALL", "VALUE");
        assert_eq!(value[0], "value-1");
    }
    assert_eq!(origin_calls(&url, name), 1);
    let mut writer = Pod::start(&["writer", &url, "hot"].map(str::to_owned));
    writer.go();
    assert_eq!(
        writer.expect_line("TAGGED"),
        "TAGGED true",
        "the writer's invalidation reached Redis"
    );
    let told = Instant::now();
    for (i, pod) in readers.iter_mut().enumerate() {
        while pod.ask("PEEK", "PEEK") != ["-"] {
            assert!(
                told.elapsed() < Duration::from_secs(10),
                "reader {i} still holds its copy 10 s after the writer's tag"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let after: Vec<String> = readers
        .iter_mut()
        .map(|pod| pod.ask("CALL", "VALUE")[0].clone())
        .collect();
    assert_eq!(after, ["value-2", "value-2"], "one reload for the fleet");
    assert_eq!(origin_calls(&url, name), 2);
}

/// A failing origin across 8 OS processes × 10 callers: one origin call for
/// the fleet; every process answers with that failure within about one load
/// (v1: one call per process, one after another).
#[test]
fn a_failing_origin_is_called_once_across_eight_processes() {
    let server = RedisServer::start();
    let url = server.url();
    let name = "fleet.failing";
    let mut pods: Vec<Pod> = (0..8)
        .map(|_| {
            Pod::start(&[
                "failing".to_owned(),
                url.clone(),
                name.to_owned(),
                "10".to_owned(),
                "100".to_owned(),
            ])
        })
        .collect();
    for pod in &mut pods {
        pod.go();
    }
    let (mut errors, mut slowest_us, mut remote) = (0u64, 0u64, 0u64);
    for pod in &mut pods {
        let line = pod.expect_line("DONE");
        let parts: Vec<u64> = line
            .split(' ')
            .skip(1)
            .map(|p| p.parse().unwrap())
            .collect();
        errors += parts[0];
        slowest_us = slowest_us.max(parts[1]);
        remote += parts[3];
        assert_eq!(parts[4], 0, "no process fell back to its own load");
    }
    let origin = origin_calls(&url, name);
    eprintln!(
        "failing origin, 8 processes x 10 callers: origin calls {origin}, slowest caller {} ms, remote failures {remote}",
        slowest_us / 1000
    );
    assert_eq!(errors, 80, "every caller got the failure");
    assert_eq!(origin, 1, "one origin call for the fleet");
    assert!(remote >= 7, "the other processes took the leader's failure");
    assert!(
        slowest_us < 1_000_000,
        "every caller answered within about one load (100 ms) plus coordination: {slowest_us} µs"
    );
}

/// Steady `lock` + `shared` traffic from 4 processes; redis-server is
/// SIGSTOPped, then SIGCONTed. While frozen, calls fail open; after the
/// resume, no call waits on a lock that a timed-out `SET NX PX` left behind
/// (v1: every process waited a full 10 s lease, with no origin call).
#[test]
fn a_hung_then_resumed_redis_stalls_no_call_after_the_resume() {
    let server = RedisServer::start();
    let url = server.url();
    let name = "fleet.freeze";
    let mut pods: Vec<Pod> = (0..4)
        .map(|_| {
            Pod::start(&[
                "lockstep".to_owned(),
                url.clone(),
                name.to_owned(),
                "200".to_owned(), // ttl
                "50".to_owned(),  // load
                "10".to_owned(),  // period
                "7000".to_owned(),
            ])
        })
        .collect();
    for pod in &mut pods {
        pod.go();
    }
    std::thread::sleep(Duration::from_millis(1500));
    server.freeze();
    std::thread::sleep(Duration::from_secs(2));
    let resumed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    server.thaw();
    let mut longest_after_resume_ms = 0u64;
    for pod in &mut pods {
        loop {
            let line = pod.expect_line("");
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[0] {
                "SLOW" => {
                    let start: u64 = parts[1].parse().unwrap();
                    let took_ms = parts[2].parse::<u64>().unwrap() / 1000;
                    let end = start + took_ms;
                    if end > resumed_ms {
                        longest_after_resume_ms =
                            longest_after_resume_ms.max(end - start.max(resumed_ms));
                    }
                }
                "DONE" => break,
                _ => {}
            }
        }
    }
    eprintln!(
        "redis frozen 2 s then resumed: longest wait after the resume {longest_after_resume_ms} ms"
    );
    assert!(
        longest_after_resume_ms < 1_000,
        "a call waited {longest_after_resume_ms} ms after the resume (bound: about one load plus one command timeout)"
    );
}
