//! A fleet anyone can run: N real OS processes (default 200), each a small
//! pod with a one-thread runtime and a `#[stampede_cached]`-style cache of
//! a hot key (strategy `lock`, ttl 1 s, a 100 ms "query"), its callers
//! hitting the key in a loop through several expiries — once with each pod
//! coordinating only in process, once with `shared` on Redis.
//!
//! ```sh
//! cargo run --release --features redis --example fleet            # starts its own redis-server
//! cargo run --release --features redis --example fleet -- --redis redis://10.0.0.5:6379
//! cargo run --release --features redis --example fleet -- --redis redis://a:7000,redis://b:7001  # Cluster seeds
//! cargo run --release --features redis --example fleet -- --redis rediss://host:6380 --ca ca.pem  # TLS
//! ```
//!
//! Options: `--pods N` (200), `--seconds S` (5), `--callers C` per pod (4),
//! `--ttl-ms` (1000), `--load-ms` (100), `--svg PATH`
//! (`target/fleet.svg`), `--check` (exit non-zero unless `shared` made
//! exactly one origin call per expiry). Without `--redis` it starts a
//! `redis-server` from PATH on a free port and stops it at the end.
//!
//! It prints, per mode, the origin calls (and per expiry), the callers'
//! p50 / p99 / max latency and the fallbacks, and writes an SVG of the
//! fleet's concurrent origin calls over time (the demo's chart).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stampede_cache::redis::{RedisBackend, RedisTls};
use stampede_cache::{Cache, SharedBackend, Strategy};

#[path = "support/own_redis.rs"]
mod own_redis;
#[path = "demo/svg.rs"]
mod svg;

/// The chart's sample width.
const SAMPLE: Duration = Duration::from_millis(25);

#[derive(Clone)]
struct Args {
    pods: usize,
    seconds: u64,
    callers: usize,
    ttl_ms: u64,
    load_ms: u64,
    redis: Option<String>,
    ca: Option<String>,
    svg: String,
    check: bool,
}

fn args() -> Args {
    let mut args = Args {
        pods: 200,
        seconds: 5,
        callers: 4,
        ttl_ms: 1000,
        load_ms: 100,
        redis: None,
        ca: None,
        svg: "target/fleet.svg".to_owned(),
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |v: String| {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("not a number: {v}")))
        };
        match flag.as_str() {
            "--pods" => args.pods = number(value()) as usize,
            "--seconds" => args.seconds = number(value()),
            "--callers" => args.callers = number(value()) as usize,
            "--ttl-ms" => args.ttl_ms = number(value()),
            "--load-ms" => args.load_ms = number(value()),
            "--redis" => args.redis = Some(value()),
            "--ca" => args.ca = Some(value()),
            "--svg" => args.svg = value(),
            "--check" => args.check = true,
            other => usage(&format!("unknown option {other}")),
        }
    }
    args
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: fleet [--pods N] [--seconds S] [--callers C] [--ttl-ms T] [--load-ms L] \
         [--redis URL[,URL..]] [--ca PEM] [--svg PATH] [--check]"
    );
    std::process::exit(2);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

// ------------------------------------------------------------------ a pod

