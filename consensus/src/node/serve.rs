//! The request handler: what a caller may ask, checked from its certificate. A caller without
//! a member certificate may only join (rate-limited per source after refusals); a Raft RPC
//! must come from the node its certificate names; forwarded requests are served by the
//! leader only.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, warn};

use super::route::{Op, reply_of};
use super::state::Inner;
use crate::proto::{ConsensusError, Reply, Rpc};
use crate::quic::Handler;

use quorate_base::NodeId;

impl Handler for Inner {
    async fn handle(&self, peer: Option<NodeId>, remote: SocketAddr, request: Vec<u8>) -> Vec<u8> {
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
            Ok(rpc) => self.dispatch(peer, remote, rpc).await,
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    }
}

impl Inner {
    pub(super) async fn dispatch(
        &self,
        peer: Option<NodeId>,
        remote: SocketAddr,
        rpc: Rpc,
    ) -> Reply {
        let Some(peer) = peer else {
            return match rpc {
                Rpc::Join { join } => {
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
                        warn!(source = %remote, node = node.to_string(), reason = %message, "join refused");
                    }
                    reply_of(done, &op)
                }
                _ => {
                    self.counters
                        .requests_refused
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %remote, "request without a member certificate refused");
                    Reply::Refused {
                        reason: "only members of this cluster may make this request".into(),
                    }
                }
            };
        };
        let claimed = match &rpc {
            Rpc::AppendEntries { req } => Some(req.vote.leader_id().voted_for()),
            Rpc::Vote { req } => Some(req.vote.leader_id().voted_for()),
            Rpc::InstallSnapshot { req } => Some(req.vote.leader_id().voted_for()),
            _ => None,
        };
        if let Some(claimed) = claimed
            && claimed != Some(peer)
        {
            self.counters
                .requests_refused
                .fetch_add(1, Ordering::Relaxed);
            warn!(peer = peer.to_string(), claimed = ?claimed, "a raft request claims another node than its certificate; refused");
            return Reply::Refused {
                reason: "the request's node is not the certificate's node".into(),
            };
        }
        match rpc {
            Rpc::AppendEntries { req } => Reply::AppendEntries {
                res: self.raft.append_entries(req).await,
            },
            Rpc::Vote { req } => Reply::Vote {
                res: self.raft.vote(req).await,
            },
            Rpc::InstallSnapshot { req } => Reply::InstallSnapshot {
                res: self.raft.install_snapshot(req).await,
            },
            Rpc::Elect => {
                let m = self.metrics();
                if m.current_leader != Some(peer) {
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
            // Forwarded requests are served only by the leader: a member that forwarded them
            // routes again when told there is no leader here.
            Rpc::Write { req } => {
                let op = Op::Write(req);
                reply_of(self.local_if_leader(&op).await, &op)
            }
            Rpc::Read => reply_of(self.local_if_leader(&Op::Read).await, &Op::Read),
            Rpc::Admin { op } => {
                let op = Op::Admin(op);
                reply_of(self.local_if_leader(&op).await, &op)
            }
            Rpc::Join { join } => {
                let op = Op::Join(join);
                reply_of(self.local_if_leader(&op).await, &op)
            }
        }
    }
}
