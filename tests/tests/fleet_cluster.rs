//! The fleet on a real Redis Cluster (issue 15): three primaries with a
//! replica each, started by the harness on free ports.

use stampede_cache_tests::redis_cluster::RedisCluster;

#[test]
fn the_harness_starts_a_cluster_and_fails_a_primary_over() {
    let mut cluster = RedisCluster::start(3, 1);
    assert_eq!(cluster.len(), 6);
    let slot = cluster.slot_of("{probe}");
    let before = cluster.primary_of(slot);
    cluster.migrate_slot(slot, (before + 1) % 3);
    assert_eq!(cluster.primary_of(slot), (before + 1) % 3);
    let killed = cluster.fail_over(slot);
    assert_ne!(cluster.primary_of(slot), killed);
}
