//! The fleet view: nodes report their position to the presence bucket,
//! `read_all` and `fleet_status` read it back (stale when a reporter goes
//! silent, `stopped` after a clean stop), the real `invalog status` prints
//! it as JSON and a table with exit 0 when healthy and 5 when a node is not
//! ready or stale. `cluster`: a 3-server cluster shows the stream's leader
//! and replicas; `permissions`: the documented least-privilege users.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use invalog::fleet::{fleet_status, FleetStatus};
use invalog::presence::{read_all, Presence, PresenceSettings};
use invalog::{Node, RefresherName};
use serde_json::Value;
use tokio::process::Command;

use crate::agent_support::BIN;
use crate::support::{within, Fixture, Recorder, TestNode};

mod cluster;
mod permissions;

pub const BUCKET: &str = "fleet_test_nodes";
const INTERVAL: Duration = Duration::from_millis(100);
const LIMIT: Duration = Duration::from_secs(20);

fn settings(replicas: usize) -> PresenceSettings {
    PresenceSettings {
        bucket: BUCKET.into(),
        interval: INTERVAL,
        replicas,
    }
}

/// A node with its reporter; `media` is its media refresher's recorder.
struct Reporting {
    node: Arc<Node>,
    presence: Option<Presence>,
    media: Arc<Recorder>,
}

async fn reporting(f: &Fixture, name: &str) -> Reporting {
    let TestNode { node, media, .. } = f.node_with(name, |_| {}).await;
    let node = Arc::new(node);
    within(LIMIT, node.ready()).await.expect("ready");
    let refreshers = ["content", "media"].map(|r| RefresherName::new(r).unwrap());
    let presence = Presence::start(
        f.js.clone(),
        settings(1),
        &f.log.stream,
        node.clone(),
        refreshers.to_vec(),
    )
    .await
    .expect("presence starts");
    Reporting {
        node,
        presence: Some(presence),
        media,
    }
}

