//! `invalog replay` against a real server: a replay applies exactly the
//! asked range, in order, once, through a recording refresher (library) and
//! through the binary's `command` applier; `--dry-run` prints without
//! applying; failures are reported, not retried; sequences gone from the
//! stream are reported missing; the node's checkpoint file is left alone.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use invalog::node::NewNodePolicy;
use invalog::replay::{Mode, ReplayEvent, ReplayRequest};
use invalog::{RefresherName, Registry};
use serde_json::Value;

use super::invalog;
use crate::support::{defs, Call, Fixture, Recorder};

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

/// Publishes content ids 1..=4 and media id 5 (sequences 1..=5).
async fn publish_five(f: &Fixture) {
    let p = f.publisher();
    for id in 1..=4 {
        p.refresh_ids("content", &[id]).await.unwrap();
    }
    p.refresh_ids("media", &[5]).await.unwrap();
}

fn whole_log() -> ReplayRequest {
    ReplayRequest {
        from: 1,
        to: None,
        refreshers: vec![],
        stop_on_failure: false,
    }
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
        ..whole_log()
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
    let apply = Mode::Apply(&registry);
    let summary = invalog::replay::replay(&f.js, &f.log, apply, &only_content, |_| {})
        .await
        .unwrap();
    assert_eq!((summary.failed, summary.applied), (1, 1));
    assert!(!summary.is_clean());
    content.fail_calls.store(1, Ordering::SeqCst);
    let fail_fast = ReplayRequest {
        stop_on_failure: true,
        ..only_content.clone()
    };
    let summary = invalog::replay::replay(&f.js, &f.log, apply, &fail_fast, |_| {})
        .await
        .unwrap();
    assert_eq!(
        (summary.failed, summary.applied, summary.stopped_at),
        (1, 0, Some(2))
    );

    // Dry run: nothing applied. Out of range and unknown refreshers: errors.
    let before = content.calls().len();
    let dry = Mode::DryRun {
        hosted: None,
        lookahead: 0,
        node: None,
    };
    let summary = invalog::replay::replay(&f.js, &f.log, dry, &request, |_| {})
        .await
        .unwrap();
    assert_eq!((summary.would_apply, content.calls().len()), (4, before));
    let beyond = ReplayRequest {
        from: 9,
        ..whole_log()
    };
    let error = invalog::replay::replay(&f.js, &f.log, apply, &beyond, |_| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("last sequence is 5"), "{error}");
    let media = ReplayRequest {
        refreshers: vec![RefresherName::new("media").unwrap()],
        ..request
    };
    assert!(
        invalog::replay::replay(&f.js, &f.log, apply, &media, |_| {})
            .await
            .is_err()
    );
}

#[tokio::test]
async fn sequences_gone_from_the_stream_are_reported_missing() {
    let f = Fixture::with_log(invalog::LogSettings {
        max_messages: Some(3),
        ..invalog::LogSettings::default()
    })
    .await;
    publish_five(&f).await;
    let mut events = Vec::new();
    let dry = Mode::DryRun {
        hosted: None,
        lookahead: 0,
        node: None,
    };
    let summary = invalog::replay::replay(&f.js, &f.log, dry, &whole_log(), |e| {
        events.push(match e {
            ReplayEvent::Missing { from, to } => format!("missing {from}..={to}"),
            ReplayEvent::Message { entry, outcome } => {
                format!("{} {}", entry.sequence, outcome.name())
            }
        })
    })
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
    let args = ["replay", "--from-seq", "2", "--to-seq", "4", "--dry-run"];
    let (code, stdout, stderr) = invalog(&args, &config).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("would apply"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].trim_start().starts_with("2 "), "{stdout}");
    assert!(lines[0].contains("refresh_ids [2]"), "{stdout}");
    assert!(stdout.contains("dry run of 2..=4"), "{stdout}");
    assert!(applied().is_empty());
    // `history` shows the same messages in the same columns (RESULT comes
    // where history has WHAT).
    let args = ["history", "--from-seq", "2", "--to-seq", "4"];
    let (code, history, stderr) = invalog(&args, &config).await;
    assert_eq!(code, Some(0), "{history}\n{stderr}");
    let (h, r) = (
        history.lines().next().unwrap(),
        stdout.lines().next().unwrap(),
    );
    assert!(
        h.starts_with("SEQ  TIME") && r.starts_with("SEQ  TIME"),
        "{h}\n{r}"
    );
    let cut = h.find("WHAT").unwrap();
    assert_eq!(r.find("RESULT"), Some(cut), "{history}\n{stdout}");
    for (hl, rl) in history.lines().skip(1).zip(&lines) {
        assert_eq!(hl[..cut], rl[..cut], "{history}\n{stdout}");
    }

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
    assert_eq!(lines[0]["sequence"], 5);
    assert_eq!(lines[0]["outcome"], "applied");
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

    // Bad ranges are argument errors; a range past the end fails.
    let (code, _, stderr) = invalog(&["replay", "--from-seq", "4", "--to-seq", "2"], &config).await;
    assert_eq!(code, Some(2), "{stderr}");
    let args = ["replay", "--from-seq", "1", "--refresher", "navigation"];
    let (code, _, stderr) = invalog(&args, &config).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("`navigation` is not configured"),
        "{stderr}"
    );
    let (code, stdout, stderr) = invalog(&["replay", "--from-seq", "9"], &config).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("last sequence is 5") && stdout.is_empty(),
        "{stdout}\n{stderr}"
    );
}
