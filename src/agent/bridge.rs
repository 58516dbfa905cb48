//! The bridge between the layers once this node is a member: Raft's decisions go into gossip
//! and mDNS, gossip's facts go to Raft's autopilot.
//!
//! Five jobs, each a function: [`advertise_member`] (mDNS says `member` and the CA prefix,
//! once), [`sync_join_keys`] (the join policy, join keys and join secrets follow the gossip
//! keyring), [`publish_raft_view`] (state, leader, term and this node's registry labels into
//! gossip meta when they change), [`report_failures`] (which nodes gossip reports failed or left,
//! and since when, to the autopilot) and [`seed_members`] (registry members' gossip addresses
//! become gossip seeds). [`run`] does the first once and the other four every 500 ms, in that
//! order. A node that joined with open gossip adopts the cluster's keys ([`adopt_secrets`]).
//! Nothing here decides membership: the autopilot, on the leader, does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorate_consensus::{Consensus, JoinPolicy};
use quorate_discovery::{AdvertState, Advertisement, Mdns};
use quorate_gossip::{Gossip, Key, MemberStatus, NodeMeta};
use tracing::{info, warn};

use crate::NodeId;
use crate::data_dir::DataDir;

/// How often the bridge brings the layers in step.
const PERIOD: Duration = Duration::from_millis(500);

/// Runs the bridge for the life of the membership: advertises membership on mDNS once, then
/// every [`PERIOD`] keeps the join keys, gossip meta, failure reports and seeds in step.
pub(super) async fn run(
    node: Arc<Consensus>,
    gossip: Arc<Gossip>,
    mdns: Option<Arc<Mdns>>,
    advert: Option<Advertisement>,
    grace: Duration,
) {
    if let (Some(mdns), Some(ad)) = (mdns.as_deref(), advert) {
        advertise_member(&node, mdns, ad);
    }
    let mut published: Option<NodeMeta> = None;
    let mut failed_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let mut seeded: BTreeSet<SocketAddr> = BTreeSet::new();
    loop {
        sync_join_keys(&node, &gossip);
        publish_raft_view(&node, &gossip, &mut published).await;
        report_failures(&node, &gossip, &mut failed_since, grace);
        seed_members(&node, &gossip, &mut seeded);
        tokio::time::sleep(PERIOD).await;
    }
}

/// (a) The mDNS advertisement says `member`, with the prefix of the cluster CA's fingerprint
/// (what a token's joiner matches seeds by).
fn advertise_member(node: &Consensus, mdns: &Mdns, mut ad: Advertisement) {
    ad.advert.state = AdvertState::Member;
    ad.advert.ca = Some(node.cluster().ca_fingerprint[..16].to_string());
    match mdns.advertise(&ad) {
        Ok(_) => info!("mdns advertisement says member"),
        Err(e) => warn!(error = %e, "mdns advertisement not updated"),
    }
}

/// (b) Join policy and secrets follow the keyring (rotations included): open while gossip is
/// open, else key or token; the join keys are the keyring's, and the keyring is the secret a
/// joiner is handed.
fn sync_join_keys(node: &Consensus, gossip: &Gossip) {
    let keys = gossip.keys();
    node.set_join_policy(if keys.is_empty() {
        JoinPolicy::Open
    } else {
        JoinPolicy::KeyOrToken
    });
    node.set_join_keys(keys.iter().map(|k| *k.as_bytes()).collect());
    let list: Vec<String> = keys.iter().map(Key::to_base64).collect();
    node.set_join_secrets(BTreeMap::from([(
        GOSSIP_KEYS_SECRET.to_string(),
        serde_json::to_string(&list).unwrap_or_default(),
    )]));
}

/// (c) Raft's view into this node's gossip meta: state `member`, leader, term, and its labels
/// as the registry holds them; written only when it differs from what was last `published`.
async fn publish_raft_view(node: &Consensus, gossip: &Gossip, published: &mut Option<NodeMeta>) {
    let status = node.status();
    let mut meta = gossip.meta().await;
    meta.cluster_state = "member".to_string();
    meta.raft_leader = status.leader_id;
    meta.raft_term = Some(status.term);
    if let Some(me) = status.members.iter().find(|m| m.id == status.node_id)
        && me.name.is_some()
    {
        meta.labels = me.labels.clone();
    }
    if published.as_ref() != Some(&meta) {
        gossip.set_meta(meta.clone()).await;
        *published = Some(meta);
    }
}

/// (d) Failures as gossip reports them (failed, or gone without deregistering), each with the
/// time it was first seen down, to the autopilot with the grace period before removal.
fn report_failures(
    node: &Consensus,
    gossip: &Gossip,
    failed_since: &mut BTreeMap<NodeId, Instant>,
    grace: Duration,
) {
    let now = Instant::now();
    let mut down = BTreeSet::new();
    for m in gossip.members() {
        if matches!(m.status, MemberStatus::Failed | MemberStatus::Left) {
            down.insert(m.id);
        }
    }
    failed_since.retain(|id, _| down.contains(id));
    for id in down {
        failed_since.entry(id).or_insert(now);
    }
    node.set_failed(failed_since.clone(), Some(grace));
}

/// (e) Every registry member's gossip address is a seed (mDNS may not reach them all); each
/// address is handed over once (`seeded`).
fn seed_members(node: &Consensus, gossip: &Gossip, seeded: &mut BTreeSet<SocketAddr>) {
    let me = node.id();
    let fresh: Vec<SocketAddr> = node
        .local_registry()
        .nodes
        .values()
        .filter(|n| n.id != me)
        .filter_map(|n| n.gossip_addr.parse().ok())
        .filter(|a| !seeded.contains(a))
        .collect();
    if !fresh.is_empty() {
        seeded.extend(fresh.iter().copied());
        gossip.add_seeds(fresh);
    }
}

/// A node that joined a sealed cluster while its own gossip was open takes the cluster's keys.
pub(super) fn adopt_secrets(
    gossip: &Gossip,
    data_dir: &DataDir,
    secrets: &BTreeMap<String, String>,
) {
    let Some(list) = secrets.get(GOSSIP_KEYS_SECRET) else {
        return;
    };
    let keys: Vec<Key> = serde_json::from_str::<Vec<String>>(list)
        .unwrap_or_default()
        .iter()
        .filter_map(|k| Key::from_base64(k).ok())
        .collect();
    if keys.is_empty() || !gossip.keys().is_empty() {
        return;
    }
    let stored: Vec<String> = keys.iter().map(Key::to_base64).collect();
    match gossip.adopt_keys(keys) {
        Ok(()) => {
            if let Err(e) = data_dir.save_keyring(&stored) {
                warn!(error = %e, "the cluster's gossip keys could not be saved in the data dir");
            }
            info!("gossip sealed with the cluster's keys");
        }
        Err(e) => warn!(error = %e, "could not take the cluster's gossip keys"),
    }
}

/// The join secret that carries the gossip keyring (base64 keys, primary first, as JSON).
const GOSSIP_KEYS_SECRET: &str = "gossip_keys";
