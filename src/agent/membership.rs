//! How this node becomes a member of a cluster: resume the cluster its data dir holds, else
//! bootstrap (`--bootstrap`, `--dev`), else join with a token (`--join`, the CA pinned by the
//! token), else join or form through `--peers`, else zero-config (the decision in
//! `crate::bootstrap`, fed by what mDNS shows).
//!
//! `--peers` entries may be DNS names (`crate::peers`): they are resolved again at every
//! attempt, with capped, jittered backoff, until this node is a member, so that nodes started
//! in any order find each other and a name that does not resolve yet is only logged. The
//! addresses found seed gossip (on this node's gossip port), and the decision over them
//! (`bootstrap::over_peers`) reads what gossip shows of each node: join a member, or, with
//! `bootstrap_expect` forming voters in view, let the lowest form the cluster.
//!
//! It ends when the node is a member (or refused): what a member then keeps in step is
//! `bridge`'s job, and the join handshake itself is consensus's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::keys::StoredKeys;
use crate::peers::{self, PeerSpec};
use quorate_consensus::{
    Consensus, ConsensusConfig, JoinCredentials, NodeInfo, Settings, StartError, TokenSecret, Trust,
};
use quorate_discovery::AdvertState;
use tracing::{debug, info, warn};

use super::setup::{Agent, AgentError, MdnsView};
use crate::NodeId;
use crate::bootstrap::{self, Candidate, Decision, PeersStep};
use crate::config::Role;
use crate::token::JoinToken;

/// How this agent comes to be a member.
enum Mode {
    /// `--bootstrap` or `--dev`: make the cluster.
    Bootstrap,
    /// `--peers`: join through these members (an open cluster, or one sealed with our key),
    /// or form the cluster with the nodes found there.
    Peers(Vec<PeerSpec>),
    /// `--join TOKEN`: join the cluster the token names.
    Token {
        token: JoinToken,
        peers: Vec<PeerSpec>,
    },
    /// Nothing given: find the cluster (or the nodes to form it with) by mDNS.
    ZeroConfig { discovery: bool },
}

/// How this agent takes part in consensus, decided from its data dir and configuration.
pub(super) struct ConsensusPlan {
    config: ConsensusConfig,
    info: NodeInfo,
    cluster: String,
    mode: Mode,
    voter_target: u8,
    expect: usize,
    key: Option<[u8; 32]>,
    view: MdnsView,
    /// When this node's own mDNS advertisement was first announced (discovery on).
    announced: Option<Arc<OnceLock<Instant>>>,
    gossip: Arc<quorate_gossip::Gossip>,
    gossip_port: u16,
}

impl Agent {
    /// What consensus needs from the configuration.
    pub(super) fn consensus_plan(
        &self,
        keys: &StoredKeys,
        view: MdnsView,
        announced: Option<Arc<OnceLock<Instant>>>,
        gossip: Arc<quorate_gossip::Gossip>,
    ) -> ConsensusPlan {
        let c = &self.config;
        let r = &self.resolved;
        let id = self.data_dir.node_id();
        let mut config = ConsensusConfig::new(
            id,
            self.data_dir.path().join("consensus"),
            c.quic_listen(),
            r.quic_addr(),
        );
        config.write_timeout = c.raft.write_timeout;
        config.cert_lifetime = c.raft.cert_lifetime;
        // The join policy and keys hold from the first instant QUIC serves.
        config.admission = super::bridge::admission(keys);
        config.events = self.events.clone();
        // The key this node proves when it joins: from the configured cluster key (a storage
        // node keeps no join key in its data dir), else the keyring's.
        let join_key = c
            .cluster_key
            .as_deref()
            .and_then(|k| quorate_gossip::Key::from_base64(k).ok())
            .map(|k| crate::keys::join_key(&k))
            .or_else(|| keys.join_keys().first().copied());
        let mode = if c.bootstrap || c.dev {
            Mode::Bootstrap
        } else if let Some(token) = r.join_token().cloned() {
            Mode::Token {
                token,
                peers: c.peer_specs(),
            }
        } else if !c.peers.is_empty() {
            Mode::Peers(c.peer_specs())
        } else {
            Mode::ZeroConfig {
                discovery: c.discovery.enabled,
            }
        };
        ConsensusPlan {
            config,
            info: NodeInfo {
                name: r.name.clone(),
                role: c.role,
                gossip_addr: r.gossip_addr().to_string(),
                api_addr: c.http_addr.to_string(),
                labels: c.labels.clone(),
            },
            cluster: c.cluster.clone(),
            mode,
            voter_target: if c.dev { 1 } else { c.raft.voter_target },
            expect: c.bootstrap_expect,
            key: join_key,
            view,
            announced,
            gossip,
            gossip_port: c.gossip_port,
        }
    }
}

