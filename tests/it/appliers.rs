//! The agent's appliers (`invalog_agent::applier`), each end to end through a real
//! `Node` on a real nats-server: `webhook` against an axum receiver on
//! 127.0.0.1:0, `redis` against a real `redis-server` started per test,
//! `command` with small shell scripts. The shared helper here starts a node
//! hosting `content` through the applier under test.

mod command;
mod grouped;
mod redis;
mod webhook;

use std::time::Duration;

use invalog::node::NewNodePolicy;
use invalog::{
    FileStore, Instruction, Node, NodeId, NodeSettings, Provenance, Publisher, Registry,
};
use invalog_agent::applier::{build, ApplierSettings};

use crate::support::{defs, within, Fixture};

/// Attempts before a failing batch is escalated (the node's default).
pub const ATTEMPTS: u32 = 3;

/// Starts node `name` hosting `content` through `settings`, with fast
/// retries and `policy` for its first start.
pub async fn start_node(
    fixture: &Fixture,
    name: &str,
    settings: &ApplierSettings,
    policy: NewNodePolicy,
) -> Node {
    let content = defs()[0].clone();
    let applier = build(&content, settings).expect("applier builds");
    let mut registry = Registry::new();
    registry.register_arc(content, applier).unwrap();
    let mut node_settings = NodeSettings::new(NodeId::new(name).unwrap());
    node_settings.new_node = policy;
    node_settings.flush_interval = Duration::from_millis(50);
    node_settings.retry.attempts = ATTEMPTS;
    node_settings.retry.initial_backoff = Duration::from_millis(5);
    node_settings.retry.max_backoff = Duration::from_millis(50);
    let store = FileStore::new(fixture.checkpoint_path(name));
    let node = Node::start(
        fixture.js.clone(),
        fixture.log.clone(),
        node_settings,
        registry,
        store,
    )
    .await
    .expect("node starts");
    within(Duration::from_secs(10), node.ready())
        .await
        .expect("node becomes ready");
    node
}

/// Publishes one batch for `content` and returns its sequence.
pub async fn publish(publisher: &Publisher, instructions: Vec<Instruction>) -> u64 {
    publish_as(publisher, instructions, &Provenance::default()).await
}

/// Publishes one batch for `content` with provenance; returns its sequence.
pub async fn publish_as(
    publisher: &Publisher,
    instructions: Vec<Instruction>,
    provenance: &Provenance,
) -> u64 {
    let receipt = publisher
        .publish("content", instructions, provenance)
        .await
        .expect("publishes");
    assert_eq!(receipt.messages.len(), 1, "one batch");
    receipt.sequence().unwrap()
}

/// Waits until `node` has applied `sequence`.
pub async fn applied(node: &Node, sequence: u64) {
    within(Duration::from_secs(15), node.wait_applied(sequence))
        .await
        .expect("node running");
}
