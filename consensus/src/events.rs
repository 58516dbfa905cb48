//! Typed membership events and the in-memory hub that hands them to subscribers.
//!
//! Two sources, one sequence:
//! - **Decided** events (`joined`, `promoted`, `demoted`, `removed`, `left`, `leader_changed`,
//!   `labels_changed`, `token_*`) are derived from the replicated log inside the state
//!   machine's `apply`, by the pure functions [`derive`], [`membership_changes`] and
//!   [`leader_change`]. The counter of decided events is part of the state machine's data
//!   (and so of its snapshots), so every node, learners too, numbers the same events the same
//!   way: the n-th decided event has the index `n` everywhere.
//! - **Local** events (`failed`, `recovered`) are what this node's failure detector observes;
//!   the agent pushes them with [`EventHub::publish_local`]. They take the index `N.k`: the
//!   k-th local event since the decided event `N`. They are this node's observations, so
//!   another node may have other ones, or none.
//!
//! [`EventHub`] keeps the last [`RETAINED`] events in a ring and broadcasts new ones; a
//! [`Subscription`] replays the retained events after a position and then follows live, with
//! no gap and no repeat: a subscriber that lags the broadcast re-reads the ring by index, and
//! one that fell out of the ring ends with [`Compacted`] (after etcd's "compacted" error),
//! never with a silent gap.
//!
//! What survives a restart: the decided counter does (it is in the snapshot), and openraft
//! re-applies the committed entries after the last snapshot, so the decided events after the
//! snapshot come back with the same indexes; those up to the snapshot do not (a resume from
//! before it is [`Compacted`]). Local events do not survive: after a restart the detector
//! observes afresh, and a local index `N.k` may name another observation than before. The same
//! holds when a node installs a snapshot sent by the leader: the events it skipped are
//! compacted here.
//!
//! Choices beyond the bare design, and why: a `PutNode` of a registered node whose labels
//! differ gives `labels_changed` (a restart with other `--label`s changes them as much as a
//! label write does), and a label write that changes nothing gives no event (nothing changed).
//! The hub also carries the *registry index* (the log index of the last entry that changed
//! the registry or the Raft membership) as a `watch`, because the state machine publishes both
//! at the same point; blocking queries wait on it.
//!
//! It does not decide anything, persist events, or know about HTTP.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::LogId;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::registry::{NodeStatus, Registry, Request, Role};
use quorate_base::NodeId;

/// How many events the hub retains for replay.
pub const RETAINED: usize = 4096;

/// The broadcast channel's capacity; a subscriber further behind re-reads the ring.
const CHANNEL: usize = 256;

/// An event's position: the decided event it follows (`decided`) and the local events since
/// (`local`). Shown as `N` when `local` is 0, else `N.k`; ordered lexicographically.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventIndex {
    /// The number of decided events up to this one (this one included, if it is decided).
    pub decided: u64,
    /// Local events since that decided event (0 for the decided event itself).
    pub local: u32,
}

impl EventIndex {
    /// The index of the `n`-th decided event.
    pub fn decided(n: u64) -> EventIndex {
        EventIndex {
            decided: n,
            local: 0,
        }
    }

    /// Whether this is the index of a decided event (not a local one).
    pub fn is_decided(&self) -> bool {
        self.local == 0
    }
}

impl fmt::Display for EventIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.local == 0 {
            write!(f, "{}", self.decided)
        } else {
            write!(f, "{}.{}", self.decided, self.local)
        }
    }
}

/// Why a text is not an event index.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an event index: N or N.k expected (N, k whole numbers)")]
pub struct ParseEventIndexError(pub String);

impl FromStr for EventIndex {
    type Err = ParseEventIndexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseEventIndexError(s.to_string());
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let (n, k) = match s.split_once('.') {
            Some((n, k)) => (n, Some(k)),
            None => (s, None),
        };
        if !digits(n) || k.is_some_and(|k| !digits(k)) {
            return Err(bad());
        }
        Ok(EventIndex {
            decided: n.parse().map_err(|_| bad())?,
            local: match k {
                Some(k) => k.parse().map_err(|_| bad())?,
                None => 0,
            },
        })
    }
}