/// How long the view of forming nodes must stay unchanged before the lowest bootstraps, over
/// `--peers` (what gossip shows).
const SETTLE: Duration = Duration::from_secs(1);

/// The same over mDNS, counted from this node's own announcement too (see `crate::bootstrap`):
/// announcements of nodes started together arrive within milliseconds of each other, and a
/// node that formed is shown a member by gossip within a round (200 ms).
const MDNS_SETTLE: Duration = Duration::from_millis(500);

/// How long a join waits for the handshake of a forming node asked directly, at first, and
/// how much longer at each failed attempt, up to the cap: it may not serve yet, and then its
/// first packets are lost, and a new attempt is quicker than QUIC's retransmission; a longer
/// wait each time keeps a node that answers slowly (a loaded machine) within reach.
const ASK_DIAL: Duration = Duration::from_millis(150);
const ASK_DIAL_STEP: Duration = Duration::from_millis(50);
const ASK_DIAL_CAP: Duration = Duration::from_secs(2);

/// The first retry's delay, and the cap, of asking a forming node again.
const ASK_RETRY: Duration = Duration::from_millis(25);
const ASK_RETRY_CAP: Duration = Duration::from_secs(1);

/// How long gossip may know nothing of an address `--peers` resolved to before a join is
/// tried through it (a member whose gossip this node cannot hear, say).
const PROBE_AFTER: Duration = Duration::from_secs(3);

/// The first retry's delay, and the cap, of the backoff between attempts.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// The delay before retry number `n`, jittered.
fn retry_delay(n: u32) -> Duration {
    peers::backoff(n, BACKOFF_BASE, BACKOFF_CAP, rand::random::<f64>())
}

impl ConsensusPlan {
    fn credentials(&self, trust: Trust, token: Option<TokenSecret>) -> JoinCredentials {
        JoinCredentials {
            trust,
            token,
            key: self.key,
        }
    }

    /// Resumes the stored cluster, or bootstraps, or joins, as the configuration says;
    /// returns the running node and the secrets a join handed over.
    pub(super) async fn start(
        self,
    ) -> Result<(Arc<Consensus>, BTreeMap<String, String>), AgentError> {
        if let Some(stored) = Consensus::stored(&self.config.dir)? {
            if !matches!(self.mode, Mode::ZeroConfig { .. }) {
                info!(cluster = %stored.cluster_name, cluster_id = %stored.cluster_id, "this node belongs to a cluster already; --bootstrap, --peers and --join are ignored");
            }
            let node = Consensus::open(self.config, self.info).await?;
            info!(cluster = %stored.cluster_name, cluster_id = %stored.cluster_id, "resumed cluster membership");
            return Ok((Arc::new(node), BTreeMap::new()));
        }
        match &self.mode {
            Mode::Bootstrap => self.bootstrap().await,
            Mode::Peers(peers) => {
                let peers = peers.clone();
                self.peers_loop(&peers).await
            }
            Mode::Token { token, peers } => {
                let token = token.clone();
                let peers = peers.clone();
                let view = self.view.clone();
                let cluster = self.cluster.clone();
                self.join_loop("the join token", &peers, move |resolved| {
                    let ca = token.ca_hex();
                    let mut seeds = resolved;
                    seeds.extend(token.addrs.iter().copied());
                    seeds.extend(members_with_ca(&view, &cluster, &ca));
                    seeds.dedup();
                    let proof = TokenSecret {
                        id: token.id_hex(),
                        secret: token.secret_hex(),
                    };
                    (seeds, Trust::Pinned(ca), Some(proof))
                })
                .await
            }
            Mode::ZeroConfig { discovery } => {
                if !discovery {
                    info!(
                        "not a member of a cluster, and mDNS discovery is off: give --bootstrap, --peers or --join"
                    );
                    return std::future::pending().await;
                }
                self.zero_config().await
            }
        }
    }

