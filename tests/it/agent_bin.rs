//! The real `invalog` binary: `invalog agent` with each applier receives
//! what was published, in order; `/readyz` turns 200 only after catch-up;
//! SIGTERM mid-stream then restart loses nothing; `invalog publish` from
//! arguments and stdin; bad configuration exits 2.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::agent_support::{
    agent_config, client_config, free_port, publish_each, webhook, Agent, Hook, BIN,
};
use crate::support::{eventually, within, Fixture};

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
    let token: invalog::ReadToken = stdout.split('\t').next().unwrap().parse().unwrap();
    let seq = token.sequence;
    assert_eq!(seq, last + 1);
    let (code, _) = agent
        .get(&format!("/applied?token={token}&timeout=10s"))
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

/// An agent started while no NATS server answers keeps trying: its HTTP
/// port is up (`/healthz` 200, so a liveness probe leaves it alone) and
/// says why it is not ready; once the server is back it catches up.
#[tokio::test]
async fn an_agent_started_before_nats_waits_unready_then_catches_up() {
    let mut f = Fixture::new().await;
    let last = publish_each(&f, 3).await;
    f.server.stop().await.expect("server stops");
    let (hook, hook_port) = Hook::start(Duration::ZERO).await;
    let http_port = free_port();
    let config = agent_config(&f, "early", http_port, &webhook(hook_port));
    let mut agent = Agent::spawn(&config, http_port);

    let readyz = within(Duration::from_secs(30), async {
        loop {
            if let Some((503, body)) = agent.get("/readyz").await {
                if body.contains("connecting to NATS at nats://127.0.0.1") {
                    return body;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let readyz: Value = serde_json::from_str(&readyz).unwrap();
    assert_eq!(readyz["state"], "connecting", "{readyz}");
    assert_eq!(agent.get("/healthz").await.map(|(c, _)| c), Some(200));
    assert_eq!(agent.metric("invalog_ready").await, Some(0.0));
    assert_eq!(agent.metric("invalog_nats_connected").await, Some(0.0));
    let (code, body) = agent.get("/applied?seq=1").await.unwrap();
    assert_eq!(code, 503, "{body}");

    f.server.restart().await.expect("server starts again");
    within(Duration::from_secs(30), async {
        while agent.get("/readyz").await.map(|(c, _)| c) != Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(hook.sequences(), (1..=last).collect::<Vec<_>>());
    assert_eq!(agent.metric("invalog_nats_connected").await, Some(1.0));
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);
}

/// A server that refuses the agent's credentials is a settings problem:
/// the agent exits 3 at once instead of retrying.
#[tokio::test]
async fn refused_credentials_exit_3() {
    let server = invalog_nats_server::NatsServer::start_with_config(
        r#"authorization { token: "right-token-123" }"#,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"x\"\n[nats]\nurls = [\"{}\"]\ntoken = \"wrong-token-456\"\n[http]\nlisten = \"127.0.0.1:{}\"\n[[refreshers]]\nname = \"content\"\nid = \"00000000-0000-0000-0000-000000000001\"\n[refreshers.applier]\n{}\n",
            server.url(),
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("authorization violation"), "{stderr}");
    assert!(!stderr.contains("wrong-token-456"), "secret in: {stderr}");
}

/// `agent --help` has exit codes and examples like the other commands, and
/// no help shows an environment variable's value (`[env: RUST_LOG=…]`).
#[tokio::test]
async fn help_has_exit_codes_and_examples_and_hides_env_values() {
    for command in ["agent", "publish", "status", "history", "explain"] {
        let out = Command::new(BIN)
            .args([command, "--help"])
            .env("RUST_LOG", "secret-looking-filter")
            .env("INVALOG_CONFIG", "/somewhere/else.toml")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("[env: RUST_LOG]"), "{command}: {help}");
        assert!(help.contains("[env: INVALOG_CONFIG]"), "{command}: {help}");
        assert!(!help.contains("secret-looking-filter"), "{command}: {help}");
        assert!(!help.contains("/somewhere/else.toml"), "{command}: {help}");
        assert!(help.contains("Exit codes:"), "{command}: {help}");
        assert!(help.contains("Examples:"), "{command}: {help}");
    }
}

/// `invalog demo` tells the story in plain words: no Rust `Debug` output
/// (the only braces are JSON payloads in the history), ids in order, the
/// history as `invalog history` prints it, and what to run next.
#[tokio::test]
async fn the_demo_explains_each_step_and_what_to_run_next() {
    let out = within(
        Duration::from_secs(60),
        Command::new(BIN).arg("demo").output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, _) in stdout.match_indices('{') {
        assert!(
            stdout[i + 1..].starts_with('"'),
            "Debug output at {i}:\n{stdout}"
        );
    }
    for debug in ["CatchingUp", "Some(", "Ok(", "[10, 11, 42]"] {
        assert!(!stdout.contains(debug), "`{debug}` in:\n{stdout}");
    }
    assert!(
        stdout.contains("reloaded ids 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 42"),
        "{stdout}"
    );
    assert!(stdout.contains("\nSEQ  TIME  "), "{stdout}");
    assert!(!stdout.contains("== done"), "{stdout}");
    // Next steps: the installed server (a path that exists), the demo
    // configuration and the agent, with commands to copy.
    let server = stdout
        .lines()
        .find_map(|l| l.trim().strip_suffix(" -js -a 127.0.0.1"))
        .unwrap_or_else(|| panic!("no nats-server command in:\n{stdout}"));
    assert!(Path::new(server).is_file(), "{server}");
    for next in [
        "agent -c config/demo.toml",
        "publish -c config/demo.toml media refresh-all",
        "curl -s 127.0.0.1:9464/status",
    ] {
        assert!(stdout.contains(next), "`{next}` not in:\n{stdout}");
    }
}
