//! A real Redis Cluster for the fleet tests: `redis-server` nodes started
//! with `--cluster-enabled` on free ports (client and bus ports both chosen,
//! never 6379), slots assigned and replicas attached by the harness itself
//! (no `redis-cli`), killed on drop. A primary can be killed to make its
//! replica take over, a node restarted, a slot migrated.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::redis_server::{RedisServer, make_tls_files, temp_dir};

/// How long a node waits before it declares a silent peer failed.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(500);

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    dir: PathBuf,
    /// With [`RedisCluster::start_tls`]: the CA and server certificate.
    tls: Option<PathBuf>,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(tls) = &self.tls {
            let _ = std::fs::remove_dir_all(tls);
        }
    }
}

impl RedisCluster {
    /// `primaries` primaries sharing the slots evenly, each with `replicas`
    /// replicas; returns once every node reports `cluster_state:ok` and
    /// every replica is in sync.
    pub fn start(primaries: usize, replicas: usize) -> Self {
        Self::form(primaries, replicas, None, &[])
    }

    /// As [`Self::start`], with `cluster-require-full-coverage no`: while a
    /// slot has no primary the other shards keep answering (Redis's
    /// default refuses every command on every node then: CLUSTERDOWN).
    pub fn start_partial_coverage(primaries: usize, replicas: usize) -> Self {
        Self::form(
            primaries,
            replicas,
            None,
            &["--cluster-require-full-coverage", "no"],
        )
    }

    /// As [`Self::start`], every node serving TLS (clients, bus and
    /// replication) with a certificate signed by a CA this call makes
    /// ([`Self::ca_pem`]); set-up goes over the plaintext ports.
    pub fn start_tls(primaries: usize, replicas: usize) -> Self {
        let tls = temp_dir("cluster-tls");
        make_tls_files(&tls);
        Self::form(primaries, replicas, Some(tls), &[])
    }

