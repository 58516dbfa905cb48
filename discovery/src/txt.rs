//! The TXT record of a quorate advertisement: encode and decode, both pure.
//!
//! Keys are short because the record travels in every mDNS answer and must stay under
//! [`TXT_MAX_BYTES`]: `v` (schema version), `id` (node id), `cl` (cluster name), `role`
//! (`voter`/`storage`), `g` and `a` (gossip and HTTP API ports), `st` (`forming`/`member`),
//! `ca` (CA fingerprint prefix, once a member), `ver` (software version).
//!
//! Decoding tells apart a record that is not ours at all ([`TxtError::Foreign`]: another
//! product using the same service type) from one that claims to be ours but is broken
//! ([`TxtError::Malformed`]). Unknown keys are ignored, so that newer nodes can add keys
//! without older ones dropping them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use quorate_base::{NodeId, Role};

/// The TXT schema version this build writes.
pub const TXT_VERSION: u32 = 1;
/// The largest TXT record (on the wire) an advertisement may have.
pub const TXT_MAX_BYTES: usize = 200;

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvertState {
    /// Not yet a member of a formed cluster.
    Forming,
    /// A member of a formed cluster.
    Member,
}

macro_rules! word_enum {
    ($t:ty { $($v:ident = $s:literal),* }) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$v => $s),* })
            }
        }
        impl FromStr for $t {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($s => Ok(Self::$v),)* _ => Err(()) }
            }
        }
    };
}
word_enum!(AdvertState { Forming = "forming", Member = "member" });

/// What a node says about itself in its TXT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// Node id: 16 lowercase hex digits in the record.
    pub id: NodeId,
    /// Cluster name.
    pub cluster: String,
    /// Claimed role.
    pub role: Role,
    /// Gossip UDP port.
    pub gossip_port: u16,
    /// HTTP API TCP port.
    pub api_port: u16,
    /// Life stage.
    pub state: AdvertState,
    /// Prefix of the cluster CA's fingerprint, once a member.
    pub ca: Option<String>,
    /// Software version.
    pub version: String,
}

/// Why a TXT record was not taken as a quorate advertisement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    /// Not a quorate record: another service of the same type.
    #[error("not a quorate advertisement (no `v` and `id` keys)")]
    Foreign,
    /// Claims to be quorate but a key is missing or wrong.
    #[error("malformed quorate advertisement: {0}")]
    Malformed(String),
    /// An advertisement too large to send.
    #[error("the TXT record would take {0} bytes, more than {TXT_MAX_BYTES}")]
    TooLong(usize),
}

/// Longest cluster name and version string carried.
const CLUSTER_MAX: usize = 32;
const VERSION_MAX: usize = 32;
const CA_MAX: usize = 64;

impl Advert {
    /// The record's key/value pairs, in a stable order, checked against [`TXT_MAX_BYTES`].
    pub fn encode(&self) -> Result<Vec<(String, String)>, TxtError> {
        let mut pairs = vec![
            ("v".to_string(), TXT_VERSION.to_string()),
            ("id".to_string(), self.id.to_string()),
            ("cl".to_string(), self.cluster.clone()),
            ("role".to_string(), self.role.to_string()),
            ("g".to_string(), self.gossip_port.to_string()),
            ("a".to_string(), self.api_port.to_string()),
            ("st".to_string(), self.state.to_string()),
        ];
        if let Some(ca) = &self.ca {
            pairs.push(("ca".to_string(), ca.clone()));
        }
        pairs.push(("ver".to_string(), self.version.clone()));
        // Check what we send with the same rules we accept with.
        let map: BTreeMap<String, Option<String>> = pairs
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        Advert::decode(&map)?;
        let size = wire_size(&pairs);
        if size > TXT_MAX_BYTES {
            return Err(TxtError::TooLong(size));
        }
        Ok(pairs)
    }

    /// Reads an advertisement from TXT key/value pairs (keys compared in lower case; a key
    /// without `=` has no value).
    pub fn decode(txt: &BTreeMap<String, Option<String>>) -> Result<Advert, TxtError> {
        let get = |k: &str| txt.get(k).and_then(|v| v.as_deref());
        if !txt.contains_key("v") && !txt.contains_key("id") {
            return Err(TxtError::Foreign);
        }
        let bad = |m: String| Err(TxtError::Malformed(m));
        let Some(v) = get("v") else {
            return bad("no `v`".into());
        };
        match v.parse::<u32>() {
            Ok(n) if n >= 1 => {}
            _ => return bad(format!("`v` is {v:?}, not a version number")),
        }
        let Some(id) = get("id") else {
            return bad("no `id`".into());
        };
        let id = match id.parse::<NodeId>() {
            Ok(n) if !id.bytes().any(|b| b.is_ascii_uppercase()) => n,
            _ => return bad(format!("`id` is {id:?}, not 16 lowercase hex digits")),
        };
        let Some(cluster) = get("cl") else {
            return bad("no `cl`".into());
        };
        if cluster.is_empty() || cluster.len() > CLUSTER_MAX {
            return bad(format!(
                "`cl` has {} bytes, not 1 to {CLUSTER_MAX}",
                cluster.len()
            ));
        }
        let role = match get("role").map(str::parse) {
            Some(Ok(r)) => r,
            other => {
                return bad(format!(
                    "`role` is {:?}, not voter or storage",
                    other.map(|_| get("role"))
                ));
            }
        };
        let port = |k: &str| -> Result<u16, TxtError> {
            match get(k).map(str::parse::<u16>) {
                Some(Ok(p)) if p != 0 => Ok(p),
                _ => Err(TxtError::Malformed(format!(
                    "`{k}` is {:?}, not a port",
                    get(k)
                ))),
            }
        };
        let gossip_port = port("g")?;
        let api_port = port("a")?;
        let state = match get("st").map(str::parse) {
            Some(Ok(s)) => s,
            _ => return bad(format!("`st` is {:?}, not forming or member", get("st"))),
        };
        let ca = match get("ca") {
            Some(ca)
                if ca.is_empty()
                    || ca.len() > CA_MAX
                    || !ca.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                return bad(format!("`ca` is {ca:?}, not a hex fingerprint prefix"));
            }
            other => other.map(str::to_string),
        };
        let version = get("ver").unwrap_or_default();
        if version.len() > VERSION_MAX {
            return bad(format!(
                "`ver` has {} bytes, more than {VERSION_MAX}",
                version.len()
            ));
        }
        Ok(Advert {
            id,
            cluster: cluster.to_string(),
            role,
            gossip_port,
            api_port,
            state,
            ca,
            version: version.to_string(),
        })
    }
}