impl Serialize for EventIndex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventIndex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What happened. In JSON, internally tagged by `type`; node ids as 16 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A node was recorded in the registry for the first time.
    Joined {
        /// The node.
        #[serde(with = "quorate_base::hex_id")]
        node: NodeId,
        /// Its name.
        name: String,
        /// Its role.
        role: Role,
    },
    /// A learner became a voter.
    Promoted {
        /// The node.
        #[serde(with = "quorate_base::hex_id")]
        node: NodeId,
    },
    /// A voter became a learner.
    Demoted {
        /// The node.
        #[serde(with = "quorate_base::hex_id")]
        node: NodeId,
    },
    /// A node was taken out of the registry (by an operator or the autopilot).
    Removed {
        /// The node.
        #[serde(with = "quorate_base::hex_id")]
        node: NodeId,
    },
    /// A node that was leaving gracefully is out of the registry.
    Left {
        /// The node.
        #[serde(with = "quorate_base::hex_id")]
        node: NodeId,
    },
    /// This node's failure detector holds a member dead (local).
    Failed {
        /// The node.
        #[serde(with = "quorate_base::hex_id")]
        node: NodeId,
    },
    /// A member this node's failure detector held dead is alive again (local).
    Recovered {
        /// The node.
        #[serde(with = "quorate_base::hex_id")]
        node: NodeId,
    },
    /// A new leader's first entry was applied.
    LeaderChanged {
        /// The leader.
        #[serde(with = "quorate_base::hex_id")]
        node: NodeId,
        /// Its term.
        term: u64,
    },
    /// A node's labels changed; `labels` is the full new map.
    LabelsChanged {
        /// The node.
        #[serde(with = "quorate_base::hex_id")]
        node: NodeId,
        /// Its labels now.
        labels: BTreeMap<String, String>,
    },
    /// A join token was created.
    TokenCreated {
        /// Token id.
        id: String,
        /// The role it grants.
        role: Role,
    },
    /// A join token admitted a node (one use consumed).
    TokenUsed {
        /// Token id.
        id: String,
    },
    /// A join token was revoked.
    TokenRevoked {
        /// Token id.
        id: String,
    },
}

impl EventKind {
    /// Every event type's name, as `type` says it.
    pub const TYPES: [&'static str; 12] = [
        "joined",
        "promoted",
        "demoted",
        "removed",
        "left",
        "failed",
        "recovered",
        "leader_changed",
        "labels_changed",
        "token_created",
        "token_used",
        "token_revoked",
    ];

    /// This event's type name (one of [`EventKind::TYPES`]).
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Joined { .. } => "joined",
            EventKind::Promoted { .. } => "promoted",
            EventKind::Demoted { .. } => "demoted",
            EventKind::Removed { .. } => "removed",
            EventKind::Left { .. } => "left",
            EventKind::Failed { .. } => "failed",
            EventKind::Recovered { .. } => "recovered",
            EventKind::LeaderChanged { .. } => "leader_changed",
            EventKind::LabelsChanged { .. } => "labels_changed",
            EventKind::TokenCreated { .. } => "token_created",
            EventKind::TokenUsed { .. } => "token_used",
            EventKind::TokenRevoked { .. } => "token_revoked",
        }
    }

    /// Whether the event comes from the replicated log (else from the failure detector).
    pub fn is_decided(&self) -> bool {
        !matches!(self, EventKind::Failed { .. } | EventKind::Recovered { .. })
    }
}

/// An event: its position, what happened, and when this node observed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its position.
    pub index: EventIndex,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// When this node applied or observed it (its own clock, ms since the epoch): not
    /// replicated, so it differs between nodes.
    pub observed_ms: u64,
}

