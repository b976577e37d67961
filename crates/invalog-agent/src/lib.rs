//! The `invalog agent` sidecar: one node's consumer for apps in any
//! language. It connects to NATS, optionally provisions the stream, builds
//! one applier per configured refresher, runs a [`invalog::Node`], and serves
//! `/healthz`, `/readyz`, `/metrics`, `/status`, `/applied` and the
//! stale-fill guard (`/fill-ticket`, `/may-fill`) over HTTP
//! until its shutdown future completes.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::applier::ApplierSettings;
use invalog::connect::NatsSettings;
use invalog::model::RefresherDef;
use invalog::node::NodeSettings;
use invalog::presence::PresenceSettings;
use invalog::stream::LogSettings;

/// Where the node's stored sequence lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointSettings {
    /// A local file.
    File {
        /// Its path.
        path: PathBuf,
    },
    /// A JetStream KV bucket, keyed by node id.
    Kv {
        /// The bucket.
        bucket: String,
        /// Its replicas.
        replicas: usize,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings (the `RUST_LOG` environment variable overrides `level`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    /// Text or JSON.
    pub format: LogFormat,
    /// A tracing filter: `info`, `invalog=debug,warn`.
    pub level: String,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// Everything the agent needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// The node: id, start policy, retry, fencing.
    pub node: NodeSettings,
    /// NATS connection.
    pub nats: NatsSettings,
    /// The stream.
    pub log: LogSettings,
    /// What to do with the stream at start: create it when missing (and
    /// otherwise only compare), update it, or neither.
    pub provision: invalog::stream::StreamPolicy,
    /// Stored sequence.
    pub checkpoint: CheckpointSettings,
    /// HTTP endpoints.
    pub http: HttpSettings,
    /// Logging.
    pub logging: LoggingSettings,
    /// Reporting this node's position to the presence bucket.
    pub presence: PresenceSettings,
    /// The refreshers this node hosts and how each is applied.
    pub refreshers: Vec<(RefresherDef, ApplierSettings)>,
}
pub mod applier;
pub mod config;
mod fill;
pub mod http;
pub mod metrics;
pub mod probe_service;
mod run;
pub mod server;
mod starting;

pub use run::{run, AgentError};