/// Bytes the pairs take in a TXT record: a length byte and `key=value` for each.
pub(crate) fn wire_size(pairs: &[(String, String)]) -> usize {
    pairs.iter().map(|(k, v)| 1 + k.len() + 1 + v.len()).sum()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn advert() -> Advert {
        sample("00abcdef01234567")
    }

    /// A plain advertisement for node `id`, for tests elsewhere in the crate.
    pub(crate) fn sample(id: &str) -> Advert {
        Advert {
            id: id.parse().expect("a node id"),
            cluster: "default".into(),
            role: Role::Voter,
            gossip_port: 7946,
            api_port: 7948,
            state: AdvertState::Forming,
            ca: None,
            version: "0.1.0".into(),
        }
    }

    fn map(pairs: &[(String, String)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect()
    }

    #[test]
    fn encode_then_decode_gives_the_advert_back() {
        let mut a = advert();
        assert_eq!(
            Advert::decode(&map(&a.encode().expect("encode"))),
            Ok(a.clone())
        );
        a.ca = Some("0123456789abcdef".into());
        a.state = AdvertState::Member;
        a.role = Role::Storage;
        assert_eq!(Advert::decode(&map(&a.encode().expect("encode"))), Ok(a));
    }

    #[test]
    fn the_largest_advert_stays_under_the_limit() {
        let a = Advert {
            id: "ffffffffffffffff".parse().expect("id"),
            cluster: "c".repeat(CLUSTER_MAX),
            role: Role::Storage,
            gossip_port: 65535,
            api_port: 65535,
            state: AdvertState::Forming,
            ca: Some("f".repeat(32)),
            version: "v".repeat(VERSION_MAX),
        };
        let pairs = a.encode().expect("fits");
        assert!(wire_size(&pairs) <= TXT_MAX_BYTES, "{}", wire_size(&pairs));
    }

    #[test]
    fn oversized_values_are_refused_both_ways() {
        let mut a = advert();
        a.cluster = "c".repeat(CLUSTER_MAX + 1);
        assert!(matches!(a.encode(), Err(TxtError::Malformed(_))));
        let mut m = map(&advert().encode().expect("encode"));
        m.insert("ver".into(), Some("x".repeat(500)));
        assert!(matches!(Advert::decode(&m), Err(TxtError::Malformed(_))));
    }

    #[test]
    fn a_record_without_our_keys_is_foreign() {
        let m: BTreeMap<_, _> = [
            ("path".to_string(), Some("/".to_string())),
            ("model".into(), None),
        ]
        .into();
        assert_eq!(Advert::decode(&m), Err(TxtError::Foreign));
        assert_eq!(Advert::decode(&BTreeMap::new()), Err(TxtError::Foreign));
    }

    #[test]
    fn broken_records_are_malformed_not_foreign() {
        let good = map(&advert().encode().expect("encode"));
        let cases: Vec<(&str, Option<Option<&str>>)> = vec![
            ("v", Some(Some("zero"))),
            ("v", Some(Some("0"))),
            ("v", None),
            ("id", Some(Some("xyz"))),
            ("id", Some(Some("00ABCDEF01234567"))),
            ("id", None),
            ("cl", Some(Some(""))),
            ("role", Some(Some("king"))),
            ("role", Some(None)),
            ("g", Some(Some("0"))),
            ("g", Some(Some("70000"))),
            ("a", None),
            ("st", Some(Some("sleeping"))),
            ("ca", Some(Some("not-hex"))),
        ];
        for (key, value) in cases {
            let mut m = good.clone();
            match value {
                Some(v) => {
                    m.insert(key.into(), v.map(str::to_string));
                }
                None => {
                    m.remove(key);
                }
            }
            assert!(
                matches!(Advert::decode(&m), Err(TxtError::Malformed(_))),
                "{key}={value:?} accepted"
            );
        }
    }

    #[test]
    fn unknown_keys_and_newer_versions_are_tolerated() {
        let mut m = map(&advert().encode().expect("encode"));
        m.insert("zz".into(), Some("future".into()));
        m.insert("v".into(), Some("2".into()));
        assert_eq!(
            Advert::decode(&m).map(|a| a.id),
            Ok(NodeId::new(0x00ab_cdef_0123_4567))
        );
    }
}
