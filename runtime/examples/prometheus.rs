//! Prometheus metrics of the caches of a process, served on a tiny HTTP
//! endpoint: `cargo run --features metrics --example prometheus`, then
//! `curl http://127.0.0.1:9898/metrics` (or point Prometheus at it).
//!
//! The recorder is `metrics-exporter-prometheus`; stampede-cache's counters
//! are published to it at each scrape (`stampede_cache::metrics::report`),
//! histograms as they happen. A background workload keeps a cache busy:
//! a hot key that expires every second, a cold key per request, now and
//! then a failing load.
//!
//! `--check` scrapes the endpoint once after a short workload and exits
//! non-zero unless the page shows the loads, hits, coalesced callers and
//! load durations of the example's cache. `--port N` (default 9898; 0 picks
//! a free one).

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use stampede_cache::Cache;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves `GET /metrics` (any path, in fact) with the text format.
async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            stampede_cache::metrics::report();
            let body = handle.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// The example's traffic on cache `example.users`.
async fn workload(cache: Cache<u64, String>, rounds: u64) {
    for round in 0..rounds {
        let callers: Vec<_> = (0..20)
            .map(|caller| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let key = if caller % 2 == 0 { 42 } else { 1000 + round };
                    let _ = cache
                        .try_get_or_load(key, move |id| async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if id % 7 == 0 && id != 42 {
                                Err("the database said no".to_owned())
                            } else {
                                Ok(format!("user {id}"))
                            }
                        })
                        .await;
                })
            })
            .collect();
        for caller in callers {
            let _ = caller.await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut page = String::new();
    stream.read_to_string(&mut page).await.expect("read");
    page
}

#[tokio::main]
async fn main() {
    let mut port = 9898u16;
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port N"),
            other => {
                eprintln!("unknown option {other}; usage: prometheus [--port N] [--check]");
                std::process::exit(2);
            }
        }
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("install the Prometheus recorder");
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(serve(listener, handle));
    let cache: Cache<u64, String> = Cache::builder("example.users")
        .ttl(Duration::from_secs(1))
        .build();
    if !check {
        println!("metrics on http://127.0.0.1:{port}/metrics (Ctrl-C to stop)");
        workload(cache, u64::MAX).await;
        return;
    }
    workload(cache.clone(), 10).await;
    let page = scrape(port).await;
    let stats = cache.stats();
    let expected = [
        format!(
            "stampede_cache_loads_total{{cache=\"example.users\"}} {}",
            stats.loads
        ),
        format!(
            "stampede_cache_hits_total{{cache=\"example.users\"}} {}",
            stats.hits
        ),
        format!(
            "stampede_cache_coalesced_total{{cache=\"example.users\"}} {}",
            stats.coalesced
        ),
        format!(
            "stampede_cache_load_errors_total{{cache=\"example.users\"}} {}",
            stats.load_errors
        ),
        "stampede_cache_load_seconds_count{cache=\"example.users\",outcome=\"ok\",batch=\"false\"}"
            .to_owned(),
        "stampede_cache_wait_seconds".to_owned(),
        "stampede_cache_entries{cache=\"example.users\"}".to_owned(),
    ];
    let missing: Vec<&String> = expected
        .iter()
        .filter(|line| !page.contains(line.as_str()))
        .collect();
    let shown: Vec<&str> = page
        .lines()
        .filter(|l| l.contains("example.users") && !l.starts_with('#'))
        .take(12)
        .collect();
    println!("{}", shown.join("\n"));
    if !missing.is_empty() || stats.loads == 0 || stats.coalesced == 0 {
        eprintln!("FAIL: the page lacks {missing:?} (stats {stats:?})");
        std::process::exit(1);
    }
    println!("OK: the scrape shows the cache's counters and histograms");
}