/// `fleet --pod <local|shared> <url> <ca or -> <ttl_ms> <load_ms> <callers> <seconds>`:
/// prints `READY`, reads `GO <start ms since the epoch>`, runs, then prints
/// `LOAD <start ms> <end ms>` per origin call, `LAT <µs,..>` and `DONE <fallbacks>`.
fn pod(mut argv: impl Iterator<Item = String>) {
    let mut next = || argv.next().expect("pod arguments");
    let (mode, url, ca) = (next(), next(), next());
    let [ttl_ms, load_ms, callers, seconds]: [u64; 4] =
        std::array::from_fn(|_| next().parse().expect("a number"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let backend = if mode == "shared" {
            Some(connect(&url, &ca).await)
        } else {
            None
        };
        let mut builder = Cache::builder("fleet.hot")
            .ttl(Duration::from_millis(ttl_ms))
            .strategy(Strategy::Lock);
        if let Some(backend) = &backend {
            builder = builder.backend(backend.clone());
        }
        let cache: Cache<u32, u64> = builder.build();
        println!("READY");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("stdin");
        let start: u64 = line
            .trim()
            .strip_prefix("GO ")
            .and_then(|t| t.parse().ok())
            .expect("GO <ms>");
        tokio::time::sleep(Duration::from_millis(start.saturating_sub(now_ms()))).await;
        let until = Instant::now() + Duration::from_secs(seconds);
        let loads = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < until {
                        let at = Instant::now();
                        let loads = loads.clone();
                        cache
                            .get_or_load(1, move |_| async move {
                                let began = now_ms();
                                tokio::time::sleep(Duration::from_millis(load_ms)).await;
                                loads.lock().unwrap().push((began, now_ms()));
                                began
                            })
                            .await;
                        latencies.push(at.elapsed().as_micros() as u64);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("caller"));
        }
        let mut out = std::io::stdout().lock();
        for (began, ended) in loads.lock().unwrap().iter() {
            let _ = writeln!(out, "LOAD {began} {ended}");
        }
        let joined: Vec<String> = latencies.iter().map(u64::to_string).collect();
        let _ = writeln!(out, "LAT {}", joined.join(","));
        let _ = writeln!(out, "DONE {}", cache.stats().fallbacks);
    });
}

async fn connect(url: &str, ca: &str) -> SharedBackend {
    let builder = if url.contains(',') {
        RedisBackend::cluster_builder(url.split(','))
    } else {
        RedisBackend::builder(url)
    };
    // Hundreds of pods share a laptop's cores here, not a core each: a
    // command may wait for the scheduler well past the default 250 ms
    // bound, and a pod that times out falls back to its own load.
    let builder = builder.command_timeout(Duration::from_secs(2));
    let builder = if ca == "-" {
        builder
    } else {
        let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("read the CA {ca}: {e}"));
        builder.tls(RedisTls::new().ca_pem(pem))
    };
    match builder.connect().await {
        Ok(backend) => backend.into(),
        Err(e) => {
            eprintln!("pod: cannot connect to Redis at {url}: {e}");
            std::process::exit(2);
        }
    }
}

// --------------------------------------------------------------- the fleet

