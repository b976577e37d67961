//! A node whose consumer can never be created still applies every
//! instruction, in order, by reading the stream directly (`node/direct.rs`).
//! Its NATS user may read stream info and direct-get messages but not create
//! consumers, so every consumer creation goes unanswered, as when a cluster
//! places the consumer on a server that died without a goodbye: with a
//! short request timeout the node reads between failed creations; with a
//! long one it reads while the creation is still pending (`node/open.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use invalog::connect::{connect, NatsAuth, NatsSettings};
use invalog::node::NewNodePolicy;
use invalog::secret::Secret;
use invalog::{
    FileStore, LogSettings, Node, NodeId, NodeSettings, Publisher, PublisherSettings, Registry,
};
use invalog_nats_server::NatsServer;

use crate::support::{defs, within, Call, Recorder};

const CONFIG: &str = r#"authorization {
  users = [
    { user: admin, password: "admin-pw" }
    { user: reader, password: "reader-pw", permissions: {
        publish: { allow: ["$JS.API.STREAM.INFO.INVALOG", "$JS.API.DIRECT.GET.INVALOG"] }
        subscribe: { allow: ["_INBOX.>"] }
    } }
  ]
}"#;

async fn js_as(
    server: &NatsServer,
    user: &str,
    password: &str,
    timeout: Duration,
) -> jetstream::Context {
    let settings = NatsSettings {
        urls: vec![server.url()],
        auth: NatsAuth::UserPassword {
            user: user.into(),
            password: Secret::new(password.to_owned()),
        },
        ..Default::default()
    };
    let client = connect(&settings).await.expect("connects");
    jetstream::context::ContextBuilder::new()
        .timeout(timeout)
        .build(client)
}

#[tokio::test]
async fn a_node_whose_consumer_creations_time_out_applies_by_reading_directly() {
    let stats = applies_without_a_consumer(Duration::from_millis(300)).await;
    assert!(stats.consumer_restarts >= 1, "{stats:?}");
}

#[tokio::test]
async fn a_node_whose_consumer_creation_hangs_applies_while_it_waits() {
    // The creation would time out after a minute: everything applied
    // before that was read while it was pending.
    let stats = applies_without_a_consumer(Duration::from_secs(60)).await;
    assert_eq!(stats.consumer_restarts, 0, "{stats:?}");
}

/// Starts a node whose consumer creations go unanswered (its requests time
/// out after `timeout`), checks that it applies two instructions published
/// before it started and one after, once each and in order, and returns
/// its counters.
async fn applies_without_a_consumer(timeout: Duration) -> invalog::node::StatsSnapshot {
    let server = NatsServer::start_with_config(CONFIG).await.unwrap();
    let log = LogSettings::default();
    let admin = js_as(&server, "admin", "admin-pw", Duration::from_secs(5)).await;
    invalog::provision(&admin, &log).await.unwrap();
    let publisher = Publisher::new(
        admin.clone(),
        log.clone(),
        PublisherSettings::new("app"),
        defs(),
    );
    publisher.refresh_ids("content", &[1]).await.unwrap();
    publisher.refresh_ids("content", &[2]).await.unwrap();

    let content = Arc::new(Recorder::default());
    let mut registry = Registry::new();
    registry
        .register_arc(defs()[0].clone(), content.clone())
        .unwrap();
    let mut settings = NodeSettings::new(NodeId::new("web-1").unwrap());
    settings.new_node = NewNodePolicy::ReplayAll;
    settings.retry.max_backoff = Duration::from_millis(100);
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("web-1.json"));
    let reader = js_as(&server, "reader", "reader-pw", timeout).await;
    let node = Node::start(reader, log, settings, registry, store)
        .await
        .expect("starts without a consumer");

    // What was there before the start, and what comes after it.
    within(Duration::from_secs(10), node.wait_applied(2))
        .await
        .unwrap();
    let third = publisher
        .refresh_ids("content", &[3])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    within(Duration::from_secs(10), node.wait_applied(third))
        .await
        .unwrap();
    assert_eq!(
        content.calls(),
        vec![Call::Ids(vec![1]), Call::Ids(vec![2]), Call::Ids(vec![3])],
        "every instruction once, in order"
    );
    let stats = node.stats();
    assert_eq!(stats.direct_reads, 3, "{stats:?}");
    assert!(node.is_ready());
    node.shutdown().await.unwrap();
    stats
}
