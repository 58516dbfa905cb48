//! The node id: a random 64-bit number drawn on a node's first start and kept in its data dir.
//!
//! It is what every layer keys a node by (mDNS TXT `id`, gossip, Raft), never the node's name,
//! which an operator may change or mDNS may rename on a conflict. It is written as 16 lowercase
//! hex digits so that ids sort the same as text and as numbers. On the wire and on disk (Raft's
//! log, votes and snapshots, the registry) it is the plain number, as it always was.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's permanent identity within a cluster. Zero is never drawn: [`NodeId::default`] is
/// the placeholder openraft asks its node ids to have, never a node's.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(u64);

impl NodeId {
    /// The id with this number (ids read from the wire, and tests).
    pub const fn new(n: u64) -> Self {
        NodeId(n)
    }

    /// Draws a new random, non-zero node id.
    pub fn random() -> Self {
        loop {
            let n: u64 = rand::random();
            if n != 0 {
                return NodeId(n);
            }
        }
    }

    /// The id as a number, as Raft uses it.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<NodeId> for u64 {
    fn from(id: NodeId) -> u64 {
        id.0
    }
}

impl From<u64> for NodeId {
    fn from(n: u64) -> NodeId {
        NodeId(n)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// As `Display`: logs and assertion messages show the id the way operators see it.
impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a text is not a node id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a node id is 16 hex digits, not zero; got {0:?}")]
pub struct ParseNodeIdError(String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseNodeIdError(s.to_string());
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        match u64::from_str_radix(s, 16) {
            Ok(0) | Err(_) => Err(bad()),
            Ok(n) => Ok(NodeId(n)),
        }
    }
}

/// Serde as 16 hex digits, for what people and scripts read (the HTTP API, `discover --json`),
/// where the plain number would be unreadable: `#[serde(with = "quorate_base::hex_id")]`.
pub mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::NodeId;

    /// Writes the id as 16 hex digits.
    pub fn serialize<S: Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    /// Reads 16 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }

    /// The same for an optional id (`null` when absent).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        use super::super::NodeId;

        /// Writes the id as 16 hex digits, or `null`.
        pub fn serialize<S: Serializer>(id: &Option<NodeId>, s: S) -> Result<S::Ok, S::Error> {
            match id {
                Some(id) => s.collect_str(id),
                None => s.serialize_none(),
            }
        }

        /// Reads 16 hex digits, or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeId>, D::Error> {
            match <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? {
                Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }

    /// The same for a list of ids.
    pub mod list {
        use serde::{Deserialize, Deserializer, Serializer};

        use super::super::NodeId;

        /// Writes each id as 16 hex digits.
        pub fn serialize<S: Serializer>(ids: &[NodeId], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(ids.iter().map(ToString::to_string))
        }

        /// Reads a list of 16 hex digit ids.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NodeId>, D::Error> {
            <Vec<std::borrow::Cow<'de, str>>>::deserialize(d)?
                .iter()
                .map(|t| t.parse().map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = NodeId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<NodeId>(), Ok(id));
        assert_eq!("00ABCDEF01234567".parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn parse_refuses_zero_short_long_and_non_hex() {
        for bad in [
            "0000000000000000",
            "abc",
            "00abcdef012345678",
            "00abcdef0123456g",
            "+0abcdef01234567",
        ] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn serde_keeps_the_plain_number_also_as_a_map_key() {
        let id = NodeId(0x2a);
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert_eq!(serde_json::from_str::<NodeId>("42").unwrap(), id);
        let map = std::collections::BTreeMap::from([(id, 1)]);
        let text = serde_json::to_string(&map).unwrap();
        assert_eq!(text, r#"{"42":1}"#);
        let back: std::collections::BTreeMap<NodeId, i32> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn hex_serde_reads_back_what_it_writes() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Row {
            #[serde(with = "hex_id")]
            id: NodeId,
            #[serde(with = "hex_id::option")]
            leader: Option<NodeId>,
        }
        let row = Row {
            id: NodeId(0xab),
            leader: None,
        };
        let text = serde_json::to_string(&row).unwrap();
        assert_eq!(text, r#"{"id":"00000000000000ab","leader":null}"#);
        assert_eq!(serde_json::from_str::<Row>(&text).unwrap(), row);
        assert!(serde_json::from_str::<Row>(r#"{"id":"xyz","leader":null}"#).is_err());
    }

    #[test]
    fn random_ids_are_non_zero_and_differ() {
        let a = NodeId::random();
        let b = NodeId::random();
        assert_ne!(a.get(), 0);
        assert_ne!(a, b);
    }
}
