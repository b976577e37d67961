//! The processes of a partition test, each in its test host: the real
//! agent ([`NsAgent`], `invalog agent` under `ip netns exec`) with a
//! recording webhook receiver ([`Hook`]) bound inside the agent's host, and
//! an in-process publisher ([`NsPublisher`]) on a runtime inside its host.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::{extract::State, http::StatusCode, routing::post, Router};
use invalog::{LogSettings, Publisher, PublisherSettings};
use tokio::process::Child;

use crate::agent_support::BIN;
use crate::netns::{Host, NsCluster};
use crate::support::defs;

/// The agent's HTTP port inside its host (each host has its own ports).
const AGENT_HTTP_PORT: u16 = 9464;

/// One webhook body: its sequence and the ids of its instructions.
type Call = (u64, Vec<i64>);

/// Records each webhook body, in arrival order.
#[derive(Clone, Default)]
pub struct Hook(Arc<Mutex<Vec<Call>>>);

impl Hook {
    /// Listens on a free loopback port inside `host`; returns the port.
    fn start(host: &Host) -> (Hook, u16) {
        let hook = Hook::default();
        let listener = host.listen(0);
        let port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/invalidate", post(receive))
            .with_state(hook.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (hook, port)
    }

    /// Every sequence received, in order, repeats included.
    pub fn sequences(&self) -> Vec<u64> {
        self.0.lock().unwrap().iter().map(|(s, _)| *s).collect()
    }

    /// Every (sequence, ids) received.
    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }
}

