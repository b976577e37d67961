//! Helpers for tests that drive the real `invalog` binary: a recording
//! webhook receiver ([`Hook`]), a spawned agent ([`Agent`]), configuration
//! writers and publishing helpers. Used by `agent_bin` and `reliability`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::{extract::State, http::StatusCode, routing::post, Router};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::support::{within, Fixture};

pub const BIN: &str = env!("CARGO_BIN_EXE_invalog");

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A webhook receiver: records every body, answering after `delay`. A body
/// is recorded before the answer is sent, so whatever an agent stored after
/// its request completed has been recorded here; `spans` has when each
/// request arrived and when its answer was due (`cold_boots` counts overlaps).
#[derive(Clone, Default)]
pub struct Hook {
    pub bodies: Arc<Mutex<Vec<Value>>>,
    pub spans: Arc<Mutex<Vec<(Instant, Instant)>>>,
    delay: Duration,
}

impl Hook {
    pub async fn start(delay: Duration) -> (Hook, u16) {
        let hook = Hook {
            bodies: Arc::default(),
            spans: Arc::default(),
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

    /// Every sequence received, in arrival order (repeats included).
    pub fn sequences(&self) -> Vec<u64> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| b["sequence"].as_u64())
            .collect()
    }

    /// The highest sequence received (0 when none).
    pub fn max_sequence(&self) -> u64 {
        self.sequences().into_iter().max().unwrap_or(0)
    }
}

async fn receive(State(hook): State<Hook>, body: String) -> StatusCode {
    let arrived = Instant::now();
    if !hook.delay.is_zero() {
        tokio::time::sleep(hook.delay).await;
    }
    hook.spans.lock().unwrap().push((arrived, Instant::now()));
    hook.bodies
        .lock()
        .unwrap()
        .push(serde_json::from_str(&body).unwrap());
    StatusCode::NO_CONTENT
}

/// What an agent configuration holds besides its applier.
pub struct AgentConfig<'a> {
    /// Directory for the configuration and the checkpoint file.
    pub dir: &'a Path,
    /// NATS URLs.
    pub urls: Vec<String>,
    pub node: &'a str,
    pub http_port: u16,
    /// A TOML table body for each refresher's `[refreshers.applier]`.
    pub applier: String,
    /// Extra lines appended to the `[node]` table (e.g. `cold_boot_threshold = 5`).
    pub node_extra: &'a str,
    /// Extra TOML appended after the `[node]` table (e.g. `[node.fence]`).
    pub tables_extra: &'a str,
}

