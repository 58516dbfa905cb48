//! The nemesis and its checker, after etcd's functional tester and Jepsen: a cluster of real
//! agents in the LAN lab (5 voters and 3 storage learners joined with a storage token), faults
//! injected one at a time while clients write, and a verdict on what the cluster did.
//!
//! The nemesis picks faults with a seeded RNG (the seed replays the choices, not the
//! timings): kill -9 of the leader, of any node, of every node at once (then restarts); a cut
//! cable; a silent blackhole of the leader, and of the leader and another voter; random loss on
//! every host; loss on every host with a kill of the leader (the one overlap). Each fault is
//! held a moment, then healed, and the cluster is given time to converge before the next one.
//!
//! While it runs, one client thread per writer host writes labels through that host's HTTP API
//! (`POST /v1/labels` with the agent's admin credential, so on that node's own record): writer
//! `w` writes the values 1, 2, 3, ... one after another, the value `n` under the key
//! `nem.<n mod slots>`, retrying a failed write with the same value until it succeeds, and
//! records each success as acknowledged. A sampler thread per host reads that host's
//! `/v1/status` every few tens of milliseconds throughout.
//!
//! The checker asserts:
//! 1. one leader per term, from every sample (the leader a node names for its term, and a node
//!    saying it leads) and from openraft's vote changes in every agent's JSON log (a committed
//!    vote `T<term>-N<id>:committed` is a leader granted by a quorum). openraft 0.9 as quorate
//!    builds it (without its `single-term-leader` feature) identifies a leader by term *and*
//!    node id, and lets a candidate with a higher node id win a term another candidate won a
//!    moment before: the voters move to the higher vote, so the first leader of the term can no
//!    longer commit. Such terms are listed as shared ([`Verdict::shared_terms`]), with their
//!    evidence, not as violations; a violation is what breaks that rule too: a node whose leader
//!    goes back in openraft's order (term, then node id) within one run of its process;
//! 2. no acknowledged write lost: at every convergence, every node holds, for every key, a value
//!    at least as new as the newest one acknowledged under it before the heal (a newer value
//!    of the same writer is allowed, an older one is a loss); at the end, with the writers
//!    stopped, the same for every acknowledgement, and every node's registry identical;
//! 3. convergence within the bound (5 s) of each heal: one leader and one term everywhere,
//!    the 5 voters and 3 learners in every node's view, every node caught up (its commit index
//!    at least the leader's first after the heal, and every write acknowledged before the heal
//!    applied). The time is measured from the heal to the sample that completed the picture.
//!
//! It does not judge performance beyond that bound, and it does not repair anything: a
//! violation is reported with what was seen.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::support::agents;
use crate::support::http::{Stats, admin, request_within};
use crate::support::lab::{Lab, ProcId};
use crate::support::wait;

/// Voters in the cluster the nemesis runs against.
pub const VOTERS: usize = 5;
/// Storage learners beside them.
pub const STORAGE: usize = 3;
/// Hosts: the voters first, then the storage nodes.
pub const HOSTS: usize = VOTERS + STORAGE;
/// The environment variable that sets the seed (else one is drawn and printed).
pub const SEED_VAR: &str = "NEMESIS_SEED";
/// The environment variable naming a directory where the agents' logs are kept after a run.
pub const LOGS_VAR: &str = "NEMESIS_LOGS";

/// A convergence slower than this has its story printed in the summary.
const SLOW: Duration = Duration::from_secs(2);

/// The log filter the agents run with: quorate's default, plus openraft's vote changes, from
/// which the checker reads every leader a quorum granted.
const LOG_FILTER: &str =
    "info,openraft=error,openraft::replication=off,openraft::engine::handler::vote_handler=info";

/// What a run does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// How long faults are injected (the final convergence comes after).
    pub duration: Duration,
    /// The seed of the fault choices.
    pub seed: u64,
    /// The hosts whose APIs the writers write through, one writer each.
    pub writers: Vec<usize>,
    /// The pause between one writer's writes (and between retries).
    pub pace: Duration,
    /// Keys per writer: value `n` goes to key `nem.<n mod slots>`.
    pub slots: u64,
    /// How often each host's status is sampled.
    pub sample_every: Duration,
    /// The convergence bound the checker asserts after each heal.
    pub bound: Duration,
    /// How long a convergence is waited for (and measured) before the run gives up.
    pub give_up: Duration,
}