    fn form(primaries: usize, replicas: usize, tls: Option<PathBuf>, more: &[&str]) -> Self {
        assert!(primaries >= 1);
        let dir = temp_dir("cluster");
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| RedisServer::start_cluster_node(&dir, NODE_TIMEOUT, tls.as_deref(), more))
            .collect();
        let cluster = Self { nodes, dir, tls };
        let per = SLOTS as usize / primaries;
        for i in 0..primaries {
            let lo = i * per;
            let hi = if i + 1 == primaries {
                SLOTS as usize - 1
            } else {
                lo + per - 1
            };
            let reply = cluster.nodes[i].query(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &lo.to_string(),
                &hi.to_string(),
            ]);
            assert_eq!(reply, "+OK", "ADDSLOTSRANGE on node {i}");
        }
        for node in &cluster.nodes[1..] {
            let bus = node.bus_port().expect("a cluster node").to_string();
            let reply = cluster.nodes[0].query(&[
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                &node.port().to_string(),
                &bus,
            ]);
            assert_eq!(reply, "+OK", "CLUSTER MEET");
        }
        cluster.wait_until("every node knows every other", |c| {
            c.nodes
                .iter()
                .all(|n| n.query(&["CLUSTER", "NODES"]).lines().count() == c.nodes.len())
        });
        for r in 0..replicas {
            for p in 0..primaries {
                let replica = primaries * (1 + r) + p;
                let id = cluster.nodes[p].query(&["CLUSTER", "MYID"]);
                let reply = cluster.nodes[replica].query(&["CLUSTER", "REPLICATE", &id]);
                assert_eq!(reply, "+OK", "CLUSTER REPLICATE");
            }
        }
        cluster.wait_until("the cluster is ok and replicas in sync", |c| {
            c.nodes
                .iter()
                .all(|n| n.query(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                && c.nodes[primaries..].iter().all(|n| {
                    n.query(&["INFO", "replication"])
                        .contains("master_link_status:up")
                })
        });
        cluster
    }

    /// One seed URL per node (a client given any of them finds the rest).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(RedisServer::url)
            .collect()
    }

    /// One `rediss://localhost:<tls port>/` seed URL per running node.
    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(RedisServer::tls_url)
            .collect()
    }

    /// The PEM of the CA that signed the nodes' certificate.
    pub fn ca_pem(&self) -> Vec<u8> {
        let dir = self.tls.as_ref().expect("started with start_tls");
        std::fs::read(dir.join("ca.crt")).expect("read ca.crt")
    }

    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The hash slot of `key` (its `{hash tag}` if it has one), as a
    /// running node computes it.
    pub fn slot_of(&self, key: &str) -> u16 {
        let any = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a node runs");
        any.query(&["CLUSTER", "KEYSLOT", key])
            .trim_start_matches(':')
            .parse()
            .expect("a slot")
    }

    /// The running node that is the primary of `slot` now.
    pub fn primary_of(&self, slot: u16) -> usize {
        let mut found = None;
        self.wait_until("a primary serves the slot", |c| {
            found = c.find_primary(slot);
            found.is_some()
        });
        found.expect("found")
    }

    fn find_primary(&self, slot: u16) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.is_running() && {
                let myself = n.query(&["CLUSTER", "NODES"]);
                myself.lines().any(|line| {
                    let fields: Vec<&str> = line.split(' ').collect();
                    fields.len() > 8
                        && fields[2].contains("myself")
                        && fields[2].contains("master")
                        && fields[8..].iter().any(|range| covers(range, slot))
                })
            }
        })
    }

    /// Kills the primary of `slot` (SIGKILL) and waits until one of its
    /// replicas has been promoted and the cluster is ok again. Returns the
    /// killed node's index.
    pub fn fail_over(&mut self, slot: u16) -> usize {
        let old = self.primary_of(slot);
        self.nodes[old].kill();
        self.wait_until("a replica took over the slot", |c| {
            c.find_primary(slot).is_some_and(|p| p != old)
        });
        self.wait_until("the cluster is ok after the failover", |c| {
            c.nodes
                .iter()
                .filter(|n| n.is_running())
                .all(|n| n.query(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        old
    }

    /// Moves `slot` (with its keys) from its primary to primary `to`,
    /// the way `redis-cli --cluster reshard` does: IMPORTING/MIGRATING,
    /// MIGRATE of each key, then NODE on every primary.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let from = self.primary_of(slot);
        assert_ne!(from, to, "slot {slot} is on node {to} already");
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        let (src_id, dst_id) = (
            src.query(&["CLUSTER", "MYID"]),
            dst.query(&["CLUSTER", "MYID"]),
        );
        let s = slot.to_string();
        assert_eq!(
            dst.query(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &src_id]),
            "+OK"
        );
        assert_eq!(
            src.query(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst_id]),
            "+OK"
        );
        loop {
            let keys = src.query_lines(&["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
            if keys.is_empty() {
                break;
            }
            let mut args: Vec<String> = [
                "MIGRATE",
                "127.0.0.1",
                &dst.port().to_string(),
                "",
                "0",
                "5000",
                "KEYS",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            args.extend(keys);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let reply = src.query(&args);
            assert!(reply == "+OK" || reply == "+NOKEY", "MIGRATE: {reply}");
        }
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let reply = node.query(&["CLUSTER", "SETSLOT", &s, "NODE", &dst_id]);
            assert!(
                reply == "+OK" || reply.starts_with("-ERR"),
                "SETSLOT NODE: {reply}"
            );
        }
        self.wait_until("every node agrees on the slot's new owner", |c| {
            c.find_primary(slot) == Some(to)
        });
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub fn wait_ok(&self) {
        self.wait_until("the cluster is ok", |c| {
            c.nodes
                .iter()
                .filter(|n| n.is_running())
                .all(|n| n.query(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "redis cluster: {what}: not within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a `CLUSTER NODES` slot field (`5461-10922`, `42`, or a
/// `[slot->-id]` migration marker) covers `slot`.
fn covers(range: &str, slot: u16) -> bool {
    if range.starts_with('[') {
        return false;
    }
    match range.split_once('-') {
        Some((lo, hi)) => {
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
        }
        None => range.parse::<u16>() == Ok(slot),
    }
}
