//! The `command` applier with small `sh` scripts in a temporary directory:
//! each batch on stdin in order (with the documented environment), nonzero
//! exits retried then escalated, and a program that outlives its timeout
//! killed (its process is gone) before the batch is escalated; terminal
//! escapes on its stderr never reach the stalled reason.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use invalog::node::{NewNodePolicy, Readiness};
use invalog::Instruction;
use invalog_agent::applier::{build, ApplierSettings, CommandSettings};
use serde_json::{json, Value};

use super::{applied, publish, start_node, ATTEMPTS};
use crate::support::{defs, eventually, Fixture};

/// Writes `script` to `dir` and returns settings that run it with `sh`
/// (running `sh` rather than the fresh file avoids "text file busy" when
/// another test forks while the file is being written).
fn script(dir: &Path, script: &str, timeout: Duration) -> ApplierSettings {
    let path = dir.join("applier.sh");
    std::fs::write(&path, script).unwrap();
    ApplierSettings::Command(CommandSettings {
        program: PathBuf::from("/bin/sh"),
        args: vec![
            path.display().to_string(),
            dir.join("out").display().to_string(),
        ],
        timeout,
        max_batches_per_request: 1,
    })
}

/// The JSON bodies the script appended to `out`, one per line.
fn bodies(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("out"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON body per line"))
        .collect()
}

#[tokio::test]
async fn command_gets_each_batch_on_stdin_in_order() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = script(
        dir.path(),
        r#"cat >> "$1"; echo >> "$1"
echo "$INVALOG_REFRESHER $INVALOG_TRIGGER ${INVALOG_SEQUENCE:--}" >> "$1.env"
"#,
        Duration::from_secs(10),
    );
    let node = start_node(&f, "cmd", &settings, NewNodePolicy::ColdBoot).await;
    let p = f.publisher();
    let first = publish(&p, vec![Instruction::RefreshIds(vec![1, 2])]).await;
    let second = publish(&p, vec![Instruction::RemoveKeys(vec!["/en/".into()])]).await;
    applied(&node, second).await;

    let bodies = bodies(dir.path());
    assert_eq!(bodies.len(), 3, "{bodies:#?}");
    assert_eq!(bodies[0]["trigger"], "refresh_all", "the cold boot");
    assert_eq!(bodies[0]["sequence"], Value::Null);
    assert_eq!(bodies[1]["sequence"], json!(first));
    assert_eq!(bodies[1]["refresher"]["name"], "content");
    assert_eq!(
        bodies[1]["instructions"],
        json!([{"kind": "refresh_ids", "ids": [1, 2]}])
    );
    assert_eq!(bodies[2]["sequence"], json!(second));
    assert_eq!(
        bodies[2]["instructions"],
        json!([{"kind": "remove_keys", "keys": ["/en/"]}])
    );
    let env = std::fs::read_to_string(dir.path().join("out.env")).unwrap();
    assert_eq!(
        env,
        format!("content refresh_all -\ncontent batch {first}\ncontent batch {second}\n")
    );
}

#[tokio::test]
async fn command_failures_are_retried_then_escalated() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Fails once (exit 3), then applies; a batch with id 666 always fails.
    let settings = script(
        dir.path(),
        r#"body=$(cat)
case "$body" in *'"ids":[666]'*) echo "cannot apply 666" >&2; exit 1;; esac
if [ ! -e "$1.failed-once" ]; then : > "$1.failed-once"; exit 3; fi
printf '%s\n' "$body" >> "$1"
"#,
        Duration::from_secs(10),
    );
    let node = start_node(&f, "cmd", &settings, NewNodePolicy::Tail).await;
    let p = f.publisher();

    let first = publish(&p, vec![Instruction::RefreshIds(vec![1])]).await;
    applied(&node, first).await;
    assert_eq!(bodies(dir.path()).len(), 1);
    assert_eq!(bodies(dir.path())[0]["sequence"], json!(first));
    assert_eq!((node.stats().retries, node.stats().escalations), (1, 0));

    let second = publish(&p, vec![Instruction::RefreshIds(vec![666])]).await;
    applied(&node, second).await;
    let stats = node.stats();
    assert_eq!(stats.retries, 1 + u64::from(ATTEMPTS) - 1);
    assert_eq!(stats.escalations, 1);
    assert_eq!(bodies(dir.path()).last().unwrap()["trigger"], "refresh_all");
}

