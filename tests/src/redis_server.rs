//! A real `redis-server` for the fleet tests: started on a free port (never
//! 6379) with persistence off, killed on drop, killable and restartable to
//! inject faults. If it cannot be started the test panics — fleet tests never
//! skip for want of Redis.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child process.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// With [`RedisServer::start_tls`]: the TLS port and its certificates.
    tls: Option<Tls>,
    /// More `redis-server` arguments (a cluster node's).
    extra: Vec<String>,
}

/// A TLS listener's port and the files made for it: a CA the test made,
/// and a server certificate it signed for `localhost` and `127.0.0.1`.
struct Tls {
    port: u16,
    dir: PathBuf,
    /// Whether this server made `dir` (a cluster's nodes share their CA's).
    owns_dir: bool,
}

impl Drop for Tls {
    fn drop(&mut self) {
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `openssl` with `args` in `dir`, panicking with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): the TLS tests need it (apt-get install openssl)")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` arguments for a new unencrypted P-256 key.
const NEW_EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// Makes a self-signed CA `<name>.crt`/`<name>.key` in `dir` (P-256).
pub fn make_ca(dir: &Path, name: &str) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &NEW_EC_KEY,
            &["-keyout", &key, "-out", &crt, "-days", "2"],
            &["-subj", &format!("/CN={name}")],
        ]
        .concat(),
    );
}

