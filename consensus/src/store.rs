//! Durable Raft storage on redb: the log, the vote, the committed index, and snapshots of the
//! registry, in one database file.
//!
//! redb commits are durable when they return (fsync, copy-on-write B-trees), so an append is
//! acknowledged to Raft only once it is on disk, and a kill -9 leaves either the old or the new
//! state. The state machine lives in memory; what makes it durable is the log plus the latest
//! snapshot: on start the registry is restored from the snapshot, and openraft re-applies the
//! committed entries after it (the committed index is saved for that).
//!
//! `apply` also derives the decided membership events of each entry ([`crate::events`]) and
//! publishes them into the node's [`EventHub`]; their counter and the registry index (the
//! last entry that changed the registry or the Raft membership) are part of the state, so
//! they are the same on every node and survive in snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::TypeConfig;
use crate::events::{self, EventHub};
use crate::registry::{Outcome, Registry, Request};

use quorate_base::NodeId;
type Node = openraft::BasicNode;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
const SNAPSHOT: &str = "snapshot";

fn io_err(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// Opens (creating) the database file that holds a node's Raft state.
///
/// A new database is made under a temporary name and renamed into place once complete:
/// redb writes a new file's magic number last, so a process killed while creating it (a
/// node killed just as it is admitted) left a file that no later open accepts ("invalid
/// data"), and the node could not start again. A leftover temporary file never held a
/// commit and is made again.
pub fn open_db(path: &Path) -> Result<Arc<Database>, redb::DatabaseError> {
    if !path.exists() {
        let io = |e: std::io::Error| redb::DatabaseError::Storage(redb::StorageError::Io(e));
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        let new = std::path::PathBuf::from(name);
        match std::fs::remove_file(&new) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        drop(Database::create(&new)?);
        std::fs::File::open(&new)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        quorate_base::durable::rename(&new, path).map_err(io)?;
    }
    let db = Database::create(path)?;
    Ok(Arc::new(db))
}

fn read_meta<T: for<'de> Deserialize<'de>>(
    db: &Database,
    key: &str,
) -> Result<Option<T>, AnyError> {
    let txn = db.begin_read().map_err(io_err)?;
    let table = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    match table.get(key).map_err(io_err)? {
        Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(io_err),
        None => Ok(None),
    }
}

fn write_meta<T: Serialize>(db: &Database, key: &str, value: &T) -> Result<(), AnyError> {
    let bytes = serde_json::to_vec(value).map_err(io_err)?;
    let txn = db.begin_write().map_err(io_err)?;
    {
        let mut table = txn.open_table(META).map_err(io_err)?;
        table.insert(key, bytes.as_slice()).map_err(io_err)?;
    }
    txn.commit().map_err(io_err)
}

/// How many of the latest log entries a [`LogStore`] keeps parsed in memory.
const RECENT_ENTRIES: usize = 256;

/// The Raft log, vote and committed index.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The committed index last saved or read, plus one (0: none), shared by the clones.
    committed: Arc<AtomicU64>,
    /// The latest entries appended by this process (at most [`RECENT_ENTRIES`]), by index:
    /// a leader sends each entry to every learner, and reading it from disk is a parse each
    /// time, for each of hundreds of replication streams. Empty, or contiguous and ending at the
    /// log's last entry (each write to the log changes it too: an append after the disk, a
    /// truncation or purge before).
    recent: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
}

impl LogStore {
    /// A log store over `db`.
    pub fn new(db: Arc<Database>) -> Self {
        LogStore {
            db,
            committed: Arc::default(),
            recent: Arc::default(),
        }
    }

    /// The highest log index this store recorded as committed (openraft saves it on every
    /// commit, on leaders and followers alike), as any clone of it last saw: `None` before the
    /// first commit.
    pub fn committed_index(&self) -> Option<u64> {
        self.committed.load(Ordering::Relaxed).checked_sub(1)
    }

    fn recent(&self) -> MutexGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entries `start..end` from memory, if all of them are there.
    fn recent_range(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let recent = self.recent();
        if start >= end {
            return Some(Vec::new());
        }
        // Contiguous: holding the first and the last means holding all between.
        if !recent.contains_key(&start) || !recent.contains_key(&(end - 1)) {
            return None;
        }
        Some(recent.range(start..end).map(|(_, e)| e.clone()).collect())
    }

