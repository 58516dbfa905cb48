//! The request handler: what a caller may ask, decided from its certificate and the registry,
//! never from what the request claims ([`crate::authority`]).
//!
//! A caller without a certificate may only join, and only a voter-role member answers it
//! (rate-limited per source after refusals). A member's request is checked against the
//! authority rules before anything is done; a Raft RPC must also name the node its certificate
//! names. Forwarded requests are served by the leader only. A storage-role member reads the
//! registry without its join tokens.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use openraft::ServerState;
use openraft::raft::AppendEntriesResponse;
use quorate_base::{NodeId, Role};
use tracing::{debug, info, warn};

use super::route::{Done, Op, reply_of};
use super::state::{Inner, not_leader};
use crate::authority::{self, Action, Caller};
use crate::proto::{ConsensusError, Reply, Rpc};
use crate::quic::{Handler, PeerCert};

impl Handler for Inner {
    async fn handle(
        &self,
        peer: Option<PeerCert>,
        remote: SocketAddr,
        request: Vec<u8>,
    ) -> Vec<u8> {
        let reply = match Rpc::decode(&request) {
            Err(e) => {
                self.counters
                    .requests_refused
                    .fetch_add(1, Ordering::Relaxed);
                debug!(peer = %remote, error = %e, "malformed request");
                Reply::Refused {
                    reason: format!("malformed request: {e}"),
                }
            }
            Ok(rpc) => match peer {
                None => self.dispatch_stranger(remote, rpc).await,
                Some(peer) => self.dispatch(peer, rpc).await,
            },
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    }
}

/// The authority rules' view of a request.
fn action(rpc: &Rpc) -> Action<'_> {
    match rpc {
        Rpc::AppendEntries { .. }
        | Rpc::Vote { .. }
        | Rpc::InstallSnapshot { .. }
        | Rpc::Elect
        | Rpc::Suspects
        | Rpc::PreVote { .. } => Action::Raft,
        Rpc::Write { req } => Action::Write(req),
        Rpc::Read => Action::Read,
        Rpc::Snapshot => Action::Snapshot,
        Rpc::Admin { op } => Action::Admin(op),
        Rpc::Join { .. } => Action::ForwardJoin,
        Rpc::Renew { .. } => Action::Renew,
        Rpc::Secrets { .. } => Action::Secrets,
    }
}

/// The refusal of `rpc` in the answer its caller expects.
fn refusal(rpc: &Rpc, e: ConsensusError) -> Reply {
    match rpc {
        Rpc::Write { .. } => Reply::Written { res: Err(e) },
        Rpc::Read => Reply::Registry { res: Err(e) },
        Rpc::Snapshot => Reply::Snapshot { res: Err(e) },
        Rpc::Admin { .. } | Rpc::Elect | Rpc::Secrets { .. } => Reply::Done { res: Err(e) },
        Rpc::Join { .. } => Reply::Joined { res: Err(e) },
        Rpc::Renew { .. } => Reply::Renewed { res: Err(e) },
        Rpc::AppendEntries { .. }
        | Rpc::Vote { .. }
        | Rpc::InstallSnapshot { .. }
        | Rpc::Suspects
        | Rpc::PreVote { .. } => Reply::Refused {
            reason: e.to_string(),
        },
    }
}

fn kind(rpc: &Rpc) -> &'static str {
    match rpc {
        Rpc::AppendEntries { .. } => "append_entries",
        Rpc::Vote { .. } => "vote",
        Rpc::InstallSnapshot { .. } => "install_snapshot",
        Rpc::Write { .. } => "write",
        Rpc::Read => "read",
        Rpc::Snapshot => "snapshot",
        Rpc::Admin { .. } => "admin",
        Rpc::Elect => "elect",
        Rpc::Join { .. } => "join",
        Rpc::Renew { .. } => "renew",
        Rpc::Suspects => "suspects",
        Rpc::PreVote { .. } => "pre_vote",
        Rpc::Secrets { .. } => "secrets",
    }
}