fn make_server_cert(dir: &Path) {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            &["req"][..],
            &NEW_EC_KEY,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// A CA and a server certificate it signed (for `localhost` and
/// `127.0.0.1`) in `dir`, as a TLS server of the tests serves them.
pub fn make_tls_files(dir: &Path) {
    make_ca(dir, "ca");
    make_server_cert(dir);
}

/// A fresh directory under the system's temp dir.
pub fn temp_dir(what: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("stampede-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

impl RedisServer {
    /// Starts redis-server on a free port and waits until it answers PING.
    ///
    /// # Panics
    /// If redis-server is missing or does not answer within 10 s.
    pub fn start() -> Self {
        let port = free_port();
        let mut server = Self {
            port,
            child: None,
            tls: None,
            extra: Vec::new(),
        };
        server.spawn();
        server
    }

    /// Starts redis-server with a TLS port too (`--tls-port`), serving a
    /// certificate signed by a CA this call makes (see [`Self::ca_pem`]);
    /// the plaintext port stays open for the test's own set-up (ACL users).
    ///
    /// # Panics
    /// If openssl is missing, or redis-server was built without TLS.
    pub fn start_tls() -> Self {
        let dir = temp_dir("tls");
        make_ca(&dir, "ca");
        make_server_cert(&dir);
        let mut server = Self {
            port: free_port(),
            child: None,
            tls: Some(Tls {
                port: free_port(),
                dir,
                owns_dir: true,
            }),
            extra: Vec::new(),
        };
        server.spawn();
        server
    }

    /// `rediss://localhost:<tls port>/` (with [`Self::start_tls`]).
    pub fn tls_url(&self) -> String {
        let tls = self.tls.as_ref().expect("started with start_tls");
        format!("rediss://localhost:{}/", tls.port)
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> Vec<u8> {
        let tls = self.tls.as_ref().expect("started with start_tls");
        std::fs::read(tls.dir.join("ca.crt")).expect("read ca.crt")
    }

    /// A cluster node (`--cluster-enabled yes`, its `nodes.conf` in `dir`,
    /// failures detected after `node_timeout`), started on a free port.
    /// See [`crate::redis_cluster::RedisCluster`].
    /// With `tls` (a directory holding `ca.crt`, `server.crt`, `server.key`
    /// as [`Self::start_tls`] makes them), clients and the cluster bus speak
    /// TLS, and the node advertises its TLS port.
    pub fn start_cluster_node(
        dir: &Path,
        node_timeout: Duration,
        tls: Option<&Path>,
        more: &[&str],
    ) -> Self {
        let (port, bus) = (free_port(), free_port());
        let conf = dir.join(format!("nodes-{port}.conf")).display().to_string();
        let tls = tls.map(|dir| Tls {
            port: free_port(),
            dir: dir.to_owned(),
            owns_dir: false,
        });
        let tls_cluster: &[&str] = if tls.is_some() {
            &["--tls-cluster", "yes", "--tls-replication", "yes"]
        } else {
            &[]
        };
        let mut server = Self {
            port,
            child: None,
            tls,
            extra: [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                &node_timeout.as_millis().to_string(),
                // Explicit: port + 10000 may not exist for an ephemeral port.
                "--cluster-port",
                &bus.to_string(),
                "--dir",
                &dir.display().to_string(),
            ]
            .iter()
            .chain(tls_cluster)
            .chain(more)
            .map(|a| a.to_string())
            .collect(),
        };
        server.spawn();
        server
    }

    /// Sends one command on the plaintext port as the default user and
    /// returns its whole reply as text: a status or error line (`+OK`,
    /// `-ERR ...`), an integer (`:1`), or a bulk string's contents.
    pub fn query(&self, args: &[&str]) -> String {
        let mut stream = self.send(args);
        let line = read_line(&mut stream);
        read_element(&mut stream, line)
    }

    /// Like [`Self::query`], for an array reply: each element's text (a
    /// bulk string's contents, `:3` for an integer).
    pub fn query_lines(&self, args: &[&str]) -> Vec<String> {
        let mut stream = self.send(args);
        let head = read_line(&mut stream);
        let count: usize = head
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{args:?}: not an array reply: {head}"));
        (0..count)
            .map(|_| {
                let line = read_line(&mut stream);
                read_element(&mut stream, line)
            })
            .collect()
    }

    /// A connection to the plaintext port with `args` sent on it.
    fn send(&self, args: &[&str]) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        stream.write_all(&resp_request(args)).expect("send");
        stream
    }

    /// Sends one command on the plaintext port as the default user and
    /// returns the first line of the reply (e.g. `+OK`).
    pub fn command(&self, args: &[&str]) -> String {
        read_line(&mut self.send(args))
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster bus port of a node started with [`Self::start_cluster_node`].
    pub fn bus_port(&self) -> Option<u16> {
        let at = self.extra.iter().position(|a| a == "--cluster-port")?;
        self.extra.get(at + 1)?.parse().ok()
    }

    /// Whether the server process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is
    /// answered — a hung or overloaded Redis, not a refused one.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} redis-server");
    }

    /// Starts the server again on the same port (empty: persistence is off).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut command = Command::new(&bin);
            command.args(["--port", &self.port.to_string()]).args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            command.args(&self.extra);
            if let Some(tls) = &self.tls {
                let file = |name: &str| tls.dir.join(name).display().to_string();
                command
                    .args(["--tls-port", &tls.port.to_string()])
                    .args(["--tls-cert-file", &file("server.crt")])
                    .args(["--tls-key-file", &file("server.key")])
                    .args(["--tls-ca-cert-file", &file("ca.crt")])
                    .args(["--tls-auth-clients", "no"]);
            }
            let child = command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start `{bin}` ({e}): the fleet tests need redis-server \
                         (apt-get install redis-server, or set REDIS_SERVER)"
                    )
                });
            self.child = Some(child);
            while Instant::now() < deadline {
                if ping(self.port) {
                    return;
                }
                if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                    break; // exited (port reused after a restart?): retry
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            self.kill();
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn resp_request(args: &[&str]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    request.into_bytes()
}

/// One reply element whose first line is `line`: a bulk string's contents
/// (read from `stream`; nil is empty), or the line itself.
fn read_element(stream: &mut TcpStream, line: String) -> String {
    match line.strip_prefix('$').map(str::parse::<usize>) {
        Some(Ok(len)) => {
            let mut body = vec![0u8; len + 2];
            stream.read_exact(&mut body).expect("read a bulk reply");
            body.truncate(len);
            String::from_utf8_lossy(&body).into_owned()
        }
        Some(Err(_)) => String::new(), // $-1: nil
        None => line,
    }
}

fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

pub(crate) fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        if port != 6379 {
            return port;
        }
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
