//! `invalog probe` and `invalog replay` against a real server: the probe
//! times canaries on three live nodes (library and binary, table and JSON)
//! and reports a stalled node with a non-zero exit; a replay applies exactly
//! the asked range, in order, through a recording refresher and through the
//! binary's `command` applier, prints without applying on `--dry-run`, and
//! leaves the node's checkpoint file alone.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use invalog::node::NewNodePolicy;
use invalog::presence::{Presence, PresenceSettings};
use invalog::probe::{ProbeReport, ProbeSettings};
use invalog::replay::{Mode, ReplayEvent, ReplayRequest};
use invalog::{NodeState, PublisherSettings, RefresherName, Registry};
use serde_json::Value;
use tokio::process::Command;

use crate::support::{defs, eventually, within, Call, Fixture, Recorder, TestNode};

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

/// An agent configuration for `node` whose `content` and `media` refreshers
/// run `script`, with its checkpoint file at `checkpoint`.
fn agent_config(f: &Fixture, node: &str, script: &Path, checkpoint: &Path) -> PathBuf {
    let path = f.dir.path().join(format!("{node}.toml"));
    let applier = format!(
        "[refreshers.applier]\nkind = \"command\"\nprogram = \"{}\"\ntimeout = \"5s\"\n",
        script.display()
    );
    let text = format!(
        "[node]\nid = \"{node}\"\n\n[nats]\nurls = [\"{url}\"]\n\n[checkpoint]\nstore = \"file\"\npath = \"{cp}\"\n\n\
         [[refreshers]]\nname = \"content\"\nid = \"00000000-0000-0000-0000-000000000001\"\n{applier}\n\
         [[refreshers]]\nname = \"media\"\nid = \"00000000-0000-0000-0000-000000000002\"\n{applier}",
        url = f.server.url(),
        cp = checkpoint.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A script that appends its stdin (one batch) and a newline to `out`.
fn recording_script(f: &Fixture, out: &Path) -> PathBuf {
    let script = f.dir.path().join("apply.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncat >> {0}\necho >> {0}\n", out.display()),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    script
}

async fn invalog(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
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
    let presence = Presence::start(f.js.clone(), settings, node.clone(), vec![])
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
        "1s",
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
    assert!(
        stdout.contains("MISSED within 1s: c missed 4 (first: canary 0)"),
        "{stdout}"
    );
}

/// Publishes content ids 1..=4 and media id 5 (sequences 1..=5).
async fn publish_five(f: &Fixture) {
    let p = f.publisher();
    for id in 1..=4 {
        p.refresh_ids("content", &[id]).await.unwrap();
    }
    p.refresh_ids("media", &[5]).await.unwrap();
}

#[tokio::test]
async fn a_replay_applies_exactly_the_range_in_order_once() {
    let f = Fixture::new().await;
    publish_five(&f).await;
    let content = Arc::new(Recorder::default());
    let mut registry = Registry::new();
    registry
        .register_arc(defs()[0].clone(), content.clone())
        .unwrap();
    let request = ReplayRequest {
        from: 2,
        to: Some(5),
        refreshers: vec![],
        stop_on_failure: false,
    };
    let mut seen = Vec::new();
    let summary = invalog::replay::replay(&f.js, &f.log, Mode::Apply(&registry), &request, |e| {
        if let ReplayEvent::Message { entry, outcome } = e {
            seen.push((entry.sequence, outcome.name()));
        }
    })
    .await
    .unwrap();
    assert_eq!(
        content.calls(),
        [Call::Ids(vec![2]), Call::Ids(vec![3]), Call::Ids(vec![4])]
    );
    assert_eq!(
        seen,
        [
            (2, "applied"),
            (3, "applied"),
            (4, "applied"),
            (5, "not_hosted")
        ]
    );
    assert_eq!((summary.applied, summary.not_hosted, summary.to), (3, 1, 5));
    assert!(summary.is_clean());

    // A failure is reported, not retried; the replay goes on, or stops.
    content.fail_calls.store(1, Ordering::SeqCst);
    let only_content = ReplayRequest {
        to: Some(3),
        refreshers: vec![RefresherName::new("content").unwrap()],
        ..request.clone()
    };
    let summary =
        invalog::replay::replay(&f.js, &f.log, Mode::Apply(&registry), &only_content, |_| {})
            .await
            .unwrap();
    assert_eq!((summary.failed, summary.applied), (1, 1));
    assert!(!summary.is_clean());
    content.fail_calls.store(1, Ordering::SeqCst);
    let fail_fast = ReplayRequest {
        stop_on_failure: true,
        ..only_content.clone()
    };
    let summary =
        invalog::replay::replay(&f.js, &f.log, Mode::Apply(&registry), &fail_fast, |_| {})
            .await
            .unwrap();
    assert_eq!(
        (summary.failed, summary.applied, summary.stopped_at),
        (1, 0, Some(2))
    );

    // Dry run: nothing applied. Out of range and unknown refreshers: errors.
    let before = content.calls().len();
    let summary = invalog::replay::replay(
        &f.js,
        &f.log,
        Mode::DryRun { hosted: None },
        &request,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((summary.would_apply, content.calls().len()), (4, before));
    let beyond = ReplayRequest {
        from: 9,
        to: None,
        ..request.clone()
    };
    let error = invalog::replay::replay(&f.js, &f.log, Mode::Apply(&registry), &beyond, |_| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("last sequence is 5"), "{error}");
    let media = ReplayRequest {
        refreshers: vec![RefresherName::new("media").unwrap()],
        ..request
    };
    assert!(
        invalog::replay::replay(&f.js, &f.log, Mode::Apply(&registry), &media, |_| {})
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_replay_command_applies_the_range_and_leaves_the_checkpoint_alone() {
    let f = Fixture::new().await;
    publish_five(&f).await;
    // A node that applied everything and stored its checkpoint.
    let checkpoint = f.checkpoint_path("web-r");
    let node = f.node("web-r", NewNodePolicy::ReplayAll).await;
    node.wait_applied(5).await;
    node.node.shutdown().await.unwrap();
    let stored = std::fs::read(&checkpoint).unwrap();
    let modified = std::fs::metadata(&checkpoint).unwrap().modified().unwrap();

    let out = f.dir.path().join("applied.jsonl");
    let script = recording_script(&f, &out);
    let config = agent_config(&f, "web-r", &script, &checkpoint);
    let applied = || -> Vec<Value> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };

    // Dry run: one line per message, nothing applied.
    let (code, stdout, stderr) = invalog(
        &["replay", "--from-seq", "2", "--to-seq", "4", "--dry-run"],
        &config,
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("would apply"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].trim_start().starts_with("2 ") && lines[0].contains("refresh_ids [2]"),
        "{stdout}"
    );
    assert!(stdout.contains("dry run of 2..=4"), "{stdout}");
    assert!(applied().is_empty());

    // The real thing: sequences 2, 3, 4 in order, through the command applier.
    let (code, stdout, stderr) =
        invalog(&["replay", "--from-seq", "2", "--to-seq", "4"], &config).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let sequences: Vec<u64> = applied()
        .iter()
        .map(|b| b["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [2, 3, 4]);
    assert_eq!(
        applied()[0]["instructions"][0]["ids"],
        serde_json::json!([2])
    );

    // JSON lines, filtered to media: one message, then the summary.
    let args = [
        "replay",
        "--from-seq",
        "1",
        "--refresher",
        "media",
        "--json",
    ];
    let (code, stdout, stderr) = invalog(&args, &config).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        (lines[0]["sequence"].as_u64(), lines[0]["outcome"].as_str()),
        (Some(5), Some("applied"))
    );
    assert_eq!(lines[0]["batch"]["refresher"]["name"], "media");
    let summary = &lines[1]["summary"];
    assert_eq!(
        (
            summary["applied"].as_u64(),
            summary["filtered_out"].as_u64()
        ),
        (Some(1), Some(4))
    );
    assert_eq!(summary["clean"], true);
    assert_eq!(applied().len(), 4);

    // The node's stored sequence did not move.
    assert_eq!(std::fs::read(&checkpoint).unwrap(), stored);
    assert_eq!(
        std::fs::metadata(&checkpoint).unwrap().modified().unwrap(),
        modified
    );

    // Bad ranges are argument errors.
    let (code, _, stderr) = invalog(&["replay", "--from-seq", "4", "--to-seq", "2"], &config).await;
    assert_eq!(code, Some(2), "{stderr}");
}

#[tokio::test]
async fn sequences_gone_from_the_stream_are_reported_missing() {
    let f = Fixture::with_log(invalog::LogSettings {
        max_messages: Some(3),
        ..invalog::LogSettings::default()
    })
    .await;
    publish_five(&f).await;
    let request = ReplayRequest {
        from: 1,
        to: None,
        refreshers: vec![],
        stop_on_failure: false,
    };
    let mut events = Vec::new();
    let summary = invalog::replay::replay(
        &f.js,
        &f.log,
        Mode::DryRun { hosted: None },
        &request,
        |e| {
            events.push(match e {
                ReplayEvent::Missing { from, to } => format!("missing {from}..={to}"),
                ReplayEvent::Message { entry, outcome } => {
                    format!("{} {}", entry.sequence, outcome.name())
                }
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(
        events,
        [
            "missing 1..=2",
            "3 would_apply",
            "4 would_apply",
            "5 would_apply"
        ]
    );
    assert_eq!((summary.missing_count(), summary.stream_first), (2, 3));
    assert!(!summary.is_clean());
}
