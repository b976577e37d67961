//! `invalog probe` and `invalog replay` against a real server. The probe
//! (here) times canaries on three live nodes — library and binary, table and
//! JSON — and reports a stalled node with exit code 6; the replay tests are
//! in `probe_replay/replay.rs`.

mod replay;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use invalog::node::NewNodePolicy;
use invalog::presence::{Presence, PresenceSettings};
use invalog::probe::{ProbeReport, ProbeSettings};
use invalog::{NodeState, PublisherSettings};
use serde_json::Value;
use tokio::process::Command;

use crate::support::{eventually, within, Fixture, TestNode};

const BIN: &str = env!("CARGO_BIN_EXE_invalog");

fn client_config(f: &Fixture) -> PathBuf {
    let path = f.dir.path().join("probe-client.toml");
    let text = format!(
        "[nats]\nurls = [\"{}\"]\n\n[publisher]\norigin = \"probe-test\"\n",
        f.server.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub(super) async fn invalog(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let out = within(
        Duration::from_secs(60),
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(config)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status.code(), stdout, stderr)
}

fn assert_ordered(what: &str, v: &Value) {
    let (p50, p99, max) = (
        v["p50_ms"].as_f64(),
        v["p99_ms"].as_f64(),
        v["max_ms"].as_f64(),
    );
    let (p50, p99, max) = (p50.unwrap(), p99.unwrap(), max.unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{what}: {v}");
}

/// Starts a node that reports its presence every 200 ms.
async fn reporting_node(f: &Fixture, name: &str) -> (Arc<invalog::Node>, Presence) {
    let TestNode { node, .. } = f.node(name, NewNodePolicy::Tail).await;
    node.ready().await.unwrap();
    let node = Arc::new(node);
    let settings = PresenceSettings {
        interval: Duration::from_millis(200),
        ..PresenceSettings::default()
    };
    let presence = Presence::start(f.js.clone(), settings, &f.log.stream, node.clone(), vec![])
        .await
        .unwrap();
    (node, presence)
}

#[tokio::test]
async fn the_probe_times_every_canary_on_three_live_nodes() {
    let f = Fixture::new().await;
    let mut nodes = Vec::new();
    for name in ["web-1", "web-2", "web-3"] {
        nodes.push(reporting_node(&f, name).await);
    }
    // Library: a report per node, every canary, ordered percentiles.
    let settings = ProbeSettings {
        rate: 50.0,
        count: 20,
        within: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        expected_nodes: vec!["web-1".into(), "web-2".into(), "web-3".into()],
    };
    let report: ProbeReport = invalog::probe::run(
        &f.js,
        &f.log,
        PublisherSettings::new("probe-test"),
        &settings,
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(
        (report.sent, report.published, report.all_within),
        (20, 20, 20)
    );
    let names: Vec<&str> = report.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3"]);
    for n in &report.nodes {
        assert_eq!((n.expected, n.applied, n.missed), (20, 20, 0), "{n:#?}");
        let l = &n.latency;
        assert!(l.p50 <= l.p99 && l.p99 <= l.max && l.max.is_some(), "{l:?}");
    }
    assert!(report.fleet.p50 <= report.fleet.p99 && report.fleet.p99 <= report.fleet.max);

    // No node known in advance, one canary: the nodes are found by their
    // answers (the probe waits its timeout for them).
    let one = ProbeSettings {
        count: 1,
        timeout: Duration::from_secs(2),
        expected_nodes: vec![],
        ..settings.clone()
    };
    let report = invalog::probe::run(&f.js, &f.log, PublisherSettings::new("probe-test"), &one)
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(report.nodes.len(), 3);
    assert!(report.nodes.iter().all(|n| !n.listed && n.applied == 1));

    // Binary, JSON: the nodes come from presence; exit 0.
    let config = client_config(&f);
    let args = [
        "probe",
        "--rate",
        "40",
        "--count",
        "20",
        "--timeout",
        "10s",
        "--within",
        "5s",
        "--json",
    ];
    let (code, stdout, stderr) = invalog(&args, &config).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["format"], 1);
    assert_eq!(json["ok"], true);
    assert_eq!(json["canaries"]["published"], 20);
    assert_eq!(json["fleet"]["nodes"], 3);
    assert_eq!(json["fleet"]["applied_on_all_within"], 20);
    assert_ordered("fleet", &json["fleet"]["latency"]);
    for node in json["nodes"].as_array().unwrap() {
        assert_eq!(node["listed"], true, "{node}");
        assert_eq!(
            (node["applied"].as_u64(), node["missed"].as_u64()),
            (Some(20), Some(0))
        );
        assert_ordered(node["node"].as_str().unwrap(), &node["latency"]);
    }

    // Binary, table.
    let (code, stdout, _) = invalog(
        &["probe", "--rate", "40", "--count", "8", "--within", "5s"],
        &config,
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("8 of 8 canaries applied on all 3 node(s) within 5s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK: every canary reached every live node"),
        "{stdout}"
    );
    for (_, presence) in nodes {
        presence.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_stalled_node_misses_canaries_and_the_probe_exits_6() {
    let f = Fixture::new().await;
    let a = f.node("a", NewNodePolicy::Tail).await;
    let b = f.node("b", NewNodePolicy::Tail).await;
    let c = f.node("c", NewNodePolicy::Tail).await;
    for n in [&a, &b, &c] {
        n.ready().await;
    }
    c.content.fail_calls.store(u32::MAX, Ordering::SeqCst);
    c.content.fail_refresh_all.store(u32::MAX, Ordering::SeqCst);
    f.publisher().refresh_ids("content", &[1]).await.unwrap();
    eventually(Duration::from_secs(10), "c stalls", || {
        matches!(c.node.state(), NodeState::Stalled { .. })
    })
    .await;

    let config = client_config(&f);
    let args = [
        "probe",
        "--rate",
        "40",
        "--count",
        "10",
        "--timeout",
        "3s",
        "--node",
        "a",
        "--node",
        "b",
        "--node",
        "c",
        "--json",
    ];
    let (code, stdout, stderr) = invalog(&args, &config).await;
    assert_eq!(code, Some(6), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["fleet"]["applied_on_all_within_timeout"], 0);
    let nodes = json["nodes"].as_array().unwrap();
    let by_name = |name: &str| nodes.iter().find(|n| n["node"] == name).unwrap().clone();
    assert_eq!(by_name("a")["missed"], 0);
    assert_eq!(by_name("b")["missed"], 0);
    let stalled = by_name("c");
    assert_eq!(
        (stalled["applied"].as_u64(), stalled["missed"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(stalled["first_missed"], 0);
    assert_eq!(stalled["latency"]["p50_ms"], Value::Null);

    let args = [
        "probe",
        "--rate",
        "40",
        "--count",
        "4",
        "--timeout",
        "1s",
        "--node",
        "c",
    ];
    let (code, stdout, _) = invalog(&args, &config).await;
    assert_eq!(code, Some(6), "{stdout}");
    assert!(stdout.contains("c missed 4 (first: canary 0)"), "{stdout}");
}