/// The decided events of one applied registry request: `before` and `after` are the registry
/// around the request. A refused request (which changes nothing) gives none.
pub fn derive(before: &Registry, req: &Request, after: &Registry) -> Vec<EventKind> {
    let labels_changed = |node: NodeId| {
        let old = before.nodes.get(&node).map(|n| &n.labels);
        let new = after.nodes.get(&node).map(|n| &n.labels);
        match (old, new) {
            (Some(old), Some(new)) if old != new => vec![EventKind::LabelsChanged {
                node,
                labels: new.clone(),
            }],
            _ => Vec::new(),
        }
    };
    match req {
        Request::PutNode { node } => match after.nodes.get(&node.id) {
            Some(rec) if !before.nodes.contains_key(&node.id) => vec![EventKind::Joined {
                node: rec.id,
                name: rec.name.clone(),
                role: rec.role,
            }],
            Some(_) => labels_changed(node.id),
            None => Vec::new(),
        },
        Request::SetLabel { node, .. } | Request::RemoveLabel { node, .. } => labels_changed(*node),
        Request::RemoveNode { node } => match before.nodes.get(node) {
            Some(rec) if !after.nodes.contains_key(node) => {
                if rec.status == NodeStatus::Leaving {
                    vec![EventKind::Left { node: *node }]
                } else {
                    vec![EventKind::Removed { node: *node }]
                }
            }
            _ => Vec::new(),
        },
        Request::CreateToken { token } => match after.tokens.get(&token.id) {
            Some(t) if !before.tokens.contains_key(&token.id) => vec![EventKind::TokenCreated {
                id: t.id.clone(),
                role: t.role,
            }],
            _ => Vec::new(),
        },
        Request::UseToken { id, .. } => {
            let uses = |r: &Registry| r.tokens.get(id).map(|t| t.uses);
            if uses(after) > uses(before) {
                vec![EventKind::TokenUsed { id: id.clone() }]
            } else {
                Vec::new()
            }
        }
        Request::RevokeToken { id } => {
            let revoked = |r: &Registry| r.tokens.get(id).is_some_and(|t| t.revoked);
            if revoked(after) && !revoked(before) {
                vec![EventKind::TokenRevoked { id: id.clone() }]
            } else {
                Vec::new()
            }
        }
        // A restore changes labels of recorded nodes and brings back the snapshot's tokens; it
        // adds and removes no node (Raft decides membership).
        Request::Restore { .. } => {
            let mut out: Vec<EventKind> = after
                .nodes
                .keys()
                .flat_map(|id| labels_changed(*id))
                .collect();
            out.extend(
                after
                    .tokens
                    .values()
                    .filter(|t| !before.tokens.contains_key(&t.id))
                    .map(|t| EventKind::TokenCreated {
                        id: t.id.clone(),
                        role: t.role,
                    }),
            );
            out
        }
        Request::InitCluster { .. }
        | Request::MarkLeaving { .. }
        | Request::SetSettings { .. }
        | Request::Noop
        | Request::RotateCa { .. }
        | Request::SwitchCa { .. } => Vec::new(),
    }
}

/// The decided events of a Raft membership change, from the voters and learners before and
/// after: a learner that became a voter is `promoted`, a voter that became a learner
/// `demoted` (a node that enters or leaves the group is `joined`/`removed` by the registry).
pub fn membership_changes(
    voters_before: &BTreeSet<NodeId>,
    learners_before: &BTreeSet<NodeId>,
    voters_after: &BTreeSet<NodeId>,
    learners_after: &BTreeSet<NodeId>,
) -> Vec<EventKind> {
    let promoted = voters_after
        .iter()
        .filter(|n| learners_before.contains(n))
        .map(|n| EventKind::Promoted { node: *n });
    let demoted = learners_after
        .iter()
        .filter(|n| voters_before.contains(n))
        .map(|n| EventKind::Demoted { node: *n });
    promoted.chain(demoted).collect()
}

/// `leader_changed` when the entry `this` was written by another leader than the entry
/// applied before it (`previous`; `None` for the first entry). The membership entry that
/// initializes a cluster is of term 0, written by no leader: it gives none.
pub fn leader_change(previous: Option<&LogId<NodeId>>, this: &LogId<NodeId>) -> Option<EventKind> {
    if this.leader_id.term == 0 || previous.is_some_and(|p| p.leader_id == this.leader_id) {
        return None;
    }
    Some(EventKind::LeaderChanged {
        node: this.leader_id.node_id,
        term: this.leader_id.term,
    })
}

/// The position asked for is no longer retained: the events after it were dropped from the
/// ring (or never reached this node, before its last snapshot). Resume from `oldest` or later,
/// after reading the current state afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "events after that position are compacted: the oldest position this node can resume from is {oldest}; read the current state and resume from there"
)]
pub struct Compacted {
    /// The oldest position one may resume after.
    pub oldest: EventIndex,
}

