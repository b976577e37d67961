//! The real `invalog` binary: `invalog agent` with each applier receives
//! what was published, in order; `/readyz` turns 200 only after catch-up;
//! SIGTERM mid-stream then restart loses nothing; `invalog publish` from
//! arguments and stdin; bad configuration exits 2.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{extract::State, http::StatusCode, routing::post, Router};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::support::{eventually, within, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_invalog");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A webhook receiver: records every body, answering after `delay`.
#[derive(Clone, Default)]
struct Hook {
    bodies: Arc<Mutex<Vec<Value>>>,
    delay: Duration,
}

impl Hook {
    async fn start(delay: Duration) -> (Hook, u16) {
        let hook = Hook {
            bodies: Arc::default(),
            delay,
        };
        let app = Router::new()
            .route("/invalidate", post(receive))
            .with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (hook, port)
    }

    fn sequences(&self) -> Vec<u64> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| b["sequence"].as_u64())
            .collect()
    }
}

async fn receive(State(hook): State<Hook>, body: String) -> StatusCode {
    if !hook.delay.is_zero() {
        tokio::time::sleep(hook.delay).await;
    }
    hook.bodies
        .lock()
        .unwrap()
        .push(serde_json::from_str(&body).unwrap());
    StatusCode::NO_CONTENT
}

