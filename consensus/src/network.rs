//! Raft's network over QUIC: openraft's `RaftNetworkFactory` and `RaftNetwork` on [`QuicNet`].
//!
//! A peer that cannot be dialed is `Unreachable`, which makes openraft back off (100 ms, see
//! [`RaftPeer::backoff`]) instead of retrying at once; a connection that breaks mid-call is a
//! `Network` error.

use std::net::SocketAddr;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::TypeConfig;
use crate::proto::{Reply, Rpc};
use crate::quic::{CallError, QuicNet};

use quorate_base::NodeId;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

/// The network factory openraft uses.
#[derive(Clone)]
pub struct RaftNet {
    pub(crate) net: QuicNet,
}

impl RaftNet {
    /// Raft over this endpoint.
    pub fn new(net: QuicNet) -> RaftNet {
        RaftNet { net }
    }
}

impl RaftNetworkFactory<TypeConfig> for RaftNet {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        RaftPeer {
            net: self.net.clone(),
            target,
            addr: node.addr.parse().map_err(|_| node.addr.clone()),
        }
    }
}

/// Raft RPCs to one peer.
pub struct RaftPeer {
    net: QuicNet,
    target: NodeId,
    addr: Result<SocketAddr, String>,
}

fn failed<E: std::error::Error>(e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Network { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

fn refused<E: std::error::Error>(reason: &str) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&Message(format!(
        "refused by the peer: {reason}"
    ))))
}

impl RaftPeer {
    /// Sends `rpc` and takes the answer `pick` expects: the remote's `Result`, whose error
    /// becomes a `RemoteError`. A refusal or an answer to another request is a network error.
    async fn call<T, E: std::error::Error>(
        &self,
        rpc: &Rpc,
        ttl: Duration,
        pick: impl FnOnce(Reply) -> Option<Result<T, RaftError<NodeId, E>>>,
    ) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let addr = match &self.addr {
            Ok(a) => *a,
            Err(bad) => {
                return Err(RPCError::Unreachable(Unreachable::new(&Message(format!(
                    "node {} has no valid address ({bad:?})",
                    self.target
                )))));
            }
        };
        let body = serde_json::to_vec(rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&Message(e.to_string()))))?;
        let answer = self
            .net
            .call(self.target, addr, &body, ttl)
            .await
            .map_err(failed)?;
        let reply: Reply = serde_json::from_slice(&answer).map_err(|e| {
            RPCError::Network(NetworkError::new(&Message(format!(
                "unreadable answer: {e}"
            ))))
        })?;
        if let Reply::Refused { reason } = &reply {
            return Err(refused(reason));
        }
        match pick(reply) {
            Some(res) => res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            None => Err(refused("an answer to another request")),
        }
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    /// 100 ms between attempts to an unreachable peer, not openraft's 500 ms: heartbeats are
    /// drained during a backoff, and a peer that comes back must hear from the leader before
    /// its own election timeout (300 to 400 ms) or it campaigns and disrupts the group. The
    /// cost is small: a call to a peer being dialed returns at its deadline without dialing
    /// again (one dial at a time per peer), and the log says once that the peer is down.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }

    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let rpc = Rpc::AppendEntries { req };
        self.call(&rpc, option.hard_ttl(), |r| match r {
            Reply::AppendEntries { res } => Some(res),
            _ => None,
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let rpc = Rpc::InstallSnapshot { req };
        self.call(&rpc, option.hard_ttl(), |r| match r {
            Reply::InstallSnapshot { res } => Some(res),
            _ => None,
        })
        .await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let rpc = Rpc::Vote { req };
        self.call(&rpc, option.hard_ttl(), |r| match r {
            Reply::Vote { res } => Some(res),
            _ => None,
        })
        .await
    }
}
