//! Benchmark: the storage plane at scale in the LAN lab. Writes `benches/results/scale.md`.
//!
//! For each size N (10, 25, 50 hosts by default; `SCALE_SIZES=10,25`): 3 voters (one
//! bootstraps, two join through it), then one storage token, then:
//! - single joins: 5 storage agents started one after another with `--join TOKEN`; time from
//!   each process start until every voter lists it as a learner;
//! - bulk join: the other N - 8 storage agents started at once; time from the first start
//!   until the leader lists all of them as learners;
//! - at rest (10 s, nothing happening): the leader's CPU (share of one core) and RSS, every
//!   node's RSS (mean and max), and per node the gossip bytes and the Raft/QUIC payload bytes
//!   per second, in and out.
//!
//! Run as root: `cargo bench --bench scale`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use support::lab::{Lab, ProcId};
use support::wait;

use support::http::{admin, get};

fn learners_on(lab: &Lab, i: usize) -> usize {
    get(lab, i, "/v1/status")
        .and_then(|s| {
            s["members"]
                .as_array()
                .map(|m| m.iter().filter(|m| m["suffrage"] == "learner").count())
        })
        .unwrap_or(0)
}

fn is_learner_on(lab: &Lab, i: usize, name: &str) -> bool {
    get(lab, i, "/v1/status")
        .and_then(|s| {
            s["members"].as_array().map(|m| {
                m.iter()
                    .any(|m| m["name"] == name && m["suffrage"] == "learner")
            })
        })
        .unwrap_or(false)
}

fn spawn(lab: &mut Lab, i: usize, name: &str, extra: &[&str]) -> ProcId {
    lab.spawn_agent(i, name, "data", extra)
}

/// RSS in KiB and CPU time in clock ticks of a process.
fn proc_stats(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; after the ')' they are the 12th and 13th.
    let cpu = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    (rss, cpu)
}

struct Run {
    n: usize,
    single_ms: Vec<f64>,
    bulk_s: f64,
    bulk_nodes: usize,
    leader_cpu: f64,
    leader_rss_mib: f64,
    rss_mean_mib: f64,
    rss_max_mib: f64,
    gossip_out: f64,
    gossip_in: f64,
    raft_out: f64,
    raft_in: f64,
    leader_raft_out: f64,
}

fn counters(lab: &Lab, i: usize) -> (u64, u64, u64, u64) {
    let m = get(lab, i, "/v1/metrics").unwrap_or_default();
    (
        m["gossip"]["bytes_out"].as_u64().unwrap_or(0),
        m["gossip"]["bytes_in"].as_u64().unwrap_or(0),
        m["consensus"]["quic_bytes_out"].as_u64().unwrap_or(0),
        m["consensus"]["quic_bytes_in"].as_u64().unwrap_or(0),
    )
}

