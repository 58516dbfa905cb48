//! Resilience: the nemesis against 5 voters and 3 storage learners for 60 s while clients
//! write, and the checker's verdict (see `support::nemesis`).

use std::time::Duration;

use crate::support::nemesis::{Cluster, Plan, SEED_VAR, run};

/// Under kill -9 (of the leader, of any node, of all), cuts, silent blackholes (of the leader,
/// of the leader and another voter), random loss on every host (also with a leader kill), one
/// at a time with a heal between, for 60 s, while four clients write through two voters' and
/// two storage nodes' APIs: never two leaders in one term, no acknowledged write lost, and
/// one leader, the whole membership and every node caught up within 5 s of each heal. The
/// fault choices come from a seed, printed, that `NEMESIS_SEED` sets to replay them.
#[test]
fn the_cluster_survives_the_nemesis_without_a_violation() {
    let plan = Plan::new(Duration::from_secs(60));
    let mut cluster = Cluster::form();
    let verdict = run(&mut cluster, &plan);
    println!("{}", verdict.summary());
    assert!(
        verdict.violations.is_empty(),
        "the checker found violations (replay with {SEED_VAR}={}):\n{}",
        verdict.seed,
        verdict.summary()
    );
    assert!(
        verdict.acknowledged > 0 && !verdict.faults.is_empty(),
        "the run wrote and faulted nothing: {}",
        verdict.summary()
    );
}
