//! The `webhook` applier against an axum receiver on 127.0.0.1:0 that
//! records every request and answers as each test scripts it: bodies in
//! order, bearer token, HMAC signature checked with the secret, retries of
//! 500s and hangs, escalation of a persistent 500 and of a 404, and a stall
//! when even the refresh-all fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use invalog::node::NewNodePolicy;
use invalog::secret::Secret;
use invalog::{Instruction, NodeState, Provenance};
use invalog_agent::applier::{ApplierSettings, WebhookSettings};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

use super::{applied, publish, publish_as, start_node, ATTEMPTS};
use crate::support::{within, Fixture};

/// How the receiver answers one request.
enum Reply {
    Status(u16),
    /// Never answers (the applier's timeout must fire).
    Hang,
}

type Responder = Box<dyn Fn(usize, &Value) -> Reply + Send + Sync>;

/// One received request.
#[derive(Clone)]
struct Request {
    headers: HeaderMap,
    raw: Bytes,
    body: Value,
}

struct ReceiverState {
    requests: Mutex<Vec<Request>>,
    responder: Responder,
}

/// An HTTP receiver; its server task stops when it is dropped.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Answers request number `n` (0-based) with `responder(n, body)`.
    async fn start(responder: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static) -> Self {
        let state = Arc::new(ReceiverState {
            requests: Mutex::new(Vec::new()),
            responder: Box::new(responder),
        });
        let app = axum::Router::new()
            .route("/invalidate", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/invalidate", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, state, task }
    }

    fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The requests that carried the batch at `sequence`.
    fn attempts_at(&self, sequence: u64) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.body["sequence"] == json!(sequence))
            .count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> StatusCode {
    let body: Value = serde_json::from_slice(&raw).expect("the body is JSON");
    let reply = {
        let mut requests = state.requests.lock().unwrap();
        let reply = (state.responder)(requests.len(), &body);
        requests.push(Request { headers, raw, body });
        reply
    };
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap(),
        Reply::Hang => std::future::pending().await,
    }
}

fn settings(receiver: &Receiver) -> ApplierSettings {
    ApplierSettings::Webhook(WebhookSettings {
        url: receiver.url.clone(),
        timeout: Duration::from_secs(5),
        bearer_token: None,
        hmac_secret: None,
        max_batches_per_request: 1,
    })
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("header {name} is missing"))
        .to_str()
        .unwrap()
}

