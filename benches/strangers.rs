//! Benchmark: commits while strangers flood the leader. Writes `benches/results/strangers.md`.
//!
//! Three voters in three lab hosts; a fourth host opens 1000 QUIC connections without a
//! certificate to the leader and asks over each (a malformed join) every 100 ms, redialling
//! when refused, for as long as the measurement runs. Commit latency is sequential single
//! writes (`POST /v1/labels` on the leader's host), before the flood and during it; the
//! leader's counters show what its limits turned away.
//!
//! Run as root: `cargo bench --bench strangers` (about a minute). `STRANGERS_WRITES` sets the
//! writes per phase (default 300). The flood is this same binary, started in the fourth host
//! with `--flood ADDR` (it stops by itself after `--for SECONDS`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::agents::{agent, leader_name, status, wait_group};
use support::http::{Stats, admin, request};
use support::lab::Lab;
use support::wait;

const CONNECTIONS: usize = 1000;

/// The flood, from this host, for `secs` seconds.
fn flood(target: SocketAddr, secs: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(support::flood::run(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        target,
        CONNECTIONS,
        secs,
    ));
}

fn latency(lab: &Lab, host: usize, n: usize, phase: &str) -> Stats {
    let token = admin(lab, host);
    let phase = phase.to_string();
    let samples = lab.in_host(host, move || {
        (0..n)
            .map(|i| {
                let body =
                    serde_json::json!({ "set": { phase.as_str(): i.to_string() } }).to_string();
                let t = Instant::now();
                let r = request("POST", "/v1/labels", &body, Some(&token));
                assert_eq!(r.map(|(c, _)| c), Some(200), "write {i} ({phase})");
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect::<Vec<f64>>()
    });
    Stats(samples)
}

fn counters(lab: &Lab, host: usize) -> Value {
    support::http::get(lab, host, "/v1/metrics").unwrap_or_default()["consensus"].clone()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--flood") {
        let target: SocketAddr = args[i + 1].parse().expect("--flood ADDR");
        let secs = args
            .iter()
            .position(|a| a == "--for")
            .and_then(|j| args.get(j + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(60);
        flood(target, secs);
        return;
    }
    let writes: usize = std::env::var("STRANGERS_WRITES")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(300);
    let mut lab = Lab::new(4);
    let seed = format!("{}:7947", lab.host(0).ip);
    agent(&mut lab, 0, "v0", &["--bootstrap"]);
    wait_group(&lab, &[0], &[("v0", "voter")], Duration::from_secs(30));
    agent(&mut lab, 1, "v1", &["--peers", &seed]);
    agent(&mut lab, 2, "v2", &["--peers", &seed]);
    let leader = wait_group(
        &lab,
        &[0, 1, 2],
        &[("v0", "voter"), ("v1", "voter"), ("v2", "voter")],
        Duration::from_secs(40),
    );
    let host: usize = leader[1..].parse().expect("v<host>");
    let before = latency(&lab, host, writes, "before");
    let target = format!("{}:7947", lab.host(host).ip);
    let exe = std::env::current_exe().expect("exe");
    let exe = exe.to_str().expect("utf-8").to_string();
    let p = lab.spawn_program(3, "flood", &exe, &["--flood", &target, "--for", "120"]);
    wait::until("the flood to start", Duration::from_secs(60), || {
        let log = lab.log(p);
        if log.contains("flooding") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let c0 = counters(&lab, host);
    let started = Instant::now();
    let during = latency(&lab, host, writes, "during");
    let took = started.elapsed();
    let c1 = counters(&lab, host);
    lab.kill9(p);
    let st = status(&lab, 0).expect("status");
    assert_eq!(
        leader_name(&st).as_deref(),
        Some(leader.as_str()),
        "the leadership never moved"
    );
    let delta = |k: &str| c1[k].as_u64().unwrap_or(0) - c0[k].as_u64().unwrap_or(0);
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# Commits while strangers flood the leader\n\n`cargo bench --bench strangers`, {} on {} cores; three voters in three lab hosts, a fourth\nhost holding {CONNECTIONS} QUIC connections without a certificate to the leader, each asking every\n100 ms (a malformed join) and redialling when refused. Commit latency: sequential single\nwrites (`POST /v1/labels`) on the leader's host, {writes} before the flood and {writes} during it.\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let _ = writeln!(
        report,
        "| commit latency (ms) | n | median | p99 | min | max |\n|---|---|---|---|---|---|\n{}\n{}\n",
        before.row("before the flood", 2),
        during.row("during the flood", 2),
    );
    let _ = writeln!(
        report,
        "During the {:.1} s of writes under the flood, the leader:\n\n| counter | count |\n|---|---|",
        took.as_secs_f64()
    );
    for k in [
        "quic_retries_sent",
        "quic_handshakes_limited",
        "quic_strangers_refused",
        "quic_handshakes_refused",
        "requests_refused",
    ] {
        let _ = writeln!(report, "| `{k}` | {} |", delta(k));
    }
    let _ = writeln!(
        report,
        "\nEvery write during the flood was acknowledged, and the leadership never moved."
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/strangers.md");
    std::fs::write(path, &report).expect("write results");
    println!("{report}");
}
