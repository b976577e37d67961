//! invalog: a cache-invalidation log for fleets of servers, on NATS JetStream.
//!
//! Servers keep local caches. When data changes, an invalidation instruction
//! is appended to a durable JetStream stream by a [`Publisher`]. Beside every
//! node a [`Node`] applies the instructions in log order through the node's
//! [`Refresher`]s and stores the last sequence it applied; a node that
//! restarts replays from there and is not ready until it has caught up.
//!
//! This is the core library an app embeds. The `invalog` command, the
//! `invalog agent` sidecar (HTTP, appliers, configuration files) and the
//! local nats-server launcher are other crates of the workspace, built on
//! this one; none of them is needed to publish or to run a node.
//!
//! # Layout
//!
//! - [`model`]: plain Rust types for refreshers, instructions and batches.
//! - [`wire`]: the versioned message format.
//! - [`refresher`]: the [`Refresher`] family and the [`Registry`] of a node.
//! - [`batch`]: unit-of-work de-duplication and splitting (pure).
//! - [`stream`]: the log's stream settings and idempotent provisioning.
//! - [`publish`]: the [`Publisher`] (Umbraco's `DistributedCache` API).
//! - [`checkpoint`]: stored sequences, in a file or a JetStream KV bucket.
//! - [`node`]: the replayer: start plan, apply loop, failure policy, readiness.
//! - [`history`]: reading the log back, filtered and decoded.
//! - [`presence`]: nodes report their position to a KV bucket.
//! - [`fleet`]: the stream and every node's position; explaining an id.
//! - [`replay`]: re-applying a range through a node's refreshers.
//! - [`probe`]: canary instructions timed on every node.
//! - [`token`]: read-your-writes tokens (sequence + stream incarnation).
//! - [`connect`]: NATS connection from settings (auth, TLS, reconnect).
//! - [`secret`]: `Secret`, a string that never reaches logs.
//! - [`units`]: durations and sizes as people write them (`7d`, `10GiB`).
//! - [`redact`]: URLs as they may be shown (user-info and queries hidden).
//! - [`printable`]: outside text made safe to print on a terminal.
//! - [`suggest`]: "did you mean …?" for mistyped names.

#![deny(missing_docs)]

/// The README's examples compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

pub mod batch;
mod bucket;
pub mod checkpoint;
pub mod connect;
pub mod fleet;
pub mod history;
pub mod model;
pub mod node;
pub mod presence;
pub mod printable;
pub mod probe;
pub mod publish;
pub mod redact;
pub mod refresher;
pub mod replay;
pub mod secret;
pub mod stream;
pub mod suggest;
mod supersede;
pub mod token;
pub mod units;
pub mod wire;

pub use checkpoint::{Checkpoint, CheckpointStore, FileStore, KvStore};
pub use model::{Batch, Instruction, InvalidName, NodeId, Provenance, RefresherDef, RefresherName};
pub use node::{Node, NodeError, NodeSettings, NodeState};
pub use publish::{
    PublishError, PublishErrorKind, Publisher, PublisherSettings, Receipt, UnitOfWork,
};
pub use refresher::{
    BatchContext, InstanceRefresher, PayloadRefresher, Payloads, RefreshError, RefreshResult,
    Refresher, Registry,
};
pub use stream::{provision, provision_allowing_data_loss, LogSettings, Storage, StreamPolicy};
pub use token::{Incarnation, ReadToken};
