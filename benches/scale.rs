//! Benchmark: the storage plane at scale in the LAN lab. Writes `benches/results/scale.md`.
//!
//! For each size N (50, 100, 200 hosts by default; `SCALE_SIZES=10,25`): 3 voters (one
//! bootstraps, two join through it), then one storage token, then:
//! - single joins: 5 storage agents started one after another with `--join TOKEN`; time from
//!   each process start until every voter lists it as a learner;
//! - bulk join: the other N - 8 storage agents started at once; time from the first start
//!   until the first voter lists all of them as learners, and for each node the time from its
//!   own start until that voter lists it (the goal: every one within 30 s);
//! - converged: time from the first bulk start until every node's `/v1/status` lists all N
//!   members (none `none`) and the voters all list the same (names and suffrage);
//! - at rest (10 s, nothing happening): the leader's CPU (share of one core) and RSS, every
//!   node's RSS (mean and max), and per node the gossip bytes and the Raft/QUIC payload bytes
//!   per second, in and out.
//!
//! The lab makes room for N² ARP entries (the kernel's neighbour table is one for all the
//! namespaces, see [`Lab::raise_neighbour_limits`]) and the report says how many lookups found
//! the table full all the same (`/proc/net/stat/arp_cache`, table_fulls).
//!
//! Profiling: `SCALE_PERF=FILE` records the leader with `perf record -g` during the at-rest
//! window (its CPU figure then includes perf's cost), `SCALE_PERF_ALL=FILE` every process on
//! the machine (`perf record -a -g`), `SCALE_PERF_STORAGE=FILE` the last storage node (with
//! DWARF call graphs); `SCALE_WRAP_LEADER="heaptrack -o FILE"` starts the first voter (the
//! leader) under that command (its RSS and CPU figures are then the wrapper's).
//! `SCALE_VOTER_ARGS` gives every voter its words (`--config FILE`, a file with a `log` filter
//! that shows openraft's elections, say). `SCALE_STORAGE_ARGS="--config FILE"` gives every
//! storage agent those words too (a setting
//! tried on the storage plane only; the report says so). The results file keeps everything from
//! its `## Projection` heading on.
//!
//! Run as root: `cargo bench --bench scale`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use support::lab::{Lab, ProcId};
use support::wait;

use support::http::{admin, get};