    fn note_committed(&self, committed: Option<&LogId<NodeId>>) {
        let v = committed.map_or(0, |l| l.index.saturating_add(1));
        self.committed.store(v, Ordering::Relaxed);
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, AnyError> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = match txn.open_table(LOGS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        match table.last().map_err(io_err)? {
            Some((_, v)) => serde_json::from_slice(v.value()).map(Some).map_err(io_err),
            None => Ok(None),
        }
    }
}

/// What recovery reads of a stopped node's log and writes back (see `crate::recover`).
impl LogStore {
    /// The vote, the last purged log id, and every entry in the log, in order.
    pub(crate) fn read_whole(&self) -> Result<Whole, AnyError> {
        let vote = read_meta(&self.db, VOTE)?;
        let purged = read_meta(&self.db, PURGED)?;
        let txn = self.db.begin_read().map_err(io_err)?;
        let mut entries = Vec::new();
        match txn.open_table(LOGS) {
            Ok(table) => {
                for item in table.iter().map_err(io_err)? {
                    let (_, v) = item.map_err(io_err)?;
                    entries.push(serde_json::from_slice(v.value()).map_err(io_err)?);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(io_err(e)),
        }
        Ok(Whole {
            vote,
            purged,
            entries,
        })
    }

    /// Appends `entries` and saves `vote` in one durable transaction: a crash leaves the log
    /// as it was or with all of them.
    pub(crate) fn append_with_vote(
        &self,
        entries: &[Entry<TypeConfig>],
        vote: &Vote<NodeId>,
    ) -> Result<(), AnyError> {
        let vote = serde_json::to_vec(vote).map_err(io_err)?;
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(LOGS).map_err(io_err)?;
            for entry in entries {
                let bytes = serde_json::to_vec(entry).map_err(io_err)?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(io_err)?;
            }
            let mut meta = txn.open_table(META).map_err(io_err)?;
            meta.insert(VOTE, vote.as_slice()).map_err(io_err)?;
        }
        self.recent().clear();
        txn.commit().map_err(io_err)
    }
}

/// A stopped node's whole log, as recovery reads it.
pub(crate) struct Whole {
    /// The saved vote.
    pub(crate) vote: Option<Vote<NodeId>>,
    /// The last purged log id (entries up to it are in the snapshot only).
    pub(crate) purged: Option<LogId<NodeId>>,
    /// Every entry kept, in index order.
    pub(crate) entries: Vec<Entry<TypeConfig>>,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        let first = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        if let Some(end) = end
            && let Some(entries) = self.recent_range(first, end)
        {
            return Ok(entries);
        }
        let read = || -> Result<Vec<Entry<TypeConfig>>, AnyError> {
            let txn = self.db.begin_read().map_err(io_err)?;
            let table = match txn.open_table(LOGS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(io_err(e)),
            };
            let mut out = Vec::new();
            for item in table.range(first..).map_err(io_err)? {
                let (k, v) = item.map_err(io_err)?;
                if !range.contains(&k.value()) {
                    break;
                }
                out.push(serde_json::from_slice(v.value()).map_err(io_err)?);
            }
            Ok(out)
        };
        read().map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> =
            read_meta(&self.db, PURGED).map_err(StorageIOError::read_logs)?;
        let last = self
            .last_entry()
            .map_err(StorageIOError::read_logs)?
            .map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        write_meta(&self.db, VOTE, vote).map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        read_meta(&self.db, VOTE).map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        write_meta(&self.db, COMMITTED, &committed).map_err(StorageIOError::write)?;
        self.note_committed(committed.as_ref());
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed = read_meta::<Option<LogId<NodeId>>>(&self.db, COMMITTED)
            .map_err(StorageIOError::read)?
            .flatten();
        self.note_committed(committed.as_ref());
        Ok(committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let write = || -> Result<(), AnyError> {
            let txn = self.db.begin_write().map_err(io_err)?;
            {
                let mut table = txn.open_table(LOGS).map_err(io_err)?;
                for entry in &entries {
                    let bytes = serde_json::to_vec(entry).map_err(io_err)?;
                    table
                        .insert(entry.log_id.index, bytes.as_slice())
                        .map_err(io_err)?;
                }
            }
            // Durable on return: only then is the append acknowledged.
            txn.commit().map_err(io_err)
        };
        match write() {
            Ok(()) => {
                let mut recent = self.recent();
                for entry in entries {
                    let at = entry.log_id.index;
                    // An entry written over replaces it and what followed; a gap (the first
                    // append after a start, or after a purge past what was held) starts the
                    // memory afresh, so that it stays contiguous.
                    drop(recent.split_off(&at));
                    if recent
                        .last_key_value()
                        .is_some_and(|(last, _)| last.saturating_add(1) != at)
                    {
                        recent.clear();
                    }
                    recent.insert(at, entry);
                }
                while recent.len() > RECENT_ENTRIES {
                    recent.pop_first();
                }
                drop(recent);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.recent().retain(|k, _| *k < log_id.index);
        let write = || -> Result<(), AnyError> {
            let txn = self.db.begin_write().map_err(io_err)?;
            {
                let mut table = txn.open_table(LOGS).map_err(io_err)?;
                table.retain(|k, _| k < log_id.index).map_err(io_err)?;
            }
            txn.commit().map_err(io_err)
        };
        write().map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.recent().retain(|k, _| *k > log_id.index);
        let write = || -> Result<(), AnyError> {
            let bytes = serde_json::to_vec(&log_id).map_err(io_err)?;
            let txn = self.db.begin_write().map_err(io_err)?;
            {
                let mut meta = txn.open_table(META).map_err(io_err)?;
                meta.insert(PURGED, bytes.as_slice()).map_err(io_err)?;
                let mut table = txn.open_table(LOGS).map_err(io_err)?;
                table.retain(|k, _| k > log_id.index).map_err(io_err)?;
            }
            txn.commit().map_err(io_err)
        };
        write().map_err(|e| StorageIOError::write_logs(e).into())
    }
}

/// What the state machine holds, and what a snapshot carries.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StateMachineData {
    /// The last applied entry.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last applied membership.
    pub last_membership: StoredMembership<NodeId, Node>,
    /// The registry.
    pub registry: Registry,
    /// How many decided events the applied entries gave (the index of the last one).
    #[serde(default)]
    pub events_decided: u64,
    /// The log index of the last applied entry that changed the registry or the Raft
    /// membership (what blocking queries wait on; a no-op does not move it).
    #[serde(default)]
    pub registry_index: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    data: Vec<u8>,
}

/// The registry state machine and its snapshots.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    data: Arc<RwLock<StateMachineData>>,
    snapshots_built: Arc<std::sync::atomic::AtomicU64>,
    events: Arc<EventHub>,
    /// The snapshot last saved or read, kept in memory: a leader sends it to every learner
    /// that is behind, and reading it from disk is a parse of the whole registry each time.
    current: Arc<Mutex<Option<Arc<StoredSnapshot>>>>,
}

impl StateMachineStore {
    /// A state machine over `db`, restored from its latest snapshot if there is one, with
    /// events published into a hub of its own.
    pub fn open(db: Arc<Database>) -> Result<Self, Box<StorageError<NodeId>>> {
        Self::open_with_events(db, Arc::new(EventHub::new()))
    }

