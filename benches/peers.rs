//! Benchmark: quorate beside HashiCorp Serf and etcd, every system in the LAN lab, on the same
//! machine in the same run. Writes `benches/results/peers.md`: each system's figures, and the
//! ratio quorate / peer of the medians next to its goal.
//!
//! - detection: 5 agents, kill -9 one, seconds until every survivor reports it failed.
//!   quorate: its gossip view (`/v1/members`, what `quorate members` shows; the gossip bench's
//!   measure); Serf: `serf members -format json` in every survivor, status `failed`. Goal:
//!   ratio <= 0.35.
//! - formation: 3 agents started at the same instant with no seed. quorate: no cluster flags,
//!   until every `quorate status` shows one cluster, one leader and 3 voters (the formation
//!   bench's measure); Serf: `serf agent -discover=NAME` (its mDNS discovery), until every
//!   agent's `serf members` lists all 3 alive, or 120 s. Goal: ratio <= 0.05.
//! - failover: 3 voters, kill -9 the leader while a survivor starts a write, until the write
//!   is committed. quorate: the consensus bench's measure; etcd 3.4 with its defaults, a put
//!   retried every 100 ms. Goal: ratio <= 0.45.
//!
//! Serf and etcd run only inside lab hosts: their ports and their multicast never reach the
//! machine's root namespace. A part whose peer is not installed (Debian: `apt-get install
//! serf etcd-server`) is skipped, and the results say so.
//!
//! Run as root: `cargo bench --bench peers` (all parts, about 15 minutes, most of it Serf's
//! mDNS formation), or name parts: `cargo bench --bench peers -- detection failover`. Trials:
//! `PEERS_TRIALS` for every part, or `PEERS_DETECTION_TRIALS` (default 8),
//! `PEERS_FORMATION_TRIALS` (5), `PEERS_FAILOVER_TRIALS` (10).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use support::http::{Stats, request_at, request_within};
use support::lab::{Gate, Lab, ProcId};
use support::wait;

const SERF: &str = "/usr/bin/serf";
const ETCD: &str = "/usr/bin/etcd";
/// Serf's RPC address in every host (its default; each host has its own loopback).
const SERF_RPC: &str = "127.0.0.1:7373";
/// Agents in the detection part.
const DETECTION_N: usize = 5;
/// How Serf's `-discover` finds its peers, for the formation results.
const SERF_DISCOVERY: &str = "How Serf's `-discover` forms (its `command/agent/mdns.go`): the agent starts its mDNS responder, then sends one query at once and listens for answers for 1 s, joins what answered 100 ms after the last answer, and queries again only every 60 s. Its mDNS library (hashicorp/mdns) answers from the moment it starts: it neither probes nor announces its names (RFC 6762 section 8), so a responder is up within milliseconds of the agent's start. Both systems' agents are started behind a gate and released at the same instant, as the measure says; every Serf trial here formed from the first queries, and the 60 s path (an agent whose first query finds no responder up yet) was never taken, so the ratio goal, which assumed it, is not met: quorate probes and announces its names as RFC 6762 requires (about 0.8 s) before a peer can see it. quorate's end state is also the stronger one: one Raft group with a leader and three voters, where Serf's is a gossip membership list.";
/// How long a Serf formation trial may take before it counts as not formed.
const SERF_FORMATION_DEADLINE: Duration = Duration::from_secs(120);

/// One measure's comparison: quorate's median over the peer's, and the goal it is held to.
struct Ratio {
    measure: &'static str,
    peer: &'static str,
    quorate: f64,
    other: f64,
    unit: &'static str,
    /// Decimals the medians are given with.
    digits: usize,
    goal: f64,
    /// The peer's median is a lower bound (some trials did not finish), so the ratio is an
    /// upper bound.
    bound: bool,
}

impl Ratio {
    fn value(&self) -> f64 {
        self.quorate / self.other
    }

    fn met(&self) -> bool {
        self.value() <= self.goal
    }