impl Plan {
    /// A plan of `duration` with the seed from [`SEED_VAR`] (else a fresh one): writers on two
    /// voters' and two storage nodes' hosts, a write every 50 ms each, 256 keys per writer,
    /// status every 100 ms, the 5 s bound, 30 s before giving up on a convergence.
    pub fn new(duration: Duration) -> Plan {
        Plan {
            duration,
            seed: seed_from_env(),
            writers: vec![1, 3, VOTERS, VOTERS + 2],
            pace: Duration::from_millis(50),
            slots: 256,
            sample_every: Duration::from_millis(100),
            bound: Duration::from_secs(5),
            give_up: Duration::from_secs(30),
        }
    }
}

/// The seed in [`SEED_VAR`], else a fresh one.
pub fn seed_from_env() -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{SEED_VAR}={s:?} is not a u64 seed: {e}")),
        Err(_) => rand::random(),
    }
}

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// kill -9 of the leader, restarted at the heal.
    KillLeader,
    /// kill -9 of any node, restarted at the heal.
    KillAny,
    /// kill -9 of every node at once, all restarted at the heal.
    KillAll,
    /// A node's cable pulled (the link goes down), plugged back at the heal.
    Cut,
    /// The leader blackholed: everything in and out dropped, the link up.
    BlackholeLeader,
    /// The leader and another voter blackholed.
    BlackholeLeaderAndVoter,
    /// Random loss (10 to 20 %) on every host at once.
    Loss,
    /// Random loss on every host and, meanwhile, kill -9 of the leader.
    LossAndKillLeader,
}

impl FaultKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::KillLeader,
        FaultKind::KillAny,
        FaultKind::KillAll,
        FaultKind::Cut,
        FaultKind::BlackholeLeader,
        FaultKind::BlackholeLeaderAndVoter,
        FaultKind::Loss,
        FaultKind::LossAndKillLeader,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill -9 leader",
            FaultKind::KillAny => "kill -9 any node",
            FaultKind::KillAll => "kill -9 all nodes",
            FaultKind::Cut => "cut a node's link",
            FaultKind::BlackholeLeader => "blackhole leader",
            FaultKind::BlackholeLeaderAndVoter => "blackhole leader + voter",
            FaultKind::Loss => "loss on every host",
            FaultKind::LossAndKillLeader => "loss + kill -9 leader",
        }
    }
}

/// One fault as it happened.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// What it was.
    pub kind: FaultKind,
    /// The nodes it hit (names), and the loss share where there was one.
    pub target: String,
    /// When it began, from the start of the run.
    pub at: Duration,
    /// When it was healed, from the start of the run.
    pub healed: Duration,
    /// From the heal to convergence; `None` when the run gave up waiting.
    pub converged: Option<Duration>,
    /// What the convergence waited for, each time that changed (ms after the heal: the
    /// first reason of its kind).
    pub story: Vec<String>,
}

/// What a run saw, and its violations.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// The seed of the fault choices.
    pub seed: u64,
    /// How long the run took, formation excluded.
    pub took: Duration,
    /// The faults, in order.
    pub faults: Vec<FaultRecord>,
    /// Every term seen, with the leader (names) claimed for it.
    pub terms: BTreeMap<u64, BTreeSet<String>>,
    /// Terms more than one leader won (openraft's leader id is term and node id), with the
    /// evidence of each claim.
    pub shared_terms: Vec<String>,
    /// Distinct values the writers wrote.
    pub attempted: u64,
    /// Of those, acknowledged.
    pub acknowledged: u64,
    /// Write requests that failed (and were retried).
    pub failed_requests: u64,
    /// Milliseconds from a value's first request to its acknowledgement, retries included.
    pub write_ms: Vec<f64>,
    /// Status samples taken.
    pub samples: u64,
    /// Every violation, with what was seen.
    pub violations: Vec<String>,
}

impl Verdict {
    /// Convergence times of the heals that converged, in seconds.
    pub fn convergence_secs(&self) -> Vec<f64> {
        self.faults
            .iter()
            .filter_map(|f| f.converged.map(|d| d.as_secs_f64()))
            .collect()
    }

    /// Faults injected, by kind.
    pub fn by_kind(&self) -> BTreeMap<FaultKind, usize> {
        let mut m = BTreeMap::new();
        for f in &self.faults {
            *m.entry(f.kind).or_insert(0) += 1;
        }
        m
    }

