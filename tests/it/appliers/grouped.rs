//! Grouped delivery while catching up (issue 14 item 4), with the `webhook`
//! applier against an axum receiver on 127.0.0.1:0: a node that replays a
//! backlog sends consecutive batches together in the multi-batch body
//! (`"format": 2`) when `max_batches_per_request` allows, in log order and
//! signed as a whole; with the default of 1 every request is a single-batch
//! body; and a group the receiver refuses is not counted as applied — the
//! stored sequence stays before it until it (or the refresh-all replacing
//! it) is acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use invalog::node::NewNodePolicy;
use invalog::secret::Secret;
use invalog::{
    CheckpointStore, FileStore, Instruction, Node, NodeId, NodeSettings, NodeState, Provenance,
    Registry,
};
use invalog_agent::applier::{build, ApplierSettings, WebhookSettings};
use serde_json::Value;
use sha2::Sha256;

use super::{start_node, ATTEMPTS};
use crate::support::{defs, within, Fixture};

type Responder = Box<dyn Fn(&Value) -> u16 + Send + Sync>;

struct Recorded {
    raw: Bytes,
    headers: HeaderMap,
    body: Value,
}

struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A receiver answering `responder(body)`; the first request waits 50 ms,
/// so the consumer has buffered the backlog by the time it is answered.
async fn receiver(responder: impl Fn(&Value) -> u16 + Send + Sync + 'static) -> Receiver {
    type St = (Arc<Mutex<Vec<Recorded>>>, Arc<Responder>);
    async fn receive(
        State((requests, responder)): State<St>,
        headers: HeaderMap,
        raw: Bytes,
    ) -> StatusCode {
        let body: Value = serde_json::from_slice(&raw).expect("the body is JSON");
        let code = responder(&body);
        let first = {
            let mut requests = requests.lock().unwrap();
            requests.push(Recorded { raw, headers, body });
            requests.len() == 1
        };
        if first {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        StatusCode::from_u16(code).unwrap()
    }
    let requests = Arc::new(Mutex::new(Vec::new()));
    let responder: Arc<Responder> = Arc::new(Box::new(responder));
    let app = axum::Router::new()
        .route("/invalidate", post(receive))
        .with_state((requests.clone(), responder));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/invalidate", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url,
        requests,
        task,
    }
}

fn settings(url: &str, max_batches: usize, hmac: Option<&str>) -> ApplierSettings {
    ApplierSettings::Webhook(WebhookSettings {
        url: url.into(),
        timeout: Duration::from_secs(5),
        bearer_token: None,
        hmac_secret: hmac.map(Secret::new),
        max_batches_per_request: max_batches,
    })
}

/// Publishes `n` single-id batches of `content`; the last sequence.
async fn backlog(f: &Fixture, n: i64) -> u64 {
    let receipt = f
        .publisher()
        .publish_many(
            (1..=n).map(|i| ("content", vec![Instruction::RefreshIds(vec![i])])),
            &Provenance::default(),
        )
        .await
        .unwrap();
    receipt.sequence().unwrap()
}