/// The members host `i`'s agent lists: name and suffrage, by name.
fn members_on(lab: &Lab, i: usize) -> Option<BTreeMap<String, String>> {
    let s = get(lab, i, "/v1/status")?;
    Some(
        s["members"]
            .as_array()?
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or("?").to_string(),
                    m["suffrage"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect(),
    )
}

/// Lookups that found the kernel's ARP table full, machine-wide (all rows, hex).
fn arp_table_fulls() -> u64 {
    let text = std::fs::read_to_string("/proc/net/stat/arp_cache").unwrap_or_default();
    let mut lines = text.lines();
    let Some(col) = lines
        .next()
        .and_then(|h| h.split_whitespace().position(|c| c == "table_fulls"))
    else {
        return 0;
    };
    lines
        .filter_map(|l| l.split_whitespace().nth(col))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum()
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

/// A storage node's arguments: its role and the token, then the words of `SCALE_STORAGE_ARGS`
/// if set (for trying a setting on the storage plane only, `--config FILE` say).
fn storage_args(token: &str) -> Vec<&str> {
    let mut args = vec!["--role", "storage", "--join", token];
    if let Some(extra) = STORAGE_EXTRA.get_or_init(|| std::env::var("SCALE_STORAGE_ARGS").ok()) {
        args.extend(extra.split_whitespace());
    }
    args
}

static STORAGE_EXTRA: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn spawn(lab: &mut Lab, i: usize, name: &str, extra: &[&str]) -> ProcId {
    lab.spawn_agent(i, name, "data", extra)
}

/// The scheduling priority of the voters (`nice`): -10 unless `SCALE_VOTER_NICE` says
/// otherwise (0: none). Voters have machines of their own in a real cluster; on one 2-core
/// machine shared with N storage nodes they would wait behind a run queue of N processes,
/// longer than the election timeout (300 to 400 ms) whenever the storage nodes are busy (a
/// bulk join), and the group would measure the lab's scheduler, not itself.
fn voter_nice() -> i32 {
    std::env::var("SCALE_VOTER_NICE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-10)
}

/// How many storage nodes the bulk join starts a second, from `SCALE_START_RATE`: `None`
/// (unset or 0) starts them all at once. On one 2-core machine a start of 192 agents at once
/// is the machine's limit before it is quorate's: every agent's start (keys, certificate
/// request, mDNS probes, QUIC handshakes) waits behind all the others', where 192 machines
/// would each start one; a rolling start, as fleets are brought up, keeps the comparison with
/// such a cluster fair. The join times are counted from each node's own start either way.
fn start_rate() -> Option<f64> {
    std::env::var("SCALE_START_RATE")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|r| *r > 0.0)
}

/// Voter `i` (`v0` bootstraps), under `nice` ([`voter_nice`]) and, for `v0`,
/// `SCALE_WRAP_LEADER` when set.
fn spawn_voter(lab: &mut Lab, i: usize, extra: &[&str]) -> ProcId {
    let name = format!("v{i}");
    let extra: Vec<&str> = extra.iter().copied().chain(voter_extra()).collect();
    let extra = extra.as_slice();
    let dir = lab.host_dir(i).join("data");
    let dir = dir.to_str().expect("utf-8 path").to_string();
    let mut words: Vec<String> = Vec::new();
    let nice = voter_nice();
    if nice != 0 {
        words.extend(["nice".to_string(), "-n".to_string(), nice.to_string()]);
    }
    if i == 0
        && let Ok(wrap) = std::env::var("SCALE_WRAP_LEADER")
    {
        words.extend(wrap.split_whitespace().map(str::to_string));
    }
    if words.is_empty() {
        return spawn(lab, i, &name, extra);
    }
    let program = words.remove(0);
    words.extend(
        [
            env!("CARGO_BIN_EXE_quorate"),
            "agent",
            "--data-dir",
            &dir,
            "--name",
            &name,
            "--log-format",
            "json",
        ]
        .map(str::to_string),
    );
    words.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    lab.spawn_program(i, &name, &program, &args)
}

/// The words of `SCALE_VOTER_ARGS`, given to every voter (`--config FILE` with a `log` filter
/// that shows openraft's elections, say).
fn voter_extra() -> Vec<&'static str> {
    static VOTER_EXTRA: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    VOTER_EXTRA
        .get_or_init(|| std::env::var("SCALE_VOTER_ARGS").ok())
        .as_deref()
        .map(|w| w.split_whitespace().collect())
        .unwrap_or_default()
}

/// `perf record ARGS -o FILE`, quiet, until interrupted.
fn perf_record(file: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new("perf")
        .arg("record")
        .args(args)
        .args(["-o", file])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("perf record")
}

/// CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; after the ')' they are the 12th and 13th.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// A process's resident memory in MiB, split as the kernel counts it.
struct Rss {
    total: f64,
    anon: f64,
    file: f64,
    threads: u64,
}

fn rss_of(pid: u32) -> Rss {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        total: field("VmRSS:") as f64 / 1024.0,
        // RssShmem is left out: an agent maps no shared memory.
        anon: field("RssAnon:") as f64 / 1024.0,
        file: field("RssFile:") as f64 / 1024.0,
        threads: field("Threads:"),
    }
}

