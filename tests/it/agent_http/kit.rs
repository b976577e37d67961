//! Helpers of the agent HTTP tests: a gated refresher, a node behind an
//! `Arc`, the API served on 127.0.0.1:0 with a reqwest client, an async poll,
//! and a line-by-line OpenMetrics text parser.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use invalog::node::NewNodePolicy;
use invalog::{
    BatchContext, CheckpointStore, FileStore, Node, NodeId, NodeSettings, RefreshResult, Refresher,
    Registry,
};
use invalog_agent::http::{serve, AgentInfo, HttpState};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::support::{defs, within, Fixture, Recorder};

/// A refresher that applies a batch only when allowed to: `allow(n)` lets
/// `n` more batches through, `open()` all of them.
pub struct Gate {
    allowed: watch::Sender<u64>,
    entered: AtomicU64,
}

impl Gate {
    pub fn closed() -> Arc<Gate> {
        Arc::new(Gate {
            allowed: watch::Sender::new(0),
            entered: AtomicU64::new(0),
        })
    }
    pub fn allow(&self, n: u64) {
        self.allowed.send_modify(|a| *a = a.saturating_add(n));
    }
    pub fn open(&self) {
        self.allowed.send_replace(u64::MAX);
    }
    async fn pass(&self) -> RefreshResult {
        let me = self.entered.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.allowed.subscribe();
        let _ = rx.wait_for(|allowed| *allowed >= me).await;
        Ok(())
    }
}

#[async_trait]
impl Refresher for Gate {
    async fn refresh_all(&self) -> RefreshResult {
        self.pass().await
    }
    async fn apply(&self, _context: BatchContext<'_>) -> RefreshResult {
        self.pass().await
    }
}

/// A node hosting `content` (the given refresher) and `media`, started
/// like `support::Fixture::node_with` does, behind an `Arc`.
pub async fn start_node(
    f: &Fixture,
    name: &str,
    content: Arc<dyn Refresher>,
    adjust: impl FnOnce(&mut NodeSettings),
) -> Arc<Node> {
    let store = FileStore::new(f.checkpoint_path(name));
    start_node_with_store(f, name, content, adjust, store).await
}

/// [`start_node`] with the checkpoint in `store`.
pub async fn start_node_with_store(
    f: &Fixture,
    name: &str,
    content: Arc<dyn Refresher>,
    adjust: impl FnOnce(&mut NodeSettings),
    store: impl CheckpointStore,
) -> Arc<Node> {
    let d = defs();
    let mut registry = Registry::new();
    registry.register_arc(d[0].clone(), content).unwrap();
    registry
        .register_arc(d[1].clone(), Arc::new(Recorder::default()))
        .unwrap();
    let mut settings = NodeSettings::new(NodeId::new(name).unwrap());
    settings.new_node = NewNodePolicy::ReplayAll;
    settings.flush_interval = Duration::from_millis(50);
    settings.retry.initial_backoff = Duration::from_millis(5);
    settings.retry.max_backoff = Duration::from_millis(50);
    adjust(&mut settings);
    let node = Node::start(f.js.clone(), f.log.clone(), settings, registry, store);
    Arc::new(node.await.expect("node starts"))
}

/// The HTTP API of one node, served until dropped or `stop`ped.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub stop: Option<oneshot::Sender<()>>,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Api {
    pub async fn serve(f: &Fixture, node: &Arc<Node>) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let info = AgentInfo::new(node.node_id().clone(), f.log.stream.clone(), defs());
        let state = HttpState {
            node: node.clone(),
            client: f.js.client(),
            info: Arc::new(info),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Api {
            base,
            http: reqwest::Client::new(),
            stop: Some(stop),
            server,
        }
    }

    /// Status and body of `GET path`.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.http.get(format!("{}{path}", self.base)).send();
        let response = within(Duration::from_secs(15), response).await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path).await;
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
        (status, json)
    }

    pub async fn metrics(&self) -> HashMap<String, f64> {
        let response = self.http.get(format!("{}/metrics", self.base)).send();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"));
        parse_openmetrics(&response.text().await.unwrap())
    }
}

/// Polls `probe` every 10 ms until it returns `Some`, failing after 10 s.
pub async fn until<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Parses OpenMetrics text line by line, checking the syntax, that every
/// sample belongs to the family of the `# TYPE` before it with a suffix its
/// type allows, that histogram buckets are cumulative and end at +Inf =
/// count, and that `# EOF` ends it. Returns series (as printed) → value.
pub fn parse_openmetrics(text: &str) -> HashMap<String, f64> {
    let name_ok = |n: &str| {
        n.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        }) && !n.is_empty()
    };
    let (mut series, mut families) = (HashMap::new(), Vec::<String>::new());
    let (mut family, mut kind) = (String::new(), String::new());
    let mut last_bucket = 0.0;
    let body = text.strip_suffix("# EOF\n").expect("ends with `# EOF`");
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap(), parts.next().unwrap());
            let value = parts.next().unwrap_or_default();
            assert!(name_ok(name), "bad name in `{line}`");
            match keyword {
                "HELP" => assert!(!value.is_empty(), "empty help: `{line}`"),
                "UNIT" => assert!(name.ends_with(&format!("_{value}")), "`{line}`"),
                "TYPE" => {
                    assert!(!families.contains(&name.to_owned()), "repeated `{line}`");
                    assert!(
                        ["counter", "gauge", "histogram", "info"].contains(&value),
                        "`{line}`"
                    );
                    (family, kind) = (name.to_owned(), value.to_owned());
                    last_bucket = 0.0;
                    families.push(family.clone());
                }
                _ => panic!("unknown comment `{line}`"),
            }
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in `{line}`"));
        let (name, labels) = match key.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("closing brace")),
            None => (key, ""),
        };
        for label in labels.split(',').filter(|l| !l.is_empty()) {
            let (label, quoted) = label.split_once('=').expect("label=value");
            assert!(name_ok(label) && quoted.len() >= 2, "label in `{line}`");
            assert!(quoted.starts_with('"') && quoted.ends_with('"'), "`{line}`");
        }
        let suffix = name.strip_prefix(family.as_str()).unwrap_or("?");
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_count", "_sum"],
            _ => &["_info"],
        };
        assert!(
            allowed.contains(&suffix),
            "`{line}` outside family {family}"
        );
        if suffix == "_bucket" {
            assert!(value >= last_bucket, "buckets not cumulative at `{line}`");
            last_bucket = value;
            if labels == "le=\"+Inf\"" {
                let count = format!("{family}_count");
                assert_eq!(Some(&value), series.get(&count), "+Inf bucket ≠ count");
            }
        }
        assert!(
            series.insert(key.to_owned(), value).is_none(),
            "repeated `{line}`"
        );
    }
    series
}