/// The sequences a body carries: its batches' (format 2) or its own.
fn sequences(body: &Value) -> Vec<u64> {
    match body["format"].as_u64() {
        Some(2) => body["batches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["sequence"].as_u64().unwrap())
            .collect(),
        _ => body["sequence"].as_u64().into_iter().collect(),
    }
}

fn signed(secret: &str, r: &Recorded) -> bool {
    let timestamp = r.headers["Invalog-Timestamp"].to_str().unwrap();
    let signature = r.headers["Invalog-Signature"].to_str().unwrap();
    let expected = hex::decode(signature.strip_prefix("sha256=").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&r.raw);
    mac.verify_slice(&expected).is_ok()
}

#[tokio::test]
async fn a_catching_up_node_sends_groups_in_log_order_signed_as_a_whole() {
    let f = Fixture::new().await;
    let last = backlog(&f, 60).await;
    let hook = receiver(|_| 204).await;
    let node = start_node(
        &f,
        "grouped",
        &settings(&hook.url, 10, Some("k3y")),
        NewNodePolicy::ReplayAll,
    )
    .await;
    assert_eq!(node.applied(), last);
    let requests = std::mem::take(&mut *hook.requests.lock().unwrap());
    let seen: Vec<u64> = requests.iter().flat_map(|r| sequences(&r.body)).collect();
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "every batch once, in log order"
    );
    let groups: Vec<&Recorded> = requests.iter().filter(|r| r.body["format"] == 2).collect();
    assert!(!groups.is_empty(), "some requests carry several batches");
    assert!(
        requests.len() < 60,
        "{} requests for 60 batches",
        requests.len()
    );
    for r in &requests[..] {
        assert!(signed("k3y", r), "the signature covers the whole body");
        if r.body["format"] == 2 {
            let s = sequences(&r.body);
            assert!((2..=10).contains(&s.len()), "{s:?}");
            assert_eq!(r.body["trigger"], "batches");
            assert_eq!(r.body["refresher"]["name"], "content");
            assert_eq!(r.body["first_sequence"], s[0]);
            assert_eq!(r.body["last_sequence"], *s.last().unwrap());
            for (k, b) in r.body["batches"].as_array().unwrap().iter().enumerate() {
                assert_eq!(b["format"], 1);
                assert_eq!(b["trigger"], "batch");
                assert_eq!(
                    b["instructions"][0]["ids"][0],
                    s[k] as i64 - (last as i64 - 60)
                );
            }
        } else {
            assert_eq!(r.body["trigger"], "batch");
        }
    }
    assert_eq!(node.stats().applied_messages, 60);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn receivers_that_did_not_opt_in_get_one_single_batch_body_per_batch() {
    let f = Fixture::new().await;
    let last = backlog(&f, 30).await;
    let hook = receiver(|_| 204).await;
    let node = start_node(
        &f,
        "single",
        &settings(&hook.url, 1, None),
        NewNodePolicy::ReplayAll,
    )
    .await;
    assert_eq!(node.applied(), last);
    let requests = std::mem::take(&mut *hook.requests.lock().unwrap());
    assert_eq!(requests.len(), 30);
    for (k, r) in requests.iter().enumerate() {
        assert_eq!(r.body["format"], 1);
        assert_eq!(r.body["sequence"], last - 29 + k as u64);
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_group_is_not_stored_as_applied_until_acknowledged() {
    let f = Fixture::new().await;
    let last = backlog(&f, 60).await;
    let poisoned = last - 30;
    let failing = Arc::new(AtomicBool::new(true));
    let fails = failing.clone();
    // Every request holding the poisoned batch, and every refresh-all,
    // answers 503 while `failing`: the group is retried, escalated, and the
    // node stalls on the refresh-all.
    let hook = receiver(move |body| {
        let refused = sequences(body).contains(&poisoned) || body["trigger"] == "refresh_all";
        if refused && fails.load(Ordering::SeqCst) {
            503
        } else {
            204
        }
    })
    .await;
    let content = defs()[0].clone();
    let mut registry = Registry::new();
    registry
        .register_arc(
            content.clone(),
            build(&content, &settings(&hook.url, 10, None)).unwrap(),
        )
        .unwrap();
    let mut s = NodeSettings::new(NodeId::new("refused").unwrap());
    s.new_node = NewNodePolicy::ReplayAll;
    s.flush_interval = Duration::from_millis(20);
    s.retry.attempts = ATTEMPTS;
    s.retry.initial_backoff = Duration::from_millis(5);
    s.retry.max_backoff = Duration::from_millis(50);
    let path = f.checkpoint_path("refused");
    let node = Node::start(
        f.js.clone(),
        f.log.clone(),
        s,
        registry,
        FileStore::new(&path),
    )
    .await
    .unwrap();
    let mut watch = node.watch_position();
    within(
        Duration::from_secs(15),
        watch.wait_for(|p| matches!(p.state, NodeState::Stalled { .. })),
    )
    .await
    .unwrap();
    let refused: Vec<Vec<u64>> = {
        let requests = std::mem::take(&mut *hook.requests.lock().unwrap());
        requests
            .iter()
            .map(|r| sequences(&r.body))
            .filter(|s| s.contains(&poisoned))
            .collect()
    };
    assert_eq!(
        refused.len() as u32,
        ATTEMPTS,
        "the group is retried whole: {refused:?}"
    );
    assert!(
        refused.windows(2).all(|w| w[0] == w[1]),
        "the same group each time: {refused:?}"
    );
    let group_first = refused[0][0];
    assert!(
        refused[0].len() > 1 && group_first < poisoned,
        "the poisoned batch sits inside a group: {refused:?}"
    );
    // Acknowledged: everything before the group; stored: nothing past it,
    // even after several flush intervals.
    assert_eq!(node.applied(), group_first - 1);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stored = FileStore::new(&path)
            .load()
            .await
            .unwrap()
            .map_or(0, |c| c.sequence);
        assert!(
            stored < group_first,
            "stored {stored}, group from {group_first}"
        );
    }
    failing.store(false, Ordering::SeqCst);
    within(Duration::from_secs(15), node.wait_applied(last))
        .await
        .unwrap();
    within(Duration::from_secs(15), node.ready()).await.unwrap();
    let stats = node.stats();
    assert_eq!(stats.escalations, 1, "{stats:?}");
    assert_eq!(stats.applied_messages, 60, "{stats:?}");
    node.shutdown().await.unwrap();
    let stored = FileStore::new(&path)
        .load()
        .await
        .unwrap()
        .unwrap()
        .sequence;
    assert_eq!(stored, last);
}
