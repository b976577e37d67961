//! Helpers every figure shares: the `content` refresher, stream settings,
//! connecting, emptying a stream, a publisher, same-size sample bodies, the
//! no-op refresher and per-node settings.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use anyhow::{bail, Result};
use async_nats::jetstream;
use async_trait::async_trait;
use invalog::node::NewNodePolicy;
use invalog::{
    BatchContext, Instruction, LogSettings, NodeId, NodeSettings, Provenance, Publisher,
    PublisherSettings, RefreshResult, Refresher, RefresherDef, Registry,
};
use uuid::Uuid;

pub fn content() -> RefresherDef {
    RefresherDef::new(Uuid::from_u128(1), "content").unwrap()
}

pub fn log_settings(stream: &str, prefix: &str) -> LogSettings {
    LogSettings {
        stream: stream.into(),
        subject_prefix: prefix.into(),
        ..LogSettings::default()
    }
}

pub async fn connect(url: &str) -> Result<jetstream::Context> {
    let client = async_nats::connect(url).await?;
    Ok(jetstream::new(client))
}

/// Deletes the stream if it exists and provisions it again, empty.
pub async fn fresh_stream(js: &jetstream::Context, log: &LogSettings) -> Result<()> {
    for _ in 0..5 {
        // A delete can time out on a loaded machine: check, and try again.
        let _ = js.delete_stream(&log.stream).await;
        invalog::provision(js, log).await?;
        if stream_last(js, log).await? == 0 {
            return Ok(());
        }
    }
    bail!("cannot empty stream {}", log.stream)
}

pub fn publisher(js: &jetstream::Context, log: &LogSettings) -> Publisher {
    Publisher::new(
        js.clone(),
        log.clone(),
        PublisherSettings::new("bench"),
        [content()],
    )
}

/// An invalog-encoded body of one batch (for same-size raw payloads).
pub fn sample_body(instructions: Vec<Instruction>) -> Vec<u8> {
    invalog::wire::encode(&invalog::Batch {
        id: Uuid::now_v7(),
        origin: "bench".into(),
        published_at: SystemTime::now(),
        refresher: content(),
        provenance: Provenance::default(),
        applied_at_origin: false,
        instructions,
    })
}

pub fn single(i: usize) -> Instruction {
    Instruction::RefreshIds(vec![i as i64])
}

pub async fn stream_last(js: &jetstream::Context, log: &LogSettings) -> Result<u64> {
    let mut s = js.get_stream(&log.stream).await?;
    Ok(s.info().await?.state.last_sequence)
}

/// A refresher that does nothing (figures 2 and 4).
struct Noop;

#[async_trait]
impl Refresher for Noop {
    async fn refresh_all(&self) -> RefreshResult {
        Ok(())
    }
    async fn apply(&self, _context: BatchContext<'_>) -> RefreshResult {
        Ok(())
    }
}

pub fn noop_registry() -> Registry {
    let mut r = Registry::new();
    r.register(content(), Noop).unwrap();
    r
}

pub static NODE_COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn node_settings(policy: NewNodePolicy) -> NodeSettings {
    let n = NODE_COUNTER.fetch_add(1, Relaxed);
    let mut s =
        NodeSettings::new(NodeId::new(format!("bench-{}-{n}", std::process::id())).unwrap());
    s.new_node = policy;
    s
}
