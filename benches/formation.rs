//! Benchmark: zero-configuration formation. Three agents with no cluster flags are started at
//! the same instant in three lab hosts (fresh data dirs, a cluster name per trial); the time
//! is from the start until every node's `quorate status` shows one cluster with one leader and
//! three voters. Ten trials; the timeline of the median trial (the first time each node logged
//! each message, from the JSON logs) shows where the time goes. Writes
//! `benches/results/formation.md`.
//!
//! Run as root: `cargo bench --bench formation`. Needs `ip` and `nft` (see README).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::formation::{Trial, trial};
use support::lab::Lab;

const TRIALS: usize = 10;

fn main() {
    let mut lab = Lab::new(3);
    let mut trials: Vec<Trial> = (0..TRIALS).map(|r| trial(&mut lab, r)).collect();
    trials.sort_by_key(|t| t.took);
    let secs = |d: Duration| d.as_secs_f64();
    let pick = |p: f64| secs(trials[((trials.len() as f64 - 1.0) * p).round() as usize].took);
    let mut report = String::from(
        "# Zero-configuration formation\n\n\
         `cargo bench --bench formation`, as root, LAN lab, release build, on a 2-core machine:\n\
         three agents with no cluster flags started at the same instant in three lab hosts\n\
         (fresh data dirs, a cluster name per trial); seconds from the start until every node's\n\
         `quorate status` shows one cluster, one leader and three voters (polled every 25 ms).\n\n\
         | trials | median s | p99 s | min s | max s | goal |\n|---|---|---|---|---|---|\n",
    );
    let _ = writeln!(
        report,
        "| {} | {:.2} | {:.2} | {:.2} | {:.2} | median <= 2.0, p99 <= 2.5 |",
        trials.len(),
        pick(0.5),
        pick(0.99),
        pick(0.0),
        pick(1.0)
    );
    let _ = writeln!(
        report,
        "\nAll trials (s): {}\n",
        trials
            .iter()
            .map(|t| format!("{:.2}", secs(t.took)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let median = &trials[trials.len() / 2];
    let _ = writeln!(
        report,
        "## Timeline of the median trial ({:.2} s)\n\nThe first time each node logged each \
         message, in ms from the start of the trial (from the agents' JSON logs).\n",
        secs(median.took)
    );
    for (name, events) in &median.timeline {
        let _ = writeln!(report, "### {name}\n\n| ms | message |\n|---|---|");
        for (ms, msg) in events {
            let _ = writeln!(report, "| {ms:.0} | {} |", msg.replace('|', "/"));
        }
        report.push('\n');
    }
    print!("{report}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/formation.md");
    std::fs::write(path, &report).expect("write results");
    println!("wrote {path}");
}
