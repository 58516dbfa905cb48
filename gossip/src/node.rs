//! The gossip driver: runs chitchat over the sealed transport, keeps the membership view
//! current, streams its changes, and feeds seeds that can change at runtime.

use std::collections::{BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
    spawn_chitchat,
};
use quorate_base::NodeId;
use tokio::sync::{Mutex, broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::GossipError;
use crate::keyring::{Key, Keyring};
use crate::meta::{LEAVING, NodeMeta, STATUS_KEY};
use crate::transport::{LiveAddrs, Metrics, SealedTransport};
use crate::view::{Change, Member, Observed, View};

/// How a node gossips.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Grows on every restart (e.g. the start time in milliseconds).
    pub generation: u64,
    /// Cluster name: nodes of other clusters are ignored.
    pub cluster: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Address peers gossip to.
    pub advertise: SocketAddr,
    /// Initial seeds; [`Gossip::set_seeds`] changes them later.
    pub seeds: Vec<SocketAddr>,
    /// Gossip round period.
    pub interval: Duration,
    /// Failure detector threshold: a node fails after `phi_threshold` mean heartbeat intervals
    /// of silence.
    pub phi_threshold: f64,
    /// How long a failed or left node stays in the view before it is removed.
    pub reap_after: Duration,
    /// Cluster keys, primary first. Empty: open mode (not sealed).
    pub keys: Vec<Key>,
}

impl GossipConfig {
    /// LAN timings: a round every 200 ms; a silent node fails after about 1.2 s.
    pub fn lan(
        node_id: NodeId,
        cluster: String,
        listen: SocketAddr,
        advertise: SocketAddr,
    ) -> Self {
        GossipConfig {
            node_id,
            generation: 1,
            cluster,
            listen,
            advertise,
            seeds: Vec::new(),
            interval: Duration::from_millis(200),
            phi_threshold: 6.0,
            reap_after: Duration::from_secs(3600),
            keys: Vec::new(),
        }
    }
}

/// A running gossip member.
pub struct Gossip {
    handle: Arc<ChitchatHandle>,
    keyring: Arc<RwLock<Keyring>>,
    metrics: Arc<Metrics>,
    members: watch::Receiver<Vec<Member>>,
    dead: watch::Receiver<BTreeSet<NodeId>>,
    changes: broadcast::Sender<Change>,
    seeds: watch::Sender<BTreeSet<SocketAddr>>,
    meta: Mutex<NodeMeta>,
    interval: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Gossip {
    /// Binds the gossip socket and starts gossiping `meta`.
    pub async fn start(config: GossipConfig, meta: NodeMeta) -> Result<Gossip, GossipError> {
        let keyring = Arc::new(RwLock::new(Keyring::new(config.keys.clone())));
        let metrics = Arc::new(Metrics::default());
        if config.keys.is_empty() {
            warn!(
                "gossip is open: datagrams are neither encrypted nor authenticated; set a cluster key to seal them"
            );
        }
        let live = LiveAddrs::default();
        let transport = SealedTransport {
            keyring: keyring.clone(),
            metrics: metrics.clone(),
            sender_id: config.node_id.to_string(),
            epoch: config.generation,
            live: live.clone(),
            round: config.interval,
        };
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(
                config.node_id.to_string(),
                config.generation,
                config.advertise,
            ),
            cluster_id: config.cluster.clone(),
            gossip_interval: config.interval,
            listen_addr: config.listen,
            seed_nodes: config.seeds.iter().map(ToString::to_string).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                // chitchat's phi uses only the mean of the heartbeat intervals in the window:
                // 100 of them (100 s of a storage node's rounds, 20 s of a voter's) make a
                // steady mean, and 1000 cost every node 8 KB per member it knows.
                sampling_window_size: 100,
                max_interval: Duration::from_secs(10),
                // The prior of the heartbeat interval: the round period, so that a new node's
                // detector is as quick as a settled one's.
                initial_interval: config.interval,
                dead_node_grace_period: config.reap_after,
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            // Digests uncompressed (V0). chitchat compresses a V1 digest (every node's id,
            // heartbeat and versions, sent in every SYN and SYN-ACK) with a zstd context made
            // and freed for each message: CPU that every node pays every round, and that a
            // bulk join of hundreds of nodes waits behind. Measured at 100 hosts
            // (benches/results/scale.md): the bulk join 1.8 s instead of 5.8 s, the same CPU
            // at rest, three times the gossip bytes (39 kB/s a node instead of 13).
            // Deltas stay compressed; the version is stamped on every message and a reply
            // echoes it, so nodes of either setting talk.
            protocol_version: ProtocolVersion::V0,
        };
        let handle = Arc::new(
            spawn_chitchat(chitchat_config, meta.to_pairs(), &transport)
                .await
                .map_err(|e| GossipError::Start(format!("{e:#}")))?,
        );

        let (members_tx, members) = watch::channel(Vec::new());
        let (dead_tx, dead) = watch::channel(BTreeSet::new());
        let (changes, _) = broadcast::channel(1024);
        let (seeds, seeds_rx) =
            watch::channel(config.seeds.iter().copied().collect::<BTreeSet<_>>());
        let tasks = vec![
            tokio::spawn(view_loop(
                handle.chitchat(),
                config.interval / 2,
                live.clone(),
                members_tx,
                dead_tx,
                changes.clone(),
            )),
            tokio::spawn(seed_loop(
                handle.clone(),
                live,
                config.advertise,
                seeds_rx,
                config.interval * 5,
            )),
        ];
        info!(node = %config.node_id, generation = config.generation, listen = %config.listen, advertise = %config.advertise, sealed = !config.keys.is_empty(), "gossip started");
        Ok(Gossip {
            handle,
            keyring,
            metrics,
            members,
            dead,
            changes,
            seeds,
            meta: Mutex::new(meta),
            interval: config.interval,
            tasks,
        })
    }

