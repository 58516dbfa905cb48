//! The cluster key and the keys derived from it, one per purpose (HKDF-SHA256): the gossip
//! sealing key, which every member needs, and the join key, which admits nodes (a voter among
//! them) and which only voter-role members hold.
//!
//! A node's keyring in its data dir ([`StoredKeys`]) holds cluster keys on a voter-role node
//! and gossip keys alone on a storage node: whatever a storage node keeps cannot admit anyone.
//! Keys are named everywhere by the fingerprint of their gossip key, so that `quorate keyring`
//! shows the same names on every node. Pure: no IO (the data dir reads and writes the file).

use quorate_base::Role;
use quorate_gossip::Key;
use serde::{Deserialize, Serialize};

/// A node's keyring as the agent's parts share it (the API rotates it, the bridge hands its
/// keys to consensus).
pub type SharedKeys = std::sync::Arc<std::sync::Mutex<StoredKeys>>;

/// Derives the key for `purpose` from a cluster key.
fn derive(cluster: &Key, purpose: &[u8]) -> [u8; 32] {
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"quorate cluster key/1");
    let prk = salt.extract(cluster.as_bytes());
    let mut out = [0u8; 32];
    let info = [purpose];
    match prk.expand(&info, ring::hkdf::HKDF_SHA256) {
        Ok(okm) => {
            if okm.fill(&mut out).is_err() {
                out = [0u8; 32];
            }
        }
        Err(_) => out = [0u8; 32],
    }
    out
}

/// The key gossip datagrams are sealed with.
pub fn gossip_key(cluster: &Key) -> Key {
    Key::from_bytes(derive(cluster, b"gossip"))
}

/// The key joiners prove they hold (and the admitting leader proves back).
pub fn join_key(cluster: &Key) -> [u8; 32] {
    derive(cluster, b"join")
}

/// What a node's keyring holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Cluster keys (a voter-role node): gossip and join keys are derived from them.
    Cluster,
    /// Gossip keys only (a storage node).
    Gossip,
}

/// A node's keyring: its kind and its keys, the primary first. Empty: gossip is open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKeys {
    /// What the keys are.
    pub kind: KeyKind,
    /// The keys, primary first.
    #[serde(with = "base64_keys")]
    pub keys: Vec<Key>,
}

mod base64_keys {
    use quorate_gossip::Key;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(keys: &[Key], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(Key::to_base64))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Key>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|k| Key::from_base64(k).map_err(serde::de::Error::custom))
            .collect()
    }
}

impl StoredKeys {
    /// A keyring of cluster keys, kept as a node of `role` may keep them: as they are on a
    /// voter-role node, as their gossip keys on a storage node.
    pub fn from_cluster_keys(keys: Vec<Key>, role: Role) -> StoredKeys {
        StoredKeys {
            kind: KeyKind::Cluster,
            keys,
        }
        .for_role(role)
    }

    /// No keys: gossip is open.
    pub fn open(role: Role) -> StoredKeys {
        StoredKeys::from_cluster_keys(Vec::new(), role)
    }

    /// The same keys, as a node of `role` may keep them (a storage node keeps gossip keys
    /// only; a gossip-only keyring stays one: cluster keys cannot be derived back).
    pub fn for_role(self, role: Role) -> StoredKeys {
        match (self.kind, role) {
            (KeyKind::Cluster, Role::Storage) => StoredKeys {
                kind: KeyKind::Gossip,
                keys: self.keys.iter().map(gossip_key).collect(),
            },
            _ => self,
        }
    }