/// Writes an agent configuration for `node` with one `content` refresher
/// whose applier is `applier` (a TOML table body).
fn agent_config(f: &Fixture, node: &str, http_port: u16, applier: &str) -> PathBuf {
    let path = f.dir.path().join(format!("{node}.toml"));
    let text = format!(
        r#"
[node]
id = "{node}"
new_node = "replay_all"
flush_interval = "100ms"

[nats]
urls = ["{url}"]

[stream]
provision = true

[checkpoint]
store = "file"
path = "{dir}/{node}.checkpoint.json"

[http]
listen = "127.0.0.1:{http_port}"

[logging]
format = "json"
level = "info"

[[refreshers]]
name = "content"
id = "00000000-0000-0000-0000-000000000001"

[refreshers.applier]
{applier}

[[refreshers]]
name = "media"
id = "00000000-0000-0000-0000-000000000002"

[refreshers.applier]
{applier}
"#,
        url = f.server.url(),
        dir = f.dir.path().display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn client_config(f: &Fixture) -> PathBuf {
    let path = f.dir.path().join("client.toml");
    let text = format!(
        r#"
[nats]
urls = ["{url}"]

[publisher]
origin = "cli-test"

[[refreshers]]
name = "content"
id = "00000000-0000-0000-0000-000000000001"
"#,
        url = f.server.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn webhook(port: u16) -> String {
    format!("kind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/invalidate\"\ntimeout = \"2s\"")
}

struct Agent {
    child: Child,
    base: String,
}

impl Agent {
    fn spawn(config: &Path, http_port: u16) -> Agent {
        let child = Command::new(BIN)
            .args(["agent", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("invalog agent starts");
        Agent {
            child,
            base: format!("http://127.0.0.1:{http_port}"),
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.base)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exit_code(&mut self) -> i32 {
        within(Duration::from_secs(15), self.child.wait())
            .await
            .unwrap()
            .code()
            .expect("exited, not killed by a signal")
    }
}

async fn publish_each(f: &Fixture, count: i64) -> u64 {
    let p = f.publisher();
    let mut last = 0;
    for i in 1..=count {
        last = p
            .refresh_ids("content", &[i])
            .await
            .unwrap()
            .sequence()
            .unwrap();
    }
    last
}

#[tokio::test]
async fn the_agent_applies_through_a_webhook_and_is_ready_only_after_catch_up() {
    let f = Fixture::new().await;
    let last = publish_each(&f, 1500).await;
    let (hook, hook_port) = Hook::start(Duration::from_millis(1)).await;
    let http_port = free_port();
    let config = agent_config(&f, "web-1", http_port, &webhook(hook_port));
    let mut agent = Agent::spawn(&config, http_port);

    let mut answers = Vec::new();
    within(Duration::from_secs(30), async {
        loop {
            let code = agent.get("/readyz").await.map(|(code, _)| code);
            if let Some(code) = code {
                answers.push(code);
            }
            if code == Some(200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let first_answer = answers.first().copied();
    assert_eq!(first_answer, Some(503), "not ready while catching up");
    let received = hook.sequences();
    assert!(
        received.len() >= 1500,
        "ready after every backlog message: {}",
        received.len()
    );
    assert_eq!(
        received,
        (1..=last).collect::<Vec<_>>(),
        "in stream order, each once"
    );

    // Publish with the CLI, then read-your-writes through /applied.
    let client = client_config(&f);
    let out = Command::new(BIN)
        .args(["publish", "--config"])
        .arg(&client)
        .args(["content", "refresh-ids", "7", "8", "--actor", "ops"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let seq: u64 = stdout.split('\t').next().unwrap().parse().unwrap();
    assert_eq!(seq, last + 1);
    let (code, _) = agent
        .get(&format!("/applied?seq={seq}&timeout=10s"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let body = hook.bodies.lock().unwrap().last().unwrap().clone();
    assert_eq!(body["sequence"], seq);
    assert_eq!(body["actor"], "ops");
    assert_eq!(body["instructions"][0]["kind"], "refresh_ids");
    assert_eq!(body["instructions"][0]["ids"], serde_json::json!([7, 8]));

    // JSON lines on stdin.
    let mut child = Command::new(BIN)
        .args(["publish", "--stdin", "--config"])
        .arg(&client)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"refresher\":\"content\",\"instructions\":[{\"kind\":\"remove_keys\",\"keys\":[\"home\"]}]}\n\n{\"refresher\":\"content\",\"instructions\":[{\"kind\":\"refresh_all\"}]}\n")
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);
    let (code, _) = agent
        .get(&format!("/applied?seq={}&timeout=10s", seq + 2))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        hook.bodies.lock().unwrap().last().unwrap()["instructions"][0]["kind"],
        "refresh_all"
    );

    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);
}

#[tokio::test]
async fn sigterm_mid_stream_then_restart_loses_nothing() {
    let f = Fixture::new().await;
    publish_each(&f, 3000).await;
    let (hook, hook_port) = Hook::start(Duration::from_millis(2)).await;
    let http_port = free_port();
    let config = agent_config(&f, "web-1", http_port, &webhook(hook_port));
    let mut agent = Agent::spawn(&config, http_port);
    let received = hook.clone();
    eventually(Duration::from_secs(30), "some messages applied", || {
        received.sequences().len() >= 200
    })
    .await;
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0, "a clean stop exits 0");
    let first_run = hook.sequences();
    assert!(first_run.len() < 3000, "stopped mid-stream");
    let stored: Value =
        serde_json::from_slice(&std::fs::read(f.dir.path().join("web-1.checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(
        stored["sequence"].as_u64(),
        first_run.last().copied(),
        "the batch in hand was finished and its sequence stored"
    );

    let mut again = Agent::spawn(&config, http_port);
    eventually(
        Duration::from_secs(60),
        "the rest applied after restart",
        || hook.sequences().last() == Some(&3000),
    )
    .await;
    let all = hook.sequences();
    assert_eq!(
        all,
        (1..=3000).collect::<Vec<_>>(),
        "nothing lost, nothing repeated"
    );
    again.terminate();
    assert_eq!(again.exit_code().await, 0);
}

#[tokio::test]
async fn the_command_applier_gets_each_batch_on_stdin() {
    let f = Fixture::new().await;
    let script = f.dir.path().join("apply.sh");
    let out = f.dir.path().join("applied.jsonl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat >> {}\necho >> {}\n",
            out.display(),
            out.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let http_port = free_port();
    let applier = format!(
        "kind = \"command\"\nprogram = \"{}\"\ntimeout = \"5s\"",
        script.display()
    );
    let config = agent_config(&f, "web-2", http_port, &applier);
    let mut agent = Agent::spawn(&config, http_port);
    let p = f.publisher();
    p.refresh_keys("content", &["a", "b"]).await.unwrap();
    let last = p.refresh_all("media").await.unwrap().sequence().unwrap();
    eventually(Duration::from_secs(20), "both batches written", || {
        std::fs::read_to_string(&out).map_or(0, |s| s.lines().count()) >= 2
    })
    .await;
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["refresher"]["name"], "content");
    assert_eq!(
        lines[0]["instructions"][0]["keys"],
        serde_json::json!(["a", "b"])
    );
    assert_eq!(lines[1]["sequence"], last);
    assert_eq!(lines[1]["instructions"][0]["kind"], "refresh_all");
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);
}

#[tokio::test]
async fn bad_configuration_exits_2_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Command::new(BIN)
        .args(["agent", "--config"])
        .arg(dir.path().join("nope.toml"))
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.toml"));

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[nats]\nulr = \"nats://127.0.0.1:4222\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["agent", "--config"])
        .arg(&typo)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nats.ulr") && stderr.contains("did you mean `urls`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unreachable_nats_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"x\"\n[nats]\nurls = [\"nats://127.0.0.1:{}\"]\nconnect_timeout = \"1s\"\n[[refreshers]]\nname = \"content\"\nid = \"00000000-0000-0000-0000-000000000001\"\n[refreshers.applier]\n{}\n",
            free_port(),
            webhook(1)
        ),
    )
    .unwrap();
    let out = within(
        Duration::from_secs(30),
        Command::new(BIN)
            .args(["agent", "--config"])
            .arg(&config)
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
