//! Event handlers, after Serf's: `--on-event 'TYPES=COMMAND'` runs COMMAND for every
//! membership event of those types (`*` for all), with the event as JSON on stdin and its
//! fields in `QUORATE_EVENT_*` variables.
//!
//! Each handler is its own subscriber of the agent's event hub, with its own position: a slow
//! handler falls behind only itself, never the agent or another handler, and it still sees
//! every later event in order (the hub keeps the recent ones). Commands of one handler run one
//! at a time, in event order; a command that outlives the timeout is killed. Failures (a
//! non-zero exit, a timeout, a command that cannot start, events the handler fell too far
//! behind to see) are logged and counted ([`HandlerStats`]); none of them stops the handler.
//!
//! Each handler's position (the last decided event it handled) is kept in the data dir
//! (`handlers.json`, by spec), so after a restart it resumes there: the decided events the
//! node re-applies at start are not handed to it twice, and those decided while the agent was
//! down reach it once it has them. A handler never run before starts with the events this node
//! holds (those after its last snapshot). Local events (`failed`, `recovered`) are this
//! node's observations and are not kept across a restart.
//!
//! This module parses the specs and runs the handlers; it decides nothing and changes no
//! cluster state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorate_consensus::{Compacted, Event, EventHub, EventIndex, EventKind, Subscription};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

/// One `TYPES=COMMAND` handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerSpec {
    /// The event types it runs for; `None`: every type (`*`).
    pub types: Option<BTreeSet<String>>,
    /// The shell command (run with `sh -c`).
    pub command: String,
}

/// Why a handler spec was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// No `=` between the types and the command.
    #[error("{0:?}: give TYPES=COMMAND, e.g. failed,removed=/usr/local/bin/page (or *=COMMAND)")]
    NoCommand(String),
    /// The command is empty.
    #[error("{0:?}: the command after '=' is empty")]
    EmptyCommand(String),
    /// An event type that does not exist.
    #[error("{spec:?}: no event type {name:?}; the types are: {known}")]
    UnknownType {
        /// The whole spec.
        spec: String,
        /// The unknown name.
        name: String,
        /// The known types, comma-separated.
        known: String,
    },
}

impl HandlerSpec {
    /// Parses `TYPES=COMMAND`: TYPES is `*` or a comma list of event types.
    pub fn parse(spec: &str) -> Result<HandlerSpec, SpecError> {
        let (types, command) = spec
            .split_once('=')
            .ok_or_else(|| SpecError::NoCommand(spec.to_string()))?;
        let command = command.trim();
        if command.is_empty() {
            return Err(SpecError::EmptyCommand(spec.to_string()));
        }
        let types = types.trim();
        let types = if types == "*" {
            None
        } else {
            let mut set = BTreeSet::new();
            for name in types.split(',').map(str::trim) {
                if !EventKind::TYPES.contains(&name) {
                    return Err(SpecError::UnknownType {
                        spec: spec.to_string(),
                        name: name.to_string(),
                        known: EventKind::TYPES.join(", "),
                    });
                }
                set.insert(name.to_string());
            }
            Some(set)
        };
        Ok(HandlerSpec {
            types,
            command: command.to_string(),
        })
    }

    /// Whether it runs for events of type `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(name))
    }
}

/// What the handlers did, for metrics.
#[derive(Debug, Default)]
pub struct HandlerStats {
    /// Commands run to the end with exit status 0.
    pub succeeded: AtomicU64,
    /// Commands that exited non-zero or were killed by a signal.
    pub failed: AtomicU64,
    /// Commands killed for outliving the timeout.
    pub timed_out: AtomicU64,
    /// Commands that could not be started.
    pub not_started: AtomicU64,
    /// Events a handler never saw because it fell behind what the hub keeps.
    pub events_missed: AtomicU64,
}

impl HandlerStats {
    /// The counters by name.
    pub fn snapshot(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        std::collections::BTreeMap::from([
            ("handler_runs_succeeded", g(&self.succeeded)),
            ("handler_runs_failed", g(&self.failed)),
            ("handler_runs_timed_out", g(&self.timed_out)),
            ("handler_runs_not_started", g(&self.not_started)),
            ("handler_events_missed", g(&self.events_missed)),
        ])
    }
}