struct Ring {
    events: VecDeque<Event>,
    /// Every event after `base` is (or was) in the ring; those up to it never were.
    base: EventIndex,
    /// The newest event dropped from the ring, once one was.
    dropped: Option<EventIndex>,
    /// The last index given out (or `base`).
    last: EventIndex,
    /// Whether the state machine has told the hub where it stands (until then a subscriber
    /// without a position waits for whatever comes).
    anchored: bool,
}

impl Ring {
    /// The oldest position a subscriber may resume after.
    fn floor(&self) -> EventIndex {
        self.base.max(self.dropped.unwrap_or_default())
    }

    fn after(&self, pos: EventIndex) -> Result<Vec<Event>, Compacted> {
        let oldest = self.floor();
        if pos < oldest {
            return Err(Compacted { oldest });
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.index > pos)
            .cloned()
            .collect())
    }
}

/// The events of this node: a ring of the last [`RETAINED`] and a broadcast of new ones.
/// Created by the agent, handed to consensus (the state machine publishes into it) and to the
/// HTTP API (which subscribes).
pub struct EventHub {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Event>,
    registry_index: watch::Sender<u64>,
    emitted: AtomicU64,
    lag_recovered: AtomicU64,
    lag_dropped: AtomicU64,
}

impl fmt::Debug for EventHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHub")
            .field("last", &self.last_index())
            .field("registry_index", &self.registry_index())
            .finish_non_exhaustive()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new()
    }
}

impl EventHub {
    /// An empty hub.
    pub fn new() -> EventHub {
        EventHub {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(RETAINED),
                base: EventIndex::default(),
                dropped: None,
                last: EventIndex::default(),
                anchored: false,
            }),
            tx: broadcast::channel(CHANNEL).0,
            registry_index: watch::Sender::new(0),
            emitted: AtomicU64::new(0),
            lag_recovered: AtomicU64::new(0),
            lag_dropped: AtomicU64::new(0),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding the lock leaves a consistent ring (every update is one push).
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of the newest event (or of the position the state machine started from).
    pub fn last_index(&self) -> EventIndex {
        self.ring().last
    }

    /// The oldest position a subscriber may resume after.
    pub fn oldest(&self) -> EventIndex {
        self.ring().floor()
    }

    /// Subscribes to the events after `after` (`None`: from now on). Retained events after
    /// it are replayed first, then new ones follow.
    pub fn subscribe(
        self: &Arc<Self>,
        after: Option<EventIndex>,
    ) -> Result<Subscription, Compacted> {
        let ring = self.ring();
        // Taken under the lock: every event is either in the replay or in the receiver.
        let rx = self.tx.subscribe();
        let (pos, pending) = match after {
            Some(a) => (Some(a), ring.after(a)?.into()),
            None if ring.anchored => (Some(ring.last), VecDeque::new()),
            None => (None, VecDeque::new()),
        };
        drop(ring);
        Ok(Subscription {
            hub: self.clone(),
            rx,
            pos,
            pending,
        })
    }

    /// Tells the hub where the state machine stands: `decided` events were decided before
    /// this node's state (a snapshot) begins. Events up to it that this hub has not seen are
    /// compacted here.
    pub fn start_at(&self, decided: u64) {
        let mut ring = self.ring();
        ring.anchored = true;
        if decided > ring.last.decided {
            ring.events.clear();
            ring.base = EventIndex::decided(decided);
            ring.last = ring.base;
        }
    }

    fn push(&self, ring: &mut Ring, event: Event) {
        if ring.events.len() >= RETAINED
            && let Some(old) = ring.events.pop_front()
        {
            ring.dropped = Some(old.index);
        }
        ring.last = event.index;
        ring.events.push_back(event.clone());
        self.emitted.fetch_add(1, Ordering::Relaxed);
        // No receiver is not an error: nobody listens.
        let _ = self.tx.send(event);
    }

