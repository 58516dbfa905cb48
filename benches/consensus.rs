//! Benchmark: the Raft group of real agents in the LAN lab. Writes
//! `benches/results/consensus.md`.
//!
//! - failover: 3 voters in 3 hosts; kill -9 the leader while a survivor that is not the
//!   leader starts a registry write (`POST /v1/labels`) at the same instant; time from the kill
//!   until that write is acknowledged as committed. The victim is restarted and the group is
//!   whole again (3 voters caught up, one leader, the restarted voter past its first second,
//!   in which it does not campaign) between trials.
//! - latency: sequential single writes, on the leader's host and on a follower's (forwarded).
//! - throughput: 64 clients writing concurrently for 10 s on the leader's host.
//!
//! The same failover beside etcd is the peers bench's (`cargo bench --bench peers`).
//!
//! Run as root: `cargo bench --bench consensus` (all parts, about 3 minutes), or name parts:
//! `cargo bench --bench consensus -- failover`. `CONSENSUS_TRIALS` sets the failover trials.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::failover::{failover, form, label_write, whole};
use support::http::{Stats, admin, request};
use support::lab::Lab;

fn latency(lab: &Lab, host: usize, n: usize) -> Stats {
    let token = admin(lab, host);
    let samples = lab.in_host(host, move || {
        (0..n)
            .map(|i| {
                let body = label_write("latency", &i.to_string());
                let t = Instant::now();
                let r = request("POST", "/v1/labels", &body, Some(&token));
                assert_eq!(r.map(|(c, _)| c), Some(200), "write {i}");
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect::<Vec<f64>>()
    });
    Stats(samples)
}

fn throughput(lab: &Lab, host: usize, clients: usize, window: Duration) -> (f64, Stats, u64) {
    let token = admin(lab, host);
    lab.in_host(host, move || {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                let errors = errors.clone();
                let token = token.clone();
                std::thread::spawn(move || {
                    let mut lat = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let body = label_write(&format!("c{c}"), &i.to_string());
                        i += 1;
                        let t = Instant::now();
                        match request("POST", "/v1/labels", &body, Some(&token)) {
                            Some((200, _)) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    lat
                })
            })
            .collect();
        let start = Instant::now();
        std::thread::sleep(window); // the measurement window itself
        stop.store(true, Ordering::Relaxed);
        let lat: Vec<f64> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("client"))
            .collect();
        let secs = start.elapsed().as_secs_f64();
        (
            lat.len() as f64 / secs,
            Stats(lat),
            errors.load(Ordering::Relaxed),
        )
    })
}

fn main() {
    let want = common::parts();
    let trials = common::trials("CONSENSUS_TRIALS", 25);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/consensus.md");
    let mut report = String::from(
        "# Consensus: failover, commit latency, throughput\n\n`cargo bench --bench consensus`, as root, LAN lab (network namespaces on one bridge), release build, 2-core machine (every agent and the clients share its 2 cores). Raft timings are quorate's defaults: heartbeat 50 ms, election timeout 100 to 200 ms after a leader lease of 200 ms, then a pre-vote before a voter campaigns.\n\n",
    );
    if want("failover") {
        let (s, failed) = failover(trials);
        println!("{}", s.row("failover ms", 1));
        let _ = writeln!(
            report,
            "## Leader failover\n\n3 voters in 3 hosts. kill -9 the leader while a survivor starts a registry write (`POST /v1/labels`, routed to the leader) at the same instant; milliseconds from the kill until the write is acknowledged as committed. The victim restarts and the group is whole again between trials (3 voters caught up, one leader, and the restarted voter past its first second, in which it does not campaign). Writes that failed: {failed}. The same failover beside etcd 3.4 is in `peers.md` (`cargo bench --bench peers -- failover`).\n\n\
             | what | trials | median ms | p99 ms | min ms | max ms |\n|---|---|---|---|---|---|\n{}\n",
            s.row("quorate, kill -9 leader to committed write", 1)
        );
    }
    if want("latency") || want("throughput") {
        let mut lab = Lab::new(3);
        form(&mut lab);
        let leader = whole(&lab);
        let follower = (leader + 1) % 3;
        if want("latency") {
            let on_leader = latency(&lab, leader, 300);
            let forwarded = latency(&lab, follower, 300);
            println!("{}", on_leader.row("latency leader", 1));
            println!("{}", forwarded.row("latency follower", 1));
            let _ = writeln!(
                report,
                "## Commit latency\n\nOne write at a time (`POST /v1/labels` to the local agent over HTTP, answered once committed on a majority and applied), 300 writes each.\n\n\
                 | where the write is made | writes | median ms | p99 ms | min ms | max ms |\n|---|---|---|---|---|---|\n{}\n{}\n",
                on_leader.row("on the leader's host", 1),
                forwarded.row("on a follower's host (forwarded over QUIC)", 1)
            );
        }
        if want("throughput") {
            let (rate, lat, errors) = throughput(&lab, leader, 64, Duration::from_secs(10));
            println!(
                "throughput: {rate:.0} writes/s, errors {errors}; {}",
                lat.row("latency under load", 1)
            );
            let _ = writeln!(
                report,
                "## Throughput\n\n64 clients on the leader's host, each writing one label after another for 10 s.\n\n\
                 | writes/s | errors | median ms | p99 ms | max ms |\n|---|---|---|---|---|\n| {rate:.0} | {errors} | {:.1} | {:.1} | {:.1} |\n",
                lat.pct(0.5),
                lat.pct(0.99),
                lat.pct(1.0)
            );
        }
    }
    std::fs::write(path, &report).expect("write results");
    println!("wrote {path}");
}
