//! Peers as the node sees them: resolved mDNS instances turned into one entry per node id.
//!
//! [`PeerTable`] is pure: it takes resolutions and removals (from a multicast browse or from a
//! one-shot query) and returns the [`PeerEvent`]s they cause. Instances are merged by the node
//! id in their TXT record, never by instance name (mDNS renames instances on conflict), and a
//! node's addresses are merged across interfaces and IP families. Records that are not ours are
//! skipped and counted in [`Stats`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use quorate_base::{NodeId, Role, hex_id};

use crate::txt::{Advert, AdvertState, TxtError};

/// A quorate node found on the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Node id (16 hex digits in JSON).
    #[serde(with = "hex_id")]
    pub id: NodeId,
    /// Node name: the mDNS instance name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// Claimed role.
    pub role: Role,
    /// Life stage.
    pub state: AdvertState,
    /// Every address it was seen at, IPv4 first.
    pub addrs: Vec<IpAddr>,
    /// QUIC port (the SRV port).
    pub port: u16,
    /// Gossip UDP port.
    pub gossip_port: u16,
    /// HTTP API TCP port.
    pub api_port: u16,
    /// Software version.
    pub version: String,
    /// CA fingerprint prefix, once a member.
    pub ca: Option<String>,
    /// The whole TXT record as received.
    pub txt: BTreeMap<String, String>,
}

impl Peer {
    /// The address to dial: the first IPv4 address, else the first address.
    pub fn preferred_addr(&self) -> Option<IpAddr> {
        self.addrs.first().copied()
    }
}

/// A change in what the node knows about a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A node id seen for the first time (or again after it was lost).
    Found(Peer),
    /// A known node changed its advertisement or addresses.
    Updated(Peer),
    /// A node's last instance went away (goodbye or failed verification).
    Lost(Peer),
}

impl PeerEvent {
    /// The peer the event is about.
    pub fn peer(&self) -> &Peer {
        match self {
            PeerEvent::Found(p) | PeerEvent::Updated(p) | PeerEvent::Lost(p) => p,
        }
    }

    /// `found`, `updated` or `lost`.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerEvent::Found(_) => "found",
            PeerEvent::Updated(_) => "updated",
            PeerEvent::Lost(_) => "lost",
        }
    }
}

/// One resolved mDNS instance, as either resolver hands it over.
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    /// Full instance name, e.g. `node-1._cluster._tcp.local.`.
    pub fullname: String,
    /// SRV port.
    pub port: u16,
    /// Addresses of the SRV target, as far as known now.
    pub addrs: BTreeSet<IpAddr>,
    /// TXT pairs; keys in lower case.
    pub txt: BTreeMap<String, Option<String>>,
}

/// Counters of what discovery skipped and saw. Shared, cheap to read.
#[derive(Debug, Default)]
pub struct Stats {
    /// Instances of our service type whose TXT is not quorate's.
    pub foreign: AtomicU64,
    /// Instances that claim to be quorate but whose records are broken.
    pub malformed: AtomicU64,
    /// Resolutions taken.
    pub resolved: AtomicU64,
    /// DNS packets that could not be parsed (one-shot queries).
    pub bad_packets: AtomicU64,
    /// 1 while the node browses (queries and caches peers), 0 once it has stopped or never
    /// began: an advertisement alone sends no query.
    pub browsing: AtomicU64,
}

impl Stats {
    /// A snapshot as name/value pairs.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("foreign", self.foreign.load(Ordering::Relaxed)),
            ("malformed", self.malformed.load(Ordering::Relaxed)),
            ("resolved", self.resolved.load(Ordering::Relaxed)),
            ("bad_packets", self.bad_packets.load(Ordering::Relaxed)),
            ("browsing", self.browsing.load(Ordering::Relaxed)),
        ])
    }
}

#[derive(Clone, Debug)]
struct Instance {
    id: NodeId,
    name: String,
    port: u16,
    addrs: BTreeSet<IpAddr>,
    advert: Advert,
    txt: BTreeMap<String, String>,
}

/// Peers by node id, built from resolutions and removals.
#[derive(Debug)]
pub struct PeerTable {
    own_id: Option<NodeId>,
    service_type: String,
    instances: HashMap<String, Instance>,
    peers: BTreeMap<NodeId, Peer>,
    stats: Arc<Stats>,
}

impl PeerTable {
    /// A table that leaves out `own_id` (this node's own advertisement).
    pub fn new(service_type: &str, own_id: Option<NodeId>, stats: Arc<Stats>) -> Self {
        PeerTable {
            own_id,
            service_type: service_type.to_string(),
            instances: HashMap::new(),
            peers: BTreeMap::new(),
            stats,
        }
    }

    /// The peers known now, by id.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// The full instance names known for a peer.
    pub fn instances(&self) -> impl Iterator<Item = &str> {
        self.instances.keys().map(String::as_str)
    }