    /// The current view: every member, this node included.
    pub fn members(&self) -> Vec<Member> {
        self.members.borrow().clone()
    }

    /// The members the failure detector holds dead now (failed, or left and gone): the
    /// detector's own verdict, whatever the nodes' gossiped values say.
    pub fn dead(&self) -> BTreeSet<NodeId> {
        self.dead.borrow().clone()
    }

    /// A stream of changes to the view from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Traffic and drop counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Replaces the seed addresses (from discovery, flags or joins).
    pub fn set_seeds(&self, seeds: impl IntoIterator<Item = SocketAddr>) {
        let new: BTreeSet<SocketAddr> = seeds.into_iter().collect();
        self.seeds.send_if_modified(|cur| {
            let changed = *cur != new;
            *cur = new;
            changed
        });
    }

    /// Adds seed addresses to the current ones.
    pub fn add_seeds(&self, seeds: impl IntoIterator<Item = SocketAddr>) {
        let extra: Vec<SocketAddr> = seeds.into_iter().collect();
        self.seeds.send_if_modified(|cur| {
            let before = cur.len();
            cur.extend(extra);
            cur.len() != before
        });
    }

    /// The metadata this node publishes now.
    pub async fn meta(&self) -> NodeMeta {
        self.meta.lock().await.clone()
    }

    /// Publishes new metadata for this node (its own keys only).
    pub async fn set_meta(&self, meta: NodeMeta) {
        let mut current = self.meta.lock().await;
        let chitchat = self.handle.chitchat();
        let mut cc = chitchat.lock().await;
        let state = cc.self_node_state();
        for key in meta.keys_dropped_since(&current) {
            state.delete(&key);
        }
        for (k, v) in meta.to_pairs() {
            state.set(k, v);
        }
        *current = meta;
    }

    /// The installed keys' fingerprints, primary first.
    pub fn key_fingerprints(&self) -> Vec<String> {
        self.keyring
            .read()
            .map(|r| r.keys().iter().map(Key::fingerprint).collect())
            .unwrap_or_default()
    }

    /// Installs a key for opening datagrams. Refused in open mode: sealing a running open
    /// cluster would split it.
    pub fn install_key(&self, key: Key) -> Result<(), GossipError> {
        let mut ring = self.keyring.write().map_err(|_| GossipError::Poisoned)?;
        if !ring.is_sealed() {
            return Err(GossipError::OpenMode);
        }
        ring.install(key);
        Ok(())
    }

    /// Seals an open node with the keys of the cluster it has just joined (primary first).
    /// Refused once sealed: a sealed node rotates with install, use and remove.
    pub fn adopt_keys(&self, keys: Vec<Key>) -> Result<(), GossipError> {
        let mut ring = self.keyring.write().map_err(|_| GossipError::Poisoned)?;
        if ring.is_sealed() {
            return Err(GossipError::Key(crate::KeyError::AlreadySealed));
        }
        if keys.is_empty() {
            return Ok(());
        }
        *ring = crate::Keyring::new(keys);
        Ok(())
    }

    /// Makes an installed key the primary.
    pub fn use_key(&self, fingerprint: &str) -> Result<(), GossipError> {
        self.keyring
            .write()
            .map_err(|_| GossipError::Poisoned)?
            .use_primary(fingerprint)
            .map_err(GossipError::Key)
    }