/// The `count` mappings of a process with the most resident memory, from `/proc/PID/smaps`,
/// as "name KiB" (anonymous mappings named by their address range).
fn largest_mappings(pid: u32, count: usize) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    // One entry per file (its text, data and relro mappings together).
    let mut by_name: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range perms offset dev inode [name].
            let name = words.nth(4).unwrap_or(first);
            current = name.rsplit('/').next().unwrap_or(name).to_string();
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *by_name.entry(current.clone()).or_default() += kib;
        }
    }
    let mut sorted: Vec<(String, u64)> = by_name.into_iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.1));
    sorted
        .iter()
        .take(count)
        .map(|(name, kib)| format!("{name} {kib} KiB"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Run {
    n: usize,
    single_ms: Vec<f64>,
    bulk_s: f64,
    bulk_nodes: usize,
    /// Storage nodes started a second in the bulk join (`None`: all at once).
    start_rate: Option<f64>,
    /// Seconds from each bulk node's own start until the leader listed it as a learner.
    join_s: Vec<f64>,
    converged_s: f64,
    arp_fulls: u64,
    /// Terms that passed from the 3 voters' formation to the end of the run.
    elections: u64,
    leader_cpu: f64,
    /// A storage node's CPU at rest, mean, share of one core.
    storage_cpu: f64,
    leader_rss_mib: f64,
    rss_mean_mib: f64,
    rss_max_mib: f64,
    /// The largest storage node's own memory (heap, stacks) and the pages of files it maps
    /// (the binary, libc) that it has touched.
    rss_max_anon_mib: f64,
    rss_max_file_mib: f64,
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
    lab.raise_neighbour_limits((n * n) as u64);
    let fulls0 = arp_table_fulls();
    let seed = format!("{}:7947", lab.host(0).ip);
    let mut procs = vec![spawn_voter(&mut lab, 0, &["--bootstrap"])];
    wait::until("the bootstrap", Duration::from_secs(60), || {
        get(&lab, 0, "/v1/status").ok_or("no status")
    });
    for i in 1..3 {
        procs.push(spawn_voter(&mut lab, i, &["--peers", &seed]));
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
    let term = |lab: &Lab| {
        get(lab, 0, "/v1/status")
            .and_then(|s| s["term"].as_u64())
            .unwrap_or(0)
    };
    let term0 = term(&lab);
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
        procs.push(spawn(&mut lab, i, &name, &storage_args(&token)));
        // Polled every 2 ms (three HTTP requests inside the lab): a single join takes tens
        // of milliseconds, and the usual 20 ms poll would round it to its multiples.
        let took = wait::until_every(
            &format!("{name} a learner on every voter"),
            Duration::from_secs(60),
            Duration::from_millis(2),
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
    let mut started = BTreeMap::new();
    let rate = start_rate();
    for (k, i) in (8..n).enumerate() {
        if let Some(rate) = rate {
            // Pacing a rolling start, not synchronising with anything.
            let due = t0 + Duration::from_secs_f64(k as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let name = format!("s{i}");
        procs.push(spawn(&mut lab, i, &name, &storage_args(&token)));
        started.insert(name, Instant::now());
    }
    // Each node's join: from its own start until the first voter lists it as a learner (the
    // leader, unless an election moved the leadership; a voter lists an entry once committed).
    let mut joined: BTreeMap<String, f64> = BTreeMap::new();
    // Polled every 100 ms (the join times' resolution): a status of N members costs the voter
    // that serves it, and every 20 ms it would be a load of its own.
    wait::until_every(
        "every storage node a learner",
        Duration::from_secs(300),
        Duration::from_millis(100),
        || {
            if let Some(m) = members_on(&lab, 0) {
                let now = Instant::now();
                for (name, at) in &started {
                    if !joined.contains_key(name) && m.get(name).is_some_and(|s| s == "learner") {
                        joined.insert(name.clone(), (now - *at).as_secs_f64());
                    }
                }
            }
            if joined.len() == started.len() {
                Ok(())
            } else {
                Err(format!("{}/{} joined", joined.len(), started.len()))
            }
        },
    );
    let bulk_s = t0.elapsed().as_secs_f64();

    // Converged: every node lists every member with a suffrage, and the voters agree with
    // the leader on the whole list.
    let names: Vec<String> = (0..n)
        .map(|i| {
            if i < 3 {
                format!("v{i}")
            } else {
                format!("s{i}")
            }
        })
        .collect();
    let mut waiting: Vec<usize> = (0..n).collect();
    // A sweep asks every node still waiting for its status; a sweep every 500 ms, so that the
    // asking is not most of the load at 100 hosts and more (the time's resolution: 0.5 s).
    wait::until_every(
        "every node's view converged",
        Duration::from_secs(300),
        Duration::from_millis(500),
        || {
            let leader_view = members_on(&lab, 0).ok_or("no status from v0")?;
            waiting.retain(|&i| {
                let Some(view) = members_on(&lab, i) else {
                    return true;
                };
                let complete = names.iter().all(|name| {
                    view.get(name)
                        .is_some_and(|s| s == "voter" || s == "learner")
                });
                !(complete && (i >= 3 || view == leader_view))
            });
            match waiting.first() {
                None => Ok(()),
                Some(i) => Err(format!(
                    "{} nodes not converged, {} sees {:?} members",
                    waiting.len(),
                    names[*i],
                    members_on(&lab, *i).map(|v| v.len())
                )),
            }
        },
    );
    let converged_s = t0.elapsed().as_secs_f64();

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
    let leader_pid = lab.pid(procs[leader]);
    let leader_arg = leader_pid.to_string();
    let storage_arg = lab.pid(procs[n - 1]).to_string();
    let perfs: Vec<std::process::Child> = [
        ("SCALE_PERF", vec!["-g", "-p", &leader_arg]),
        ("SCALE_PERF_ALL", vec!["-a", "-g"]),
        (
            "SCALE_PERF_STORAGE",
            vec!["--call-graph", "dwarf", "-p", &storage_arg],
        ),
    ]
    .into_iter()
    .filter_map(|(var, args)| {
        let file = std::env::var(var).ok()?;
        Some(perf_record(&format!("{file}.{n}"), &args))
    })
    .collect();
    let cpu0 = cpu_ticks(leader_pid);
    let storage_cpu0: Vec<u64> = procs[3..].iter().map(|p| cpu_ticks(lab.pid(*p))).collect();
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(10)); // the measurement window itself
    let secs = window.elapsed().as_secs_f64();
    let cpu1 = cpu_ticks(leader_pid);
    let storage_cpu: f64 = procs[3..]
        .iter()
        .zip(&storage_cpu0)
        .map(|(p, c0)| cpu_ticks(lab.pid(*p)).saturating_sub(*c0) as f64)
        .sum::<f64>()
        / storage_cpu0.len() as f64;
    for mut perf in perfs {
        // perf writes its file when interrupted.
        let _ = std::process::Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    let after: Vec<(u64, u64, u64, u64)> = (0..n).map(|i| counters(&lab, i)).collect();
    let rss: Vec<Rss> = procs.iter().map(|p| rss_of(lab.pid(*p))).collect();
    let largest = (3..n)
        .max_by(|a, b| rss[*a].total.total_cmp(&rss[*b].total))
        .expect("storage nodes");
    for (what, i) in [("leader", leader), ("largest storage node", largest)] {
        let r = &rss[i];
        println!(
            "N={n}: {what} (host {i}): RSS {:.1} MiB, anonymous {:.1}, file-backed {:.1}, {} threads; largest mappings: {}",
            r.total,
            r.anon,
            r.file,
            r.threads,
            largest_mappings(lab.pid(procs[i]), 6)
        );
    }
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
        start_rate: rate,
        join_s: joined.into_values().collect(),
        converged_s,
        arp_fulls: arp_table_fulls().saturating_sub(fulls0),
        elections: term(&lab).saturating_sub(term0),
        leader_cpu: (cpu1 - cpu0) as f64 / ticks / secs * 100.0,
        storage_cpu: storage_cpu / ticks / secs * 100.0,
        leader_rss_mib: rss[leader].total,
        rss_mean_mib: rss[3..].iter().map(|r| r.total).sum::<f64>() / (n - 3) as f64,
        rss_max_mib: rss[largest].total,
        rss_max_anon_mib: rss[largest].anon,
        rss_max_file_mib: rss[largest].file,
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
        .unwrap_or_else(|| vec![50, 100, 200]);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/scale.md");
    let mut runs = Vec::new();
    for n in sizes {
        let r = run(n);
        let mut j = r.join_s.clone();
        j.sort_by(f64::total_cmp);
        println!(
            "N={}: single joins {:?} ms, bulk {} nodes in {:.2} s (own start to learner: median {:.2} max {:.2} s), converged after {:.2} s, ARP table full {} times, {} elections, leader cpu {:.1}% rss {:.1} MiB, storage cpu {:.2}% rss mean {:.1} max {:.1} MiB, gossip {:.0}/{:.0} B/s, raft {:.0}/{:.0} B/s (leader out {:.0})",
            r.n,
            r.single_ms,
            r.bulk_nodes,
            r.bulk_s,
            j[j.len() / 2],
            j[j.len() - 1],
            r.converged_s,
            r.arp_fulls,
            r.elections,
            r.leader_cpu,
            r.leader_rss_mib,
            r.storage_cpu,
            r.rss_mean_mib,
            r.rss_max_mib,
            r.gossip_out,
            r.gossip_in,
            r.raft_out,
            r.raft_in,
            r.leader_raft_out
        );
        runs.push(r);
        // Written after every size, so that the sizes measured stay when a larger one fails.
        write_report(path, &runs);
    }
}

fn write_report(path: &str, runs: &[Run]) {
    let mut report = format!(
        "# Scale: the storage plane joining by token, and the cost at rest\n\n`cargo bench --bench scale`, as root, LAN lab (one network namespace per host on one bridge), release build, on a 2-core machine that runs every agent: N agents share 2 cores, so times and CPU grow with N partly because the machine is shared (and CPU figures are noisy when anything else runs on it).\n\n3 voters (one bootstraps, two join through it), then one storage token (`quorate token create --role storage`). Every agent runs with its defaults (mDNS discovery and gossip on: storage nodes gossip every 1 s, voters every 200 ms; a storage node whose token names the voters' addresses advertises on mDNS but does not browse). The voters run at `nice {}` (`SCALE_VOTER_NICE`): on machines of their own, as in a real cluster, storage nodes' load would not delay them; here they share 2 cores with every storage node.\n\nGoals at 3 voters + 200 storage nodes: every node a learner within 30 s of its own start, every node's view converged, leader CPU at rest <= 15 % of a core, leader RSS <= 64 MiB, storage node RSS <= 25 MiB.\n\n",
        voter_nice()
    );
    if let Some(Some(extra)) = STORAGE_EXTRA.get() {
        report.push_str(&format!(
            "Not the defaults in this run: every storage agent was also given `{extra}` (`SCALE_STORAGE_ARGS`)."
        ));
        for word in extra.split_whitespace() {
            if let Ok(text) = std::fs::read_to_string(word) {
                report.push_str(&format!(" `{word}`: `{}`.", text.trim().replace('\n', " ")));
            }
        }
        report.push_str("\n\n");
    }
    report.push_str("## Joining\n\nSingle: 5 storage agents started one after another with `--join TOKEN`; milliseconds from the process start until every voter lists the node as a learner. Bulk: the other N - 8, started at once or at the rate the table gives (`SCALE_START_RATE`, nodes a second); seconds from the first start until the first voter lists all of them as learners, and per node from its own start until that voter lists it (goal: max <= 30 s). Converged: seconds from the first bulk start until every node's `/v1/status` lists all N members as voter or learner and all voters list the same members with the same suffrage. ARP full: lookups that found the kernel's neighbour table full during the run (the lab raises its limits to N² entries; 0 means no packet was lost to it). Elections: Raft terms that passed from the voters' formation to the end of the run (0: the first leader kept the lead throughout).\n\n| hosts | single join median ms | single join max ms | bulk: nodes | bulk: started | bulk: all learners after s | own start to learner median s | own start to learner max s | within 30 s | converged after s | ARP full | elections |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in runs {
        let mut s = r.single_ms.clone();
        s.sort_by(f64::total_cmp);
        let mut j = r.join_s.clone();
        j.sort_by(f64::total_cmp);
        let _ = writeln!(
            report,
            "| {} | {:.0} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {}/{} | {:.2} | {} | {} |",
            r.n,
            s[s.len() / 2],
            s[s.len() - 1],
            r.bulk_nodes,
            r.start_rate
                .map_or("at once".to_string(), |r| format!("{r:.0} a second")),
            r.bulk_s,
            j[j.len() / 2],
            j[j.len() - 1],
            j.iter().filter(|t| **t <= 30.0).count(),
            j.len(),
            r.converged_s,
            r.arp_fulls,
            r.elections
        );
    }
    report.push_str("\n## At rest\n\n10 s with nothing happening, 3 s after every view converged. CPU: the leader's share of one core, and a storage node's (mean). RSS: the leader's, and the storage nodes' (voters left out); the largest storage node's is split into its own memory (anonymous: heap, stacks) and the pages of the files it maps that it has touched (the quorate binary and libc, shared with every agent on a host but counted in each one's RSS). Gossip: UDP payload per node (chitchat, open mode). Raft: QUIC request and answer payload per node, and the leader's (heartbeats every 50 ms from the leader to every voter; learners hear one every 500 ms, the rounds between are answered by the leader's network layer, see `consensus/src/network.rs`).\n\n| hosts | leader CPU % | leader RSS MiB | storage CPU mean % | storage RSS mean MiB | storage RSS max MiB (own + files) | gossip out B/s | gossip in B/s | Raft out B/s | Raft in B/s | leader Raft out B/s |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in runs {
        let _ = writeln!(
            report,
            "| {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} ({:.1} + {:.1}) | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.n,
            r.leader_cpu,
            r.leader_rss_mib,
            r.storage_cpu,
            r.rss_mean_mib,
            r.rss_max_mib,
            r.rss_max_anon_mib,
            r.rss_max_file_mib,
            r.gossip_out,
            r.gossip_in,
            r.raft_out,
            r.raft_in,
            r.leader_raft_out
        );
    }
    // The hand-written part (the projection) is kept from the file as it was.
    if let Ok(old) = std::fs::read_to_string(path)
        && let Some(at) = old.find("\n## Projection")
    {
        report.push_str(&old[at..]);
    }
    std::fs::write(path, &report).expect("write results");
    println!("wrote {path}");
}
