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
    fn spawn(url: &str, name: &str, callers: usize, lock_ttl_ms: u64, load_ms: u64) -> Pod {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pod"))
            .args([url, name, "hot-key"])
            .args([
                callers.to_string(),
                lock_ttl_ms.to_string(),
                load_ms.to_string(),
            ])
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

    fn go(&mut self) {
        writeln!(self.stdin, "go").unwrap();
        self.stdin.flush().unwrap();
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
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("GET")
        .arg(format!("origin:{name}:hot-key"))
        .query::<Option<u64>>(&mut con)
        .unwrap()
        .unwrap_or(0)
}

#[test]
fn eight_processes_times_a_hundred_callers_make_one_origin_call() {
    let server = RedisServer::start();
    let url = server.url();
    let mut pods: Vec<Pod> = (0..8)
        .map(|_| Pod::spawn(&url, "fleet.8x100", 100, 2_000, 200))
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
    let origin = origin_calls(&url, "fleet.8x100");
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