    /// Removes an installed key that is not the primary.
    pub fn remove_key(&self, fingerprint: &str) -> Result<(), GossipError> {
        self.keyring
            .write()
            .map_err(|_| GossipError::Poisoned)?
            .remove(fingerprint)
            .map_err(GossipError::Key)
    }

    /// The installed keys, primary first (for persisting the keyring).
    pub fn keys(&self) -> Vec<Key> {
        self.keyring
            .read()
            .map(|r| r.keys().to_vec())
            .unwrap_or_default()
    }

    /// Leaves gracefully: marks this node as leaving, gives the mark a few rounds to spread,
    /// then stops. Peers report it `left`, not `failed`.
    pub async fn leave(&self) {
        {
            let chitchat = self.handle.chitchat();
            let mut cc = chitchat.lock().await;
            cc.self_node_state().set(STATUS_KEY, LEAVING);
        }
        tokio::time::sleep(self.interval * 4).await;
        self.shutdown().await;
    }

    /// Stops gossiping at once (peers will report this node `failed`).
    pub async fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        let stopped = self.handle.termination_watcher();
        if let Err(e) = self.handle.initiate_shutdown() {
            warn!(error = %e, "gossip did not stop cleanly");
            return;
        }
        if let Err(e) = stopped.await {
            warn!(error = %e, "gossip did not stop cleanly");
        }
    }
}

type Shared = Arc<Mutex<chitchat::Chitchat>>;

/// Every how many looks the view is rebuilt even though the fingerprint has not moved: a
/// bound on what a (2^-64 likely) fingerprint collision could hide.
const FULL_LOOK_EVERY: u32 = 20;

/// What the view is built from, in one number: every node's incarnation, address, versions
/// (any key set or deleted moves them) and liveness. Heartbeats are left out: they move every
/// round and change nothing the view shows.
fn fingerprint(cc: &chitchat::Chitchat, live: &HashSet<&ChitchatId>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for (id, state) in cc.node_states() {
        (
            id,
            state.max_version(),
            state.last_gc_version(),
            live.contains(id),
        )
            .hash(&mut h);
    }
    h.finish()
}

/// The nodes as gossip knows them now, or `None` when nothing the view is built from changed
/// since the look that left `last` (a node at rest then copies no state at all).
async fn observe(chitchat: &Shared, last: &mut Option<u64>) -> Option<Vec<Observed>> {
    let cc = chitchat.lock().await;
    let live: HashSet<&ChitchatId> = cc.live_nodes().collect();
    let now = fingerprint(&cc, &live);
    if *last == Some(now) {
        return None;
    }
    *last = Some(now);
    let observed = cc
        .node_states()
        .iter()
        // Every quorate node gossips under its node id; a state under any other name is not a
        // node of ours and is left out.
        .filter_map(|(id, state)| Some((id, state, id.node_id.parse::<NodeId>().ok()?)))
        .map(|(id, state, node)| Observed {
            id: node,
            generation: id.generation_id,
            addr: id.gossip_advertise_addr,
            pairs: state
                .key_values()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            live: live.contains(id),
        })
        .collect();
    Some(observed)
}

async fn view_loop(
    chitchat: Shared,
    period: Duration,
    live: LiveAddrs,
    members: watch::Sender<Vec<Member>>,
    dead: watch::Sender<BTreeSet<NodeId>>,
    changes: broadcast::Sender<Change>,
) {
    let mut view = View::default();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    let mut looks = 0u32;
    loop {
        tick.tick().await;
        looks = looks.wrapping_add(1);
        if looks.is_multiple_of(FULL_LOOK_EVERY) {
            last = None;
        }
        let Some(observed) = observe(&chitchat, &mut last).await else {
            continue;
        };
        *live.write().unwrap_or_else(|p| p.into_inner()) =
            observed.iter().filter(|o| o.live).map(|o| o.addr).collect();
        let diff = view.update(observed);
        dead.send_if_modified(|d| {
            let now = view.dead();
            (*d != *now).then(|| *d = now.clone()).is_some()
        });
        if diff.is_empty() {
            continue;
        }
        for change in diff {
            let m = change.member();
            // A metadata update (a new leader, a label) reaches every node about every other
            // node: N² lines on a cluster of N, so at debug; arrivals and departures at info.
            if matches!(change, Change::Updated(_)) {
                debug!(event = change.kind(), member = %m.id, name = %m.meta.name, generation = m.generation, addr = %m.addr, "gossip member");
            } else {
                info!(event = change.kind(), member = %m.id, name = %m.meta.name, generation = m.generation, addr = %m.addr, "gossip member");
            }
            let _ = changes.send(change);
        }
        let _ = members.send(view.members().cloned().collect());
    }
}