struct Pod {
    child: Child,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Pod {
    fn spawn(mode: &str, url: &str, args: &Args) -> Pod {
        let mut child = Command::new(std::env::current_exe().expect("this example's path"))
            .arg("--pod")
            .args([mode, url, args.ca.as_deref().unwrap_or("-")])
            .args(
                [args.ttl_ms, args.load_ms, args.callers as u64, args.seconds]
                    .map(|n| n.to_string()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a pod");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Pod {
            child,
            stdin,
            lines,
        }
    }

    fn line(&self, within: Duration) -> String {
        self.lines.recv_timeout(within).unwrap_or_else(|_| {
            panic!("a pod said nothing for {within:?} (did it fail to connect?)")
        })
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one mode's run gave.
struct Run {
    mode: &'static str,
    /// Every origin call: start and end, ms since the run's start.
    loads: Vec<(u64, u64)>,
    latencies: Vec<u64>,
    fallbacks: u64,
}

fn run(mode: &'static str, url: &str, args: &Args) -> Run {
    let mut pods: Vec<Pod> = (0..args.pods)
        .map(|_| Pod::spawn(mode, url, args))
        .collect();
    for pod in &pods {
        assert_eq!(pod.line(Duration::from_secs(60)), "READY");
    }
    // Everyone starts at the same instant, a little from now.
    let start = now_ms() + 300;
    for pod in &mut pods {
        writeln!(pod.stdin, "GO {start}").expect("tell a pod to go");
    }
    let mut out = Run {
        mode,
        loads: Vec::new(),
        latencies: Vec::new(),
        fallbacks: 0,
    };
    let within = Duration::from_secs(args.seconds + 60);
    for pod in &pods {
        loop {
            let line = pod.line(within);
            let (tag, rest) = line.split_once(' ').unwrap_or((&line, ""));
            match tag {
                "LOAD" => {
                    let mut times = rest.split(' ').map(|t| t.parse::<u64>().expect("ms"));
                    let (began, ended) = (times.next().expect("start"), times.next().expect("end"));
                    out.loads
                        .push((began.saturating_sub(start), ended.saturating_sub(start)));
                }
                "LAT" => out.latencies.extend(
                    rest.split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse::<u64>().expect("µs")),
                ),
                "DONE" => {
                    out.fallbacks += rest.parse::<u64>().expect("fallbacks");
                    break;
                }
                other => panic!("a pod said {other:?}"),
            }
        }
    }
    out.loads.sort_unstable();
    out.latencies.sort_unstable();
    out
}

/// Origin calls per expiry: the loads, grouped into recomputes — loads that
/// start less than half a ttl after the group's first are one expiry's.
fn expiries(loads: &[(u64, u64)], ttl_ms: u64) -> Vec<usize> {
    let mut groups: Vec<(u64, usize)> = Vec::new();
    for &(began, _) in loads {
        match groups.last_mut() {
            Some((first, n)) if began < *first + ttl_ms / 2 => *n += 1,
            _ => groups.push((began, 1)),
        }
    }
    groups.into_iter().map(|(_, n)| n).collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Peak concurrent origin calls per sample.
fn concurrency(loads: &[(u64, u64)], span_ms: u64) -> Vec<usize> {
    let sample = SAMPLE.as_millis() as u64;
    (0..span_ms.div_ceil(sample))
        .map(|i| {
            let (from, to) = (i * sample, (i + 1) * sample);
            loads.iter().filter(|&&(b, e)| b < to && e >= from).count()
        })
        .collect()
}

fn main() {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("--pod") {
        argv.next();
        return pod(argv);
    }
    let args = args();
    // 2 connections per pod: past 5 000 pods Redis's default client limit
    // would refuse some.
    let own = args
        .redis
        .is_none()
        .then(|| own_redis::OwnRedis::start(&["--maxclients", "10000"]));
    let url = args
        .redis
        .clone()
        .unwrap_or_else(|| own.as_ref().expect("own").url.clone());
    println!(
        "{} pods × {} callers, key expires every {} ms, a {} ms origin call, {} s; Redis: {}",
        args.pods,
        args.callers,
        args.ttl_ms,
        args.load_ms,
        args.seconds,
        if own.is_some() {
            "its own redis-server"
        } else {
            url.as_str()
        }
    );
    let runs = [run("local", &url, &args), run("shared", &url, &args)];
    println!("\n| mode | origin calls | per expiry (min–max) | p50 | p99 | max | fallbacks |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    let mut per_expiry = HashMap::new();
    for run in &runs {
        let groups = expiries(&run.loads, args.ttl_ms);
        let (min, max) = (
            groups.iter().min().copied().unwrap_or(0),
            groups.iter().max().copied().unwrap_or(0),
        );
        println!(
            "| {} | {} | {:.1} ({min}–{max}) over {} expiries | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            if run.mode == "shared" {
                "`shared` (Redis lock)"
            } else {
                "in-process lock only"
            },
            run.loads.len(),
            run.loads.len() as f64 / groups.len().max(1) as f64,
            groups.len(),
            percentile(&run.latencies, 0.5) as f64 / 1e3,
            percentile(&run.latencies, 0.99) as f64 / 1e3,
            percentile(&run.latencies, 1.0) as f64 / 1e3,
            run.fallbacks
        );
        per_expiry.insert(run.mode, groups);
    }
    let span_ms = args.seconds * 1000 + args.load_ms;
    let series: Vec<svg::Series> = runs
        .iter()
        .map(|run| svg::Series {
            label: format!(
                "{} pods, {}",
                args.pods,
                if run.mode == "shared" {
                    "shared"
                } else {
                    "in-process lock"
                }
            ),
            queries: run.loads.len() as u64,
            points: concurrency(&run.loads, span_ms),
        })
        .collect();
    let chart = svg::chart(&series, SAMPLE, Duration::from_millis(args.ttl_ms));
    if let Some(dir) = std::path::Path::new(&args.svg).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&args.svg, chart).expect("write the chart");
    println!("\nchart: {}", args.svg);
    if args.check {
        let shared = &per_expiry["shared"];
        if shared.is_empty() || shared.iter().any(|&n| n != 1) {
            eprintln!("FAIL: `shared` made {shared:?} origin calls per expiry, not 1 each");
            drop(own); // `exit` runs no destructors: stop our redis-server first
            std::process::exit(1);
        }
        println!("OK: one origin call per expiry for the whole fleet");
    }
}