    /// Takes a resolution and returns the events it causes (usually none or one). Foreign and
    /// malformed records are counted and cause none.
    pub fn resolved(&mut self, r: Resolution) -> Vec<PeerEvent> {
        let advert = match Advert::decode(&r.txt) {
            Ok(a) => a,
            Err(TxtError::Foreign) => {
                self.stats.foreign.fetch_add(1, Ordering::Relaxed);
                return Vec::new();
            }
            Err(_) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return Vec::new();
            }
        };
        if r.port == 0 {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
        self.stats.resolved.fetch_add(1, Ordering::Relaxed);
        if self.own_id == Some(advert.id) {
            return Vec::new();
        }
        let mut events = Vec::new();
        let name = instance_label(&r.fullname, &self.service_type);
        let txt = r
            .txt
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .collect();
        let mut addrs = r.addrs.clone();
        // A resolution carries one family's addresses at a time: keep the other family's.
        if let Some(old) = self.instances.get(&r.fullname) {
            let has_v4 = addrs.iter().any(IpAddr::is_ipv4);
            let has_v6 = addrs.iter().any(IpAddr::is_ipv6);
            addrs.extend(
                old.addrs
                    .iter()
                    .filter(|a| (a.is_ipv4() && !has_v4) || (a.is_ipv6() && !has_v6)),
            );
            if old.id != advert.id {
                // The instance name moved to another node: the old one loses it.
                let previous = old.id;
                addrs = r.addrs.clone();
                self.instances.remove(&r.fullname);
                events.extend(self.rebuild(previous));
            }
        }
        let id = advert.id;
        self.instances.insert(
            r.fullname.clone(),
            Instance {
                id,
                name,
                port: r.port,
                addrs,
                advert,
                txt,
            },
        );
        events.extend(self.rebuild(id));
        events
    }

    /// Takes the removal of an instance (goodbye, or a failed verification).
    pub fn removed(&mut self, fullname: &str) -> Option<PeerEvent> {
        let inst = self.instances.remove(fullname)?;
        self.rebuild(inst.id)
    }

    /// Recomputes peer `id` from its instances and says what changed.
    fn rebuild(&mut self, id: NodeId) -> Option<PeerEvent> {
        let mut mine: Vec<(&String, &Instance)> =
            self.instances.iter().filter(|(_, i)| i.id == id).collect();
        if mine.is_empty() {
            return self.peers.remove(&id).map(PeerEvent::Lost);
        }
        // Several instances of one node (a renamed one) are rare; the first by name speaks.
        mine.sort_by(|a, b| a.0.cmp(b.0));
        let primary = mine[0].1;
        let mut addrs: BTreeSet<IpAddr> = mine
            .iter()
            .flat_map(|(_, i)| i.addrs.iter().copied())
            .collect();
        // Loopback addresses only where nothing else is known (a node on this machine in dev
        // mode); otherwise they would send remote dialers to themselves.
        if addrs.iter().any(|a| !a.is_loopback()) {
            addrs.retain(|a| !a.is_loopback());
        }
        let mut addrs: Vec<IpAddr> = addrs.into_iter().collect();
        addrs.sort_by_key(|a| (a.is_ipv6(), *a));
        let a = &primary.advert;
        let peer = Peer {
            id,
            name: primary.name.clone(),
            cluster: a.cluster.clone(),
            role: a.role,
            state: a.state,
            addrs,
            port: primary.port,
            gossip_port: a.gossip_port,
            api_port: a.api_port,
            version: a.version.clone(),
            ca: a.ca.clone(),
            txt: primary.txt.clone(),
        };
        match self.peers.insert(id, peer.clone()) {
            None => Some(PeerEvent::Found(peer)),
            Some(old) if old == peer => None,
            Some(_) => Some(PeerEvent::Updated(peer)),
        }
    }
}

