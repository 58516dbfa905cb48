//! The identities removed from the cluster, which every member's handshake refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use quorate_base::NodeId;

/// The key a deny-list entry names for every key of its node (a removal recorded for a node
/// whose record named no key).
pub const ANY_KEY: &str = "*";

/// Identities removed from the cluster, by node id: the fingerprints of their keys (`*`: every
/// key of that node). Shared by the handshake, which refuses them, and the member, which keeps
/// it in step with the registry.
#[derive(Clone, Debug, Default)]
pub struct DenyList(Arc<RwLock<BTreeMap<NodeId, BTreeSet<String>>>>);

impl DenyList {
    /// Replaces the list; returns the nodes newly denied.
    pub fn set(&self, list: BTreeMap<NodeId, BTreeSet<String>>) -> Vec<NodeId> {
        let Ok(mut cur) = self.0.write() else {
            return Vec::new();
        };
        let new: Vec<NodeId> = list
            .iter()
            .filter(|(id, keys)| cur.get(id) != Some(keys))
            .map(|(id, _)| *id)
            .collect();
        *cur = list;
        new
    }

    /// Whether node `id` with key `key` was removed.
    pub fn denies(&self, id: NodeId, key: &str) -> bool {
        self.0.read().is_ok_and(|l| {
            l.get(&id)
                .is_some_and(|keys| keys.contains(key) || keys.contains(ANY_KEY))
        })
    }
}