    /// A state machine over `db`, restored from its latest snapshot if there is one, that
    /// publishes its events into `events` (told where the snapshot leaves off).
    pub fn open_with_events(
        db: Arc<Database>,
        events: Arc<EventHub>,
    ) -> Result<Self, Box<StorageError<NodeId>>> {
        let snapshot_error =
            |e: AnyError| Box::new(StorageError::from(StorageIOError::read_snapshot(None, e)));
        let data = match read_meta::<StoredSnapshot>(&db, SNAPSHOT).map_err(snapshot_error)? {
            Some(s) => serde_json::from_slice(&s.data).map_err(|e| snapshot_error(io_err(e)))?,
            None => StateMachineData::default(),
        };
        events.start_at(data.events_decided);
        events.set_registry_index(data.registry_index);
        Ok(StateMachineStore {
            db,
            data: Arc::new(RwLock::new(data)),
            snapshots_built: Arc::default(),
            events,
            current: Arc::default(),
        })
    }

    /// The hub this state machine publishes its events into.
    pub fn events(&self) -> &Arc<EventHub> {
        &self.events
    }

    /// A shared, read-only view of the state machine (for linearizable reads after
    /// `ensure_linearizable`, and for status).
    pub fn data(&self) -> Arc<RwLock<StateMachineData>> {
        self.data.clone()
    }

