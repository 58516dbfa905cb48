//! Benchmark: gossip failure detection and accuracy in the LAN lab. Writes
//! `benches/results/gossip.md`.
//!
//! - detect: N agents (N = 5, 10 and 60); kill -9 one; time until every survivor's
//!   `/v1/members` reports it failed. Repeated, with the victim restarted in between. Also with
//!   chitchat's own timing defaults (1 s rounds, phi 8) for comparison.
//! - rest: gossip bytes per second per node at rest.
//! - accuracy: 5 agents, 5% random packet loss on every host, 10 minutes, no node killed:
//!   count `failed` reports (from every agent's log, so that no flap is missed).
//!
//! Run as root: `cargo bench --bench gossip` (all parts, about 15 minutes), or name parts:
//! `cargo bench --bench gossip -- detect rest`.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::detection::{detect, start};
use support::http::get;
use support::lab::Lab;

const TRIALS: usize = 12;

fn rest(n: usize) -> (f64, f64) {
    let mut lab = Lab::new(n);
    start(&mut lab, n, None);
    let window = Duration::from_secs(10);
    let read = |lab: &Lab| -> Vec<(u64, u64)> {
        (0..n)
            .map(|i| {
                let m = get(lab, i, "/v1/metrics").expect("metrics");
                (
                    m["gossip"]["bytes_out"].as_u64().unwrap_or(0),
                    m["gossip"]["bytes_in"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let a = read(&lab);
    let t = Instant::now();
    std::thread::sleep(window); // the measurement window itself
    let b = read(&lab);
    let secs = t.elapsed().as_secs_f64();
    let out: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (y.0 - x.0) as f64)
        .sum::<f64>()
        / n as f64
        / secs;
    let inb: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (y.1 - x.1) as f64)
        .sum::<f64>()
        / n as f64
        / secs;
    (out, inb)
}

fn accuracy(minutes: u64) -> (usize, usize) {
    let n = 5;
    let mut lab = Lab::new(n);
    let procs = start(&mut lab, n, None);
    for i in 0..n {
        lab.drop_share(i, 5);
    }
    let count = |lab: &Lab| -> usize {
        procs
            .iter()
            .map(|p| {
                lab.log_events(*p, "gossip member")
                    .iter()
                    .filter(|e| e["event"] == "failed")
                    .count()
            })
            .sum()
    };
    let before = count(&lab);
    let end = Instant::now() + Duration::from_secs(60 * minutes);
    let mut polls_with_failed = 0;
    while Instant::now() < end {
        for i in 0..n {
            let rows = get(&lab, i, "/v1/members");
            if rows.is_some_and(|rows| {
                rows.as_array()
                    .is_some_and(|r| r.iter().any(|m| m["status"] != "alive"))
            }) {
                polls_with_failed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(500)); // polling period of the observation
    }
    (count(&lab) - before, polls_with_failed)
}

fn main() {
    let want = common::parts();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/gossip.md");
    let mut report = String::from(
        "# Gossip: failure detection, accuracy, traffic\n\n`cargo bench --bench gossip`, as root, LAN lab (network namespaces on one bridge), 2-core machine.\n\n",
    );
    if want("detect") {
        report.push_str(&format!(
            "## Failure detection\n\nkill -9 one agent; seconds until every survivor's `/v1/members` reports it `failed` \
             ({TRIALS} trials each, the victim restarted between trials).\n\n\
             | setting | trials | median s | p99 s | min s | max s |\n|---|---|---|---|---|---|\n"
        ));
        for n in [5usize, 10, 60] {
            let s = detect(n, None, TRIALS);
            println!("{}", s.row(&format!("N={n}"), 2));
            let _ = writeln!(
                report,
                "{}",
                s.row(
                    &format!("quorate defaults (200 ms rounds, phi 6), N = {n}"),
                    2
                )
            );
        }
        let chitchat = "[gossip]\ninterval = \"1s\"\nphi_threshold = 8.0\n";
        let s = detect(5, Some(chitchat), TRIALS);
        println!("{}", s.row("chitchat defaults N=5", 2));
        let _ = writeln!(
            report,
            "{}",
            s.row("chitchat's defaults (1 s rounds, phi 8), N = 5", 2)
        );
        report.push('\n');
    }
    if want("rest") {
        report.push_str("## Traffic at rest\n\nMean gossip bytes per second per node over 10 s, sealed off (open mode), quorate defaults.\n\n| N | out B/s | in B/s |\n|---|---|---|\n");
        for n in [5usize, 10] {
            let (o, i) = rest(n);
            println!("rest N={n}: out {o:.0} B/s, in {i:.0} B/s");
            let _ = writeln!(report, "| {n} | {o:.0} | {i:.0} |");
        }
        report.push('\n');
    }
    if want("accuracy") {
        let minutes = std::env::var("GOSSIP_ACCURACY_MINUTES")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(10);
        let (failed, polls) = accuracy(minutes);
        println!(
            "accuracy: {failed} failed reports, {polls} polls with a non-alive member, {minutes} min"
        );
        let _ = writeln!(
            report,
            "## Accuracy under loss\n\n5 agents, 5% random loss on every host (in and out, nftables), {minutes} minutes, no node killed.\n\n\
             | failed reports (all agents' logs) | polls (every 0.5 s, every host) showing a non-alive member |\n|---|---|\n| {failed} | {polls} |\n"
        );
    }
    std::fs::write(path, &report).expect("write results");
    println!("wrote {path}");
}
