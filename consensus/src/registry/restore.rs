//! Restoring a snapshot's registry into the running one ([`Request::Restore`]): what changes,
//! decided by one pure function ([`Registry::restore_plan`]) that both the leader's report and
//! [`Registry::apply`] use, so the report says what every node applies.
//!
//! Raft decides membership, so a restore never invents members: it does not add, remove or
//! re-role a node record, and it leaves the cluster identity alone. It restores:
//! - the settings (the snapshot's replace the current ones);
//! - the join tokens: the snapshot's replace the current ones, except that a token revoked now
//!   stays revoked and keeps the greater use count (a restore never revives a used or revoked
//!   token); tokens created since the snapshot are dropped;
//! - the removed identities, merged: a removal recorded now stays, the snapshot's are added,
//!   except one naming the current key of a node recorded now (it would cut a member off);
//! - the labels of the nodes recorded now that the snapshot records too (the snapshot's labels
//!   replace theirs).
//!
//! Nodes the snapshot records that are not recorded now are reported, not re-added; nodes
//! recorded now that the snapshot lacks are kept as they are.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{ANY_KEY, NodeId, Outcome, Refusal, Registry, Settings, check_hex, check_label};

/// A snapshot's registry as [`super::Request::Restore`] carries it: written as its JSON
/// text, since the request's internally tagged encoding cannot read the registry's maps keyed
/// by node id back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Carried(pub Box<Registry>);

impl Serialize for Carried {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&*self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Carried {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Carried, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text)
            .map(|r| Carried(Box::new(r)))
            .map_err(serde::de::Error::custom)
    }
}

/// What a restore of a snapshot's registry changes in this one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    /// Nodes recorded now and in the snapshot: their labels become the snapshot's.
    pub labels_restored: BTreeSet<NodeId>,
    /// Nodes the snapshot records that are not recorded now: not re-added.
    pub nodes_skipped: BTreeSet<NodeId>,
    /// Nodes recorded now that the snapshot does not record: kept as they are.
    pub nodes_kept: BTreeSet<NodeId>,
    /// How many join tokens there are after the restore (the snapshot's).
    pub tokens_restored: usize,
    /// Tokens recorded now that the snapshot lacks (created since it was taken): dropped.
    pub tokens_dropped: BTreeSet<String>,
    /// Tokens revoked now that the snapshot holds unrevoked: they stay revoked.
    pub tokens_kept_revoked: BTreeSet<String>,
    /// How many removed identities the snapshot adds to the current ones.
    pub removals_added: usize,
    /// Nodes whose removal in the snapshot names the current key of a node recorded now: not
    /// added.
    pub removals_skipped: BTreeSet<NodeId>,
    /// The settings after the restore.
    pub settings: Settings,
}

impl Registry {
    /// What restoring `snapshot` into this registry changes (nothing is changed here).
    pub fn restore_plan(&self, snapshot: &Registry) -> RestorePlan {
        let mut plan = RestorePlan {
            settings: snapshot.settings.clone(),
            tokens_restored: snapshot.tokens.len(),
            ..RestorePlan::default()
        };
        for id in snapshot.nodes.keys() {
            if self.nodes.contains_key(id) {
                plan.labels_restored.insert(*id);
            } else {
                plan.nodes_skipped.insert(*id);
            }
        }
        plan.nodes_kept = self
            .nodes
            .keys()
            .filter(|id| !snapshot.nodes.contains_key(id))
            .copied()
            .collect();
        for (id, now) in &self.tokens {
            match snapshot.tokens.get(id) {
                None => {
                    plan.tokens_dropped.insert(id.clone());
                }
                Some(then) if now.revoked && !then.revoked => {
                    plan.tokens_kept_revoked.insert(id.clone());
                }
                Some(_) => {}
            }
        }
        for (id, keys) in &snapshot.removed {
            for key in keys {
                if self.names_member(*id, key) {
                    plan.removals_skipped.insert(*id);
                } else if !self.removed.get(id).is_some_and(|k| k.contains(key)) {
                    plan.removals_added += 1;
                }
            }
        }
        plan
    }

    /// Whether the removal of `(id, key)` would deny the node recorded now under `id`.
    fn names_member(&self, id: NodeId, key: &str) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|n| key == ANY_KEY || n.key.as_deref().is_none_or(|k| k == key))
    }

    /// The checks of [`super::Request::Restore`]: the snapshot is of this cluster (unless
    /// `force`), and what it restores is valid.
    pub(super) fn check_restore(&self, snapshot: &Registry, force: bool) -> Outcome {
        let id = |r: &Registry| r.cluster.as_ref().map(|c| c.id.clone());
        if !force && (id(snapshot).is_none() || id(snapshot) != id(self)) {
            return Err(Refusal::OtherCluster {
                snapshot: id(snapshot).unwrap_or_else(|| "-".into()),
                running: id(self).unwrap_or_else(|| "-".into()),
            });
        }
        if ![1, 3, 5, 7].contains(&snapshot.settings.voter_target) {
            return Err(super::invalid("voter target", "1, 3, 5 or 7"));
        }
        for (id, t) in &snapshot.tokens {
            if *id != t.id {
                return Err(super::invalid("token id", "the record names another id"));
            }
            check_hex("token id", &t.id, 16)?;
            check_hex("token secret hash", &t.secret_hash, 64)?;
            if let Some(k) = &t.proof_key {
                check_hex("token proof key", k, 64)?;
            }
        }
        for (id, n) in &snapshot.nodes {
            if self.nodes.contains_key(id) {
                n.labels.iter().try_for_each(|(k, v)| check_label(k, v))?;
            }
        }
        Ok(())
    }

    /// Applies a checked restore, as [`Registry::restore_plan`] describes it.
    pub(super) fn restore(&mut self, snapshot: &Registry) {
        let plan = self.restore_plan(snapshot);
        self.settings = plan.settings;
        for id in &plan.labels_restored {
            if let (Some(n), Some(then)) = (self.nodes.get_mut(id), snapshot.nodes.get(id)) {
                n.labels = then.labels.clone();
            }
        }
        let mut tokens = snapshot.tokens.clone();
        for (id, t) in tokens.iter_mut() {
            if let Some(now) = self.tokens.get(id) {
                t.revoked |= now.revoked;
                t.uses = t.uses.max(now.uses);
            }
        }
        self.tokens = tokens;
        let mut removed: BTreeMap<NodeId, BTreeSet<String>> = self.removed.clone();
        for (id, keys) in &snapshot.removed {
            for key in keys {
                if !self.names_member(*id, key) {
                    removed.entry(*id).or_default().insert(key.clone());
                }
            }
        }
        self.removed = removed;
    }
}
