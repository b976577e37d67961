//! The agent's HTTP API (`invalog_agent::http::serve`) on 127.0.0.1:0
//! around a real node and nats-server, exercised with reqwest: `/healthz`,
//! `/readyz` while catching up a backlog, stalled and fenced, `/applied`
//! (read-your-writes, timeout, bad input, shutdown), `/metrics` parsed line
//! by line as OpenMetrics text, and `/status`.

pub mod kit;
mod limits;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use invalog::model::Instruction;
use invalog::{Publisher, PublisherSettings};
use serde_json::Value;
use uuid::Uuid;

use crate::support::{defs, within, Fixture, Recorder};
use kit::{start_node, until, Api, Gate};

#[tokio::test]
async fn endpoints_of_a_node_that_is_caught_up() {
    let f = Fixture::new().await;
    let content = Arc::new(Recorder::default());
    let node = start_node(&f, "web-1", content.clone(), |_| {}).await;
    let api = Api::serve(&f, &node).await;
    assert_eq!(api.get("/healthz").await, (200, "ok".to_owned()));
    within(Duration::from_secs(10), node.ready()).await.unwrap();
    let (status, ready) = api.json("/readyz").await;
    assert_eq!(
        (status, &ready["ready"], &ready["state"]),
        (200, &true.into(), &"ready".into())
    );

    let p = f.publisher();
    p.refresh_ids("content", &[1]).await.unwrap();
    p.refresh_keys("content", &["home", "about"]).await.unwrap();
    p.refresh_ids("content", &[2, 3]).await.unwrap();
    let last = p.refresh_all("other").await.unwrap().sequence().unwrap();
    assert_eq!(last, 4);
    let (status, applied) = api.json(&format!("/applied?seq={last}&timeout=5s")).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(
        (&applied["applied"], &applied["sequence"]),
        (&true.into(), &last.into())
    );

    let m = api.metrics().await;
    for (series, value) in [
        ("invalog_messages_applied_total{refresher=\"content\"}", 3.0),
        ("invalog_messages_applied_total{refresher=\"media\"}", 0.0),
        (
            "invalog_instructions_applied_total{refresher=\"content\"}",
            5.0,
        ),
        ("invalog_escalations_total{refresher=\"content\"}", 0.0),
        ("invalog_superseded_total{refresher=\"content\"}", 0.0),
        ("invalog_unhosted_messages_total", 1.0),
        ("invalog_decode_errors_total", 0.0),
        ("invalog_retries_total", 0.0),
        ("invalog_cold_boots_total", 0.0),
        ("invalog_gaps_total", 0.0),
        ("invalog_checkpoint_errors_total", 0.0),
        ("invalog_applied_sequence", 4.0),
        ("invalog_stream_last_sequence", 4.0),
        ("invalog_lag_messages", 0.0),
        ("invalog_lag_seconds", 0.0),
        ("invalog_ready", 1.0),
        ("invalog_state{state=\"ready\"}", 1.0),
        ("invalog_state{state=\"catching_up\"}", 0.0),
        ("invalog_nats_reconnects_total", 0.0),
        ("invalog_nats_connected", 1.0),
    ] {
        assert_eq!(m.get(series), Some(&value), "{series} in {m:?}");
    }
    until("the applied sequence is stored", || async {
        (api.metrics().await["invalog_stored_sequence"] == 4.0).then_some(())
    })
    .await;
    assert!(m["invalog_apply_duration_seconds_count"] >= 3.0);
    assert!(m["invalog_nats_received_bytes_total"] > 0.0);
    let build = format!(
        "invalog_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m.get(&build), Some(&1.0));

    let (status, s) = api.json("/status").await;
    assert_eq!(status, 200);
    assert_eq!(s["node_id"], "web-1");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["stream"], f.log.stream.as_str());
    assert_eq!(
        (&s["state"], &s["ready"], &s["reason"]),
        (&"ready".into(), &true.into(), &Value::Null)
    );
    assert_eq!(s["sequences"]["applied"], 4);
    assert_eq!(s["sequences"]["stream_last"], 4);
    assert_eq!(
        (&s["lag"]["messages"], &s["lag"]["seconds"]),
        (&0.into(), &0.0.into())
    );
    let published = s["last_applied_published_at"].as_str().unwrap();
    time::OffsetDateTime::parse(published, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(s["counters"]["messages_applied"], 3);
    assert_eq!(s["counters"]["unhosted_messages"], 1);
    assert_eq!(s["counters"]["superseded"], 0);
    let refresher = &s["refreshers"][0];
    assert_eq!(refresher["name"], "content");
    assert_eq!(refresher["id"], Uuid::from_u128(1).to_string());
    assert_eq!(
        (
            &refresher["messages_applied"],
            &refresher["instructions_applied"]
        ),
        (&3.into(), &5.into())
    );
    assert_eq!(refresher["superseded"], 0);
    assert_eq!(
        (&s["nats"]["state"], &s["nats"]["reconnects"]),
        (&"connected".into(), &0.into())
    );
    let server = &s["nats"]["server"];
    assert_eq!(server["name"], f.server.name());
    assert!(server["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(server["address"]
        .as_str()
        .is_some_and(|a| a.ends_with(&format!(":{}", f.server.port()))));
    assert!(s["uptime_seconds"].as_u64().is_some() && s["started_at"].is_string());
    assert_eq!(api.json("/nope").await.0, 404);
}

#[tokio::test]
async fn readyz_is_503_while_a_late_node_catches_up_a_backlog() {
    let f = Fixture::new().await;
    let mut settings = PublisherSettings::new("backlog");
    settings.max_units_per_message = 100;
    let p = Publisher::new(f.js.clone(), f.log.clone(), settings, defs());
    let mut work = p.unit_of_work();
    work.add(
        "content",
        vec![Instruction::RefreshIds((0..20_000).collect())],
    );
    let last = work.commit().await.unwrap().sequence().unwrap();
    assert_eq!(last, 200);

    let gate = Gate::closed();
    let node = start_node(&f, "late", gate.clone(), |_| {}).await;
    let api = Api::serve(&f, &node).await;
    let readyz = until("the node catches up", || async {
        let (status, body) = api.json("/readyz").await;
        assert_eq!(status, 503, "{body}");
        (body["state"] == "catching_up").then_some(body)
    })
    .await;
    assert_eq!(readyz["reason"], format!("catching up to sequence {last}"));
    assert_eq!(readyz["ready"], false);

    gate.allow(1);
    let m = until("the first message is applied", || async {
        let m = api.metrics().await;
        (m["invalog_applied_sequence"] == 1.0).then_some(m)
    })
    .await;
    assert_eq!(m["invalog_lag_messages"], (last - 1) as f64);
    assert!(m["invalog_lag_seconds"] > 0.0, "{m:?}");
    assert_eq!(m["invalog_ready"], 0.0);
    assert_eq!(m["invalog_state{state=\"catching_up\"}"], 1.0);
    assert_eq!(
        m["invalog_instructions_applied_total{refresher=\"content\"}"],
        100.0
    );

    let (status, late) = api
        .json(&format!("/applied?seq={last}&timeout=100ms"))
        .await;
    assert_eq!(status, 504, "{late}");
    assert_eq!(
        (&late["applied"], &late["applied_sequence"]),
        (&false.into(), &1.into())
    );
    assert_eq!(late["timeout"], "100ms");
    let (_, s) = api.json("/status").await;
    assert_eq!(
        (&s["ready"], &s["reason"]),
        (&false.into(), &readyz["reason"])
    );

    gate.open();
    let (status, applied) = api.json(&format!("/applied?seq={last}&timeout=10s")).await;
    assert_eq!(
        (status, &applied["applied"]),
        (200, &true.into()),
        "{applied}"
    );
    until("/readyz answers 200", || async {
        (api.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn readyz_reports_stalled_and_fenced_nodes() {
    let mut f = Fixture::new().await;
    let failing = Arc::new(Recorder::default());
    failing.fail_calls.store(u32::MAX, Ordering::SeqCst);
    failing.fail_refresh_all.store(u32::MAX, Ordering::SeqCst);
    let stalled = start_node(&f, "stalled", failing, |_| {}).await;
    let fenced = start_node(&f, "fenced", Arc::new(Recorder::default()), |s| {
        s.fence.max_disconnected = Some(Duration::from_secs(1));
    })
    .await;
    let (a, b) = (
        Api::serve(&f, &stalled).await,
        Api::serve(&f, &fenced).await,
    );
    within(Duration::from_secs(10), fenced.ready())
        .await
        .unwrap();
    assert_eq!(b.get("/readyz").await.0, 200);

    let seq = f
        .publisher()
        .refresh_ids("content", &[7])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    let reason = until("the node stalls", || async {
        let (status, body) = a.json("/readyz").await;
        (body["state"] == "stalled").then(|| {
            assert_eq!(status, 503, "{body}");
            body["reason"].clone()
        })
    })
    .await;
    let reason = reason.as_str().unwrap().to_owned();
    assert!(
        reason.starts_with("stalled: refresher `content` keeps failing at sequence 1"),
        "{reason}"
    );
    let m = a.metrics().await;
    assert_eq!(
        (m["invalog_ready"], m["invalog_state{state=\"stalled\"}"]),
        (0.0, 1.0)
    );
    assert!(m["invalog_retries_total"] > 0.0);
    assert_eq!(a.json("/status").await.1["reason"], reason.as_str());
    assert_eq!(b.json(&format!("/applied?seq={seq}")).await.0, 200);

    f.server.kill().unwrap();
    let reason = until("the node fences itself", || async {
        let (status, body) = b.json("/readyz").await;
        (status == 503).then(|| body["reason"].as_str().unwrap().to_owned())
    })
    .await;
    assert!(
        reason.starts_with("fenced: the stream has not been reachable"),
        "{reason}"
    );
    let m = b.metrics().await;
    assert_eq!(
        (m["invalog_ready"], m["invalog_state{state=\"ready\"}"]),
        (0.0, 1.0)
    );
    assert_eq!(m["invalog_nats_connected"], 0.0);
    let (_, s) = b.json("/status").await;
    assert_eq!((&s["state"], &s["ready"]), (&"ready".into(), &false.into()));
    assert_ne!(s["nats"]["state"], "connected");

    // Back: the client reconnects (the node's own recovery is pinned by
    // `recovery::a_node_cut_off_from_nats_fences_itself_then_recovers`).
    f.server.restart().await.unwrap();
    let m = until("reconnected", || async {
        let m = b.metrics().await;
        (m["invalog_nats_connected"] == 1.0).then_some(m)
    })
    .await;
    assert_eq!(m["invalog_nats_reconnects_total"], 1.0);
    assert_eq!(b.json("/status").await.1["nats"]["reconnects"], 1);
}

#[tokio::test]
async fn applied_rejects_bad_input_and_ends_on_stop_and_shutdown() {
    let f = Fixture::new().await;
    let node = start_node(&f, "web-2", Arc::new(Recorder::default()), |_| {}).await;
    let mut api = Api::serve(&f, &node).await;
    for (query, message) in [
        ("", "missing query parameter `token`"),
        ("?token=42", "bad token `42`"),
        ("?seq=abc", "bad `seq` \"abc\""),
        ("?seq=-3", "bad `seq` \"-3\""),
        ("?seq=1&timeout=soon", "bad `timeout` \"soon\""),
        (
            "?seq=1&timeout=2m",
            "`timeout` 2m is over the maximum of 1m",
        ),
    ] {
        let (status, body) = api.json(&format!("/applied{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(message),
            "{query}: {body}"
        );
    }
    let (status, body) = api.json("/applied?seq=0").await;
    assert_eq!((status, &body["applied"]), (200, &true.into()));

    // A pending wait ends with 503 when the server shuts down.
    let pending = tokio::spawn({
        let (http, url) = (
            api.http.clone(),
            format!("{}/applied?seq=999&timeout=60s", api.base),
        );
        async move { http.get(url).send().await?.text().await }
    });
    assert_eq!(api.get("/healthz").await.0, 200);
    api.stop.take().unwrap().send(()).unwrap();
    let served = within(Duration::from_secs(5), &mut api.server).await;
    served.unwrap().expect("serve returns Ok");
    // (Had the shutdown won the race against the request's arrival, the
    // connection would be refused instead: also fine.)
    if let Ok(body) = within(Duration::from_secs(5), pending).await.unwrap() {
        assert!(body.contains("shutting down"), "{body}");
    }

    // A stopped node answers 503.
    let api = Api::serve(&f, &node).await;
    node.shutdown().await.unwrap();
    let (status, body) = api.json("/applied?seq=999&timeout=5s").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("stopped"),
        "{body}"
    );
    assert_eq!(api.json("/readyz").await.1["reason"], "stopped");
}