async fn receive(State(hook): State<Hook>, body: String) -> StatusCode {
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids = body["instructions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["ids"].as_array().cloned().unwrap_or_default())
        .filter_map(|id| id.as_i64())
        .collect();
    if let Some(seq) = body["sequence"].as_u64() {
        hook.0.lock().unwrap().push((seq, ids));
    }
    StatusCode::NO_CONTENT
}

/// `invalog agent` in a host, its log kept and shown if the test fails.
pub struct NsAgent {
    pub host: Host,
    pub hook: Hook,
    _child: Child,
    log: tempfile::NamedTempFile,
}

impl NsAgent {
    /// Writes `<dir>/<host>.toml` (every server's URL, an R3 stream, the
    /// webhook applier, `[node.fence] max_disconnected = fence`) and starts
    /// the agent.
    pub fn start(host: &Host, dir: &Path, urls: &[String], fence: Duration) -> NsAgent {
        let (hook, hook_port) = Hook::start(host);
        let node = host.name();
        let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        let applier = format!(
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/invalidate\"\ntimeout = \"10s\""
        );
        let text = format!(
            "[node]\nid = \"{node}\"\nnew_node = \"replay_all\"\nflush_interval = \"100ms\"\n\n\
             [node.fence]\nmax_disconnected = \"{fence}ms\"\n\n\
             [nats]\nurls = [{urls}]\n\n[stream]\nreplicas = 3\n\n\
             [checkpoint]\nstore = \"file\"\npath = \"{checkpoint}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{AGENT_HTTP_PORT}\"\n\n\
             [logging]\nformat = \"json\"\nlevel = \"info\"\n\n\
             [[refreshers]]\nname = \"content\"\nid = \"00000000-0000-0000-0000-000000000001\"\n\n\
             [refreshers.applier]\n{applier}\n",
            fence = fence.as_millis(),
            urls = urls.join(", "),
            checkpoint = dir.join(format!("{node}.checkpoint.json")).display(),
        );
        let config = dir.join(format!("{node}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = host
            .command(BIN)
            .args(["agent", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("invalog agent starts");
        NsAgent {
            host: host.clone(),
            hook,
            _child: child,
            log,
        }
    }

    /// The name of the server the agent's NATS connection goes to (from
    /// `/status`), empty when it does not say.
    pub async fn server(&self) -> String {
        let (_, body) = self
            .host
            .http_get(AGENT_HTTP_PORT, "/status")
            .await
            .unwrap_or_default();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status["nats"]["server"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `GET /readyz`: status and body (0 when nothing answers).
    pub async fn readyz(&self) -> (u16, String) {
        let answer = self.host.http_get(AGENT_HTTP_PORT, "/readyz").await;
        answer.unwrap_or((0, String::new()))
    }

    /// Polls `/readyz` every 20 ms until `want(status, body)`; returns how
    /// long that took and the body. Fails after `limit`.
    pub async fn wait_readyz(
        &self,
        limit: Duration,
        what: &str,
        want: impl Fn(u16, &str) -> bool,
    ) -> (Duration, String) {
        let start = Instant::now();
        loop {
            let (code, body) = self.readyz().await;
            if want(code, &body) {
                return (start.elapsed(), body);
            }
            assert!(
                start.elapsed() < limit,
                "{}: {what}: not within {limit:?}; last answer {code} {body}",
                self.host.name()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NsAgent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- agent {} log (last 40 lines) ---\n{}",
                self.host.name(),
                tail.join("\n")
            );
        }
    }
}

/// (id, sequence, when the publish started, when it was acknowledged)
pub type Ack = (i64, u64, Instant, Instant);

/// What a publisher saw: acknowledged publishes, failed ones as (id, when
/// it failed, the error), the server its connection went to last, and
/// when it changed (the server it went to then).
#[derive(Clone, Default)]
pub struct Record {
    pub acks: Vec<Ack>,
    pub failures: Vec<(i64, Instant, String)>,
    pub server: String,
    pub switches: Vec<(Instant, String)>,
}

/// Publishes `refresh_ids [id]` to `content`, one id after the other from
/// `first_id`, every 5 ms, from a runtime inside its host.
pub struct NsPublisher {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    task: tokio::task::JoinHandle<()>,
}

impl NsPublisher {
    /// Each message is sent at most `attempts` times, `ack_timeout` apart.
    pub fn start(
        host: &Host,
        urls: Vec<String>,
        log: &LogSettings,
        first_id: i64,
        ack_timeout: Duration,
        attempts: u32,
    ) -> NsPublisher {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let (s, r, log) = (stop.clone(), record.clone(), log.clone());
        let origin = format!("publisher-{}", host.name());
        let task = tokio::spawn(host.run(move || async move {
            let mut settings = PublisherSettings::new(origin);
            settings.ack_timeout = ack_timeout;
            settings.attempts = attempts;
            let js = NsCluster::js(urls).await;
            let client = js.client();
            let publisher = Publisher::new(js, log, settings, defs());
            let mut id = first_id;
            while !s.load(Ordering::SeqCst) {
                let server = client.server_info().server_name;
                {
                    let mut record = r.lock().unwrap();
                    if record.server != server {
                        record.switches.push((Instant::now(), server.clone()));
                        record.server = server;
                    }
                }
                let started = Instant::now();
                match publisher.refresh_ids("content", &[id]).await {
                    Ok(receipt) => {
                        let seq = receipt.sequence().unwrap();
                        r.lock()
                            .unwrap()
                            .acks
                            .push((id, seq, started, Instant::now()));
                    }
                    // Not acknowledged, perhaps stored: counted, and never
                    // sent again under another batch id.
                    Err(e) => r
                        .lock()
                        .unwrap()
                        .failures
                        .push((id, Instant::now(), e.to_string())),
                }
                id += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
        NsPublisher { stop, record, task }
    }

    /// How many publishes were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.record.lock().unwrap().acks.len()
    }

    /// A copy of what it saw so far.
    pub fn record(&self) -> Record {
        self.record.lock().unwrap().clone()
    }

    /// Stops after the publish in hand; returns everything it saw.
    pub async fn stop(self) -> Record {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(120), self.task)
            .await
            .expect("the publisher stops")
            .unwrap();
        let record = self.record.lock().unwrap().clone();
        record
    }
}