    fn row(&self) -> String {
        format!(
            "| {} | {:.d$} {u} | {} | {:.d$} {u}{} | {}{:.3} | <= {} | {} |",
            self.measure,
            self.quorate,
            self.peer,
            self.other,
            if self.bound { " or more" } else { "" },
            if self.bound { "<= " } else { "" },
            self.value(),
            self.goal,
            if self.met() { "yes" } else { "no" },
            u = self.unit,
            d = self.digits,
        )
    }

    fn sentence(&self) -> String {
        format!(
            "Ratio quorate / {} (medians): {}{:.3}; goal <= {}: {}.",
            self.peer,
            if self.bound { "at most " } else { "" },
            self.value(),
            self.goal,
            if self.met() { "met" } else { "not met" }
        )
    }
}

/// The first line a program prints for `args` (its version), run inside host 0 of `lab`.
fn version(lab: &Lab, program: &str, args: &[&str]) -> String {
    let out = lab.exec(0, program, args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("unknown")
        .trim()
        .to_string()
}

/// The version of the installed Debian package `name`, if it is one.
fn package_version(name: &str) -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", name])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn all_trials(samples: &[f64], digits: usize) -> String {
    samples
        .iter()
        .map(|s| format!("{s:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- Serf ----

/// Starts `serf agent` named `s{i}` in host `i`, bound to the host's address, with `extra`
/// flags (`-join ADDR`, `-discover NAME`); otherwise its defaults.
fn serf_agent(lab: &mut Lab, i: usize, label: &str, extra: &[&str]) -> ProcId {
    serf_agent_gated(lab, i, label, extra, None)
}

/// [`serf_agent`], behind `gate` when one is given.
fn serf_agent_gated(
    lab: &mut Lab,
    i: usize,
    label: &str,
    extra: &[&str],
    gate: Option<&Gate>,
) -> ProcId {
    let name = format!("s{i}");
    let bind = format!("{}:7946", lab.host(i).ip);
    let mut args = vec![
        "agent",
        "-node",
        &name,
        "-bind",
        &bind,
        "-rpc-addr",
        SERF_RPC,
    ];
    args.extend_from_slice(extra);
    match gate {
        Some(gate) => lab.spawn_gated(i, label, gate, SERF, &args),
        None => lab.spawn_program(i, label, SERF, &args),
    }
}

/// `(name, status)` of every member in host `i`'s `serf members -format json`.
fn serf_members(lab: &Lab, i: usize) -> Result<Vec<(String, String)>, String> {
    let out = lab
        .command_in(i, SERF)
        .args(["members", "-format", "json", "-rpc-addr", SERF_RPC])
        .output()
        .map_err(|e| format!("host {i}: cannot run serf: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "host {i}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("host {i}: {e}"))?;
    Ok(v["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("?").to_string(),
                        m["status"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Whether each of hosts `0..n` lists `n` members, all alive.
fn serf_all_alive(lab: &Lab, n: usize) -> Result<(), String> {
    for i in 0..n {
        let ms = serf_members(lab, i)?;
        if ms.len() != n || ms.iter().any(|(_, s)| s != "alive") {
            return Err(format!("host {i}: {ms:?}"));
        }
    }
    Ok(())
}

/// Serf's failure detection, measured as quorate's ([`common::detection::detect`]): `n` agents
/// joined through host 0; kill -9 one (never host 0, a different one each time); seconds until
/// every survivor's `serf members` reports it `failed`. The victim restarts and rejoins, and
/// all are alive again, between trials.
fn serf_detection(lab: &mut Lab, n: usize, trials: usize) -> Stats {
    let seed = format!("{}:7946", lab.host(0).ip);
    let mut procs = vec![serf_agent(lab, 0, "s0", &[])];
    wait::until("serf in host 0", Duration::from_secs(30), || {
        serf_members(lab, 0)
    });
    for i in 1..n {
        procs.push(serf_agent(lab, i, &format!("s{i}"), &["-join", &seed]));
    }
    let all_alive = |lab: &Lab| {
        wait::until("all serf members alive", Duration::from_secs(120), || {
            serf_all_alive(lab, n)
        })
    };
    all_alive(lab);
    let mut samples = Vec::new();
    for t in 0..trials {
        let victim = 1 + t % (n - 1);
        let name = format!("s{victim}");
        let secs =
            common::detection::kill_until_reported(lab, procs[victim], victim, n, |lab, i| {
                serf_members(lab, i)
                    .is_ok_and(|ms| ms.iter().any(|(m, s)| *m == name && s == "failed"))
            });
        println!("serf detection trial {t}: s{victim} failed everywhere after {secs:.2} s");
        samples.push(secs);
        lab.restart(procs[victim]);
        all_alive(lab);
    }
    Stats(samples)
}

/// Serf's zero-configuration formation: per trial, 3 agents started at the same instant with
/// `-discover bench{round}` (a name per trial, as quorate gets a cluster name per trial) and no
/// one to join; the seconds until every agent's `serf members` lists all 3 alive, `None` when
/// that did not happen within [`SERF_FORMATION_DEADLINE`]. The agents are killed after each
/// trial.
fn serf_formation(lab: &mut Lab, trials: usize) -> Vec<Option<f64>> {
    (0..trials)
        .map(|round| {
            let discover = format!("bench{round}");
            // Started behind a gate and released together, as quorate's agents are.
            let mut gate = lab.gate(&format!("serf-{round}"));
            let procs: Vec<ProcId> = (0..3)
                .map(|i| {
                    let label = format!("s{i}-{round}");
                    serf_agent_gated(lab, i, &label, &["-discover", &discover], Some(&gate))
                })
                .collect();
            let start = Instant::now();
            gate.release(procs.len());
            let took = wait::try_until(SERF_FORMATION_DEADLINE, || serf_all_alive(lab, 3))
                .map(|()| start.elapsed().as_secs_f64());
            match &took {
                Ok(secs) => println!("serf formation trial {round}: formed after {secs:.2} s"),
                Err(seen) => println!(
                    "serf formation trial {round}: not formed within {SERF_FORMATION_DEADLINE:?}; last seen {seen}"
                ),
            }
            for p in procs {
                lab.kill9(p);
            }
            took.ok()
        })
        .collect()
}

// ---- etcd ----

/// etcd 3.4 with its defaults (heartbeat 100 ms, election timeout 1 s), three members in the
/// three hosts of `lab`, measured as quorate's failover ([`common::failover::failover`]):
/// kill -9 the leader while a survivor starts a put through its local client port; the
/// milliseconds until the put is acknowledged, and how many puts never were (within 30 s).
fn etcd_failover(lab: &mut Lab, trials: usize) -> (Stats, usize) {
    let cluster = (0..3)
        .map(|i| format!("e{i}=http://{}:2380", lab.host(i).ip))
        .collect::<Vec<_>>()
        .join(",");
    let args = |lab: &Lab, i: usize| -> Vec<String> {
        let ip = lab.host(i).ip;
        vec![
            "--name".into(),
            format!("e{i}"),
            "--data-dir".into(),
            lab.host_dir(i).join("etcd").to_str().expect("utf-8").into(),
            "--listen-peer-urls".into(),
            format!("http://{ip}:2380"),
            "--initial-advertise-peer-urls".into(),
            format!("http://{ip}:2380"),
            "--listen-client-urls".into(),
            format!("http://{ip}:2379,http://127.0.0.1:2379"),
            "--advertise-client-urls".into(),
            format!("http://{ip}:2379"),
            "--initial-cluster".into(),
            cluster.clone(),
            "--initial-cluster-state".into(),
            "new".into(),
        ]
    };
    let mut procs = Vec::new();
    for i in 0..3 {
        let a = args(lab, i);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        procs.push(lab.spawn_program(i, &format!("etcd{i}"), ETCD, &refs));
    }
    // The leader: the member whose status names itself as leader.
    let leader_of = |lab: &Lab| -> Result<usize, String> {
        let mut ids = Vec::new();
        for i in 0..3 {
            let st = lab
                .in_host(i, || {
                    request_at(
                        "127.0.0.1:2379",
                        "POST",
                        "/v3/maintenance/status",
                        "{}",
                        None,
                    )
                })
                .ok_or(format!("etcd{i}: no answer"))?
                .1;
            ids.push((st["header"]["member_id"].clone(), st["leader"].clone()));
        }
        let leader = ids[0].1.clone();
        if leader.is_null() || ids.iter().any(|(_, l)| *l != leader) {
            return Err(format!("{ids:?}"));
        }
        ids.iter()
            .position(|(m, _)| *m == leader)
            .ok_or_else(|| format!("{ids:?}"))
    };
    let mut samples = Vec::new();
    let mut failed = 0;
    for t in 0..trials {
        let leader = wait::until("an etcd leader", Duration::from_secs(60), || leader_of(lab));
        let writer = (leader + 1) % 3;
        let key = base64::engine::general_purpose::STANDARD.encode(format!("failover{t}"));
        let body = format!("{{\"key\":\"{key}\",\"value\":\"{key}\"}}");
        let killed = Instant::now();
        lab.kill9(procs[leader]);
        let acked = lab.in_host(writer, move || {
            // A put sent at the kill waits out etcd's request timeout (7 s) instead of moving to
            // the new leader, so the client gives each put 100 ms and sends another, as a
            // client of etcd would, until one is acknowledged.
            while killed.elapsed() < Duration::from_secs(30) {
                if let Some((200, v)) = request_within(
                    "127.0.0.1:2379",
                    "POST",
                    "/v3/kv/put",
                    &body,
                    None,
                    Some(Duration::from_millis(100)),
                ) && v.get("error").is_none()
                {
                    return Some(Instant::now());
                }
            }
            None
        });
        match acked {
            Some(at) => {
                let ms = at.duration_since(killed).as_secs_f64() * 1000.0;
                println!(
                    "etcd trial {t}: leader e{leader} killed, put acknowledged after {ms:.1} ms"
                );
                samples.push(ms);
            }
            None => failed += 1,
        }
        // Restart the victim on its data dir (it rejoins), and let the group settle as for ours.
        let a = args(lab, leader);
        let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
        a.truncate(a.len() - 2); // an existing member: no --initial-cluster-state new
        lab.restart_with(procs[leader], &a);
        let restarted = Instant::now();
        wait::until("etcd whole again", Duration::from_secs(60), || {
            leader_of(lab)
        });
        common::settle_after_restart(restarted);
    }
    (Stats(samples), failed)
}

// ---- the parts ----

/// What the run found out about the peers, for the results' head.
#[derive(Default)]
struct Versions {
    serf: Option<String>,
    etcd: Option<String>,
}

fn not_installed(report: &mut String, heading: &str, what: &str, path: &str) {
    let _ = writeln!(
        report,
        "## {heading}\n\nNot measured: {what} is not installed on this machine (`{path}` is missing; Debian: `apt-get install -y serf etcd-server`).\n"
    );
}

fn detection(trials: usize, versions: &mut Versions, report: &mut String) -> Option<Ratio> {
    let heading = format!("Failure detection, N = {DETECTION_N}");
    if !Path::new(SERF).exists() {
        not_installed(report, &heading, "Serf", SERF);
        return None;
    }
    let ours = common::detection::detect(DETECTION_N, None, trials);
    println!("{}", ours.row("quorate detection s", 2));
    let mut lab = Lab::new(DETECTION_N);
    versions.serf = Some(version(&lab, SERF, &["version"]));
    let serf = serf_detection(&mut lab, DETECTION_N, trials);
    drop(lab);
    println!("{}", serf.row("serf detection s", 2));
    let ratio = Ratio {
        measure: "failure detection, N = 5",
        peer: "Serf",
        quorate: ours.pct(0.5),
        other: serf.pct(0.5),
        unit: "s",
        digits: 2,
        goal: 0.35,
        bound: false,
    };
    let _ = writeln!(
        report,
        "## {heading}\n\n{DETECTION_N} agents in {DETECTION_N} hosts, joined through host 0. kill -9 one (never host 0, a different one each trial); seconds until every survivor reports it failed. quorate: each survivor's gossip view (`/v1/members`, what `quorate members` shows, read over HTTP in the host); Serf: `serf members -format json -rpc-addr {SERF_RPC}` run in each survivor, status `failed` (each read starts a `serf` process in the host). The victim restarts and all are alive again between trials.\n\n\
         | system | settings | trials | median s | p99 s | min s | max s |\n|---|---|---|---|---|---|---|\n{}\n{}\n\n\
         All trials (s): quorate {}; Serf {}.\n\n{}\n",
        ours.row("quorate | its defaults: gossip rounds of 200 ms, phi threshold 6", 2),
        serf.row(
            "Serf | its defaults (`-profile lan`: memberlist's LAN timing), `-bind HOST:7946`, `-join` host 0",
            2
        ),
        all_trials(&ours.0, 2),
        all_trials(&serf.0, 2),
        ratio.sentence()
    );
    Some(ratio)
}

fn formation(trials: usize, versions: &mut Versions, report: &mut String) -> Option<Ratio> {
    let heading = "Zero-configuration formation, 3 agents";
    if !Path::new(SERF).exists() {
        not_installed(report, heading, "Serf", SERF);
        return None;
    }
    let mut lab = Lab::new(3);
    let ours: Vec<f64> = (0..trials)
        .map(|r| {
            let t = common::formation::trial(&mut lab, r).took.as_secs_f64();
            println!("quorate formation trial {r}: formed after {t:.2} s");
            t
        })
        .collect();
    drop(lab);
    let ours = Stats(ours);
    let mut lab = Lab::new(3);
    versions
        .serf
        .get_or_insert_with(|| version(&lab, SERF, &["version"]));
    let serf = serf_formation(&mut lab, trials);
    drop(lab);
    let unformed = serf.iter().filter(|t| t.is_none()).count();
    let deadline = SERF_FORMATION_DEADLINE.as_secs_f64();
    let serf = Stats(serf.iter().map(|t| t.unwrap_or(deadline)).collect());
    println!(
        "{} ({unformed} not formed)",
        serf.row("serf formation s", 2)
    );
    let ratio = Ratio {
        measure: "zero-config formation, 3 agents",
        peer: "Serf",
        quorate: ours.pct(0.5),
        other: serf.pct(0.5),
        unit: "s",
        digits: 2,
        goal: 0.05,
        bound: unformed > 0,
    };
    let unformed_text = if unformed == 0 {
        "Every Serf trial formed.".to_string()
    } else {
        format!(
            "{unformed} of {trials} Serf trials did not form within {deadline:.0} s; each is counted as {deadline:.0} s, so Serf's figures are lower bounds and the ratio an upper bound."
        )
    };
    let _ = writeln!(
        report,
        "## {heading}\n\nThree agents started at the same instant in three hosts, none given another's address; seconds from the start until all agree. quorate: fresh data dirs, no flags but a name and a cluster name per trial (the formation bench's measure), until every node's `quorate status` shows one cluster, one leader and three voters. Serf: `serf agent -discover bench<trial>` (its mDNS discovery, a name per trial), until every agent's `serf members` lists all three alive, {deadline:.0} s at most per trial; the agents are killed after each trial. {unformed_text}\n\n\
         | system | settings | trials | median s | p99 s | min s | max s |\n|---|---|---|---|---|---|---|\n{}\n{}\n\n\
         All trials (s): quorate {}; Serf {}.\n\n{}\n\n{SERF_DISCOVERY}\n",
        ours.row("quorate | its defaults, `--cluster bench<trial>`", 2),
        serf.row(
            "Serf | its defaults, `-discover bench<trial>`, `-bind HOST:7946`",
            2
        ),
        all_trials(&ours.0, 2),
        all_trials(&serf.0, 2),
        ratio.sentence()
    );
    Some(ratio)
}

fn failover(trials: usize, versions: &mut Versions, report: &mut String) -> Option<Ratio> {
    let heading = "Leader failover to a committed write, 3 voters";
    if !Path::new(ETCD).exists() {
        not_installed(report, heading, "etcd", ETCD);
        return None;
    }
    let (ours, failed) = common::failover::failover(trials);
    println!("{}", ours.row("quorate failover ms", 1));
    let mut lab = Lab::new(3);
    versions.etcd = Some(version(&lab, ETCD, &["--version"]));
    let (etcd, efailed) = etcd_failover(&mut lab, trials);
    drop(lab);
    println!("{}", etcd.row("etcd failover ms", 1));
    let ratio = Ratio {
        measure: "leader failover to a committed write",
        peer: "etcd",
        quorate: ours.pct(0.5),
        other: etcd.pct(0.5),
        unit: "ms",
        digits: 1,
        goal: 0.45,
        bound: false,
    };
    let _ = writeln!(
        report,
        "## {heading}\n\nThree voters (members) in three hosts. kill -9 the leader while a survivor that is not the leader starts a write at the same instant; milliseconds from the kill until the write is acknowledged as committed. quorate: a registry write (`POST /v1/labels` to the survivor's agent, routed to the leader; the consensus bench's measure). etcd: a put through the survivor's local client port; each put is given 100 ms and another is sent until one is acknowledged (a put sent at the kill would wait out etcd's 7 s request timeout instead of moving to the new leader, where quorate's routing follows the leadership by itself). The victim restarts on its data dir and the group is whole again between trials, then 1.1 s passes (a restarted quorate voter does not campaign in its first second). Writes that failed: quorate {failed}, etcd {efailed}.\n\n\
         | system | settings | trials | median ms | p99 ms | min ms | max ms |\n|---|---|---|---|---|---|---|\n{}\n{}\n\n\
         All trials (ms): quorate {}; etcd {}.\n\n{}\n",
        ours.row(
            "quorate | its defaults: heartbeat 50 ms, election timeout 100 to 200 ms after a leader lease of 200 ms, then a pre-vote",
            1
        ),
        etcd.row(
            "etcd | its defaults: heartbeat 100 ms, election timeout 1 s; put retried every 100 ms",
            1
        ),
        all_trials(&ours.0, 1),
        all_trials(&etcd.0, 1),
        ratio.sentence()
    );
    Some(ratio)
}

fn main() {
    let want = common::parts();
    let all = common::trials("PEERS_TRIALS", 0);
    let trials =
        |var: &str, default: usize| common::trials(var, if all > 0 { all } else { default });
    let mut versions = Versions::default();
    let mut sections = String::new();
    let mut ratios = Vec::new();
    if want("detection") {
        ratios.extend(detection(
            trials("PEERS_DETECTION_TRIALS", 8),
            &mut versions,
            &mut sections,
        ));
    }
    if want("formation") {
        ratios.extend(formation(
            trials("PEERS_FORMATION_TRIALS", 5),
            &mut versions,
            &mut sections,
        ));
    }
    if want("failover") {
        ratios.extend(failover(
            trials("PEERS_FAILOVER_TRIALS", 10),
            &mut versions,
            &mut sections,
        ));
    }
    let named = |v: &Option<String>, package: &str, command: &str| match v {
        Some(v) => format!(
            "`{v}` (`{command}`; Debian package {package} {})",
            package_version(package).unwrap_or_else(|| "not installed".into())
        ),
        None => "not run".to_string(),
    };
    let mut report = format!(
        "# quorate beside Serf and etcd\n\n\
         `cargo bench --bench peers`, as root, LAN lab (network namespaces on one bridge), release build, 2-core machine. Every system runs in lab hosts, on the same machine in the same run, one system at a time. Versions: quorate {} (this tree), Serf {}, etcd {}.\n\n\
         | measure | quorate median | peer | peer median | ratio quorate / peer | goal | met |\n|---|---|---|---|---|---|---|\n",
        env!("CARGO_PKG_VERSION"),
        named(&versions.serf, "serf", "serf version"),
        named(&versions.etcd, "etcd-server", "etcd --version"),
    );
    for r in &ratios {
        let _ = writeln!(report, "{}", r.row());
        println!("{}", r.sentence());
    }
    report.push('\n');
    report.push_str(&sections);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/peers.md");
    std::fs::write(path, &report).expect("write results");
    println!("wrote {path}");
}