    /// The verdict as text: the seed, the figures, each fault, each violation.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "nemesis seed {} ({SEED_VAR}={} replays the choices); {:.1} s, {} faults, {} terms ({} shared), writes attempted {} acknowledged {} (failed requests retried {}), {} status samples, {} violations",
            self.seed,
            self.seed,
            self.took.as_secs_f64(),
            self.faults.len(),
            self.terms.len(),
            self.shared_terms.len(),
            self.attempted,
            self.acknowledged,
            self.failed_requests,
            self.samples,
            self.violations.len()
        );
        if !self.write_ms.is_empty() {
            let ms = Stats(self.write_ms.clone());
            let _ = writeln!(
                s,
                "  write to acknowledgement (retries included): median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                ms.pct(0.5),
                ms.pct(0.99),
                ms.pct(1.0)
            );
        }
        for f in &self.faults {
            let _ = writeln!(
                s,
                "  at {:>6.1} s {:<26} {:<24} healed at {:>6.1} s, converged {}",
                f.at.as_secs_f64(),
                f.kind.name(),
                f.target,
                f.healed.as_secs_f64(),
                f.converged
                    .map_or("never (gave up)".to_string(), |d| format!(
                        "in {:.0} ms",
                        d.as_secs_f64() * 1000.0
                    ))
            );
        }
        for f in self
            .faults
            .iter()
            .filter(|f| f.converged.is_none_or(|d| d > SLOW))
        {
            let _ = writeln!(
                s,
                "  slow heal after {} {} at {:.1} s: {}",
                f.kind.name(),
                f.target,
                f.healed.as_secs_f64(),
                f.story.join(" | ")
            );
        }
        for t in &self.shared_terms {
            let _ = writeln!(s, "  shared term (openraft: term and node id): {t}");
        }
        for v in &self.violations {
            let _ = writeln!(s, "  VIOLATION: {v}");
        }
        s
    }
}

/// The cluster under test: 5 voters (host 0 bootstraps with a voter target of 5, hosts 1 to 4
/// join with a voter token) and 3 storage nodes (hosts 5 to 7, one storage token).
pub struct Cluster {
    /// The lab.
    pub lab: Lab,
    /// The agent of each host.
    pub procs: Vec<ProcId>,
    /// Each host's node name.
    pub names: Vec<String>,
    /// Each host's node id (16 hex digits).
    pub ids: Vec<String>,
}

impl Cluster {
    /// Forms the cluster and waits until every node sees all of it and one leader.
    pub fn form() -> Cluster {
        let mut lab = Lab::new(HOSTS);
        let names: Vec<String> = (0..HOSTS)
            .map(|i| {
                if i < VOTERS {
                    format!("v{i}")
                } else {
                    format!("s{i}")
                }
            })
            .collect();
        let configs: Vec<String> = (0..HOSTS)
            .map(|i| {
                let path = lab.host_dir(i).join("log.toml");
                std::fs::write(&path, format!("log = \"{LOG_FILTER}\"\n")).expect("log config");
                path.to_str().expect("utf-8").to_string()
            })
            .collect();
        let mut procs = vec![agents::agent(
            &mut lab,
            0,
            &names[0],
            &[
                "--config",
                &configs[0],
                "--bootstrap",
                "--voter-target",
                "5",
            ],
        )];
        agents::wait_group(
            &lab,
            &[0],
            &[(names[0].as_str(), "voter")],
            Duration::from_secs(30),
        );
        let voter = token(&lab, &["--role", "voter", "--uses", "4", "--ttl", "24h"]);
        let storage = token(&lab, &["--role", "storage", "--uses", "3", "--ttl", "24h"]);
        for i in 1..HOSTS {
            let mut extra = vec!["--config", configs[i].as_str()];
            if i < VOTERS {
                extra.extend(["--join", voter.as_str()]);
            } else {
                extra.extend(["--role", "storage", "--join", storage.as_str()]);
            }
            procs.push(agents::agent(&mut lab, i, &names[i], &extra));
        }
        let want: Vec<(&str, &str)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), if i < VOTERS { "voter" } else { "learner" }))
            .collect();
        let all: Vec<usize> = (0..HOSTS).collect();
        agents::wait_group(&lab, &all, &want, Duration::from_secs(60));
        let ids = (0..HOSTS)
            .map(|i| {
                let st = agents::status(&lab, i).expect("status");
                st["node_id"].as_str().expect("node id").to_string()
            })
            .collect();
        Cluster {
            lab,
            procs,
            names,
            ids,
        }
    }

    fn name_of(&self, id: &str) -> String {
        self.ids
            .iter()
            .position(|x| x == id)
            .map_or_else(|| format!("unknown node {id}"), |i| self.names[i].clone())
    }
}

