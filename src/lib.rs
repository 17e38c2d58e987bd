//! Dispotify node: public API, Raft consensus, catalog, blob store,
//! placement, replication and discovery, assembled by `node`.

pub mod api;
pub mod blob;
pub mod catalog;
pub mod config;
pub mod consensus;
pub mod dev;
pub mod discovery;
pub mod http_range;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod node;
pub mod pause;
pub mod placement;
pub mod replication;
pub mod rpc;
pub mod server;
pub mod tags;
pub mod upload_client;
pub mod workers;