/// How many seeds that are not live members one look of [`seed_loop`] gossips with, at most,
/// once this node knows a live peer. chitchat itself gossips every round with live nodes and
/// with one node it holds dead, so seeds only have to bring in what it cannot know of yet; a
/// wider fan-out turns every failure this node sees (true or, on an overloaded host, false)
/// into more traffic for every peer: with every registry member a seed, a node that held half
/// of 200 members dead sent 100 SYNs a look, each answered with a full digest and delta.
const SEED_FANOUT: usize = 3;

/// The seeds one look gossips with: every one that is not a live member while no peer is live
/// (a node finding its cluster asks every address it was given at once), else at most
/// [`SEED_FANOUT`] of them, taken in turn from `cursor` on so that each is asked in time.
fn seeds_to_ask(
    wanted: &BTreeSet<SocketAddr>,
    live: &HashSet<SocketAddr>,
    me: SocketAddr,
    cursor: &mut usize,
) -> Vec<SocketAddr> {
    let waiting: Vec<SocketAddr> = wanted
        .iter()
        .copied()
        .filter(|a| *a != me && !live.contains(a))
        .collect();
    let peers_live = live.iter().any(|a| *a != me);
    if !peers_live || waiting.len() <= SEED_FANOUT {
        return waiting;
    }
    let start = *cursor % waiting.len();
    *cursor = start + SEED_FANOUT;
    waiting
        .iter()
        .cycle()
        .skip(start)
        .take(SEED_FANOUT)
        .copied()
        .collect()
}

/// Gossips with seeds that are not live members yet (as the view loop last saw them), when
/// the seeds change and on a period (see [`seeds_to_ask`]).
async fn seed_loop(
    handle: Arc<ChitchatHandle>,
    live: LiveAddrs,
    me: SocketAddr,
    mut seeds: watch::Receiver<BTreeSet<SocketAddr>>,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period);
    let mut cursor = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = seeds.changed() => if changed.is_err() { return },
        }
        let wanted = seeds.borrow_and_update().clone();
        let ask = {
            let live = live.read().unwrap_or_else(|p| p.into_inner());
            seeds_to_ask(&wanted, &live, me, &mut cursor)
        };
        for addr in ask {
            if handle.gossip(addr).is_err() {
                return; // chitchat stopped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], 7000 + i))
    }

    #[test]
    fn a_node_with_no_live_peer_asks_every_seed() {
        let wanted: BTreeSet<_> = (1..=10).map(addr).collect();
        let live: HashSet<_> = [addr(0)].into_iter().collect();
        let mut cursor = 0;
        let asked = seeds_to_ask(&wanted, &live, addr(0), &mut cursor);
        assert_eq!(asked, (1..=10).map(addr).collect::<Vec<_>>());
    }

    #[test]
    fn a_node_with_live_peers_asks_a_few_seeds_in_turn_and_each_in_time() {
        // 200 seeds, 100 of them not live: a look asks SEED_FANOUT, and looks in a row ask
        // each of the 100 before any twice.
        let wanted: BTreeSet<_> = (1..=200).map(addr).collect();
        let live: HashSet<_> = (0..=100).map(addr).collect();
        let mut cursor = 0;
        let mut asked = Vec::new();
        for _ in 0..100usize.div_ceil(SEED_FANOUT) {
            let look = seeds_to_ask(&wanted, &live, addr(0), &mut cursor);
            assert_eq!(look.len(), SEED_FANOUT, "{look:?}");
            assert!(look.iter().all(|a| !live.contains(a)), "{look:?}");
            asked.extend(look);
        }
        let distinct: BTreeSet<_> = asked.iter().copied().collect();
        assert_eq!(distinct.len(), 100, "asked {asked:?}");
    }

    #[test]
    fn live_seeds_and_this_node_are_never_asked() {
        let wanted: BTreeSet<_> = (0..=4).map(addr).collect();
        let live: HashSet<_> = [addr(0), addr(1), addr(2)].into_iter().collect();
        let mut cursor = 0;
        assert_eq!(
            seeds_to_ask(&wanted, &live, addr(0), &mut cursor),
            vec![addr(3), addr(4)]
        );
        let all_live: HashSet<_> = wanted.iter().copied().collect();
        assert!(seeds_to_ask(&wanted, &all_live, addr(0), &mut cursor).is_empty());
    }
}