/// Retries `attempt` every 20 ms until it returns `Some`, failing after
/// [`LIMIT`].
async fn until<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> Fut,
) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within {LIMIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(f: &Fixture, stale_after: Duration) -> FleetStatus {
    fleet_status(&f.js, &f.log, BUCKET, stale_after)
        .await
        .expect("fleet status")
}

/// A client configuration with a `[presence]` table.
pub fn status_config(dir: &std::path::Path, urls: &[String], extra: &str) -> PathBuf {
    let path = dir.join("status.toml");
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let text = format!(
        "[nats]\nurls = [{}]\n{extra}\n[presence]\nbucket = \"{BUCKET}\"\ninterval = \"100ms\"\nstale_after = \"2s\"\n",
        urls.join(", ")
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `invalog status` with `args`; returns exit code, stdout, stderr.
pub async fn invalog_status(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = within(
        LIMIT,
        Command::new(BIN)
            .args(["status", "--config"])
            .arg(config)
            .args(args)
            .output(),
    )
    .await
    .unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn node<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == name)
        .unwrap_or_else(|| panic!("node {name} in {doc:#}"))
}

/// Reading the fleet while every reporter keeps writing lists every node,
/// every time (a listing through the KV's keys consumer once missed one).
#[tokio::test]
async fn every_node_is_listed_while_reports_keep_coming() {
    let f = Fixture::new().await;
    let mut nodes = Vec::new();
    for i in 0..5 {
        let TestNode { node, .. } = f.node_with(&format!("busy-{i}"), |_| {}).await;
        let node = Arc::new(node);
        let fast = PresenceSettings {
            interval: Duration::from_millis(10),
            ..settings(1)
        };
        let presence = Presence::start(f.js.clone(), fast, &f.log.stream, node.clone(), vec![])
            .await
            .expect("presence starts");
        nodes.push((node, presence));
    }
    for round in 0..100 {
        let reports = read_all(&f.js, BUCKET, &f.log.stream).await.unwrap();
        let names: Vec<&str> = reports.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(
            names,
            ["busy-0", "busy-1", "busy-2", "busy-3", "busy-4"],
            "round {round}"
        );
    }
    for (node, presence) in nodes {
        presence.stop().await.unwrap();
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn reports_are_read_back_and_a_silent_node_turns_stale() {
    let f = Fixture::new().await;
    let a = reporting(&f, "web-a").await;
    let mut b = reporting(&f, "web-b").await;
    let seq = f.publisher().refresh_ids("content", &[1]).await.unwrap();
    let seq = seq.sequence().unwrap();

    let reports = until("both reports show the applied sequence", || async {
        let reports = read_all(&f.js, BUCKET, &f.log.stream).await.unwrap();
        (reports.len() == 2 && reports.iter().all(|r| r.applied == seq)).then_some(reports)
    })
    .await;
    assert_eq!(reports[0].node, "web-a", "sorted by node id");
    assert_eq!(reports[1].node, "web-b");
    for r in &reports {
        assert_eq!(r.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(
            (r.state.as_str(), r.ready, r.reason.as_deref()),
            ("ready", true, None)
        );
        assert_eq!((r.stream_last, r.lag), (seq, 0));
        assert_eq!(r.refreshers, ["content", "media"]);
        assert!(r.started_at <= r.last_seen);
    }

    let fleet = status(&f, Duration::from_secs(5)).await;
    assert!(fleet.healthy(), "{fleet:#?}");
    assert_eq!(fleet.stream.last_sequence, seq);
    assert!(fleet.stream.oldest_at.is_some());
    assert!(fleet.nodes.iter().all(|n| !n.stale && n.lag == 0));

    // b's reporter dies without a word (its node keeps running): stale.
    drop(b.presence.take());
    // 20 report intervals: a loaded machine can delay a's reports by
    // hundreds of milliseconds without a's reporter being gone.
    let stale_after = Duration::from_secs(2);
    let fleet = until("web-b is stale", || async {
        let fleet = status(&f, stale_after).await;
        fleet.nodes[1].stale.then_some(fleet)
    })
    .await;
    assert!(!fleet.nodes[0].stale, "web-a still reports");
    assert!(!fleet.healthy());
    assert!(fleet.nodes[1].seen_ago > stale_after);

    // A message b has not applied (b's lag is measured against the stream
    // now, not against what b last reported).
    let next = f.publisher().refresh_ids("content", &[2]).await.unwrap();
    let next = next.sequence().unwrap();
    a.node.wait_applied(next).await.unwrap();
    let fleet = until("web-a reported the new message", || async {
        let fleet = status(&f, stale_after).await;
        (fleet.nodes[0].report.applied == next).then_some(fleet)
    })
    .await;
    assert_eq!((fleet.nodes[0].lag, fleet.nodes[1].lag), (0, next - seq));

    // A clean stop says so: not stale, and not unhealthy.
    a.presence.unwrap().stop().await.unwrap();
    let fleet = status(&f, stale_after).await;
    assert_eq!(fleet.nodes[0].report.state, "stopped");
    assert!(fleet.nodes[0].stopped() && fleet.nodes[0].healthy());
    within(LIMIT, async {
        while !status(&f, stale_after).await.nodes[0]
            .seen_ago
            .gt(&stale_after)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let fleet = status(&f, stale_after).await;
    assert!(!fleet.nodes[0].stale, "a stopped node never turns stale");
    b.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_status_binary_prints_json_and_a_table_and_exits_5_when_unhealthy() {
    let f = Fixture::new().await;
    let config = status_config(f.dir.path(), &[f.server.url()], "");

    // Before any node reported: the bucket is missing, a failure.
    let (code, _, stderr) = invalog_status(&config, &["--json"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(BUCKET), "{stderr}");

    let a = reporting(&f, "web-a").await;
    let mut b = reporting(&f, "web-b").await;
    let seq = f.publisher().refresh_ids("content", &[1]).await.unwrap();
    let seq = seq.sequence().unwrap();
    let doc = until("both nodes report the message", || async {
        let (code, stdout, stderr) = invalog_status(&config, &["--json"]).await;
        assert!(code == 0 || code == 5, "{code}: {stderr}");
        let doc: Value = serde_json::from_str(&stdout).expect("one JSON document");
        let applied = doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["applied"] == seq);
        (code == 0 && applied.count() == 2).then_some(doc)
    })
    .await;
    assert_eq!(doc["format"], 1);
    assert_eq!(doc["healthy"], true);
    assert_eq!(doc["stream"]["name"], "INVALOG");
    assert_eq!(doc["stream"]["last_sequence"], seq);
    assert_eq!(doc["stream"]["replicas"], 1);
    assert_eq!(doc["stale_after_seconds"], 2.0);
    for name in ["web-a", "web-b"] {
        let n = node(&doc, name);
        assert_eq!(n["state"], "ready");
        assert_eq!(
            (&n["ready"], &n["stale"], &n["lag"]),
            (&Value::from(true), &Value::from(false), &Value::from(0))
        );
        assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(n["refreshers"], serde_json::json!(["content", "media"]));
    }

    let (code, table, _) = invalog_status(&config, &[]).await;
    assert_eq!(code, 0, "{table}");
    let header = table.lines().find(|l| l.starts_with("NODE")).expect(&table);
    for column in [
        "STATE",
        "READY",
        "APPLIED",
        "LAG",
        "LAST SEEN",
        "VERSION",
        "REASON",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web-a ") && l.contains(" ready ")),
        "{table}"
    );
    assert!(table.contains("healthy: 2 node(s) ready"), "{table}");
    // One server, no cluster: the server's name, not a leader.
    let server = format!("SERVER     {}\n", f.server.name());
    assert!(table.contains(&server), "{table}");

    // b's media refresher fails, even its refresh-all: b stalls, exit 5.
    b.media.fail_calls.store(u32::MAX, Ordering::SeqCst);
    b.media.fail_refresh_all.store(u32::MAX, Ordering::SeqCst);
    f.publisher().refresh_ids("media", &[9]).await.unwrap();
    let doc = until("web-b reports itself stalled", || async {
        let (code, stdout, _) = invalog_status(&config, &["--json"]).await;
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        (code == 5 && node(&doc, "web-b")["state"] == "stalled").then_some(doc)
    })
    .await;
    assert_eq!(doc["healthy"], false);
    let stalled = node(&doc, "web-b");
    assert_eq!(
        (&stalled["ready"], &stalled["stale"]),
        (&Value::from(false), &Value::from(false))
    );
    assert!(
        stalled["reason"].as_str().unwrap().contains("media"),
        "{stalled:#}"
    );
    assert_eq!(node(&doc, "web-a")["healthy"], true);
    let (code, table, _) = invalog_status(&config, &[]).await;
    assert_eq!(code, 5);
    assert!(table.contains("UNHEALTHY: web-b not ready"), "{table}");

    // b recovers; then its reporter dies: stale, exit 5 again.
    b.media.fail_calls.store(0, Ordering::SeqCst);
    b.media.fail_refresh_all.store(0, Ordering::SeqCst);
    until("web-b ready again", || async {
        (invalog_status(&config, &["--json"]).await.0 == 0).then_some(())
    })
    .await;
    drop(b.presence.take());
    let doc = until("web-b is stale", || async {
        let (code, stdout, _) = invalog_status(&config, &["--json", "--stale-after", "2s"]).await;
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        (code == 5 && node(&doc, "web-b")["stale"] == true).then_some(doc)
    })
    .await;
    assert_eq!(
        node(&doc, "web-b")["ready"],
        true,
        "it was ready when last seen"
    );
    assert_eq!(node(&doc, "web-a")["stale"], false);
    let (code, table, _) = invalog_status(&config, &["--stale-after", "2s"]).await;
    assert_eq!(code, 5);
    assert!(
        table.contains("STALE") && table.contains("UNHEALTHY: web-b stale"),
        "{table}"
    );

    // A configuration error exits 2.
    let bad = status_config(f.dir.path(), &[f.server.url()], "[presense]\n");
    let (code, _, stderr) = invalog_status(&bad, &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("presense"), "{stderr}");
    a.node.shutdown().await.unwrap();
    b.node.shutdown().await.unwrap();
}

/// One bucket serves every stream on the server: the status of a stream
/// shows its own nodes only, and a report that names no stream (written by
/// an older invalog) is shown for every stream.
#[tokio::test]
async fn a_stream_shows_only_its_own_nodes_of_a_shared_bucket() {
    let f = Fixture::new().await;
    let demo_log = invalog::LogSettings {
        stream: "INVALOG_DEMO".into(),
        subject_prefix: "demo".into(),
        ..invalog::LogSettings::default()
    };
    invalog::provision(&f.js, &demo_log).await.unwrap();
    let ours = reporting(&f, "web-1").await;
    let demo_node = Node::start(
        f.js.clone(),
        demo_log.clone(),
        invalog::NodeSettings::new(invalog::NodeId::new("demo-1").unwrap()),
        invalog::Registry::new(),
        invalog::FileStore::new(f.checkpoint_path("demo-1")),
    )
    .await
    .unwrap();
    let demo_node = Arc::new(demo_node);
    let demo = Presence::start(
        f.js.clone(),
        settings(1),
        &demo_log.stream,
        demo_node.clone(),
        vec![],
    )
    .await
    .unwrap();
    // An older reporter's value: the same report without `stream`.
    let kv = f.js.get_key_value(BUCKET).await.unwrap();
    let mut old: Value = serde_json::from_slice(&kv.get("web-1").await.unwrap().unwrap()).unwrap();
    assert_eq!(old["stream"], f.log.stream.as_str());
    old.as_object_mut().unwrap().remove("stream");
    old["node"] = "legacy".into();
    kv.put("legacy", serde_json::to_vec(&old).unwrap().into())
        .await
        .unwrap();

    let names = |reports: Vec<invalog::presence::NodeReport>| -> Vec<String> {
        reports.into_iter().map(|r| r.node).collect()
    };
    let main = read_all(&f.js, BUCKET, &f.log.stream).await.unwrap();
    assert_eq!(names(main), ["legacy", "web-1"]);
    let other = read_all(&f.js, BUCKET, &demo_log.stream).await.unwrap();
    assert_eq!(names(other), ["demo-1", "legacy"]);
    let fleet = status(&f, LIMIT).await;
    let shown: Vec<&str> = fleet.nodes.iter().map(|n| n.report.node.as_str()).collect();
    assert_eq!(shown, ["legacy", "web-1"]);

    demo.stop().await.unwrap();
    demo_node.shutdown().await.unwrap();
    drop(ours);
}

/// A write that no stream answers (no leader during an election; here the
/// bucket's stream is deleted, which looks the same to the writer) is told
/// as such, not as a raw "no stream found for given subject".
#[tokio::test]
async fn a_write_no_stream_answers_says_the_bucket_has_no_leader() {
    let f = Fixture::new().await;
    let mut r = reporting(&f, "web-1").await;
    f.js.delete_stream(format!("KV_{BUCKET}")).await.unwrap();
    let error = r.presence.take().unwrap().stop().await.unwrap_err();
    assert!(
        matches!(error, invalog::presence::PresenceError::NoLeader { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("election in progress?"),
        "{error}"
    );
}