fn token(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = lab.quorate_admin(0, &all);
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What a status sample holds that the checker reads.
#[derive(Clone, Debug, Deserialize)]
struct View {
    node_id: String,
    state: String,
    leader_id: Option<String>,
    term: u64,
    commit_index: Option<u64>,
    members: Vec<MemberView>,
}

#[derive(Clone, Debug, Deserialize)]
struct MemberView {
    id: String,
    suffrage: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A host's latest sample: when its answer came, and the view (or why there was none).
#[derive(Clone, Debug)]
struct Latest {
    at: Instant,
    view: Result<View, String>,
}

/// What the samplers share with the checker.
#[derive(Default)]
struct Observed {
    latest: Mutex<Vec<Option<Latest>>>,
    /// term -> leader id -> the first evidence of the claim.
    claims: Mutex<BTreeMap<u64, BTreeMap<String, String>>>,
    /// A node's leader going back in openraft's order, as the samples saw it.
    regressions: Mutex<Vec<String>>,
    samples: AtomicU64,
}

impl Observed {
    fn claim(&self, term: u64, leader: &str, evidence: impl FnOnce() -> String) {
        let mut claims = self.claims.lock().expect("claims");
        claims
            .entry(term)
            .or_default()
            .entry(leader.to_string())
            .or_insert_with(evidence);
    }
}

/// One writer's record.
#[derive(Default)]
struct Writes {
    /// The last value attempted.
    attempted: u64,
    /// Acknowledged values, with when the answer came.
    acked: Vec<(u64, Instant)>,
    /// Requests that failed.
    failed: u64,
    /// Milliseconds from the first request of a value to its acknowledgement.
    latency_ms: Vec<f64>,
}

fn sampler(
    host: usize,
    every: Duration,
    start: Instant,
    obs: Arc<Observed>,
    stop: Arc<AtomicBool>,
) {
    // The newest (term, leader) this run of the host's agent named; forgotten when it stops
    // answering (killed: a new process starts from what it saved).
    let mut newest: Option<(u64, String)> = None;
    while !stop.load(Ordering::Relaxed) {
        let answer = request_within(
            "127.0.0.1:7948",
            "GET",
            "/v1/status",
            "",
            None,
            Some(Duration::from_secs(2)),
        );
        let at = Instant::now();
        let view = match answer {
            Some((200, v)) => serde_json::from_value::<View>(v).map_err(|e| e.to_string()),
            Some((code, v)) => Err(format!("{code}: {v}")),
            None => Err("no answer".to_string()),
        };
        if view.is_err() {
            newest = None;
        }
        if let Ok(v) = &view {
            let when = at.duration_since(start).as_secs_f64();
            if let Some(l) = &v.leader_id {
                // Node ids are 16 hex digits: their text order is their numeric order.
                let now = (v.term, l.clone());
                match &newest {
                    Some(old) if now < *old => {
                        obs.regressions.lock().expect("regressions").push(format!(
                            "host {host}'s leader went back from T{}-N{} to T{}-N{} at {when:.2} s",
                            old.0, old.1, now.0, now.1
                        ));
                    }
                    _ => newest = Some(now),
                }
                obs.claim(v.term, l, || {
                    format!(
                        "host {host} named it leader of term {} at {when:.2} s",
                        v.term
                    )
                });
            }
            if v.state == "leader" {
                obs.claim(v.term, &v.node_id, || {
                    format!("host {host} said it led term {} at {when:.2} s", v.term)
                });
            }
        }
        obs.samples.fetch_add(1, Ordering::Relaxed);
        obs.latest.lock().expect("latest")[host] = Some(Latest { at, view });
        std::thread::sleep(every); // the sampling period, not a synchronisation
    }
}

fn writer(
    token: String,
    pace: Duration,
    slots: u64,
    record: Arc<Mutex<Writes>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        record.lock().expect("writes").attempted = n;
        let body = serde_json::json!({ "set": { format!("nem.{}", n % slots): n.to_string() } })
            .to_string();
        let first = Instant::now();
        loop {
            let answer = request_within(
                "127.0.0.1:7948",
                "POST",
                "/v1/labels",
                &body,
                Some(&token),
                Some(Duration::from_secs(5)),
            );
            if let Some((200, _)) = answer {
                let mut r = record.lock().expect("writes");
                r.acked.push((n, Instant::now()));
                r.latency_ms.push(first.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            record.lock().expect("writes").failed += 1;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(pace); // the client's retry pause
        }
        std::thread::sleep(pace); // the client's pace
    }
}

/// The newest acknowledged value under each key of a writer, of the acknowledgements up to
/// `before` (all when `None`).
fn newest_acked(w: &Writes, slots: u64, before: Option<Instant>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for &(n, at) in &w.acked {
        if before.is_none_or(|b| at <= b) {
            let e = m.entry(format!("nem.{}", n % slots)).or_insert(0);
            *e = (*e).max(n);
        }
    }
    m
}

/// Why a node's labels of a writer do not hold what was acknowledged: keys missing, or holding
/// an older value, or one never attempted, or one written under another key.
fn missing(
    labels: &BTreeMap<String, String>,
    want: &BTreeMap<String, u64>,
    attempted: u64,
    slots: u64,
) -> Vec<String> {
    let mut bad = Vec::new();
    for (key, &acked) in want {
        match labels.get(key).map(|v| v.parse::<u64>()) {
            None => bad.push(format!("{key}: absent, {acked} acknowledged")),
            Some(Err(_)) => bad.push(format!("{key}: {:?} is not a value written", labels[key])),
            Some(Ok(v)) if v < acked => bad.push(format!("{key}: holds {v}, {acked} acknowledged")),
            Some(Ok(v)) if v > attempted || format!("nem.{}", v % slots) != *key => {
                bad.push(format!("{key}: holds {v}, never written there"))
            }
            Some(Ok(_)) => {}
        }
    }
    bad
}

/// The run's moving parts: the cluster, the samplers' and writers' shared state.
struct Run<'a> {
    cluster: &'a mut Cluster,
    plan: &'a Plan,
    start: Instant,
    obs: Arc<Observed>,
    writes: Vec<(usize, Arc<Mutex<Writes>>)>,
    rng: StdRng,
    violations: Vec<String>,
    shared_terms: Vec<String>,
}

impl Run<'_> {
    fn latest(&self) -> Vec<Option<Latest>> {
        self.obs.latest.lock().expect("latest").clone()
    }

    fn since_start(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }

    /// The host of the leader the freshest samples name, waiting for one.
    fn leader_host(&self) -> usize {
        wait::until("a leader to aim at", Duration::from_secs(30), || {
            let latest = self.latest();
            let best = latest
                .iter()
                .flatten()
                .filter_map(|l| l.view.as_ref().ok())
                .filter(|v| v.leader_id.is_some())
                .max_by_key(|v| v.term)
                .and_then(|v| v.leader_id.clone());
            best.and_then(|id| self.cluster.ids.iter().position(|x| *x == id))
                .ok_or("no leader in the samples")
        })
    }

    /// Waits until the cluster converged after a heal at `healed` (writes acknowledged up to
    /// then applied everywhere); returns when, or `None` after [`Plan::give_up`], with a
    /// violation naming what was last seen. With `exact`, every node's commit index and
    /// writers' labels must be the same, and every acknowledgement counts.
    fn converge(&mut self, healed: Instant, exact: bool) -> (Option<Instant>, Vec<String>) {
        let ids = self.cluster.ids.clone();
        let want: BTreeMap<String, &str> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), if i < VOTERS { "voter" } else { "learner" }))
            .collect();
        let mut target: Option<(String, u64, u64)> = None; // leader, term, commit index
        // What kept the picture incomplete, each time that changed: ms after the heal, and
        // the first such reason seen.
        let mut story: Vec<String> = Vec::new();
        let mut class = "";
        loop {
            let latest = self.latest();
            let seen = match self.judge(&latest, healed, exact, &want, &mut target) {
                Ok(at) => return (Some(at), story),
                Err(why) => why,
            };
            if classify(&seen) != class {
                class = classify(&seen);
                story.push(format!("{} ms: {seen}", healed.elapsed().as_millis()));
            }
            if healed.elapsed() > self.plan.give_up {
                self.violations.push(format!(
                    "no convergence within {:?} of the heal at {:.1} s; last seen: {seen}; before: {}",
                    self.plan.give_up,
                    self.since_start(healed).as_secs_f64(),
                    story.join(" | ")
                ));
                return (None, story);
            }
            std::thread::sleep(Duration::from_millis(20)); // polling the samplers' results
        }
    }

    fn judge(
        &self,
        latest: &[Option<Latest>],
        healed: Instant,
        exact: bool,
        want: &BTreeMap<String, &str>,
        target: &mut Option<(String, u64, u64)>,
    ) -> Result<Instant, String> {
        let names = &self.cluster.names;
        let mut views = Vec::new();
        let mut last = healed;
        for (i, l) in latest.iter().enumerate() {
            let l = l
                .as_ref()
                .filter(|l| l.at > healed)
                .ok_or(format!("{}: no sample since the heal", names[i]))?;
            let v = l.view.as_ref().map_err(|e| format!("{}: {e}", names[i]))?;
            last = last.max(l.at);
            views.push(v);
        }
        let leader = views[0]
            .leader_id
            .clone()
            .ok_or(format!("{}: no leader", names[0]))?;
        let term = views[0].term;
        for (i, v) in views.iter().enumerate() {
            if v.leader_id.as_deref() != Some(leader.as_str()) || v.term != term {
                return Err(format!(
                    "{} names leader {:?} in term {}, {} names {} in term {term}",
                    names[i],
                    v.leader_id.as_deref().map(|l| self.cluster.name_of(l)),
                    v.term,
                    names[0],
                    self.cluster.name_of(&leader)
                ));
            }
            let leads = v.state == "leader";
            if leads != (v.node_id == leader) {
                return Err(format!("{} is {} under leader {leader}", names[i], v.state));
            }
            let seen: BTreeMap<String, &str> = v
                .members
                .iter()
                .map(|m| (m.id.clone(), m.suffrage.as_str()))
                .collect();
            if seen != *want {
                return Err(format!("{} sees members {seen:?}", names[i]));
            }
        }
        let lead = views
            .iter()
            .find(|v| v.node_id == leader)
            .ok_or("the leader is no host of the lab")?;
        let lead_commit = lead.commit_index.unwrap_or(0);
        match target {
            Some((l, t, _)) if *l == leader && *t == term => {}
            _ => *target = Some((leader.clone(), term, lead_commit)),
        }
        let floor = target.as_ref().map_or(0, |t| t.2);
        for (i, v) in views.iter().enumerate() {
            let c = v.commit_index.unwrap_or(0);
            if c < floor || (exact && c != lead_commit) {
                return Err(format!(
                    "{} at commit index {c}, the leader at {lead_commit} (first after the heal {floor})",
                    names[i]
                ));
            }
        }
        for (w, rec) in &self.writes {
            let rec = rec.lock().expect("writes");
            let acked = newest_acked(&rec, self.plan.slots, (!exact).then_some(healed));
            let id = &self.cluster.ids[*w];
            let mut first: Option<&BTreeMap<String, String>> = None;
            for (i, v) in views.iter().enumerate() {
                let labels = v
                    .members
                    .iter()
                    .find(|m| m.id == *id)
                    .map(|m| &m.labels)
                    .ok_or(format!("{} has no record of {}", names[i], names[*w]))?;
                let bad = missing(labels, &acked, rec.attempted, self.plan.slots);
                if !bad.is_empty() {
                    return Err(format!(
                        "{} lacks acknowledged writes of {}: {}",
                        names[i],
                        names[*w],
                        bad.join("; ")
                    ));
                }
                if exact {
                    match first {
                        Some(f) if f != labels => {
                            return Err(format!(
                                "{} and {} hold different labels of {}",
                                names[0], names[i], names[*w]
                            ));
                        }
                        _ => first = Some(labels),
                    }
                }
            }
        }
        Ok(last)
    }

    /// Injects one fault of `kind`, holds it, heals it; returns the target and the heal time.
    fn inject(&mut self, kind: FaultKind) -> (String, Instant) {
        let hold = Duration::from_millis(self.rng.random_range(1500..=4000));
        let loss: u32 = self.rng.random_range(10..=20);
        let any = self.rng.random_range(0..HOSTS);
        let other_pick: usize = self.rng.random_range(0..VOTERS - 1);
        let names = self.cluster.names.clone();
        let procs = self.cluster.procs.clone();
        let leader = matches!(
            kind,
            FaultKind::KillLeader
                | FaultKind::LossAndKillLeader
                | FaultKind::BlackholeLeader
                | FaultKind::BlackholeLeaderAndVoter
        )
        .then(|| self.leader_host());
        let l = leader.unwrap_or(any);
        let lab = &mut self.cluster.lab;
        let hold_for = || std::thread::sleep(hold); // the fault's duration
        match kind {
            FaultKind::KillLeader | FaultKind::KillAny => {
                let h = if kind == FaultKind::KillLeader {
                    l
                } else {
                    any
                };
                lab.kill9(procs[h]);
                hold_for();
                lab.restart(procs[h]);
                (names[h].clone(), Instant::now())
            }
            FaultKind::LossAndKillLeader => {
                (0..HOSTS).for_each(|i| lab.drop_share(i, loss));
                lab.kill9(procs[l]);
                hold_for();
                lab.restart(procs[l]);
                (0..HOSTS).for_each(|i| lab.drop_share(i, 0));
                (format!("{} ({loss} % loss)", names[l]), Instant::now())
            }
            FaultKind::KillAll => {
                procs.iter().for_each(|p| lab.kill9(*p));
                hold_for();
                procs.iter().for_each(|p| lab.restart(*p));
                ("all".to_string(), Instant::now())
            }
            FaultKind::Cut => {
                lab.cut(any);
                hold_for();
                lab.heal(any);
                (names[any].clone(), Instant::now())
            }
            FaultKind::BlackholeLeader | FaultKind::BlackholeLeaderAndVoter => {
                let mut hit = vec![l];
                if kind == FaultKind::BlackholeLeaderAndVoter {
                    let others: Vec<usize> = (0..VOTERS).filter(|v| *v != l).collect();
                    hit.push(others[other_pick]);
                }
                hit.iter().for_each(|&h| lab.blackhole(h, true));
                hold_for();
                hit.iter().for_each(|&h| lab.blackhole(h, false));
                let target = hit
                    .iter()
                    .map(|&h| names[h].as_str())
                    .collect::<Vec<_>>()
                    .join(" + ");
                (target, Instant::now())
            }
            FaultKind::Loss => {
                (0..HOSTS).for_each(|i| lab.drop_share(i, loss));
                hold_for();
                (0..HOSTS).for_each(|i| lab.drop_share(i, 0));
                (format!("all hosts, {loss} %"), Instant::now())
            }
        }
    }

    /// The leaders claimed per term, from the samples and from every agent's log; a violation
    /// for each term with more than one.
    fn elections(&mut self) -> BTreeMap<u64, BTreeSet<String>> {
        for (i, p) in self.cluster.procs.clone().into_iter().enumerate() {
            let log = self.cluster.lab.log(p);
            for line in log.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let Some(msg) = v["message"].as_str() else {
                    continue;
                };
                let Some(change) = msg.strip_prefix("vote is changing from ") else {
                    continue;
                };
                let Some((_, to)) = change.split_once(" to ") else {
                    continue;
                };
                if let Some((term, leader)) = committed_vote(to) {
                    let when = v["timestamp"].as_str().unwrap_or("?").to_string();
                    let name = &self.cluster.names[i];
                    self.obs.claim(term, &leader, || {
                        format!("{name}'s log at {when}: vote is changing to {to}")
                    });
                }
            }
        }
        let claims = self.obs.claims.lock().expect("claims").clone();
        let mut terms = BTreeMap::new();
        for (term, leaders) in claims {
            if leaders.len() > 1 {
                let said: Vec<String> = leaders
                    .iter()
                    .map(|(id, ev)| format!("{} ({ev})", self.cluster.name_of(id)))
                    .collect();
                self.shared_terms
                    .push(format!("term {term}: {}", said.join(", ")));
            }
            terms.insert(
                term,
                leaders.keys().map(|id| self.cluster.name_of(id)).collect(),
            );
        }
        let regressions = self.obs.regressions.lock().expect("regressions").clone();
        self.violations.extend(regressions);
        terms
    }
}

