//! The in-memory twin of the Raft network, for in-process cluster tests: RPCs go straight to
//! the target's `Raft` handle. A node can be cut off (both directions) to model a partition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};

use crate::TypeConfig;

use quorate_base::NodeId;

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<NodeId, Raft<TypeConfig>>,
    cut: BTreeSet<NodeId>,
}

/// Routes RPCs between in-process Raft nodes.
#[derive(Clone, Default)]
pub struct MemRouter {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, thiserror::Error)]
#[error("node {0} is unreachable")]
struct Down(NodeId);

impl MemRouter {
    /// Registers a node's Raft handle under its id.
    pub fn add(&self, id: NodeId, raft: Raft<TypeConfig>) {
        if let Ok(mut i) = self.inner.lock() {
            i.nodes.insert(id, raft);
        }
    }

    /// Forgets a node (as if its process died).
    pub fn remove(&self, id: NodeId) {
        if let Ok(mut i) = self.inner.lock() {
            i.nodes.remove(&id);
        }
    }

    /// Cuts a node off from every other node, or heals it.
    pub fn set_cut(&self, id: NodeId, cut: bool) {
        if let Ok(mut i) = self.inner.lock() {
            if cut {
                i.cut.insert(id);
            } else {
                i.cut.remove(&id);
            }
        }
    }

    /// A network factory for node `from`.
    pub fn network(&self, from: NodeId) -> MemNetwork {
        MemNetwork {
            router: self.clone(),
            from,
        }
    }

    fn target<E: std::error::Error>(
        &self,
        from: NodeId,
        to: NodeId,
    ) -> Result<Raft<TypeConfig>, RPCError<NodeId, BasicNode, E>> {
        let i = self
            .inner
            .lock()
            .map_err(|_| RPCError::Network(NetworkError::new(&Down(to))))?;
        if i.cut.contains(&from) || i.cut.contains(&to) {
            return Err(RPCError::Unreachable(Unreachable::new(&Down(to))));
        }
        i.nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| RPCError::Unreachable(Unreachable::new(&Down(to))))
    }
}

/// The network factory of one node.
pub struct MemNetwork {
    router: MemRouter,
    from: NodeId,
}

/// A connection from one node to another.
pub struct MemConnection {
    router: MemRouter,
    from: NodeId,
    to: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for MemNetwork {
    type Network = MemConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        MemConnection {
            router: self.router.clone(),
            from: self.from,
            to: target,
        }
    }
}

impl RaftNetwork<TypeConfig> for MemConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.target(self.from, self.to)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let raft = self.router.target(self.from, self.to)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.target(self.from, self.to)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}
