//! quorate-discovery: finds quorate peers on a LAN with mDNS/DNS-SD (`_cluster._tcp.local.`).
//!
//! It advertises this node and browses for others, and turns what it hears into hints: who
//! might be out there, at which addresses, claiming which cluster and role. It decides nothing:
//! the node uses these hints as gossip seeds and join candidates. It knows nothing of gossip or
//! Raft, and it never prints, exits or reads the environment.
//!
//! - [`Advert`]: the TXT record (encode and decode are pure).
//! - [`PeerTable`]: resolutions in, [`PeerEvent`]s out, merged by node id (pure).
//! - [`Mdns`]: advertise with a goodbye on withdrawal, browse as a stream with loss detection.
//! - [`query`]: one-shot legacy unicast queries, one round trip to resolve every peer.

mod mdns;
mod peer;
pub mod query;
mod service_type;
mod txt;

pub use mdns::{Advertisement, Mdns, MdnsConfig};
pub use peer::{Peer, PeerEvent, PeerTable, Resolution, Stats, instance_label};
pub use query::{QueryOptions, query};
pub use quorate_base::{NodeId, Role};
pub use service_type::{DEFAULT_SERVICE_TYPE, check_service_type};
pub use txt::{Advert, AdvertState, TXT_MAX_BYTES, TXT_VERSION, TxtError};

/// Which interfaces discovery uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// Only these (by name); empty: every interface.
    pub include: Vec<String>,
    /// Never these.
    pub exclude: Vec<String>,
    /// Loopback only (dev mode).
    pub loopback_only: bool,
}

impl Interfaces {
    /// Whether an interface is selected.
    pub fn allows(&self, name: &str, is_loopback: bool) -> bool {
        if self.loopback_only {
            return is_loopback;
        }
        if self.exclude.iter().any(|x| x == name) {
            return false;
        }
        self.include.is_empty() || self.include.iter().any(|x| x == name)
    }
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The mDNS daemon refused or failed.
    #[error("mdns: {0}")]
    Daemon(String),
    /// The advertisement's TXT record is not valid.
    #[error(transparent)]
    Txt(#[from] TxtError),
    /// A DNS packet could not be built or parsed.
    #[error("dns packet: {0}")]
    Packet(String),
    /// No usable interface.
    #[error("no interface to discover on: {0}")]
    NoInterfaces(String),
    /// A socket operation failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_selection() {
        let all = Interfaces::default();
        assert!(all.allows("eth0", false) && all.allows("lo", true));
        let some = Interfaces {
            include: vec!["eth1".into()],
            exclude: vec![],
            loopback_only: false,
        };
        assert!(some.allows("eth1", false) && !some.allows("eth0", false));
        let not = Interfaces {
            include: vec![],
            exclude: vec!["docker0".into()],
            loopback_only: false,
        };
        assert!(!not.allows("docker0", false) && not.allows("eth0", false));
        let lo = Interfaces {
            loopback_only: true,
            ..Default::default()
        };
        assert!(lo.allows("lo", true) && !lo.allows("eth0", false));
    }
}