/// The kind of a reason the picture is not complete yet (the reasons carry figures that change
/// with every sample).
fn classify(why: &str) -> &'static str {
    const KINDS: [&str; 9] = [
        "no sample since the heal",
        "no answer",
        "no leader",
        "names leader",
        " under leader ",
        "sees members",
        "at commit index",
        "lacks acknowledged writes",
        "hold different labels",
    ];
    KINDS
        .into_iter()
        .find(|k| why.contains(k))
        .unwrap_or("other")
}

/// `T<term>-N<id>:committed` (openraft's display of a vote) as `(term, id)`; `None` for an
/// uncommitted vote or another text.
fn committed_vote(vote: &str) -> Option<(u64, String)> {
    let rest = vote.trim().strip_prefix('T')?;
    let (term, rest) = rest.split_once("-N")?;
    let (id, state) = rest.split_once(':')?;
    if state != "committed" {
        return None;
    }
    Some((term.parse().ok()?, id.to_string()))
}

/// Stops the writers and samplers when the run ends, also by a panic (they would otherwise
/// go on beside the next test of the binary).
struct StopOnDrop(Vec<Arc<AtomicBool>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(|s| s.store(true, Ordering::Relaxed));
    }
}

/// Runs `plan` against `cluster`: samplers and writers start, faults are injected until the
/// plan's duration has passed, the writers stop, and the checker gives its verdict.
pub fn run(cluster: &mut Cluster, plan: &Plan) -> Verdict {
    println!(
        "nemesis: seed {} ({SEED_VAR}={} replays the fault choices)",
        plan.seed, plan.seed
    );
    let start = Instant::now();
    let obs = Arc::new(Observed {
        latest: Mutex::new(vec![None; HOSTS]),
        ..Observed::default()
    });
    let stop_samplers = Arc::new(AtomicBool::new(false));
    let stop_writers = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(vec![stop_samplers.clone(), stop_writers.clone()]);
    let samplers: Vec<_> = (0..HOSTS)
        .map(|i| {
            let (obs, stop, every) = (obs.clone(), stop_samplers.clone(), plan.sample_every);
            cluster
                .lab
                .spawn_in_host(i, move || sampler(i, every, start, obs, stop))
        })
        .collect();
    let mut writes = Vec::new();
    let writers: Vec<_> = plan
        .writers
        .iter()
        .map(|&w| {
            let token = admin(&cluster.lab, w);
            let record = Arc::new(Mutex::new(Writes::default()));
            writes.push((w, record.clone()));
            let (stop, pace, slots) = (stop_writers.clone(), plan.pace, plan.slots);
            cluster
                .lab
                .spawn_in_host(w, move || writer(token, pace, slots, record, stop))
        })
        .collect();
    let mut run = Run {
        cluster,
        plan,
        start,
        obs,
        writes,
        rng: StdRng::seed_from_u64(plan.seed),
        violations: Vec::new(),
        shared_terms: Vec::new(),
    };
    let mut faults = Vec::new();
    // The cluster is whole and the writers have begun before the first fault.
    let _ = run.converge(Instant::now(), false);
    let mut deck = Vec::new();
    while start.elapsed() < plan.duration {
        if deck.is_empty() {
            deck = FaultKind::ALL.to_vec();
            deck.shuffle(&mut run.rng);
        }
        let kind = deck.pop().expect("a fault");
        let at = run.since_start(Instant::now());
        let (target, healed) = run.inject(kind);
        let (converged, story) = run.converge(healed, false);
        let record = FaultRecord {
            kind,
            target,
            at,
            healed: run.since_start(healed),
            converged: converged.map(|c| c.duration_since(healed)),
            story,
        };
        println!(
            "nemesis: {:>6.1} s {} {}: healed at {:.1} s, converged {:?}",
            record.at.as_secs_f64(),
            kind.name(),
            record.target,
            record.healed.as_secs_f64(),
            record.converged
        );
        if let Some(d) = record.converged
            && d > plan.bound
        {
            run.violations.push(format!(
                "{} {} healed at {:.1} s converged only after {:.0} ms, past the {:?} bound; what it waited for: {}",
                kind.name(),
                record.target,
                record.healed.as_secs_f64(),
                d.as_secs_f64() * 1000.0,
                plan.bound,
                record.story.join(" | ")
            ));
        }
        let gave_up = record.converged.is_none();
        faults.push(record);
        if gave_up {
            break; // a cluster that did not converge is not worth faulting further
        }
        let gap = Duration::from_millis(run.rng.random_range(500..=1500));
        std::thread::sleep(gap); // the quiet spell between faults
    }
    stop_writers.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("a writer thread");
    }
    // Every acknowledgement, on every node, in one registry.
    let _ = run.converge(Instant::now(), true);
    stop_samplers.store(true, Ordering::Relaxed);
    for s in samplers {
        s.join().expect("a sampler thread");
    }
    let terms = run.elections();
    if let Some(dir) = std::env::var_os(LOGS_VAR) {
        let dir = std::path::Path::new(&dir);
        std::fs::create_dir_all(dir).expect("the logs' directory");
        for (i, p) in run.cluster.procs.iter().enumerate() {
            let path = dir.join(format!("{}.log", run.cluster.names[i]));
            std::fs::write(&path, run.cluster.lab.log(*p)).expect("keep a log");
        }
    }
    let (mut attempted, mut acknowledged, mut failed_requests) = (0, 0, 0);
    let mut write_ms = Vec::new();
    for (_, w) in &run.writes {
        let w = w.lock().expect("writes");
        attempted += w.attempted;
        acknowledged += w.acked.len() as u64;
        failed_requests += w.failed;
        write_ms.extend_from_slice(&w.latency_ms);
    }
    Verdict {
        seed: plan.seed,
        took: start.elapsed(),
        faults,
        terms,
        shared_terms: run.shared_terms,
        attempted,
        acknowledged,
        failed_requests,
        write_ms,
        samples: run.obs.samples.load(Ordering::Relaxed),
        violations: run.violations,
    }
}
