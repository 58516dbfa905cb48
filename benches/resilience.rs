//! Benchmark: the nemesis against 5 voters and 3 storage learners in the LAN lab, for 10
//! minutes, while four clients write (see `tests/support/nemesis.rs`). Writes
//! `benches/results/resilience.md`: the faults by kind, the terms, the writes attempted and
//! acknowledged, the violations, and the convergence time after each heal.
//!
//! Run as root: `cargo bench --bench resilience`. `RESILIENCE_SECS` sets the duration (600 by
//! default), `NEMESIS_SEED` the seed of the fault choices.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::Duration;

use support::http::Stats;
use support::nemesis::{Cluster, FaultKind, Plan, run};

fn main() {
    let secs = std::env::var("RESILIENCE_SECS")
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .unwrap_or_else(|e| panic!("RESILIENCE_SECS={s:?}: {e}"))
        })
        .unwrap_or(600);
    let plan = Plan::new(Duration::from_secs(secs));
    let mut cluster = Cluster::form();
    let verdict = run(&mut cluster, &plan);
    println!("{}", verdict.summary());

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/resilience.md");
    let mut r = String::new();
    let _ = writeln!(
        r,
        "# Resilience: the nemesis and the checker\n\n`cargo bench --bench resilience`, as root, release build, LAN lab on a 2-core machine (every agent, the clients and the samplers share its 2 cores). 5 voters and 3 storage learners (joined with one storage token); {} s of faults, one at a time, each held 1.5 to 4 s, then healed, then the cluster given time to converge, then 0.5 to 1.5 s of quiet. Four clients (through 2 voters' and 2 storage nodes' HTTP APIs) write one label value after another, every {} ms, retrying a failed write with the same value; every host's `/v1/status` is sampled every {} ms. Seed {} (`NEMESIS_SEED={}` replays the fault choices, not the timings).\n",
        secs,
        plan.pace.as_millis(),
        plan.sample_every.as_millis(),
        verdict.seed,
        verdict.seed
    );
    let _ = writeln!(
        r,
        "## Verdict\n\n| violations | faults | terms with a leader | terms shared by two leaders | writes attempted | acknowledged | failed requests (retried) | status samples |\n|---|---|---|---|---|---|---|---|\n| {} | {} | {} (up to term {}) | {} | {} | {} | {} | {} |\n",
        verdict.violations.len(),
        verdict.faults.len(),
        verdict.terms.len(),
        verdict.terms.keys().last().copied().unwrap_or(0),
        verdict.shared_terms.len(),
        verdict.attempted,
        verdict.acknowledged,
        verdict.failed_requests,
        verdict.samples
    );
    if !verdict.write_ms.is_empty() {
        let ms = Stats(verdict.write_ms.clone());
        let _ = writeln!(
            r,
            "A value's first request to its acknowledgement, retries included: median {:.1} ms, p99 {:.1} ms, max {:.1} ms.\n",
            ms.pct(0.5),
            ms.pct(0.99),
            ms.pct(1.0)
        );
    }
    for t in &verdict.shared_terms {
        let _ = writeln!(
            r,
            "- shared term (openraft's leader id is term and node id): {t}"
        );
    }
    for v in &verdict.violations {
        let _ = writeln!(r, "- VIOLATION: {v}");
    }
    if !verdict.violations.is_empty() || !verdict.shared_terms.is_empty() {
        r.push('\n');
    }
    let _ = writeln!(
        r,
        "## Convergence after each heal\n\nFrom the heal (the restart, the cable plugged back, the rules removed) until every node's status shows one leader in one term, the 5 voters and 3 learners, a commit index at least the leader's first after the heal, and every write acknowledged before the heal; the bound is {:?}. Seconds:\n\n| faults | heals | median s | p99 s | min s | max s |\n|---|---|---|---|---|---|",
        plan.bound
    );
    let by_kind = verdict.by_kind();
    for kind in FaultKind::ALL {
        let times: Vec<f64> = verdict
            .faults
            .iter()
            .filter(|f| f.kind == kind)
            .filter_map(|f| f.converged.map(|d| d.as_secs_f64()))
            .collect();
        let injected = by_kind.get(&kind).copied().unwrap_or(0);
        if times.is_empty() {
            let _ = writeln!(
                r,
                "| {} ({injected} injected) | 0 | - | - | - | - |",
                kind.name()
            );
        } else {
            let label = format!("{} ({injected} injected)", kind.name());
            let _ = writeln!(r, "{}", Stats(times).row(&label, 2));
        }
    }
    let all = verdict.convergence_secs();
    if !all.is_empty() {
        let _ = writeln!(r, "{}", Stats(all).row("**all**", 2));
    }
    let _ = writeln!(
        r,
        "\n## Faults\n\n| at s | fault | target | healed at s | converged ms |\n|---|---|---|---|---|"
    );
    for f in &verdict.faults {
        let _ = writeln!(
            r,
            "| {:.1} | {} | {} | {:.1} | {} |",
            f.at.as_secs_f64(),
            f.kind.name(),
            f.target,
            f.healed.as_secs_f64(),
            f.converged.map_or("never".to_string(), |d| format!(
                "{:.0}",
                d.as_secs_f64() * 1000.0
            ))
        );
    }
    std::fs::write(path, &r).expect("write results");
    println!("wrote {path}");
}