#[tokio::test]
async fn command_is_killed_at_its_timeout() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Batches hang (their pid is recorded); refresh-alls apply.
    let settings = script(
        dir.path(),
        r#"body=$(cat)
case "$body" in *'"trigger":"refresh_all"'*) printf '%s\n' "$body" >> "$1"; exit 0;; esac
echo $$ >> "$1.pids"
exec sleep 60
"#,
        Duration::from_secs(1),
    );
    let node = start_node(&f, "cmd", &settings, NewNodePolicy::Tail).await;
    let started = Instant::now();
    let sequence = publish(&f.publisher(), vec![Instruction::RefreshIds(vec![1])]).await;
    applied(&node, sequence).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "killed, not awaited"
    );
    assert_eq!(node.stats().escalations, 1);
    assert_eq!(bodies(dir.path()).last().unwrap()["trigger"], "refresh_all");
    let pids = std::fs::read_to_string(dir.path().join("out.pids")).unwrap();
    assert_eq!(pids.lines().count(), ATTEMPTS as usize);
    for pid in pids.lines() {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} was killed and reaped"
        );
    }

    // The error says what happened.
    let hanging = script(dir.path(), "exec sleep 60\n", Duration::from_millis(200));
    let applier = build(&defs()[0], &hanging).unwrap();
    let started = Instant::now();
    let error = applier.refresh_all().await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(error.contains("timed out after 200ms; killed"), "{error}");
}

/// A program's stderr goes into the stalled reason that `/readyz`,
/// `/status`, `invalog status` and the logs show: terminal escapes in it
/// are escaped, not passed on.
#[tokio::test]
async fn stderr_escapes_do_not_reach_the_stalled_reason() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = script(
        dir.path(),
        "cat > /dev/null\nprintf '\\033[31mred\\033]0;title\\007\\n' >&2\nexit 1\n",
        Duration::from_secs(10),
    );
    let node = start_node(&f, "cmd", &settings, NewNodePolicy::Tail).await;
    publish(&f.publisher(), vec![Instruction::RefreshIds(vec![1])]).await;
    eventually(Duration::from_secs(30), "the node stalls", || {
        node.state().name() == "stalled"
    })
    .await;
    let reason = match node.readiness() {
        Readiness::NotReady(reason) => reason,
        Readiness::Ready => panic!("a stalled node is not ready"),
    };
    assert!(reason.contains("stderr: \\u{1b}[31mred"), "{reason}");
    assert!(
        !reason.chars().any(|c| c.is_control()),
        "control characters in {reason:?}"
    );
}

#[tokio::test]
async fn a_catching_up_node_runs_the_command_once_per_group_when_opted_in() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = script(
        dir.path(),
        r#"cat >> "$1"; echo >> "$1"
echo "$INVALOG_TRIGGER $INVALOG_SEQUENCE" >> "$1.env"
"#,
        Duration::from_secs(10),
    );
    if let ApplierSettings::Command(c) = &mut settings {
        c.max_batches_per_request = 25;
    }
    let receipt = f
        .publisher()
        .publish_many(
            (1..=100).map(|i| ("content", vec![Instruction::RefreshIds(vec![i])])),
            &invalog::Provenance::default(),
        )
        .await
        .unwrap();
    let last = receipt.sequence().unwrap();
    let node = start_node(&f, "cmd", &settings, NewNodePolicy::ReplayAll).await;
    assert_eq!(node.applied(), last);
    let bodies = bodies(dir.path());
    let env = std::fs::read_to_string(dir.path().join("out.env")).unwrap();
    let env: Vec<&str> = env.lines().collect();
    assert_eq!(env.len(), bodies.len());
    let mut seen = vec![];
    for (body, env) in bodies.iter().zip(&env) {
        if body["format"] == 2 {
            let batches = body["batches"].as_array().unwrap();
            assert!((2..=25).contains(&batches.len()), "{}", batches.len());
            assert_eq!(*env, format!("batches {}", body["last_sequence"]));
            seen.extend(batches.iter().map(|b| b["sequence"].as_u64().unwrap()));
        } else {
            assert_eq!(*env, format!("batch {}", body["sequence"]));
            seen.push(body["sequence"].as_u64().unwrap());
        }
    }
    assert_eq!(
        seen,
        (last - 99..=last).collect::<Vec<_>>(),
        "in log order, each once"
    );
    assert!(bodies.len() < 100, "{} runs for 100 batches", bodies.len());
    node.shutdown().await.unwrap();
}
