//! The cluster CA as this node holds it, and its rotation through Raft.
//!
//! A member trusts the current CA and, while a rotation is under way, the next one beside it;
//! the registry says which ([`crate::Registry::ca`], [`crate::Registry::ca_next`]), and each member follows
//! it ([`follow_ca`]). Voter-role nodes hold the CAs' keys; storage nodes never do.
//!
//! [`Consensus::rotate_ca`], run on one voter-role node, goes through every recorded member
//! step by step, each on every member before the next (the member answers once it has done
//! it; see [`Inner::on_ca_step`]):
//!
//! 1. `key`: a new CA is made, and its certificate and key handed to every voter-role member
//!    over its own mutually authenticated connection (never through Raft: learners replicate
//!    the log). Voters trust it from then on.
//! 2. `trust`: `RotateCa` is written; every member trusts the next CA beside the current one.
//! 3. `renew`: every member renews its certificate under the next CA (the leader signs with
//!    it from the `RotateCa` on, joiners' certificates too), with the key it has.
//! 4. `switch`: `SwitchCa` is written; every member trusts the next CA only, closes the
//!    connections made under the old one, and a voter drops the old CA's key. A certificate
//!    of the old CA (one a removed voter minted with the key it kept) is refused by every
//!    handshake, and join tokens that pin the old CA admit no one.
//!
//! A member that does not confirm a step stops the rotation there and is named; running the
//! rotation again resumes it with the same next CA when this node holds its key.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use quorate_base::{NodeId, Role};

use super::route::{Done, Op};
use super::state::Inner;
use super::trust::{Ca, CaSet};
use super::{Consensus, ConsensusError};
use crate::files::Files;
use crate::registry::Request;
use crate::rotation::{self, Member, Report};
use crate::tls::{self, Identity};

/// The name of the secret that carries a CA rotation step to a member.
pub(super) const SECRET: &str = "ca";

/// How long a member waits for a step's Raft write to reach it before it answers that it has
/// not.
const STEP_WAIT: Duration = Duration::from_secs(10);

/// Connections made under the old CA are closed this long after a switch, so that answers
/// already on their way (a switch step's) arrive.
const CLOSE_AFTER_SWITCH: Duration = Duration::from_secs(1);

/// One step of a CA rotation as a member is handed it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub(super) enum CaStep {
    /// Keep the next CA's key (voter-role members only).
    Key {
        /// The next CA's certificate, PEM.
        cert_pem: String,
        /// Its key, PEM.
        key_pem: String,
    },
    /// Trust the next CA beside the current one, as the registry records it.
    Trust {
        /// The next CA's fingerprint.
        fingerprint: String,
    },
    /// Hold a certificate of the next CA.
    Renew {
        /// The next CA's fingerprint.
        fingerprint: String,
    },
    /// Trust the next CA only, as the registry records it.
    Switch {
        /// The next CA's fingerprint.
        fingerprint: String,
    },
}

impl CaStep {
    fn name(&self) -> &'static str {
        match self {
            CaStep::Key { .. } => "key",
            CaStep::Trust { .. } => "trust",
            CaStep::Renew { .. } => "renew",
            CaStep::Switch { .. } => "switch",
        }
    }
}

impl Inner {
    /// The CAs this node holds now.
    pub(super) fn ca(&self) -> CaSet {
        self.me.ca.borrow().clone()
    }

    /// Changes the CAs this node holds to what `change` makes of them, one change at a time:
    /// saved first, then served and dialed with; a new current CA is recorded in
    /// `cluster.json`. Whether the current CA changed (the caller closes the connections made
    /// under the old one).
    fn change_ca(
        &self,
        change: impl FnOnce(CaSet) -> Result<CaSet, String>,
    ) -> Result<bool, String> {
        let _one = self
            .me
            .ca_change
            .lock()
            .map_err(|_| "the CAs are unavailable".to_string())?;
        let old = self.ca();
        let new = change(old.clone())?;
        if old == new {
            return Ok(false);
        }
        let files = Files::open(&self.me.dir).map_err(|e| e.to_string())?;
        new.save(&files)?;
        let switched = old.current.fingerprint != new.current.fingerprint;
        if switched && let Some(mut cluster) = files.cluster().map_err(|e| e.to_string())? {
            cluster.ca_fingerprint = new.current.fingerprint.clone();
            files.save_cluster(&cluster).map_err(|e| e.to_string())?;
        }
        let identity = files.identity().map_err(|e| e.to_string())?;
        self.net
            .set_identity(&Identity {
                ca_pem: new.trusted(),
                ..identity
            })
            .map_err(|e| e.to_string())?;
        info!(
            current = %new.current.fingerprint,
            next = new.next.as_ref().map(|n| n.fingerprint.as_str()),
            holds_key = new.holds_key(),
            "trusted CAs changed"
        );
        self.me.ca.send_replace(new);
        Ok(switched)
    }