/// The `QUORATE_EVENT_*` variables of an event: its index and type, and each scalar field of
/// its JSON form (`node`, `name`, `role`, `term`, `id`), upper-cased.
pub fn event_env(event: &Event) -> Vec<(String, String)> {
    let mut out = vec![
        ("QUORATE_EVENT_INDEX".to_string(), event.index.to_string()),
        (
            "QUORATE_EVENT_TYPE".to_string(),
            event.kind.type_name().to_string(),
        ),
    ];
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(event) {
        for (k, v) in map {
            if k == "type" || k == "index" {
                continue;
            }
            let value = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            out.push((format!("QUORATE_EVENT_{}", k.to_ascii_uppercase()), value));
        }
    }
    out
}

/// How long the output of a handler that is logged may be.
const OUTPUT_LOGGED: usize = 512;

/// The file, in the data dir, that keeps each handler's position.
pub const POSITIONS_FILE: &str = "handlers.json";

/// Where each handler stands: the last decided event it handled, by spec, in a file.
struct Positions {
    path: PathBuf,
    by_spec: Mutex<BTreeMap<String, u64>>,
}

impl Positions {
    fn open(data_dir: &Path) -> Positions {
        let path = data_dir.join(POSITIONS_FILE);
        let by_spec = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(file = %path.display(), error = %e, "handler positions unreadable; handlers start afresh");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "handler positions unreadable; handlers start afresh");
                BTreeMap::new()
            }
        };
        Positions {
            path,
            by_spec: Mutex::new(by_spec),
        }
    }

    fn get(&self, spec: &str) -> Option<EventIndex> {
        let map = self.by_spec.lock().ok()?;
        map.get(spec).map(|n| EventIndex::decided(*n))
    }

    /// Records that `spec` handled every decided event up to `decided`; written whole and
    /// synced ([`quorate_base::durable`]), so a crash leaves the old or the new file.
    fn set(&self, spec: &str, decided: u64) {
        let Ok(mut map) = self.by_spec.lock() else {
            return;
        };
        if map.get(spec) == Some(&decided) {
            return;
        }
        map.insert(spec.to_string(), decided);
        let write = || -> std::io::Result<()> {
            let bytes = serde_json::to_vec_pretty(&*map)?;
            quorate_base::durable::write(
                &self.path,
                &bytes,
                0o600,
                quorate_base::durable::Existing::Replace,
            )
        };
        if let Err(e) = write() {
            warn!(file = %self.path.display(), error = %e, "handler position not saved; a restart may run a handler again for this event");
        }
    }
}

/// Starts one task per handler, each resuming after its saved position in `data_dir`. The
/// subscriptions are taken here, before this returns, so a handler started before the node
/// runs misses none of the events it then applies.
pub fn spawn(
    specs: &[HandlerSpec],
    hub: &Arc<EventHub>,
    data_dir: &Path,
    timeout: Duration,
    stats: &Arc<HandlerStats>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let positions = Arc::new(Positions::open(data_dir));
    specs
        .iter()
        .cloned()
        .map(|spec| {
            let after = positions.get(&key(&spec));
            let first = hub.subscribe(after);
            let hub = hub.clone();
            let stats = stats.clone();
            let positions = positions.clone();
            tokio::spawn(async move {
                run_handler(spec, hub, first, after, positions, timeout, stats).await;
            })
        })
        .collect()
}

/// The key of a handler in the positions file.
fn key(spec: &HandlerSpec) -> String {
    match &spec.types {
        None => format!("*={}", spec.command),
        Some(t) => format!(
            "{}={}",
            t.iter().cloned().collect::<Vec<_>>().join(","),
            spec.command
        ),
    }
}

/// Counts what a handler missed when its position was compacted, and where it goes on.
fn fell_behind(
    spec: &HandlerSpec,
    after: Option<EventIndex>,
    compacted: Compacted,
    stats: &HandlerStats,
) -> Option<EventIndex> {
    let from = after.map_or(0, |a| a.decided);
    let missed = compacted.oldest.decided.saturating_sub(from).max(1);
    stats.events_missed.fetch_add(missed, Ordering::Relaxed);
    warn!(command = %spec.command, missed, resume_after = %compacted.oldest, "event handler fell behind what this node keeps; events were missed");
    Some(compacted.oldest)
}

