//! A non-Rust publisher: `examples/python/publish.py`, written only from
//! docs/wire-format.md with nats-py, publishes to a real server while the
//! real `invalog agent` runs with a webhook applier; the agent applies
//! exactly the batches the script reports, with their instructions and
//! provenance, decodes every message (no decode errors, no escalations), and
//! the script's retried batch is stored once.
//!
//! nats-py is found under `$INVALOG_CACHE_DIR/py`, `$INVALOG_CACHE/py` or
//! `<crate>/.cache/py` (installed there with pip on first run when missing;
//! by hand: `python3 -m pip install --target .cache/py nats-py`,
//! which `.ci/run` does) or wherever `python3` already finds it. Without it
//! the test fails with that command: it is never skipped.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::agent_support::{free_port, webhook, Agent, AgentConfig, Hook};
use crate::support::{within, Fixture};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/publish.py");
const CONTENT_ID: &str = "00000000-0000-0000-0000-000000000001";
const MEDIA_ID: &str = "00000000-0000-0000-0000-000000000002";

/// `PYTHONPATH` for the script: the first candidate directory that holds
/// nats-py, then whatever `PYTHONPATH` already says.
fn python_path() -> String {
    let mut candidates: Vec<PathBuf> = ["INVALOG_CACHE_DIR", "INVALOG_CACHE"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|dir| PathBuf::from(dir).join("py"))
        .collect();
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/py"));
    if !candidates.iter().any(|dir| dir.join("nats").is_dir()) {
        // First run on a fresh machine: install nats-py where the test looks,
        // as `cargo test` alone must set everything up.
        let target = candidates.last().expect("the crate's .cache/py");
        eprintln!("installing nats-py into {} (pip)", target.display());
        let _ = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(target)
            .arg("nats-py")
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .status();
    }
    let mut parts: Vec<String> = candidates
        .iter()
        .filter(|dir| dir.join("nats").is_dir())
        .take(1)
        .map(|dir| dir.display().to_string())
        .collect();
    parts.extend(std::env::var("PYTHONPATH").ok().filter(|p| !p.is_empty()));
    parts.join(":")
}

/// Waits until the agent's `/readyz` answers 200.
pub async fn ready(agent: &Agent) {
    while agent.get("/readyz").await.map(|(code, _)| code) != Some(200) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_python_publisher_written_from_the_docs_is_applied_by_the_agent() {
    let f = Fixture::new().await;
    let (hook, hook_port) = Hook::start(Duration::ZERO).await;
    let http_port = free_port();
    let config = AgentConfig {
        dir: f.dir.path(),
        urls: vec![f.server.url()],
        node: "py-1",
        http_port,
        applier: webhook(hook_port),
        node_extra: "",
        tables_extra: "",
    }
    .write();
    let agent = Agent::spawn(&config, http_port);
    within(Duration::from_secs(20), ready(&agent)).await;

    let python_path = python_path();
    let out = within(
        Duration::from_secs(60),
        Command::new("python3")
            .arg(SCRIPT)
            .args(["--url", &f.server.url(), "--origin", "python-test"])
            .args(["--content-id", CONTENT_ID, "--media-id", MEDIA_ID])
            .env("PYTHONPATH", &python_path)
            .output(),
    )
    .await
    .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'nats'"),
        "nats-py is not installed (PYTHONPATH={python_path:?}); install it with \
         `python3 -m pip install --target .cache/py nats-py`"
    );
    assert!(out.status.success(), "publish.py failed:\n{stderr}");
    assert!(
        stderr.contains("not stored again"),
        "the retried batch: {stderr}"
    );

    // `<sequence>\t<refresher>\t<batch id>` per stored message.
    let published: Vec<(u64, String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "line {line:?}");
            (
                fields[0].parse().unwrap(),
                fields[1].into(),
                fields[2].into(),
            )
        })
        .collect();
    let sequences: Vec<u64> = published.iter().map(|p| p.0).collect();
    assert_eq!(
        sequences,
        (1..=6).collect::<Vec<_>>(),
        "six batches, in order"
    );
    let stream = f.js.get_stream("INVALOG").await.unwrap();
    let info = stream.cached_info();
    assert_eq!(info.state.messages, 6, "the retried batch is stored once");

    let (code, body) = within(
        Duration::from_secs(20),
        agent.get("/applied?seq=6&timeout=15s"),
    )
    .await
    .expect("the agent answers");
    assert_eq!(code, 200, "{body}");

    let bodies = hook.bodies.lock().unwrap().clone();
    let received: Vec<(u64, String, String)> = bodies
        .iter()
        .map(|b| {
            (
                b["sequence"].as_u64().unwrap(),
                b["refresher"]["name"].as_str().unwrap().to_owned(),
                b["batch_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        received, published,
        "exactly the published batches, once each"
    );
    for b in &bodies {
        assert_eq!(b["trigger"], "batch", "no refresh-all of the agent's own");
        assert_eq!(b["origin"], "python-test");
        let expected_id = match b["refresher"]["name"].as_str() {
            Some("content") => CONTENT_ID,
            _ => MEDIA_ID,
        };
        assert_eq!(b["refresher"]["id"], expected_id);
    }
    let instructions: Vec<Value> = bodies.iter().map(|b| b["instructions"].clone()).collect();
    assert_eq!(
        instructions,
        vec![
            json!([{"kind": "refresh_ids", "ids": [1051, 1052]}]),
            json!([
                {"kind": "refresh_uuids", "uuids": ["4709a46e-47da-42fb-898a-2d1fc2ba1bf5"]},
                {"kind": "remove_keys", "keys": ["home", "blog/hello-world"]},
            ]),
            json!([{"kind": "remove_ids", "ids": [7, -1]}]),
            json!([
                {"kind": "refresh_keys", "keys": ["nav:main"]},
                {"kind": "remove_uuids", "uuids": ["0d4e7a52-97c2-4c7e-8f0b-6c8d1d2f3a4b"]},
                {"kind": "refresh_json", "json": {"path": "/blog", "depth": 2, "tags": ["a", "b"]}},
            ]),
            json!([{"kind": "refresh_payloads", "payloads": [
                {"product_id": 7, "new_price": 19.5},
                {"product_id": 8, "new_price": 3},
            ]}]),
            json!([{"kind": "refresh_all"}]),
        ]
    );
    let first = &bodies[0];
    assert_eq!(first["actor"], "job:price-import");
    assert_eq!(first["reason"], "prices changed");
    assert_eq!(first["trace_id"], "4bf92f3577b34da6");
    assert_eq!(bodies[3]["actor"], "editor@example.com");
    assert_eq!(bodies[5]["reason"], "template deployed");

    for metric in [
        "invalog_decode_errors_total",
        "invalog_escalations_total{refresher=\"content\"}",
    ] {
        assert_eq!(agent.metric(metric).await, Some(0.0), "{metric}");
    }
    agent.terminate();
}