    /// Publishes the decided event number `n` (from the state machine's `apply`), stamped
    /// with this node's clock: the time is the event's, never the state's.
    pub fn publish_decided(&self, n: u64, kind: EventKind) {
        let observed_ms = quorate_base::now_ms();
        let mut ring = self.ring();
        ring.anchored = true;
        if n <= ring.last.decided {
            // Already published in this process (it cannot be, the log applies once); keep
            // the sequence strictly ordered.
            return;
        }
        if n > ring.last.decided + 1 {
            // Decided events this hub never saw: whoever followed from before them is behind.
            ring.events.clear();
            ring.base = EventIndex::decided(n - 1);
        }
        let index = EventIndex::decided(n);
        self.push(
            &mut ring,
            Event {
                index,
                kind,
                observed_ms,
            },
        );
    }

    /// Publishes a local event (the failure detector's), after the last decided one, stamped
    /// with this node's clock.
    pub fn publish_local(&self, kind: EventKind) -> EventIndex {
        let observed_ms = quorate_base::now_ms();
        let mut ring = self.ring();
        let index = EventIndex {
            decided: ring.last.decided,
            local: ring.last.local.saturating_add(1),
        };
        self.push(
            &mut ring,
            Event {
                index,
                kind,
                observed_ms,
            },
        );
        index
    }

    /// The registry index: the log index of the last applied entry that changed the registry
    /// or the Raft membership.
    pub fn registry_index(&self) -> u64 {
        *self.registry_index.borrow()
    }

    /// Sets the registry index (from the state machine); watchers wake only when it changes.
    pub fn set_registry_index(&self, index: u64) {
        self.registry_index.send_if_modified(|i| {
            let changed = *i != index;
            *i = index;
            changed
        });
    }

    /// Waits until the registry index passes `index`, at most `wait`; returns the index then.
    pub async fn registry_index_after(&self, index: u64, wait: std::time::Duration) -> u64 {
        let mut rx = self.registry_index.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i > index)).await;
        self.registry_index()
    }

    /// Counters: events emitted, lagging subscribers caught up from the ring, and lagging
    /// subscribers dropped because they fell out of it.
    pub fn counters(&self) -> [(&'static str, u64); 3] {
        [
            ("events_emitted", self.emitted.load(Ordering::Relaxed)),
            (
                "event_subscribers_caught_up",
                self.lag_recovered.load(Ordering::Relaxed),
            ),
            (
                "event_subscribers_dropped",
                self.lag_dropped.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// A subscriber's stream of events, in index order, each once.
pub struct Subscription {
    hub: Arc<EventHub>,
    rx: broadcast::Receiver<Event>,
    /// The last index delivered (or asked to start after); `None`: nothing yet, from a hub
    /// that did not know where it stands.
    pos: Option<EventIndex>,
    pending: VecDeque<Event>,
}

impl Subscription {
    /// The last index delivered, or the one the subscription started after.
    pub fn position(&self) -> Option<EventIndex> {
        self.pos
    }

    fn deliver(&mut self, event: Event) -> Option<Event> {
        if self.pos.is_some_and(|p| event.index <= p) {
            return None;
        }
        self.pos = Some(event.index);
        Some(event)
    }

    /// The next event; `Err(Compacted)` when events after the position are no longer retained
    /// (the subscription cannot continue without a gap).
    pub async fn next(&mut self) -> Result<Event, Compacted> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                if let Some(e) = self.deliver(e) {
                    return Ok(e);
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if let Some(p) = self.pos {
                        // Events this hub never saw came between (a snapshot was installed).
                        let floor = self.hub.ring().base;
                        if p < floor {
                            return Err(Compacted { oldest: floor });
                        }
                    }
                    if let Some(e) = self.deliver(e) {
                        return Ok(e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let replay = match self.pos {
                        Some(p) => self.hub.ring().after(p),
                        None => Ok(self.hub.ring().events.iter().cloned().collect()),
                    };
                    match replay {
                        Ok(events) => {
                            self.hub.lag_recovered.fetch_add(1, Ordering::Relaxed);
                            self.pending = events.into();
                        }
                        Err(c) => {
                            self.hub.lag_dropped.fetch_add(1, Ordering::Relaxed);
                            return Err(c);
                        }
                    }
                }
                // The subscription holds the hub, so its sender lives: never closed.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests;