    /// Waits until the CAs this node holds satisfy `ok` (at most [`STEP_WAIT`]).
    async fn wait_ca(&self, what: &str, ok: impl Fn(&CaSet) -> bool) -> Result<(), String> {
        let mut rx = self.me.ca.subscribe();
        match tokio::time::timeout(STEP_WAIT, rx.wait_for(|c| ok(c))).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!("{what}: not yet after {STEP_WAIT:?}")),
        }
    }

    /// Does a CA rotation step a voter handed this node; answers what was done.
    pub(super) async fn on_ca_step(&self, from: NodeId, text: &str) -> Result<String, String> {
        let step: CaStep =
            serde_json::from_str(text).map_err(|e| format!("unreadable CA step: {e}"))?;
        let name = step.name();
        let done = match step {
            CaStep::Key { cert_pem, key_pem } => {
                if self.role() != Role::Voter {
                    warn!(from = %from, "a CA key was handed to this storage node; refused");
                    return Err("a storage node keeps no CA key".into());
                }
                self.keep_next(&cert_pem, &key_pem)?;
                "kept the next CA's key"
            }
            CaStep::Trust { fingerprint } => {
                self.wait_ca("trusting the next CA", |c| {
                    c.next
                        .as_ref()
                        .is_some_and(|n| n.fingerprint == fingerprint)
                })
                .await?;
                "trusts the next CA"
            }
            CaStep::Renew { fingerprint } => {
                let next = self.ca().next.filter(|n| n.fingerprint == fingerprint);
                let next = next.ok_or("this node does not trust that CA (yet)")?;
                let cert = Files::open(&self.me.dir)
                    .and_then(|f| f.identity())
                    .map_err(|e| e.to_string())?
                    .cert_pem;
                if !tls::issued_by(&cert, &next.pem) {
                    self.renew_now().await?;
                }
                "holds a certificate of the next CA"
            }
            CaStep::Switch { fingerprint } => {
                self.wait_ca("trusting the next CA only", |c| {
                    c.current.fingerprint == fingerprint && c.next.is_none()
                })
                .await?;
                "trusts the next CA only"
            }
        };
        info!(from = %from, step = name, "CA rotation step done");
        Ok(done.to_string())
    }

    /// Keeps a next CA and its key (a voter-role node, handed them by the rotating voter).
    fn keep_next(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        if tls::split_pem(cert_pem).map_err(|e| e.to_string())?.len() != 1 {
            return Err("one CA certificate expected".into());
        }
        if !tls::key_matches(cert_pem, key_pem) {
            return Err("the key is not the CA certificate's".into());
        }
        let next = Ca::new(cert_pem, Some(key_pem.to_string())).map_err(|e| e.to_string())?;
        self.change_ca(|mut set| {
            if next.fingerprint == set.current.fingerprint {
                return Err("that CA is the current one".into());
            }
            set.next = Some(next);
            Ok(set)
        })
        .map(drop)
    }

    /// Renews this node's certificate now, through the leader, with the same key; serves
    /// and dials with the new one from then on. The certificate must name this node with its
    /// key and chain to a CA this node trusts.
    pub(super) async fn renew_now(&self) -> Result<(), String> {
        let files = Files::open(&self.me.dir).map_err(|e| e.to_string())?;
        let identity = files.identity().map_err(|e| e.to_string())?;
        let facts = tls::cert_facts_pem(&identity.cert_pem).map_err(|e| e.to_string())?;
        let csr = tls::node_request_with(self.id, &identity.key_pem).map_err(|e| e.to_string())?;
        let cert = match self
            .route(Op::Renew(csr))
            .await
            .map_err(|e| e.to_string())?
        {
            Done::Renewed(c) => c,
            _ => return Err("an answer to another request".into()),
        };
        let new = tls::cert_facts_pem(&cert).map_err(|e| e.to_string())?;
        if new.id != self.id || new.key != facts.key {
            return Err("the leader signed a certificate for another identity".into());
        }
        let set = self.ca();
        if !set.cas().any(|ca| tls::issued_by(&cert, &ca.pem)) {
            return Err("the leader signed a certificate of a CA this node does not trust".into());
        }
        files.save_cert(&cert).map_err(|e| e.to_string())?;
        self.net
            .set_identity(&Identity {
                cert_pem: cert,
                ca_pem: set.trusted(),
                ..identity
            })
            .map_err(|e| e.to_string())?;
        self.counters.renewals.fetch_add(1, Ordering::Relaxed);
        let until = new
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        info!(valid_until_unix = until, "certificate renewed");
        Ok(())
    }

    /// Whether this node's certificate must be renewed for a rotation under way: the
    /// registry records a next CA that did not sign it.
    pub(super) fn renewal_for_rotation(&self, cert_pem: &str) -> bool {
        let next = self
            .sm
            .data()
            .read()
            .ok()
            .and_then(|d| d.registry.ca_next.clone());
        next.is_some_and(|pem| !tls::issued_by(cert_pem, &pem))
    }
}