    /// Whether gossip is sealed.
    pub fn sealed(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The gossip keys, primary first.
    pub fn gossip_keys(&self) -> Vec<Key> {
        match self.kind {
            KeyKind::Cluster => self.keys.iter().map(gossip_key).collect(),
            KeyKind::Gossip => self.keys.clone(),
        }
    }

    /// The join keys, primary first (none on a storage node).
    pub fn join_keys(&self) -> Vec<[u8; 32]> {
        match self.kind {
            KeyKind::Cluster => self.keys.iter().map(join_key).collect(),
            KeyKind::Gossip => Vec::new(),
        }
    }

    /// Each key's name: its gossip key's fingerprint.
    pub fn fingerprints(&self) -> Vec<String> {
        self.gossip_keys().iter().map(Key::fingerprint).collect()
    }

    /// Adds a gossip key to a gossip-only keyring (a storage node's; an empty keyring becomes
    /// one), after the others; already there, or a keyring of cluster keys: no change.
    pub fn install_gossip(&mut self, gossip: Key) {
        if self.kind == KeyKind::Cluster && self.sealed() {
            return;
        }
        self.kind = KeyKind::Gossip;
        if !self
            .keys
            .iter()
            .any(|k| k.fingerprint() == gossip.fingerprint())
        {
            self.keys.push(gossip);
        }
    }

    /// Adds a cluster key (as the kind keeps it), after the others; already there: no change.
    pub fn install(&mut self, cluster: Key) {
        let key = match self.kind {
            KeyKind::Cluster => cluster,
            KeyKind::Gossip => gossip_key(&cluster),
        };
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Makes the key named `fingerprint` primary; false if there is none.
    pub fn make_primary(&mut self, fingerprint: &str) -> bool {
        match self.fingerprints().iter().position(|f| f == fingerprint) {
            Some(i) => {
                let k = self.keys.remove(i);
                self.keys.insert(0, k);
                true
            }
            None => false,
        }
    }

    /// Removes the key named `fingerprint` (not the primary); false if there is none.
    pub fn remove(&mut self, fingerprint: &str) -> bool {
        match self.fingerprints().iter().position(|f| f == fingerprint) {
            Some(i) if i > 0 => {
                self.keys.remove(i);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    /// The derived keys differ from the cluster key and from each other, and are the same on
    /// every node.
    #[test]
    fn keys_are_derived_per_purpose() {
        let k = key(1);
        assert_ne!(gossip_key(&k).as_bytes(), k.as_bytes());
        assert_ne!(&join_key(&k), k.as_bytes());
        assert_ne!(&join_key(&k), gossip_key(&k).as_bytes());
        assert_eq!(gossip_key(&k), gossip_key(&key(1)));
        assert_ne!(gossip_key(&k), gossip_key(&key(2)));
    }

    /// A storage node keeps gossip keys only: nothing it holds derives a join key, and its
    /// keys are named like a voter's.
    #[test]
    fn a_storage_node_keeps_no_join_key() {
        let voter = StoredKeys::from_cluster_keys(vec![key(1), key(2)], Role::Voter);
        let storage = StoredKeys::from_cluster_keys(vec![key(1), key(2)], Role::Storage);
        assert_eq!(storage.kind, KeyKind::Gossip);
        assert!(storage.join_keys().is_empty());
        assert_eq!(
            voter.join_keys(),
            vec![join_key(&key(1)), join_key(&key(2))]
        );
        assert_eq!(storage.gossip_keys(), voter.gossip_keys());
        assert_eq!(storage.fingerprints(), voter.fingerprints());
        assert!(!storage.keys.contains(&key(1)), "no cluster key is kept");
        // A storage keyring stays gossip-only whatever role it is read for.
        assert_eq!(storage.clone().for_role(Role::Voter), storage);
    }

    /// Rotation by name works alike on both kinds: install, make primary, remove the old.
    #[test]
    fn rotation_by_fingerprint() {
        for role in [Role::Voter, Role::Storage] {
            let mut s = StoredKeys::from_cluster_keys(vec![key(1)], role);
            s.install(key(2));
            s.install(key(2));
            assert_eq!(s.keys.len(), 2);
            let new = gossip_key(&key(2)).fingerprint();
            let old = gossip_key(&key(1)).fingerprint();
            assert!(!s.remove(&old), "the primary stays");
            assert!(s.make_primary(&new));
            assert!(s.remove(&old));
            assert_eq!(s.fingerprints(), vec![new]);
            assert!(!s.make_primary("nope"));
        }
    }

    /// The keyring file: kind and base64 keys; a damaged key is an error.
    #[test]
    fn the_file_round_trips() {
        let s = StoredKeys::from_cluster_keys(vec![key(3)], Role::Voter);
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"cluster\""));
        assert_eq!(serde_json::from_str::<StoredKeys>(&text).unwrap(), s);
        assert!(serde_json::from_str::<StoredKeys>(r#"{"kind":"gossip","keys":["x"]}"#).is_err());
    }
}
