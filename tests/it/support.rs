//! Shared test fixtures: a real nats-server with the log provisioned, a
//! recording refresher with failure injection, and helpers to start nodes
//! and wait for conditions (never fixed sleeps).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use invalog::node::NewNodePolicy;
use invalog::{
    FileStore, LogSettings, Node, NodeId, NodeSettings, Publisher, PublisherSettings, RefreshError,
    RefreshResult, Refresher, RefresherDef, Registry,
};
use invalog_nats_server::NatsServer;
use uuid::Uuid;

/// The refreshers every test knows.
pub fn defs() -> Vec<RefresherDef> {
    vec![
        RefresherDef::new(Uuid::from_u128(1), "content").unwrap(),
        RefresherDef::new(Uuid::from_u128(2), "media").unwrap(),
        RefresherDef::new(Uuid::from_u128(3), "other").unwrap(),
    ]
}

/// A server, a JetStream context and the provisioned log.
pub struct Fixture {
    pub server: NatsServer,
    pub js: jetstream::Context,
    pub log: LogSettings,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn new() -> Fixture {
        Self::with_log(LogSettings::default()).await
    }

    pub async fn with_log(log: LogSettings) -> Fixture {
        // reqwest is built without a default TLS provider (the agent installs
        // ring's); test HTTP clients need it installed too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Ok(filter) = std::env::var("INVALOG_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let server = NatsServer::start().await.expect("nats-server starts");
        let client = async_nats::connect(server.url()).await.expect("connects");
        let js = jetstream::new(client);
        invalog::provision(&js, &log).await.expect("provisions");
        Fixture {
            server,
            js,
            log,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Deletes the log's stream and provisions it again, empty. nats-server
    /// removes a deleted stream's files in the background: a stream created
    /// again at once under the same name was seen to recover the old one's
    /// messages, or to fail with "error creating store for stream" (10049;
    /// both on 2.15.1), so this repeats until a new, empty stream stands.
    pub async fn recreate_stream(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        self.js.delete_stream(&self.log.stream).await.unwrap();
        loop {
            match invalog::provision(&self.js, &self.log).await {
                Ok(provisioned) if provisioned.info().state.messages == 0 => return,
                Ok(_) => {
                    // The old messages came back: delete that one too.
                    self.js.delete_stream(&self.log.stream).await.unwrap();
                }
                Err(error) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the stream cannot be created again: {error}"
                ),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stream keeps coming back with its old messages"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn publisher(&self) -> Publisher {
        Publisher::new(
            self.js.clone(),
            self.log.clone(),
            PublisherSettings::new("test-publisher"),
            defs(),
        )
    }

    pub fn checkpoint_path(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.json"))
    }

    /// Starts a node hosting `content` and `media` with recorders.
    pub async fn node(&self, name: &str, policy: NewNodePolicy) -> TestNode {
        self.node_with(name, |s| s.new_node = policy).await
    }

    pub async fn node_with(&self, name: &str, adjust: impl FnOnce(&mut NodeSettings)) -> TestNode {
        let content = Arc::new(Recorder::default());
        let media = Arc::new(Recorder::default());
        let mut registry = Registry::new();
        let d = defs();
        registry
            .register_arc(d[0].clone(), content.clone())
            .unwrap();
        registry.register_arc(d[1].clone(), media.clone()).unwrap();
        let mut settings = NodeSettings::new(NodeId::new(name).unwrap());
        settings.flush_interval = Duration::from_millis(50);
        settings.retry.initial_backoff = Duration::from_millis(5);
        settings.retry.max_backoff = Duration::from_millis(50);
        adjust(&mut settings);
        let store = FileStore::new(self.checkpoint_path(name));
        let node = Node::start(self.js.clone(), self.log.clone(), settings, registry, store)
            .await
            .expect("node starts");
        TestNode {
            node,
            content,
            media,
        }
    }
}

pub struct TestNode {
    pub node: Node,
    pub content: Arc<Recorder>,
    pub media: Arc<Recorder>,
}

impl TestNode {
    pub async fn wait_applied(&self, sequence: u64) {
        within(Duration::from_secs(10), self.node.wait_applied(sequence))
            .await
            .expect("node running");
    }

    pub async fn ready(&self) {
        within(Duration::from_secs(10), self.node.ready())
            .await
            .expect("node becomes ready");
    }
}

/// Awaits `future`, failing the test after `limit`.
pub async fn within<F: std::future::Future>(limit: Duration, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("condition not reached within {limit:?}"))
}

/// Polls `condition` every 10 ms until it holds, failing after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One call a refresher received.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    All,
    Ids(Vec<i64>),
    Uuids(Vec<Uuid>),
    Keys(Vec<String>),
    RemoveIds(Vec<i64>),
    RemoveUuids(Vec<Uuid>),
    RemoveKeys(Vec<String>),
    Json(serde_json::Value),
    Payloads(Vec<serde_json::Value>),
}

/// Records every call; fails the next `fail_calls` non-refresh-all calls and
/// the next `fail_refresh_all` refresh-all calls.
#[derive(Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<Call>>,
    pub fail_calls: AtomicU32,
    pub fail_refresh_all: AtomicU32,
    pub attempts: AtomicU32,
}

impl Recorder {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: Call) -> RefreshResult {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let counter = if call == Call::All {
            &self.fail_refresh_all
        } else {
            &self.fail_calls
        };
        let failing = counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(RefreshError::msg(format!("injected failure on {call:?}")));
        }
        self.calls.lock().unwrap().push(call);
        Ok(())
    }
}

#[async_trait]
impl Refresher for Recorder {
    async fn refresh_all(&self) -> RefreshResult {
        self.record(Call::All)
    }
    async fn refresh_ids(&self, ids: &[i64]) -> RefreshResult {
        self.record(Call::Ids(ids.to_vec()))
    }
    async fn refresh_uuids(&self, ids: &[Uuid]) -> RefreshResult {
        self.record(Call::Uuids(ids.to_vec()))
    }
    async fn refresh_keys(&self, keys: &[String]) -> RefreshResult {
        self.record(Call::Keys(keys.to_vec()))
    }
    async fn remove_ids(&self, ids: &[i64]) -> RefreshResult {
        self.record(Call::RemoveIds(ids.to_vec()))
    }
    async fn remove_uuids(&self, ids: &[Uuid]) -> RefreshResult {
        self.record(Call::RemoveUuids(ids.to_vec()))
    }
    async fn remove_keys(&self, keys: &[String]) -> RefreshResult {
        self.record(Call::RemoveKeys(keys.to_vec()))
    }
    async fn refresh_json(&self, json: &serde_json::Value) -> RefreshResult {
        self.record(Call::Json(json.clone()))
    }
    async fn refresh_payloads(&self, payloads: &[serde_json::Value]) -> RefreshResult {
        self.record(Call::Payloads(payloads.to_vec()))
    }
}