    /// Saves `s` as the current snapshot, on disk and in memory.
    fn save_snapshot(&self, s: StoredSnapshot) -> Result<(), AnyError> {
        write_meta(&self.db, SNAPSHOT, &s)?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(s));
        Ok(())
    }

    /// The current snapshot: from memory, or read from disk once.
    fn current_snapshot(&self) -> Result<Option<Arc<StoredSnapshot>>, AnyError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_none() {
            *current = read_meta::<StoredSnapshot>(&self.db, SNAPSHOT)?.map(Arc::new);
        }
        Ok(current.clone())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (bytes, last_applied, last_membership) = {
            let d = self.data.read().map_err(|_| {
                StorageIOError::read_state_machine(AnyError::error("lock poisoned"))
            })?;
            let bytes = serde_json::to_vec(&*d)
                .map_err(|e| StorageIOError::read_state_machine(io_err(e)))?;
            (bytes, d.last_applied, d.last_membership.clone())
        };
        let n = self
            .snapshots_built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("none-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        self.save_snapshot(stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let d = self
            .data
            .read()
            .map_err(|_| StorageIOError::read_state_machine(AnyError::error("lock poisoned")))?;
        Ok((d.last_applied, d.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = self
            .data
            .write()
            .map_err(|_| StorageIOError::write_state_machine(AnyError::error("lock poisoned")))?;
        let mut out = Vec::new();
        for entry in entries {
            let previous = d.last_applied.replace(entry.log_id);
            let mut kinds: Vec<events::EventKind> =
                events::leader_change(previous.as_ref(), &entry.log_id)
                    .into_iter()
                    .collect();
            match entry.payload {
                EntryPayload::Blank => out.push(Ok(())),
                // The benchmark's write and the linearizable barrier: no copy of the registry.
                EntryPayload::Normal(Request::Noop) => out.push(Ok(())),
                EntryPayload::Normal(req) => {
                    let before = d.registry.clone();
                    let outcome = d.registry.apply(&req);
                    if outcome.is_ok() && before != d.registry {
                        kinds.extend(events::derive(&before, &req, &d.registry));
                        d.registry_index = entry.log_id.index;
                    }
                    out.push(outcome);
                }
                EntryPayload::Membership(m) => {
                    let old = d.last_membership.membership();
                    let ids = |i: &mut dyn Iterator<Item = NodeId>| i.collect::<BTreeSet<_>>();
                    kinds.extend(events::membership_changes(
                        &ids(&mut old.voter_ids()),
                        &ids(&mut old.learner_ids()),
                        &ids(&mut m.voter_ids()),
                        &ids(&mut m.learner_ids()),
                    ));
                    d.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    d.registry_index = entry.log_id.index;
                    out.push(Ok(()));
                }
            }
            for kind in kinds {
                d.events_decided += 1;
                self.events.publish_decided(d.events_decided, kind);
            }
        }
        self.events.set_registry_index(d.registry_index);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let new: StateMachineData = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), io_err(e)))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        self.save_snapshot(stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        let mut d = self
            .data
            .write()
            .map_err(|_| StorageIOError::write_state_machine(AnyError::error("lock poisoned")))?;
        *d = StateMachineData {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            registry: new.registry,
            events_decided: new.events_decided,
            registry_index: new.registry_index,
        };
        // The events between this node's state and the snapshot's never reached it here.
        self.events.start_at(d.events_decided);
        self.events.set_registry_index(d.registry_index);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = self
            .current_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
