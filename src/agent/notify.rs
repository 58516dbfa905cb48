//! systemd's readiness protocol (`Type=notify`, sd_notify(3)) for the agent: `READY=1` once the
//! node serves, `STATUS=` lines that say where it stands in the cluster, `STOPPING=1` when it
//! begins to stop, and `WATCHDOG=1` keep-alives at half of `WatchdogSec=` while it runs.
//!
//! Built on the `sd-notify` crate, which reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` from the
//! environment (systemd's protocol: the one other place the library reads the environment).
//! Without `NOTIFY_SOCKET` (not started by systemd, or `Type=` other than notify) every call
//! here does nothing. A message that cannot be sent is logged (once at warn) and otherwise
//! ignored: the service manager's bookkeeping never stops the node. It decides nothing about
//! the cluster.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, warn};

use crate::api::Membership;

/// A task of this module, aborted when dropped (also when the agent returns early with an
/// error), so that an embedding application is not left with keep-alives of a stopped node.
#[derive(Debug)]
pub(super) struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a failed notification was already logged at warn, in this process.
static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The service manager's notification socket, if the agent has one.
#[derive(Clone, Copy, Debug)]
pub(super) struct Systemd {
    /// `NOTIFY_SOCKET` is set: messages are sent.
    active: bool,
    /// `WATCHDOG_USEC`, when systemd expects keep-alives (and they are for this process).
    watchdog: Option<Duration>,
}

impl Systemd {
    /// What the environment of this process asks for.
    pub(super) fn from_env() -> Self {
        let active = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let watchdog = if active {
            sd_notify::watchdog_enabled()
        } else {
            None
        };
        if active {
            debug!(watchdog = ?watchdog, "systemd notification socket found");
        }
        Systemd { active, watchdog }
    }

    fn send(&self, what: &str, states: &[NotifyState<'_>]) {
        if !self.active {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            // Said once at warn (a broken socket would otherwise be logged with every
            // keep-alive), then at debug.
            if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                debug!(message = what, error = %e, "cannot notify systemd");
            } else {
                warn!(message = what, error = %e, "cannot notify systemd; further failures are logged at debug");
            }
        }
    }

    /// `READY=1`: the node serves (gossip, mDNS and the HTTP API run), with what it is doing.
    pub(super) fn ready(&self, status: &str) {
        self.send("ready", &[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=`: one line for `systemctl status`.
    pub(super) fn status(&self, status: &str) {
        self.send("status", &[NotifyState::Status(status)]);
    }

    /// `STOPPING=1`: the node has begun its stop sequence.
    pub(super) fn stopping(&self, status: &str) {
        self.send(
            "stopping",
            &[NotifyState::Stopping, NotifyState::Status(status)],
        );
    }

    /// Sends `WATCHDOG=1` at half of systemd's watchdog interval, from the runtime (so a stalled
    /// runtime stops the keep-alives and systemd restarts the node); `None` without a watchdog.
    pub(super) fn spawn_watchdog(&self) -> Option<Task> {
        let period = keepalive_period(self.watchdog?)?;
        let me = *self;
        Some(Task(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.send("watchdog", &[NotifyState::Watchdog]);
            }
        })))
    }

    /// Follows this node's membership and says it in `STATUS=` whenever it changes; `None`
    /// when systemd is not listening.
    pub(super) fn spawn_status(
        &self,
        mut membership: tokio::sync::watch::Receiver<Option<Membership>>,
    ) -> Option<Task> {
        if !self.active {
            return None;
        }
        let me = *self;
        Some(Task(tokio::spawn(async move {
            let mut last = String::new();
            loop {
                let line = membership_status(membership.borrow_and_update().as_ref());
                if let Some(line) = line
                    && line != last
                {
                    me.status(&line);
                    last = line;
                }
                if membership.changed().await.is_err() {
                    return;
                }
            }
        })))
    }
}

/// How often to send `WATCHDOG=1` for a watchdog interval: half of it, as sd_watchdog_enabled(3)
/// advises; `None` for a zero interval (no watchdog).
pub(super) fn keepalive_period(interval: Duration) -> Option<Duration> {
    (!interval.is_zero()).then(|| interval / 2)
}

/// The `STATUS=` line for this node's membership; `None` before it is a member (the line sent
/// with `READY=1` says so).
fn membership_status(m: Option<&Membership>) -> Option<String> {
    let m = m?;
    let members = m.members.len();
    Some(match m.leader_id {
        Some(leader) => {
            format!(
                "member of cluster {} ({members} members, leader {leader})",
                m.cluster_id
            )
        }
        None => format!(
            "member of cluster {} ({members} members, no leader known)",
            m.cluster_id
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_come_at_half_the_interval() {
        assert_eq!(
            keepalive_period(Duration::from_secs(30)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            keepalive_period(Duration::from_micros(3)),
            Some(Duration::from_nanos(1500))
        );
        assert_eq!(keepalive_period(Duration::ZERO), None);
    }

    #[test]
    fn the_status_line_names_the_cluster_and_the_leader() {
        assert_eq!(membership_status(None), None);
        let leader: crate::NodeId = "00000000000000ab".parse().expect("id");
        let m = Membership {
            cluster_id: "c1".into(),
            leader_id: Some(leader),
            members: Vec::new(),
        };
        assert_eq!(
            membership_status(Some(&m)).as_deref(),
            Some("member of cluster c1 (0 members, leader 00000000000000ab)")
        );
        let m = Membership {
            leader_id: None,
            ..m
        };
        assert_eq!(
            membership_status(Some(&m)).as_deref(),
            Some("member of cluster c1 (0 members, no leader known)")
        );
    }

    #[test]
    fn without_a_socket_nothing_is_sent_or_spawned() {
        let s = Systemd {
            active: false,
            watchdog: None,
        };
        s.ready("x");
        s.status("x");
        s.stopping("x");
        assert!(s.spawn_watchdog().is_none());
        let (_tx, rx) = tokio::sync::watch::channel(None);
        assert!(s.spawn_status(rx).is_none());
    }
}