impl Inner {
    /// A caller without a certificate: a join, answered by voters only.
    async fn dispatch_stranger(&self, remote: SocketAddr, rpc: Rpc) -> Reply {
        let Rpc::Join { join } = rpc else {
            self.counters
                .requests_refused
                .fetch_add(1, Ordering::Relaxed);
            debug!(peer = %remote, "request without a member certificate refused");
            return Reply::Refused {
                reason: "only members of this cluster may make this request".into(),
            };
        };
        if self.role() != Role::Voter {
            // Not a refusal of the joiner: it asks the next seed.
            self.counters
                .requests_refused
                .fetch_add(1, Ordering::Relaxed);
            return Reply::Refused {
                reason: "a storage-plane node does not admit nodes; ask a voter".into(),
            };
        }
        let ip = remote.ip();
        if let Some(wait) = self.admission.limit.blocked(ip, Instant::now()) {
            self.counters.joins_limited.fetch_add(1, Ordering::Relaxed);
            return Reply::Joined {
                res: Err(ConsensusError::JoinRefused {
                    message: format!(
                        "too many refused join attempts from {ip}; try again in {} s",
                        wait.as_secs().max(1)
                    ),
                }),
            };
        }
        let node = join.node_id;
        let op = Op::Join(join);
        let done = self.route(op.clone()).await;
        if let Err(ConsensusError::JoinRefused { message }) = &done {
            self.admission.limit.failed(ip, Instant::now());
            warn!(source = %remote, node = %node, reason = %message, "join refused");
        }
        reply_of(done, &op)
    }