/// One handler's life: its first subscription (taken by [`spawn`]), then a fresh one after
/// each time it fell behind.
async fn run_handler(
    spec: HandlerSpec,
    hub: Arc<EventHub>,
    first: Result<Subscription, Compacted>,
    mut after: Option<EventIndex>,
    positions: Arc<Positions>,
    timeout: Duration,
    stats: Arc<HandlerStats>,
) {
    let key = key(&spec);
    info!(command = %spec.command, types = ?spec.types, resume_after = ?after.map(|a| a.to_string()), "event handler ready");
    let mut first = Some(first);
    loop {
        let next = match first.take() {
            Some(f) => f,
            None => hub.subscribe(after),
        };
        let mut sub = match next {
            Ok(s) => s,
            Err(compacted) => {
                after = fell_behind(&spec, after, compacted, &stats);
                continue;
            }
        };
        loop {
            match sub.next().await {
                Ok(event) => {
                    after = Some(event.index);
                    if spec.wants(event.kind.type_name()) {
                        run_command(&spec.command, &event, timeout, &stats).await;
                    }
                    positions.set(&key, event.index.decided);
                }
                Err(compacted) => {
                    after = fell_behind(&spec, after, compacted, &stats);
                    break;
                }
            }
        }
    }
}

/// Runs `command` for `event`: JSON on stdin, the variables, at most `timeout`.
async fn run_command(command: &str, event: &Event, timeout: Duration, stats: &HandlerStats) {
    let json = match serde_json::to_vec(event) {
        Ok(j) => j,
        Err(e) => {
            warn!(error = %e, "event not encodable for a handler");
            return;
        }
    };
    let mut child = match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(event_env(event))
        // systemd's notify protocol is the agent's, not its handlers' (agent/notify.rs).
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            stats.not_started.fetch_add(1, Ordering::Relaxed);
            warn!(command, error = %e, "event handler could not start");
            return;
        }
    };
    let index = event.index.to_string();
    let kind = event.kind.type_name();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let work = async {
        if let Some(mut s) = stdin.take() {
            // A handler that does not read its stdin is not a failure.
            let _ = s.write_all(&json).await;
            let _ = s.write_all(b"\n").await;
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok((Ok(status), out, err)) if status.success() => {
            stats.succeeded.fetch_add(1, Ordering::Relaxed);
            info!(command, event = %index, kind, output = %clip(&out), "event handler ran");
            if !err.is_empty() {
                info!(command, event = %index, stderr = %clip(&err), "event handler wrote to stderr");
            }
        }
        Ok((Ok(status), out, err)) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            warn!(command, event = %index, kind, %status, output = %clip(&out), stderr = %clip(&err), "event handler failed");
        }
        Ok((Err(e), _, _)) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            warn!(command, event = %index, kind, error = %e, "event handler could not be awaited");
        }
        Err(_) => {
            // The child is killed when `work` (which owns it) is dropped: kill_on_drop.
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
            warn!(command, event = %index, kind, timeout = ?timeout, "event handler timed out and was killed");
        }
    }
}

fn clip(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    match text.char_indices().nth(OUTPUT_LOGGED) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_types_and_command() {
        let s = HandlerSpec::parse("failed,removed=/bin/page --now").expect("valid");
        assert_eq!(s.command, "/bin/page --now");
        assert!(s.wants("failed") && s.wants("removed") && !s.wants("joined"));
        let all = HandlerSpec::parse("*=logger -t quorate").expect("valid");
        assert!(all.types.is_none() && all.wants("joined"));
        // The command may itself hold '=': only the first one splits.
        let eq = HandlerSpec::parse("joined=env A=1 cmd").expect("valid");
        assert_eq!(eq.command, "env A=1 cmd");
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        assert!(matches!(
            HandlerSpec::parse("/bin/page"),
            Err(SpecError::NoCommand(_))
        ));
        assert!(matches!(
            HandlerSpec::parse("failed=  "),
            Err(SpecError::EmptyCommand(_))
        ));
        let e = HandlerSpec::parse("failed,exploded=/bin/page").unwrap_err();
        assert!(
            e.to_string().contains("\"exploded\"") && e.to_string().contains("failed"),
            "{e}"
        );
    }
}
