//! A `redis-server` of the example's (or benchmark's) own, from PATH, on a
//! free port with persistence off; stopped on drop. Shared by
//! `examples/fleet.rs` and `benches/shared.rs` through `#[path]`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OwnRedis {
    child: Child,
    /// `redis://127.0.0.1:<port>/`.
    pub url: String,
}

impl OwnRedis {
    /// Starts it (with `extra` arguments) and waits until it accepts
    /// connections; exits the process with a message if it cannot.
    pub fn start(extra: &[&str]) -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                eprintln!("cannot start redis-server ({e}): install it, or give a Redis URL");
                std::process::exit(2);
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        OwnRedis {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
