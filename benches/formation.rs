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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use support::agents::status;
use support::lab::{Lab, ProcId};
use support::wait;

const TRIALS: usize = 10;

/// One trial: how long formation took, and what each node logged when.
struct Trial {
    took: Duration,
    /// Per node name: (ms since the start, message), first occurrence of each message.
    timeline: BTreeMap<String, Vec<(f64, String)>>,
}

/// Whether every host shows one cluster, one leader and three voters.
fn formed(lab: &Lab) -> Result<(), String> {
    let views: Vec<Value> = (0..3)
        .map(|i| status(lab, i).map_err(|e| format!("host {i}: {e}")))
        .collect::<Result<_, _>>()?;
    let ids: Vec<&str> = views
        .iter()
        .map(|v| v["cluster_id"].as_str().unwrap_or(""))
        .collect();
    let voters = |v: &Value| {
        v["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["suffrage"] == "voter").count())
    };
    let leaders: Vec<&str> = views
        .iter()
        .map(|v| v["leader_id"].as_str().unwrap_or(""))
        .collect();
    if views.iter().all(|v| voters(v) == 3)
        && ids.iter().all(|i| *i == ids[0])
        && leaders.iter().all(|l| !l.is_empty() && *l == leaders[0])
    {
        Ok(())
    } else {
        Err(format!("clusters {ids:?}, leaders {leaders:?}"))
    }
}

/// The first time each message appears in a process's JSON log, in ms after `start`.
fn timeline(lab: &Lab, p: ProcId, start: SystemTime) -> Vec<(f64, String)> {
    let mut seen: Vec<(f64, String)> = Vec::new();
    for line in lab.log(p).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(ts), Some(msg)) = (v["timestamp"].as_str(), v["message"].as_str()) else {
            continue;
        };
        let Ok(at) = humantime::parse_rfc3339_weak(ts) else {
            continue;
        };
        let ms = match at.duration_since(start) {
            Ok(d) => d.as_secs_f64() * 1000.0,
            Err(e) => -(e.duration().as_secs_f64() * 1000.0),
        };
        if !seen.iter().any(|(_, m)| m == msg) {
            seen.push((ms, msg.to_string()));
        }
    }
    seen
}

fn trial(lab: &mut Lab, round: usize) -> Trial {
    let start_wall = SystemTime::now();
    let start = Instant::now();
    let procs: Vec<(String, ProcId)> = (0..3)
        .map(|i| {
            let data = lab.host_dir(i).join(format!("data-{round}"));
            let data = data.to_str().expect("utf-8").to_string();
            let name = format!("f{i}");
            let cluster = format!("bench{round}");
            let p = lab.spawn(
                i,
                &format!("{name}-{round}"),
                &[
                    "agent",
                    "--data-dir",
                    &data,
                    "--name",
                    &name,
                    "--cluster",
                    &cluster,
                    "--log-format",
                    "json",
                ],
            );
            (name, p)
        })
        .collect();
    wait::until(
        &format!("trial {round}: one cluster of three voters"),
        Duration::from_secs(60),
        || formed(lab),
    );
    let took = start.elapsed();
    let timeline = procs
        .iter()
        .map(|(name, p)| (name.clone(), timeline(lab, *p, start_wall)))
        .collect();
    for (_, p) in procs {
        lab.stop(p, Duration::from_secs(15));
    }
    Trial { took, timeline }
}

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
