//! The Raft network: openraft's RPCs sent as tarpc calls over the QUIC
//! transport, each call on its own QUIC stream with openraft's deadline.

// openraft's `RPCError` is a large enum and is what `RaftNetwork` must
// return; boxing it here would only move the copy into openraft.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use dispotify_transport::Endpoint;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::{Member, RaftId, TypeConfig};
use crate::discovery::Discovery;
use crate::rpc::NodeRpcClient;

/// Creates one [`Connection`] per Raft peer.
#[derive(Clone)]
pub struct Network {
    endpoint: Endpoint,
    discovery: Arc<Discovery>,
}

impl Network {
    pub fn new(endpoint: Endpoint, discovery: Arc<Discovery>) -> Network {
        Network {
            endpoint,
            discovery,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftId, member: &Member) -> Connection {
        Connection {
            network: self.clone(),
            target,
            member: member.clone(),
        }
    }
}

/// The Raft view of one peer. The QUIC connection itself is cached by the
/// transport and shared with every other user of that peer.
pub struct Connection {
    network: Network,
    target: RaftId,
    member: Member,
}

/// A failure to reach the peer at all, as openraft's `Unreachable`.
#[derive(Debug, thiserror::Error)]
#[error("peer {peer} at {addr}: {detail}")]
struct DialError {
    peer: String,
    addr: String,
    detail: String,
}

impl Connection {
    async fn client<E: std::error::Error>(
        &self,
    ) -> Result<NodeRpcClient, RPCError<RaftId, Member, E>> {
        let dial_error = |detail: String| DialError {
            peer: self.member.name.clone(),
            addr: self.member.quic_addr.clone(),
            detail,
        };
        let addr = self
            .network
            .discovery
            .resolve(&self.member.quic_addr)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&dial_error(e.to_string()))))?;
        let transport = self
            .network
            .endpoint
            .rpc_transport(&self.member.name, addr)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&dial_error(e.to_string()))))?;
        Ok(NodeRpcClient::new(tarpc::client::Config::default(), transport).spawn())
    }

    fn context(option: &RPCOption) -> tarpc::context::Context {
        crate::node::context_with_timeout(option.hard_ttl())
    }

    fn map_result<T, E: std::error::Error>(
        &self,
        result: Result<Result<T, RaftError<RaftId, E>>, tarpc::client::RpcError>,
    ) -> Result<T, RPCError<RaftId, Member, RaftError<RaftId, E>>> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(raft_error)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.member.clone(),
                raft_error,
            ))),
            Err(rpc_error) => Err(RPCError::Network(NetworkError::new(&rpc_error))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, Member, RaftError<RaftId>>> {
        let client = self.client().await?;
        let result = client.raft_append(Self::context(&option), request).await;
        self.map_result(result)
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, Member, RaftError<RaftId, InstallSnapshotError>>,
    > {
        let client = self.client().await?;
        let result = client.raft_snapshot(Self::context(&option), request).await;
        self.map_result(result)
    }

    async fn vote(
        &mut self,
        request: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, Member, RaftError<RaftId>>> {
        let client = self.client().await?;
        let result = client.raft_vote(Self::context(&option), request).await;
        self.map_result(result)
    }
}