impl AgentConfig<'_> {
    /// The checkpoint file this configuration names.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(format!("{}.checkpoint.json", self.node))
    }

    /// Writes `<dir>/<node>.toml` and returns its path.
    pub fn write(&self) -> PathBuf {
        let path = self.dir.join(format!("{}.toml", self.node));
        let urls = self
            .urls
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"
[node]
id = "{node}"
new_node = "replay_all"
flush_interval = "100ms"
{node_extra}

{tables_extra}

[nats]
urls = [{urls}]

[stream]

[checkpoint]
store = "file"
path = "{checkpoint}"

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
            node = self.node,
            node_extra = self.node_extra,
            tables_extra = self.tables_extra,
            checkpoint = self.checkpoint_path().display(),
            http_port = self.http_port,
            applier = self.applier,
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Writes an agent configuration for `node` with refreshers `content` and
/// `media`, both applied by `applier` (a TOML table body).
pub fn agent_config(f: &Fixture, node: &str, http_port: u16, applier: &str) -> PathBuf {
    AgentConfig {
        dir: f.dir.path(),
        urls: vec![f.server.url()],
        node,
        http_port,
        applier: applier.to_owned(),
        node_extra: "",
        tables_extra: "",
    }
    .write()
}

/// A client configuration (`invalog publish`) for the fixture's server.
pub fn client_config(f: &Fixture) -> PathBuf {
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

/// A webhook applier posting to the [`Hook`] on `port`.
pub fn webhook(port: u16) -> String {
    format!("kind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/invalidate\"\ntimeout = \"10s\"")
}

/// A running `invalog agent` process, killed when dropped.
pub struct Agent {
    pub child: Child,
    pub base: String,
    /// Where [`spawn`](Self::spawn) sends the agent's stderr (its log); shown
    /// only when the test fails, so passing tests print nothing.
    pub stderr: Option<tempfile::NamedTempFile>,
}

impl Agent {
    /// Starts `invalog agent --config <config>`; its stderr (the log) is
    /// kept in a file, read with [`log`](Self::log) and printed if the test
    /// panics.
    pub fn spawn(config: &Path, http_port: u16) -> Agent {
        Self::spawn_env(config, http_port, &[])
    }

    /// Like [`spawn`](Self::spawn), with environment variables set.
    pub fn spawn_env(config: &Path, http_port: u16, env: &[(&str, &str)]) -> Agent {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut agent = Self::command(config, http_port, file.reopen().unwrap().into(), env);
        agent.stderr = Some(file);
        agent
    }

    /// Like [`spawn`](Self::spawn) with stderr sent to `stderr`.
    pub fn spawn_with_stderr(config: &Path, http_port: u16, stderr: Stdio) -> Agent {
        Self::command(config, http_port, stderr, &[])
    }

    fn command(config: &Path, http_port: u16, stderr: Stdio, env: &[(&str, &str)]) -> Agent {
        let child = Command::new(BIN)
            .args(["agent", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("invalog agent starts");
        Agent {
            child,
            base: format!("http://127.0.0.1:{http_port}"),
            stderr: None,
        }
    }

    /// What the agent wrote to stderr so far (spawned with [`spawn`](Self::spawn)).
    pub fn log(&self) -> String {
        let file = self.stderr.as_ref().expect("spawned with its stderr kept");
        std::fs::read_to_string(file.path()).unwrap()
    }

    /// `GET <path>`: the status and body, `None` when nothing answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.base)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// One value of `/metrics` (the first sample whose name, labels
    /// included, is `name`), `None` when not served.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `kill -9` and reap: a crash at whatever moment the process is in.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        within(Duration::from_secs(15), self.child.wait())
            .await
            .unwrap();
    }

    /// Waits for the exit code (15 s at most).
    pub async fn exit_code(&mut self) -> i32 {
        within(Duration::from_secs(15), self.child.wait())
            .await
            .unwrap()
            .code()
            .expect("exited, not killed by a signal")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() && self.stderr.is_some() {
            // Captured by the test harness and shown with the failure.
            eprintln!(
                "--- stderr of the agent at {} ---\n{}",
                self.base,
                self.log()
            );
        }
    }
}

/// Publishes `refresh_ids [i]` for i in 1..=count, one message each,
/// awaiting each acknowledgement; returns the last sequence.
pub async fn publish_each(f: &Fixture, count: i64) -> u64 {
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

/// A publisher that writes one instruction per message, so that a unit of
/// work of n ids becomes n messages sent pipelined.
pub fn one_per_message(
    js: &async_nats::jetstream::Context,
    log: &invalog::LogSettings,
) -> invalog::Publisher {
    let mut settings = invalog::PublisherSettings::new("reliability");
    settings.max_units_per_message = 1;
    invalog::Publisher::new(js.clone(), log.clone(), settings, crate::support::defs())
}

/// Publishes `count` one-id messages (`refresh_ids [i]`, i from 1) to
/// `content`, pipelined 1000 at a time; returns the last sequence.
pub async fn publish_pipelined(f: &Fixture, count: i64) -> u64 {
    let p = one_per_message(&f.js, &f.log);
    let mut last = 0;
    let mut start = 1;
    while start <= count {
        let end = (start + 999).min(count);
        let mut uow = p.unit_of_work();
        uow.add(
            "content",
            vec![invalog::Instruction::RefreshIds((start..=end).collect())],
        );
        let receipt = uow.commit().await.unwrap();
        assert_eq!(receipt.messages.len() as i64, end - start + 1);
        last = receipt.sequence().unwrap();
        start = end + 1;
    }
    last
}