    /// A member's request, checked against the authority rules first.
    pub(super) async fn dispatch(&self, peer: PeerCert, rpc: Rpc) -> Reply {
        if self.deny.denies(peer.id, &peer.key) {
            // The handshake refuses a removed identity; this is a connection from before.
            self.counters
                .requests_refused
                .fetch_add(1, Ordering::Relaxed);
            return refusal(&rpc, ConsensusError::Removed);
        }
        // On every request (heartbeats included): a read of one record, not a registry copy.
        let caller = match self.caller_of(&peer) {
            Ok(c) => c,
            Err(f) => {
                self.refused(Caller::of(peer.id, None, None), kind(&rpc), &f);
                return refusal(&rpc, ConsensusError::from(f));
            }
        };
        if let Err(f) = authority::check(caller, action(&rpc)) {
            self.refused(caller, kind(&rpc), &f);
            return refusal(&rpc, ConsensusError::from(f));
        }
        // A Raft request's claimed sender (its vote's, or a pre-vote's candidate) and term.
        let of = |v: &openraft::Vote<NodeId>| (v.leader_id().voted_for(), v.leader_id().term);
        let raft = match &rpc {
            Rpc::AppendEntries { req } => Some(of(&req.vote)),
            Rpc::Vote { req } => Some(of(&req.vote)),
            Rpc::InstallSnapshot { req } => Some(of(&req.vote)),
            Rpc::PreVote { q } => Some((Some(q.candidate), q.term)),
            _ => None,
        };
        if let Some((claimed, term)) = raft {
            let refused = if claimed != Some(peer.id) {
                warn!(peer = %peer.id, claimed = ?claimed, "a raft request claims another node than its certificate; refused");
                Some("the request's node is not the certificate's node".to_string())
            } else if term > crate::TERM_CEILING {
                warn!(peer = %peer.id, term, "a raft request with a term no group reaches; refused");
                Some(format!(
                    "term {term} is above the ceiling of {}",
                    crate::TERM_CEILING
                ))
            } else {
                None
            };
            if let Some(reason) = refused {
                self.counters
                    .requests_refused
                    .fetch_add(1, Ordering::Relaxed);
                return Reply::Refused { reason };
            }
        }
        match rpc {
            // A leader's entries, heartbeat or snapshot taken, or a vote granted, starts this
            // node's election timer again (see `campaign`).
            Rpc::AppendEntries { req } => {
                // From the leader this node follows: heard on arrival, before the request
                // waits for this node's log (a busy follower's own delay is not the leader's
                // silence). From another (a new leader), once accepted.
                let vote = req.vote;
                let followed = {
                    let m = self.raft.metrics();
                    let m = m.borrow();
                    m.vote == vote && vote.is_committed() && m.state != ServerState::Leader
                };
                if followed {
                    self.campaign.heard_leader(vote);
                }
                let res = self.raft.append_entries(req).await;
                if !followed
                    && matches!(&res, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_)))
                {
                    self.campaign.heard_leader(vote);
                }
                Reply::AppendEntries { res }
            }
            Rpc::Vote { req } => {
                let res = self.raft.vote(req).await;
                if matches!(&res, Ok(r) if r.vote_granted) {
                    self.campaign.heard();
                }
                Reply::Vote { res }
            }
            Rpc::InstallSnapshot { req } => {
                let vote = req.vote;
                let res = self.raft.install_snapshot(req).await;
                if matches!(&res, Ok(r) if r.vote == vote) {
                    self.campaign.heard();
                }
                Reply::InstallSnapshot { res }
            }
            Rpc::PreVote { q } => self.answer_pre_vote(&q).await,
            Rpc::Elect => {
                let m = self.metrics();
                if m.current_leader != Some(peer.id) {
                    return Reply::Done {
                        res: Err(ConsensusError::membership(
                            "only the current leader may hand leadership over",
                        )),
                    };
                }
                let res = self
                    .raft
                    .trigger()
                    .elect()
                    .await
                    .map(|_| "campaigning".to_string())
                    .map_err(|_| ConsensusError::ShuttingDown);
                Reply::Done { res }
            }
            Rpc::Suspects => Reply::Suspects {
                dead: self
                    .pilot
                    .failed_since
                    .lock()
                    .map(|f| f.keys().copied().collect())
                    .unwrap_or_default(),
            },
            // Forwarded requests are served only by the leader: a member that forwarded them
            // routes again when told there is no leader here.
            Rpc::Write { req } => {
                let op = Op::Write(req);
                reply_of(self.local_if_leader(&op).await, &op)
            }
            Rpc::Read => {
                let mut done = self.local_if_leader(&Op::Read).await;
                if caller.role != Some(Role::Voter)
                    && let Ok(Done::Registry(r)) = &mut done
                {
                    r.tokens.clear();
                }
                reply_of(done, &Op::Read)
            }
            Rpc::Snapshot => reply_of(self.local_if_leader(&Op::Snapshot).await, &Op::Snapshot),
            Rpc::Admin { op } => {
                let op = Op::Admin(op);
                reply_of(self.local_if_leader(&op).await, &op)
            }
            Rpc::Join { join } => {
                let op = Op::Join(join);
                reply_of(self.local_if_leader(&op).await, &op)
            }
            Rpc::Secrets { ref secrets } if let Some(step) = secrets.get(super::ca::SECRET) => {
                let res = self
                    .on_ca_step(peer.id, step)
                    .await
                    .map_err(ConsensusError::membership);
                Reply::Done { res }
            }
            Rpc::Secrets { secrets } => {
                let handler = self.secrets.read().ok().and_then(|h| h.clone());
                let res = match handler {
                    Some(h) => h(peer.id, secrets).map_err(ConsensusError::membership),
                    None => Err(ConsensusError::membership(
                        "this node takes no keys from other nodes",
                    )),
                };
                info!(from = %peer.id, ok = res.is_ok(), "keys handed over by a voter");
                Reply::Done { res }
            }
            Rpc::Renew { csr_pem } => {
                let res = match self.is_leader() {
                    true => self.renew_for(peer.id, &peer.key, &csr_pem).await,
                    false => Err(not_leader()),
                };
                Reply::Renewed { res }
            }
        }
    }
}
