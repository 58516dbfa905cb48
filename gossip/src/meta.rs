//! What a node says about itself in gossip: named keys and a typed view of them.
//!
//! A node writes only its own keys. Readers go through [`NodeMeta::from_pairs`], which is
//! lenient: a missing or unparsable value reads as absent, never as an error, because a newer
//! node may write keys or values an older one does not know.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use quorate_base::{NodeId, Role};
use serde::Serialize;

/// Node name.
pub const NAME_KEY: &str = "name";
/// `voter` or `storage`.
pub const ROLE_KEY: &str = "role";
/// QUIC address (Raft, joins).
pub const QUIC_KEY: &str = "quic";
/// HTTP API address.
pub const API_KEY: &str = "api";
/// Software version.
pub const VERSION_KEY: &str = "ver";
/// Cluster state as the node sees it: `forming` or `member`.
pub const STATE_KEY: &str = "state";
/// The Raft leader's node id as this node sees it.
pub const RAFT_LEADER_KEY: &str = "raft_leader";
/// The Raft term as this node sees it.
pub const RAFT_TERM_KEY: &str = "raft_term";
/// Present (value `leaving`) once the node leaves gracefully.
pub const STATUS_KEY: &str = "status";
/// Value of [`STATUS_KEY`] on a leaving node.
pub const LEAVING: &str = "leaving";
/// Prefix of user labels: `label:zone` = `a`.
pub const LABEL_PREFIX: &str = "label:";

/// A node's own description, as it publishes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeMeta {
    /// Node name.
    pub name: String,
    /// `voter` or `storage` (absent if unreadable).
    pub role: Option<Role>,
    /// QUIC address.
    pub quic_addr: Option<SocketAddr>,
    /// HTTP API address.
    pub api_addr: Option<SocketAddr>,
    /// Software version.
    pub version: String,
    /// `forming` or `member`.
    pub cluster_state: String,
    /// The Raft leader as this node sees it.
    pub raft_leader: Option<NodeId>,
    /// The Raft term as this node sees it.
    pub raft_term: Option<u64>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
}

impl NodeMeta {
    /// The key/value pairs to publish.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (NAME_KEY.to_string(), self.name.clone()),
            (VERSION_KEY.to_string(), self.version.clone()),
            (STATE_KEY.to_string(), self.cluster_state.clone()),
        ];
        if let Some(r) = self.role {
            out.push((ROLE_KEY.to_string(), r.to_string()));
        }
        if let Some(a) = self.quic_addr {
            out.push((QUIC_KEY.to_string(), a.to_string()));
        }
        if let Some(a) = self.api_addr {
            out.push((API_KEY.to_string(), a.to_string()));
        }
        if let Some(l) = &self.raft_leader {
            out.push((RAFT_LEADER_KEY.to_string(), l.to_string()));
        }
        if let Some(t) = self.raft_term {
            out.push((RAFT_TERM_KEY.to_string(), t.to_string()));
        }
        for (k, v) in &self.labels {
            out.push((format!("{LABEL_PREFIX}{k}"), v.clone()));
        }
        out
    }

    /// Reads a node's keys, leniently.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> NodeMeta {
        let mut m = NodeMeta::default();
        for (k, v) in pairs {
            match k {
                NAME_KEY => m.name = v.to_string(),
                ROLE_KEY => m.role = v.parse().ok(),
                QUIC_KEY => m.quic_addr = v.parse().ok(),
                API_KEY => m.api_addr = v.parse().ok(),
                VERSION_KEY => m.version = v.to_string(),
                STATE_KEY => m.cluster_state = v.to_string(),
                RAFT_LEADER_KEY => m.raft_leader = v.parse().ok(),
                RAFT_TERM_KEY => m.raft_term = v.parse().ok(),
                _ => {
                    if let Some(label) = k.strip_prefix(LABEL_PREFIX) {
                        m.labels.insert(label.to_string(), v.to_string());
                    }
                }
            }
        }
        m
    }

    /// The keys this node owns that `self` would no longer publish compared to `old` (labels
    /// removed, leader forgotten): they must be deleted.
    pub fn keys_dropped_since(&self, old: &NodeMeta) -> Vec<String> {
        let new: Vec<String> = self.to_pairs().into_iter().map(|(k, _)| k).collect();
        old.to_pairs()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !new.contains(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_through_pairs() {
        let m = NodeMeta {
            name: "n1".into(),
            role: Some(Role::Voter),
            quic_addr: Some("10.0.0.1:7947".parse().expect("addr")),
            api_addr: Some("127.0.0.1:7948".parse().expect("addr")),
            version: "0.1.0".into(),
            cluster_state: "forming".into(),
            raft_leader: Some(NodeId::new(0xaa)),
            raft_term: Some(7),
            labels: [("zone".to_string(), "a".to_string())].into(),
        };
        let pairs = m.to_pairs();
        let back = NodeMeta::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(back, m);
    }

    #[test]
    fn bad_values_read_as_absent_and_unknown_keys_are_ignored() {
        let m = NodeMeta::from_pairs([
            ("quic", "not-an-addr"),
            ("raft_term", "x"),
            ("role", "chief"),
            ("raft_leader", "not-an-id"),
            ("future", "1"),
            ("name", "n"),
        ]);
        assert_eq!(m.quic_addr, None);
        assert_eq!(m.role, None);
        assert_eq!(m.raft_leader, None);
        assert_eq!(m.raft_term, None);
        assert_eq!(m.name, "n");
    }

    #[test]
    fn dropped_keys_are_listed_for_deletion() {
        let old = NodeMeta {
            labels: [("a".to_string(), "1".to_string())].into(),
            raft_leader: Some(NodeId::new(1)),
            ..Default::default()
        };
        let new = NodeMeta::default();
        let mut dropped = new.keys_dropped_since(&old);
        dropped.sort();
        assert_eq!(
            dropped,
            vec!["label:a".to_string(), "raft_leader".to_string()]
        );
    }
}