fn run(n: usize) -> Run {
    assert!(
        n >= 9,
        "at least 3 voters, 5 single joins and one bulk join"
    );
    let mut lab = Lab::new(n);
    let seed = format!("{}:7947", lab.host(0).ip);
    let mut procs = vec![spawn(&mut lab, 0, "v0", &["--bootstrap"])];
    wait::until("the bootstrap", Duration::from_secs(60), || {
        get(&lab, 0, "/v1/status").ok_or("no status")
    });
    for i in 1..3 {
        procs.push(spawn(&mut lab, i, &format!("v{i}"), &["--peers", &seed]));
    }
    wait::until("3 voters", Duration::from_secs(60), || {
        let s = get(&lab, 0, "/v1/status").ok_or("no status")?;
        let v = s["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["suffrage"] == "voter").count());
        if v == 3 {
            Ok(())
        } else {
            Err(format!("{v} voters"))
        }
    });
    let admin = admin(&lab, 0);
    let out = lab.quorate(
        0,
        &[
            "token",
            "create",
            "--role",
            "storage",
            "--ttl",
            "1h",
            "--admin-token",
            &admin,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let mut single_ms = Vec::new();
    for i in 3..8 {
        let name = format!("s{i}");
        let t0 = Instant::now();
        procs.push(spawn(
            &mut lab,
            i,
            &name,
            &["--role", "storage", "--join", &token],
        ));
        let took = wait::until(
            &format!("{name} a learner on every voter"),
            Duration::from_secs(60),
            || {
                if (0..3).all(|v| is_learner_on(&lab, v, &name)) {
                    Ok(t0.elapsed())
                } else {
                    Err("not yet")
                }
            },
        );
        single_ms.push(took.as_secs_f64() * 1000.0);
    }
    let t0 = Instant::now();
    for i in 8..n {
        procs.push(spawn(
            &mut lab,
            i,
            &format!("s{i}"),
            &["--role", "storage", "--join", &token],
        ));
    }
    let want = n - 3;
    wait::until(
        "every storage node a learner",
        Duration::from_secs(300),
        || {
            let l = learners_on(&lab, 0);
            if l == want {
                Ok(())
            } else {
                Err(format!("{l}/{want}"))
            }
        },
    );
    let bulk_s = t0.elapsed().as_secs_f64();

    // At rest: everything joined; let the group settle, then measure over 10 s.
    std::thread::sleep(Duration::from_secs(3)); // settling, not synchronising a check
    let leader_id =
        get(&lab, 0, "/v1/status").and_then(|s| s["leader_id"].as_str().map(str::to_string));
    let leader = (0..3)
        .find(|i| {
            get(&lab, *i, "/v1/status")
                .is_some_and(|s| s["node_id"].as_str() == leader_id.as_deref())
        })
        .unwrap_or(0);
    let before: Vec<(u64, u64, u64, u64)> = (0..n).map(|i| counters(&lab, i)).collect();
    let (_, cpu0) = proc_stats(lab.pid(procs[leader]));
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(10)); // the measurement window itself
    let secs = window.elapsed().as_secs_f64();
    let (_, cpu1) = proc_stats(lab.pid(procs[leader]));
    let after: Vec<(u64, u64, u64, u64)> = (0..n).map(|i| counters(&lab, i)).collect();
    let rss: Vec<f64> = procs
        .iter()
        .map(|p| proc_stats(lab.pid(*p)).0 as f64 / 1024.0)
        .collect();
    let per_node = |f: fn(&(u64, u64, u64, u64)) -> u64| {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| f(a).saturating_sub(f(b)) as f64)
            .sum::<f64>()
            / n as f64
            / secs
    };
    let ticks = 100.0; // USER_HZ on Linux
    Run {
        n,
        single_ms,
        bulk_s,
        bulk_nodes: n - 8,
        leader_cpu: (cpu1 - cpu0) as f64 / ticks / secs * 100.0,
        leader_rss_mib: rss[leader],
        rss_mean_mib: rss.iter().sum::<f64>() / rss.len() as f64,
        rss_max_mib: rss.iter().copied().fold(0.0, f64::max),
        gossip_out: per_node(|c| c.0),
        gossip_in: per_node(|c| c.1),
        raft_out: per_node(|c| c.2),
        raft_in: per_node(|c| c.3),
        leader_raft_out: (after[leader].2 - before[leader].2) as f64 / secs,
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 25, 50]);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/scale.md");
    let mut runs = Vec::new();
    for n in sizes {
        let r = run(n);
        println!(
            "N={}: single joins {:?} ms, bulk {} nodes in {:.2} s, leader cpu {:.1}% rss {:.1} MiB, node rss mean {:.1} max {:.1} MiB, gossip {:.0}/{:.0} B/s, raft {:.0}/{:.0} B/s (leader out {:.0})",
            r.n,
            r.single_ms,
            r.bulk_nodes,
            r.bulk_s,
            r.leader_cpu,
            r.leader_rss_mib,
            r.rss_mean_mib,
            r.rss_max_mib,
            r.gossip_out,
            r.gossip_in,
            r.raft_out,
            r.raft_in,
            r.leader_raft_out
        );
        runs.push(r);
    }
    let mut report = String::from(
        "# Scale: the storage plane joining by token, and the cost at rest\n\n`cargo bench --bench scale`, as root, LAN lab (one network namespace per host on one bridge), release build, on a 2-core machine that runs every agent: N agents share 2 cores, so times and CPU grow with N partly because the machine is shared.\n\n3 voters (one bootstraps, two join through it), then one storage token (`quorate token create --role storage`).\n\n",
    );
    report.push_str("## Joining\n\nSingle: 5 storage agents started one after another with `--join TOKEN`; milliseconds from the process start until every voter lists the node as a learner. Bulk: the other N - 8 started at once; seconds from the first start until the leader lists all of them as learners.\n\n| hosts | single join median ms | single join max ms | bulk: nodes | bulk: all learners after s |\n|---|---|---|---|---|\n");
    for r in &runs {
        let mut s = r.single_ms.clone();
        s.sort_by(f64::total_cmp);
        let _ = writeln!(
            report,
            "| {} | {:.0} | {:.0} | {} | {:.2} |",
            r.n,
            s[s.len() / 2],
            s[s.len() - 1],
            r.bulk_nodes,
            r.bulk_s
        );
    }
    report.push_str("\n## At rest\n\n10 s with nothing happening. CPU: the leader's share of one core. Gossip: UDP payload per node (chitchat, open mode). Raft: QUIC request and answer payload per node (heartbeats every 50 ms from the leader to every member).\n\n| hosts | leader CPU % | leader RSS MiB | node RSS mean MiB | node RSS max MiB | gossip out B/s | gossip in B/s | Raft out B/s | Raft in B/s | leader Raft out B/s |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &runs {
        let _ = writeln!(
            report,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.n,
            r.leader_cpu,
            r.leader_rss_mib,
            r.rss_mean_mib,
            r.rss_max_mib,
            r.gossip_out,
            r.gossip_in,
            r.raft_out,
            r.raft_in,
            r.leader_raft_out
        );
    }
    std::fs::write(path, &report).expect("write results");
    println!("wrote {path}");
}