/// `node\ 1._cluster._tcp.local.` -> `node 1`: the instance label, unescaped.
pub fn instance_label(fullname: &str, service_type: &str) -> String {
    let label = fullname
        .strip_suffix(service_type)
        .map(|s| s.strip_suffix('.').unwrap_or(s))
        .unwrap_or(fullname);
    let mut out = String::with_capacity(label.len());
    let mut chars = label.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TY: &str = "_cluster._tcp.local.";

    fn txt(id: &str) -> BTreeMap<String, Option<String>> {
        let a = crate::txt::tests::sample(id);
        a.encode()
            .expect("encode")
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect()
    }

    fn res(fullname: &str, id: &str, addrs: &[&str]) -> Resolution {
        Resolution {
            fullname: fullname.into(),
            port: 7947,
            addrs: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
            txt: txt(id),
        }
    }

    fn table() -> (PeerTable, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        (
            PeerTable::new(TY, Some(NodeId::new(0xff)), stats.clone()),
            stats,
        )
    }

    #[test]
    fn found_then_updated_then_lost() {
        let (mut t, _) = table();
        let ev = t.resolved(res(
            "n1._cluster._tcp.local.",
            "0000000000000001",
            &["10.0.0.1"],
        ));
        assert!(
            matches!(ev.as_slice(), [PeerEvent::Found(p)] if p.name == "n1" && p.port == 7947),
            "{ev:?}"
        );
        assert_eq!(
            t.resolved(res(
                "n1._cluster._tcp.local.",
                "0000000000000001",
                &["10.0.0.1"]
            )),
            vec![],
            "no change, no event"
        );
        let ev = t.resolved(res(
            "n1._cluster._tcp.local.",
            "0000000000000001",
            &["10.0.0.2"],
        ));
        assert!(
            matches!(ev.as_slice(), [PeerEvent::Updated(p)] if p.addrs == vec!["10.0.0.2".parse::<IpAddr>().expect("ip")])
        );
        assert!(matches!(
            t.removed("n1._cluster._tcp.local."),
            Some(PeerEvent::Lost(_))
        ));
        assert_eq!(t.peers().count(), 0);
        assert_eq!(t.removed("n1._cluster._tcp.local."), None);
    }

    #[test]
    fn families_and_instances_merge_into_one_peer_by_id() {
        let (mut t, _) = table();
        t.resolved(res(
            "n1._cluster._tcp.local.",
            "0000000000000001",
            &["10.0.0.1"],
        ));
        let ev = t.resolved(res(
            "n1._cluster._tcp.local.",
            "0000000000000001",
            &["fe80::1"],
        ));
        let [PeerEvent::Updated(p)] = ev.as_slice() else {
            panic!("{ev:?}")
        };
        assert_eq!(
            p.addrs,
            vec![
                "10.0.0.1".parse::<IpAddr>().expect("ip"),
                "fe80::1".parse().expect("ip")
            ]
        );
        // The same node under a renamed instance is still one peer.
        t.resolved(res(
            "n1 (2)._cluster._tcp.local.",
            "0000000000000001",
            &["10.0.0.9"],
        ));
        assert_eq!(t.peers().count(), 1);
        assert_eq!(
            t.removed("n1._cluster._tcp.local.").map(|e| e.kind()),
            Some("updated")
        );
        assert_eq!(
            t.removed("n1 (2)._cluster._tcp.local.").map(|e| e.kind()),
            Some("lost")
        );
    }

    #[test]
    fn own_foreign_and_malformed_records_give_no_peer_and_are_counted() {
        let (mut t, stats) = table();
        assert_eq!(
            t.resolved(res(
                "me._cluster._tcp.local.",
                "00000000000000ff",
                &["10.0.0.5"]
            )),
            vec![]
        );
        let mut foreign = res(
            "printer._cluster._tcp.local.",
            "0000000000000002",
            &["10.0.0.6"],
        );
        foreign.txt = [("path".to_string(), Some("/".to_string()))].into();
        assert_eq!(t.resolved(foreign), vec![]);
        let mut broken = res(
            "bad._cluster._tcp.local.",
            "0000000000000003",
            &["10.0.0.7"],
        );
        broken.txt.insert("g".into(), Some("99999".into()));
        assert_eq!(t.resolved(broken), vec![]);
        assert_eq!(t.peers().count(), 0);
        let s = stats.snapshot();
        assert_eq!((s["foreign"], s["malformed"], s["resolved"]), (1, 1, 1));
    }

    #[test]
    fn loopback_addresses_only_when_nothing_else_is_known() {
        let (mut t, _) = table();
        let ev = t.resolved(res(
            "n1._cluster._tcp.local.",
            "0000000000000001",
            &["127.0.0.1"],
        ));
        assert_eq!(
            ev[0].peer().addrs,
            vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        let ev = t.resolved(res(
            "n1._cluster._tcp.local.",
            "0000000000000001",
            &["127.0.0.1", "10.0.0.1"],
        ));
        assert_eq!(
            ev[0].peer().addrs,
            vec!["10.0.0.1".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn an_instance_name_taken_over_by_another_node_moves() {
        let (mut t, _) = table();
        t.resolved(res(
            "n._cluster._tcp.local.",
            "0000000000000001",
            &["10.0.0.1"],
        ));
        let ev = t.resolved(res(
            "n._cluster._tcp.local.",
            "0000000000000002",
            &["10.0.0.2"],
        ));
        let kinds: Vec<_> = ev
            .iter()
            .map(|e| (e.kind(), e.peer().id.to_string()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("lost", "0000000000000001".to_string()),
                ("found", "0000000000000002".to_string())
            ]
        );
        assert_eq!(
            ev[1].peer().addrs,
            vec!["10.0.0.2".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn instance_labels_are_unescaped() {
        assert_eq!(
            instance_label("node\\ 1\\.a._cluster._tcp.local.", TY),
            "node 1.a"
        );
        assert_eq!(instance_label("n._cluster._tcp.local.", TY), "n");
    }
}