    async fn bootstrap(self) -> Result<(Arc<Consensus>, BTreeMap<String, String>), AgentError> {
        let settings = Settings {
            voter_target: self.voter_target,
            ..Settings::default()
        };
        let node = Consensus::bootstrap(self.config, self.info, &self.cluster, settings).await?;
        if self.key.is_none() {
            warn!(
                cluster = %self.cluster,
                "the cluster is open (no cluster key): any node that reaches a member may join it without a token; use it only on a trusted network, or give every node --cluster-key"
            );
        }
        Ok((Arc::new(node), BTreeMap::new()))
    }

    /// Joins through the seeds `seeds_now` gives at each attempt from what `peers` resolve to
    /// then, retrying with backoff while no member answers; a refusal, or a cluster that is
    /// not the one the token names, ends it.
    async fn join_loop(
        &self,
        via: &str,
        peers: &[PeerSpec],
        seeds_now: impl Fn(Vec<SocketAddr>) -> (Vec<SocketAddr>, Trust, Option<TokenSecret>),
    ) -> Result<(Arc<Consensus>, BTreeMap<String, String>), AgentError> {
        let mut failures = 0;
        let mut foreign_rounds = 0;
        let mut said = Vec::new();
        for attempt in 0.. {
            let resolved = peers::resolve(peers).await;
            if resolved.unresolved != said {
                for (entry, why) in &resolved.unresolved {
                    info!(via, peer = %entry, reason = %why, "a peer does not resolve yet; retrying");
                }
                said = resolved.unresolved.clone();
            }
            let (seeds, trust, token) = seeds_now(resolved.addrs);
            if seeds.is_empty() {
                if attempt == 0 && peers.is_empty() {
                    info!(
                        via,
                        "looking for a member of the cluster on mDNS; give --peers if mDNS does not reach it"
                    );
                }
                // Names are asked again with backoff; mDNS's view is read every 200 ms.
                let wait = if peers.iter().any(PeerSpec::is_name) {
                    retry_delay(attempt.min(16))
                } else {
                    Duration::from_millis(200)
                };
                tokio::time::sleep(wait).await;
                continue;
            }
            match Consensus::join(
                self.config.clone(),
                self.info.clone(),
                &self.cluster,
                &seeds,
                self.credentials(trust, token),
            )
            .await
            {
                Ok((node, secrets)) => return Ok((Arc::new(node), secrets)),
                Err(e @ StartError::JoinRefused(_)) => return Err(e.into()),
                Err(StartError::JoinFailed { attempts, foreign }) => {
                    foreign_rounds = if foreign { foreign_rounds + 1 } else { 0 };
                    if foreign_rounds >= 3 {
                        return Err(AgentError::Consensus(StartError::JoinRefused(
                            quorate_consensus::ConsensusError::JoinRefused {
                                message: format!(
                                    "the join token belongs to another cluster, or was made before a CA rotation (create a new one): every member reached presents another CA than the token's ({})",
                                    attempts.join("; ")
                                ),
                            },
                        )));
                    }
                    let backoff = retry_delay(failures);
                    failures += 1;
                    warn!(via, attempts = ?attempts, retry_in = ?backoff, "join failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("the join loop ends only by returning")
    }

    /// `--peers`: resolves the entries (again after each backoff), seeds gossip with what they
    /// resolve to, and follows `bootstrap::over_peers` on what gossip (and mDNS, when on) show:
    /// join a member, try an address gossip does not know, or form the cluster.
    async fn peers_loop(
        self,
        specs: &[PeerSpec],
    ) -> Result<(Arc<Consensus>, BTreeMap<String, String>), AgentError> {
        let me = self.config.node_id;
        let own = self.config.advertise;
        let voter = self.info.role == Role::Voter;
        let started = std::time::Instant::now();
        let mut settling = Settling::new(started);
        let mut said = String::new();
        let mut unresolved_said = Vec::new();
        // When each resolved address was first resolved or last tried, and whether it was.
        let mut candidates: BTreeMap<SocketAddr, (std::time::Instant, bool)> = BTreeMap::new();
        let mut resolve_at = started;
        let mut rounds = 0;
        let mut failures = 0;
        let mut last: Vec<SocketAddr> = Vec::new();
        loop {
            let now = std::time::Instant::now();
            if now >= resolve_at {
                let resolved = peers::resolve(specs).await;
                if resolved.unresolved != unresolved_said {
                    for (entry, why) in &resolved.unresolved {
                        info!(peer = %entry, reason = %why, "a peer does not resolve yet; retrying");
                    }
                    unresolved_said = resolved.unresolved.clone();
                }
                let mut addrs: Vec<SocketAddr> =
                    resolved.addrs.into_iter().filter(|a| *a != own).collect();
                // DNS servers rotate their answers: the order says nothing.
                addrs.sort();
                if addrs != last {
                    info!(peers = ?addrs, "peers resolved");
                    rounds = 0;
                    last = addrs.clone();
                }
                candidates.retain(|a, _| addrs.contains(a));
                for a in &addrs {
                    candidates.entry(*a).or_insert((now, false));
                }
                self.gossip.add_seeds(
                    addrs
                        .iter()
                        .map(|a| SocketAddr::new(a.ip(), self.gossip_port)),
                );
                resolve_at = std::time::Instant::now() + retry_delay(rounds);
                rounds += 1;
            }
            let mut seen = gossip_peers(&self.gossip, me);
            for p in seen_peers(&self.view, &self.cluster, me) {
                if !seen.iter().any(|s| s.id == p.id) {
                    seen.push(p);
                }
            }
            let stable = settling.observe(&seen);
            let cands: Vec<Candidate> = candidates
                .iter()
                .map(|(addr, (at, tried))| Candidate {
                    addr: *addr,
                    unknown_for: at.elapsed(),
                    tried: *tried,
                })
                .collect();
            let step = bootstrap::over_peers(
                me,
                voter,
                &seen,
                &cands,
                self.expect,
                stable,
                SETTLE,
                PROBE_AFTER,
            );
            let seeds = match step {
                PeersStep::Wait(why) => {
                    if why != said {
                        info!(reason = %why, "--peers: waiting");
                        said = why;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                PeersStep::Bootstrap => {
                    info!(
                        expect = self.expect,
                        "--peers: this node has the lowest id of the forming voters and forms the cluster"
                    );
                    return self.bootstrap().await;
                }
                PeersStep::Join(seeds) => {
                    info!(seeds = ?seeds, "--peers: joining the formed cluster");
                    seeds
                }
                PeersStep::Probe(seeds) => {
                    info!(seeds = ?seeds, "--peers: gossip knows nothing of these peers; trying a join through them");
                    for s in &seeds {
                        candidates.insert(*s, (std::time::Instant::now(), true));
                    }
                    seeds
                }
            };
            match Consensus::join(
                self.config.clone(),
                self.info.clone(),
                &self.cluster,
                &seeds,
                self.credentials(Trust::FirstUse, None),
            )
            .await
            {
                Ok((node, secrets)) => return Ok((Arc::new(node), secrets)),
                Err(e @ StartError::JoinRefused(_)) => return Err(e.into()),
                Err(StartError::JoinFailed { attempts, .. }) => {
                    let backoff = retry_delay(failures);
                    failures += 1;
                    warn!(attempts = ?attempts, retry_in = ?backoff, "--peers: join failed; retrying");
                    tokio::time::sleep(backoff).await;
                    // What was tried is tried from now: gossip gets its time again.
                    let now = std::time::Instant::now();
                    for s in &seeds {
                        if let Some(c) = candidates.get_mut(s) {
                            c.0 = now;
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Zero configuration: wait until mDNS (and gossip, which mDNS seeds) show a formed
    /// cluster to join, or enough forming voters for the lowest of them to make one; the
    /// others ask the lowest directly once it can have formed.
    async fn zero_config(self) -> Result<(Arc<Consensus>, BTreeMap<String, String>), AgentError> {
        let me = self.config.node_id;
        let voter = self.info.role == Role::Voter;
        let mut settling = Settling::new(Instant::now());
        let mut said = String::new();
        let mut backoff = Duration::from_millis(250);
        let mut ask_retry = ASK_RETRY;
        let mut ask_dial = ASK_DIAL;
        let mut asked = None;
        loop {
            let mut peers = seen_peers(&self.view, &self.cluster, me);
            merge_gossip(&mut peers, gossip_peers(&self.gossip, me));
            // Settled counts from this node's own announcement too: until then the others
            // cannot have heard of it.
            let announced_for = self
                .announced
                .as_ref()
                .and_then(|a| a.get())
                .map_or(Duration::ZERO, Instant::elapsed);
            let stable = settling.observe(&peers).min(announced_for);
            match bootstrap::decide(me, voter, &peers, self.expect, stable, MDNS_SETTLE) {
                Decision::Wait(why) => {
                    if why != said {
                        info!(reason = %why, "zero-config: waiting");
                        said = why;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Decision::Bootstrap => {
                    info!(
                        expect = self.expect,
                        "zero-config: this node has the lowest id of the forming voters and forms the cluster"
                    );
                    return self.bootstrap().await;
                }
                Decision::JoinNode { node, seeds } => {
                    if asked != Some(node) {
                        info!(node = %node, seeds = ?seeds, "zero-config: asking the node that forms the cluster, or is a member, to admit this node");
                        asked = Some(node);
                        ask_retry = ASK_RETRY;
                        ask_dial = ASK_DIAL;
                    }
                    let mut config = self.config.clone();
                    config.join_dial_deadline = ask_dial;
                    match Consensus::join(
                        config,
                        self.info.clone(),
                        &self.cluster,
                        &seeds,
                        self.credentials(Trust::Node(node), None),
                    )
                    .await
                    {
                        Ok((node, secrets)) => return Ok((Arc::new(node), secrets)),
                        Err(e @ StartError::JoinRefused(_)) => {
                            warn!(error = %e, node = %node, retry_in = "30s", "zero-config: the node asked refused this node; is --cluster-key the same on every node?");
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        // It has not formed the cluster yet (nothing serves), most likely.
                        Err(e @ StartError::JoinFailed { .. }) => {
                            debug!(error = %e, node = %node, retry_in = ?ask_retry, "zero-config: not admitted yet; asking again");
                            tokio::time::sleep(ask_retry).await;
                            ask_retry = (ask_retry * 3 / 2).min(ASK_RETRY_CAP);
                            ask_dial = (ask_dial + ASK_DIAL_STEP).min(ASK_DIAL_CAP);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Decision::Join { ca, seeds } => {
                    info!(ca = %ca, seeds = ?seeds, "zero-config: joining the formed cluster");
                    match Consensus::join(
                        self.config.clone(),
                        self.info.clone(),
                        &self.cluster,
                        &seeds,
                        self.credentials(Trust::Pinned(ca.clone()), None),
                    )
                    .await
                    {
                        Ok((node, secrets)) => return Ok((Arc::new(node), secrets)),
                        // Nobody asked for this cluster by name: a refusal (another cluster
                        // key, say) is reported and retried slowly, not fatal.
                        Err(e @ StartError::JoinRefused(_)) => {
                            warn!(error = %e, ca = %ca, retry_in = "30s", "zero-config: the formed cluster refused this node; is --cluster-key the same on every node?");
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        Err(e @ StartError::JoinFailed { .. }) => {
                            warn!(error = %e, retry_in = ?backoff, "zero-config: join failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}

/// Adds what gossip shows to what mDNS shows: a node either shows a member is one (gossip
/// hears of it within a round, mDNS repeats a record at most once a second); the CA comes
/// from mDNS only.
fn merge_gossip(peers: &mut Vec<bootstrap::Seen>, gossip: Vec<bootstrap::Seen>) {
    for g in gossip {
        match peers.iter_mut().find(|p| p.id == g.id) {
            Some(p) => {
                p.member |= g.member;
                p.quic = p.quic.or(g.quic);
            }
            None => peers.push(g),
        }
    }
}

/// How long the set of forming voters in view has stayed the same (the settling time the
/// formation rule waits for), counted from the first look.
struct Settling {
    forming: BTreeSet<NodeId>,
    since: std::time::Instant,
}

impl Settling {
    fn new(started: std::time::Instant) -> Settling {
        Settling {
            forming: BTreeSet::new(),
            since: started,
        }
    }

    /// Takes a look at `peers`; returns how long the forming voters among them are unchanged.
    fn observe(&mut self, peers: &[bootstrap::Seen]) -> Duration {
        let forming: BTreeSet<NodeId> = peers
            .iter()
            .filter(|p| p.voter && !p.member)
            .map(|p| p.id)
            .collect();
        if forming != self.forming {
            self.forming = forming;
            self.since = std::time::Instant::now();
        }
        self.since.elapsed()
    }
}

/// The peers of `cluster` that mDNS shows, other than `me`, as the bootstrap decision needs them.
fn seen_peers(view: &MdnsView, cluster: &str, me: NodeId) -> Vec<bootstrap::Seen> {
    let Ok(v) = view.lock() else {
        return Vec::new();
    };
    v.values()
        .filter(|p| p.cluster == cluster)
        .filter(|p| p.id != me)
        .map(|p| bootstrap::Seen {
            id: p.id,
            voter: p.role == Role::Voter,
            member: p.state == AdvertState::Member,
            quic: quic_addr(p),
            ca: p.ca.clone(),
        })
        .collect()
}

/// The live nodes gossip shows, other than `me`, as the bootstrap decision needs them (gossip
/// carries only this cluster name's nodes; it carries no CA).
fn gossip_peers(gossip: &quorate_gossip::Gossip, me: NodeId) -> Vec<bootstrap::Seen> {
    gossip
        .members()
        .into_iter()
        .filter(|m| m.id != me && m.status == quorate_gossip::MemberStatus::Alive)
        .filter_map(|m| {
            Some(bootstrap::Seen {
                id: m.id,
                voter: m.meta.role? == Role::Voter,
                member: m.meta.cluster_state == "member",
                quic: m.meta.quic_addr,
                ca: None,
            })
        })
        .collect()
}

/// QUIC addresses of voter members of `cluster` whose advertised CA prefix matches `ca` (only
/// voters admit nodes; a joiner refuses any other at the handshake).
fn members_with_ca(view: &MdnsView, cluster: &str, ca: &str) -> Vec<SocketAddr> {
    let Ok(v) = view.lock() else {
        return Vec::new();
    };
    v.values()
        .filter(|p| p.cluster == cluster && p.state == AdvertState::Member)
        .filter(|p| p.role == Role::Voter)
        .filter(|p| {
            p.ca.as_deref()
                .is_some_and(|pre| pre.len() >= 16 && ca.starts_with(pre))
        })
        .filter_map(quic_addr)
        .collect()
}

/// The QUIC address a peer advertises on mDNS: its preferred address and its SRV port.
fn quic_addr(p: &quorate_discovery::Peer) -> Option<SocketAddr> {
    p.preferred_addr().map(|ip| SocketAddr::new(ip, p.port))
}