/// Keeps the CAs this node trusts in step with the registry's CA fields, as they are
/// applied here.
pub(super) async fn follow_ca(inner: Arc<Inner>) {
    let mut metrics = inner.raft.metrics();
    let mut seen: Option<(Option<String>, Option<String>)> = None;
    loop {
        // Read on every applied change: compared in place, copied only when they moved.
        let moved = inner.sm.data().read().ok().and_then(|d| {
            let now = (d.registry.ca.as_deref(), d.registry.ca_next.as_deref());
            let before = seen.as_ref().map(|(a, b)| (a.as_deref(), b.as_deref()));
            (before != Some(now)).then(|| (d.registry.ca.clone(), d.registry.ca_next.clone()))
        });
        let mut failed = false;
        if let Some((ca, next)) = moved {
            let taken = inner.change_ca(|held| {
                CaSet::settle(
                    &held.pool(),
                    &held.current.fingerprint,
                    ca.as_deref(),
                    next.as_deref(),
                )
                .map_err(|e| e.to_string())
            });
            match taken {
                Ok(switched) => {
                    seen = Some((ca, next));
                    if switched {
                        tokio::time::sleep(CLOSE_AFTER_SWITCH).await;
                        inner.net.close_members();
                    }
                }
                Err(e) => {
                    failed = true;
                    warn!(error = %e, "the CAs the registry names could not be taken up; retrying")
                }
            }
        }
        // After a failure, try again in a second even if nothing else is applied.
        let changed = match failed {
            true => tokio::time::timeout(Duration::from_secs(1), metrics.changed())
                .await
                .unwrap_or(Ok(())),
            false => metrics.changed().await,
        };
        if changed.is_err() {
            return;
        }
    }
}

impl Consensus {
    /// The fingerprint of the CA a rotation under way moves to, as the registry applied here
    /// records it.
    pub fn ca_rotating_to(&self) -> Option<String> {
        let data = self.inner.sm.data();
        let data = data.read().ok()?;
        tls::ca_fingerprint(data.registry.ca_next.as_deref()?).ok()
    }

    /// Rotates the cluster CA on every recorded member (see the module's steps), from this
    /// voter-role node; returns the report of each step, complete or not.
    pub async fn rotate_ca(&self) -> Result<Report, ConsensusError> {
        let inner = &self.inner;
        if inner.role() != Role::Voter || !inner.ca().holds_key() {
            return Err(ConsensusError::membership(
                "only a voter-role node that holds the CA key rotates the CA",
            ));
        }
        let registry = self.read().await?;
        let cluster_id = registry
            .cluster
            .as_ref()
            .map(|c| c.id.clone())
            .ok_or(ConsensusError::NoLeader)?;
        let held = inner.ca();
        let replaced = held.current.fingerprint.clone();
        // The rotation under way, when this node holds its next CA's key; else a new CA.
        let next = match (&registry.ca_next, &held.next) {
            (Some(pem), Some(n)) if *pem == n.pem && n.key.is_some() => n.clone(),
            _ => {
                let (pem, key) = tls::next_ca(&cluster_id).map_err(ConsensusError::internal)?;
                Ca::new(&pem, Some(key)).map_err(ConsensusError::internal)?
            }
        };
        let key_pem = next.key.clone().unwrap_or_default();
        let fingerprint = next.fingerprint.clone();
        info!(next = %fingerprint, "CA rotation started");
        let members = Member::all(&registry);
        let voters: Vec<Member> = members
            .iter()
            .filter(|m| m.role == Role::Voter)
            .cloned()
            .collect();
        let mut report = Report::new(fingerprint.clone(), replaced);
        let fp = fingerprint.clone();
        let steps = [
            (
                CaStep::Key {
                    cert_pem: next.pem.clone(),
                    key_pem,
                },
                &voters,
                None,
            ),
            (
                CaStep::Trust {
                    fingerprint: fp.clone(),
                },
                &members,
                Some(Request::RotateCa {
                    cert_pem: next.pem.clone(),
                }),
            ),
            (
                CaStep::Renew {
                    fingerprint: fp.clone(),
                },
                &members,
                None,
            ),
            (
                CaStep::Switch {
                    fingerprint: fp.clone(),
                },
                &members,
                Some(Request::SwitchCa { fingerprint: fp }),
            ),
        ];
        for (step, to, write) in steps {
            if let Some(req) = write {
                self.write(req)
                    .await?
                    .outcome
                    .map_err(ConsensusError::membership)?;
            }
            let text = serde_json::to_string(&step).map_err(ConsensusError::internal)?;
            let text = &text;
            let s = rotation::step(step.name(), to, |m| async move {
                if m.id == inner.id {
                    inner.on_ca_step(inner.id, text).await.map(drop)
                } else {
                    self.send_secret(m.id, SECRET, text.clone()).await
                }
            })
            .await;
            if !report.record(s) {
                return Ok(report);
            }
        }
        report.complete = true;
        info!(current = %report.fingerprint, "CA rotation complete");
        Ok(report)
    }
}