/// The verification example of docs/appliers.md (as rustfmt lays it out).
fn verify(secret: &[u8], timestamp: &str, signature: &str, body: &[u8], now_unix: u64) -> bool {
    let Ok(sent_at) = timestamp.parse::<u64>() else {
        return false;
    };
    if now_unix.abs_diff(sent_at) > 300 {
        return false; // too old (a replay) or clocks too far apart
    }
    let Some(Ok(expected)) = signature.strip_prefix("sha256=").map(hex::decode) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok() // constant-time comparison
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What a receiver does to check a request.
fn signature_verifies(secret: &[u8], request: &Request, now_unix: u64) -> bool {
    verify(
        secret,
        header(request, "Invalog-Timestamp"),
        header(request, "Invalog-Signature"),
        &request.raw,
        now_unix,
    )
}

#[tokio::test]
async fn webhook_posts_each_batch_in_order_with_token_and_signature() {
    let f = Fixture::new().await;
    let p = f.publisher();
    let receiver = Receiver::start(|_, _| Reply::Status(204)).await;
    let mut applier = settings(&receiver);
    if let ApplierSettings::Webhook(w) = &mut applier {
        w.bearer_token = Some(Secret::new("s3cr3t-token"));
        w.hmac_secret = Some(Secret::new("hmac-key"));
    }
    // A new node cold boots: its first request is the refresh-all body.
    let node = start_node(&f, "web", &applier, NewNodePolicy::ColdBoot).await;
    let provenance = Provenance {
        actor: Some("alice".into()),
        reason: Some("edited page".into()),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
    };
    let uuid = Uuid::from_u128(0xabc);
    let first = publish_as(
        &p,
        vec![
            Instruction::RefreshIds(vec![1, 2]),
            Instruction::RemoveKeys(vec!["/en/".into()]),
        ],
        &provenance,
    )
    .await;
    p.refresh_ids("media", &[9]).await.unwrap(); // not hosted: never posted
    let last = publish(&p, vec![Instruction::RefreshUuids(vec![uuid])]).await;
    applied(&node, last).await;

    let requests = receiver.requests();
    let bodies: Vec<_> = requests.iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies.len(), 3, "{bodies:#?}");
    assert_eq!(
        bodies[0],
        json!({
            "format": 1, "trigger": "refresh_all", "sequence": null, "batch_id": null,
            "refresher": {"id": "00000000-0000-0000-0000-000000000001", "name": "content"},
            "origin": null, "published_at": null, "actor": null, "reason": null,
            "trace_id": null, "instructions": [{"kind": "refresh_all"}]
        })
    );
    assert_eq!(bodies[1]["trigger"], "batch");
    assert_eq!(bodies[1]["sequence"], json!(first));
    assert_eq!(bodies[1]["origin"], "test-publisher");
    assert_eq!(bodies[1]["actor"], "alice");
    assert_eq!(bodies[1]["reason"], "edited page");
    assert_eq!(bodies[1]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(Uuid::parse_str(bodies[1]["batch_id"].as_str().unwrap()).is_ok());
    assert!(bodies[1]["published_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        bodies[1]["instructions"],
        json!([{"kind": "refresh_ids", "ids": [1, 2]}, {"kind": "remove_keys", "keys": ["/en/"]}])
    );
    assert_eq!(bodies[2]["sequence"], json!(last));
    assert_eq!(bodies[2]["actor"], Value::Null);
    assert_eq!(
        bodies[2]["instructions"],
        json!([{"kind": "refresh_uuids", "uuids": [uuid.to_string()]}])
    );

    let now = unix_now();
    for request in &requests {
        assert_eq!(header(request, "content-type"), "application/json");
        assert_eq!(header(request, "authorization"), "Bearer s3cr3t-token");
        let timestamp: u64 = header(request, "invalog-timestamp").parse().unwrap();
        assert!(
            now.abs_diff(timestamp) <= 60,
            "timestamp {timestamp} vs {now}"
        );
        assert!(signature_verifies(b"hmac-key", request, now), "verifies");
        assert!(!signature_verifies(b"other-key", request, now), "keyed");
        assert!(
            !signature_verifies(b"hmac-key", request, now + 600),
            "replay"
        );
    }
    let mut tampered = requests[1].clone();
    tampered.raw = Bytes::from(String::from_utf8_lossy(&tampered.raw).replace("[1,2]", "[1,3]"));
    assert!(
        !signature_verifies(b"hmac-key", &tampered, now),
        "the body is signed"
    );
    let vector = "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae";
    assert!(
        verify(b"key", "1700000000", vector, b"{}", 1_700_000_000),
        "documented vector"
    );
}

#[tokio::test]
async fn webhook_retries_a_500_escalates_a_persistent_one_and_stalls_when_all_fail() {
    let f = Fixture::new().await;
    let p = f.publisher();
    // Request 0 fails once; ids [666] always fail (its refresh-all works);
    // from ids [999] on, every request fails, refresh-alls included.
    let everything_fails = AtomicBool::new(false);
    let receiver = Receiver::start(move |n, body| {
        let ids = &body["instructions"][0]["ids"];
        if *ids == json!([999]) {
            everything_fails.store(true, Ordering::SeqCst);
        }
        if n == 0 {
            Reply::Status(500)
        } else if *ids == json!([666]) || everything_fails.load(Ordering::SeqCst) {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let node = start_node(&f, "web", &settings(&receiver), NewNodePolicy::Tail).await;

    let first = publish(&p, vec![Instruction::RefreshIds(vec![1])]).await;
    applied(&node, first).await;
    assert_eq!(receiver.attempts_at(first), 2, "a 500 then a 200");
    let stats = node.stats();
    assert_eq!((stats.retries, stats.escalations), (1, 0));

    let second = publish(&p, vec![Instruction::RefreshIds(vec![666])]).await;
    applied(&node, second).await;
    assert_eq!(receiver.attempts_at(second), ATTEMPTS as usize);
    let last = receiver.requests().last().unwrap().body.clone();
    assert_eq!(last["trigger"], "refresh_all", "escalated: {last}");
    assert_eq!(node.stats().escalations, 1);

    // The refresh-all fails too: the node stops advancing, reports itself
    // stalled and never skips the batch.
    let third = publish(&p, vec![Instruction::RefreshIds(vec![999])]).await;
    let mut states = node.watch_position();
    let stalled = within(
        Duration::from_secs(15),
        states.wait_for(|p| matches!(p.state, NodeState::Stalled { .. })),
    )
    .await
    .unwrap()
    .state
    .clone();
    assert!(!node.is_ready());
    assert!(node.applied() < third);
    let NodeState::Stalled {
        sequence, error, ..
    } = stalled
    else {
        unreachable!()
    };
    assert_eq!(sequence, third);
    assert!(error.contains("503"), "{error}");
}

#[tokio::test]
async fn webhook_escalates_a_404_at_once_and_retries_a_timeout() {
    let f = Fixture::new().await;
    let p = f.publisher();
    let receiver = Receiver::start(|n, body| match &body["instructions"][0]["ids"] {
        ids if *ids == json!([404]) => Reply::Status(404),
        ids if *ids == json!([7]) && n == 0 => Reply::Hang,
        _ => Reply::Status(200),
    })
    .await;
    let mut applier = settings(&receiver);
    if let ApplierSettings::Webhook(w) = &mut applier {
        w.timeout = Duration::from_secs(1);
    }
    let node = start_node(&f, "web", &applier, NewNodePolicy::Tail).await;

    let hanging = publish(&p, vec![Instruction::RefreshIds(vec![7])]).await;
    applied(&node, hanging).await;
    assert_eq!(receiver.attempts_at(hanging), 2, "timed out, then applied");
    assert_eq!((node.stats().retries, node.stats().escalations), (1, 0));

    let missing = publish(&p, vec![Instruction::RefreshIds(vec![404])]).await;
    applied(&node, missing).await;
    assert_eq!(receiver.attempts_at(missing), 1, "a 404 is not retried");
    assert_eq!(node.stats().escalations, 1);
    let last = receiver.requests().last().unwrap().body.clone();
    assert_eq!(last["trigger"], "refresh_all");
}
