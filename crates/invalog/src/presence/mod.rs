//! Presence: every node reports its position to a JetStream KV bucket, so
//! that `invalog status` (and `invalog explain`) can show the whole fleet.
//!
//! A [`Presence`] handle owns a task that, every `interval` (default 5 s),
//! puts a [`NodeReport`] under the node id in the bucket (default
//! [`DEFAULT_BUCKET`]): the stream it follows, version, applied / stored /
//! stream-last sequence and lag, state, readiness and its reason, start
//! time and hosted refreshers.
//! Dropping the handle stops the task (as a crash would: the entry stays and
//! becomes stale); [`Presence::stop`] writes one last report with state
//! `stopped` first, so the fleet view tells a node that left cleanly from one
//! that disappeared. Nothing is ever deleted: the bucket keeps one value per
//! key (history 1) and forgets a key [`ENTRY_MAX_AGE`] (1 day) after its
//! last report, so nodes that are gone for good eventually vanish.
//!
//! [`read_all`] reads the latest report of every node of one stream: one
//! bucket serves every stream on the server, and a report names its
//! stream (a report without one, written by an older invalog, is read for
//! every stream, as it was then). During a leader election of the bucket's
//! stream a write fails with [`PresenceError::NoLeader`]; the reporter logs
//! that at INFO and warns only when it lasts longer than
//! [`NO_LEADER_WARN_AFTER`].
//!
//! A report's `last_seen` is the time the NATS server stored it, not the
//! node's clock, so a node whose clock is wrong is neither hidden nor
//! flagged stale by mistake.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use crate::model::RefresherName;
use crate::node::{Node, Readiness};
use crate::wire;

mod report_json;

pub use report_json::{decode_node_report, encode_node_report, PresenceDecodeError};

/// The bucket nodes report to unless configured otherwise.
pub const DEFAULT_BUCKET: &str = "invalog_nodes";

/// How long the bucket keeps a report after it was written: a node that
/// stopped reporting disappears from the fleet view after this long.
pub const ENTRY_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The state a node's last report gives after a clean [`Presence::stop`].
pub const STOPPED: &str = "stopped";

/// How long writes may fail for want of a stream leader (an election)
/// before the reporter warns.
pub const NO_LEADER_WARN_AFTER: Duration = Duration::from_secs(15);

/// How often the first report is tried before `Presence::start` fails
/// (about 4.5 s in all).
const FIRST_WRITE_ATTEMPTS: u32 = 10;

/// How a node reports its presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceSettings {
    /// The KV bucket (created if missing).
    pub bucket: String,
    /// Time between two reports.
    pub interval: Duration,
    /// Replicas of the bucket when this node creates it (3 on a cluster).
    pub replicas: usize,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            bucket: DEFAULT_BUCKET.to_owned(),
            interval: Duration::from_secs(5),
            replicas: 1,
        }
    }
}

/// One node's latest report, as read from the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The node id (the key).
    pub node: String,
    /// The stream the node follows; `None` in a report written by an
    /// invalog that did not say.
    pub stream: Option<String>,
    /// The invalog version the node runs.
    pub version: String,
    /// Last sequence applied.
    pub applied: u64,
    /// Last sequence stored (file or KV checkpoint).
    pub stored: u64,
    /// The stream's last sequence as the node last saw it.
    pub stream_last: u64,
    /// Messages the node had still to apply when it reported.
    pub lag: u64,
    /// The node's state name: `starting`, `waiting_for_slot`, `cold_booting`, `catching_up`,
    /// `ready`, `stalled`, `stopped`.
    pub state: String,
    /// Whether the node serves (caught up, not stalled, not fenced).
    pub ready: bool,
    /// Why it is not ready.
    pub reason: Option<String>,
    /// When the node's reporter started.
    pub started_at: SystemTime,
    /// When the server stored the report.
    pub last_seen: SystemTime,
    /// The refreshers the node hosts.
    pub refreshers: Vec<String>,
    /// This reporter's own id, new at every start: two reporters writing
    /// under one key with different instances are two processes sharing a
    /// node id (empty in reports of older versions).
    pub instance: String,
    /// The stream incarnation (creation time) `applied` and `stored` count
    /// in; `None` in reports of older versions.
    pub stream_created: Option<SystemTime>,
    /// Evidence that another process uses this node id, if the node saw any.
    pub duplicate: Option<String>,
}

/// A key of the bucket whose value could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The key (a node id, presumably).
    pub key: String,
    /// Why.
    pub error: String,
}

/// Every report in the bucket, and the keys that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reports {
    /// Readable reports, sorted by node id.
    pub reports: Vec<NodeReport>,
    /// Entries that are not valid reports (written by a newer invalog, or by
    /// something else).
    pub unreadable: Vec<Unreadable>,
}

/// Why presence could not be reported or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The bucket does not exist (no node has reported yet).
    #[error("presence bucket `{bucket}` does not exist: no node has reported yet, or the bucket is configured differently")]
    NoBucket {
        /// The bucket.
        bucket: String,
    },
    /// The bucket's stream answered no write: it has no leader, as during
    /// an election after its leader's server went away (or it was deleted).
    #[error("presence not written to bucket `{bucket}`: the bucket's stream has no leader (election in progress?) or no longer exists")]
    NoLeader {
        /// The bucket.
        bucket: String,
    },
    /// The bucket could not be created, read or written.
    #[error("presence bucket `{bucket}`: {message}")]
    Kv {
        /// The bucket.
        bucket: String,
        /// What failed.
        message: String,
    },
}

/// A running reporter; see the module docs.
pub struct Presence {
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    reporter: Arc<Reporter>,
}

struct Reporter {
    store: kv::Store,
    bucket: String,
    stream: String,
    node: Arc<Node>,
    refreshers: Vec<String>,
    started_at: SystemTime,
    instance: String,
    /// The revision of this reporter's last write: a write on top of any
    /// other means someone else wrote the key meanwhile.
    revision: std::sync::Mutex<Option<u64>>,
}

impl Presence {
    /// Opens (creating if needed) the bucket, writes a first report for
    /// the node of `stream`, and starts reporting every
    /// `settings.interval`. Errors when the bucket cannot be created or
    /// written (missing permissions, for example); failures after start are
    /// logged and retried at the next interval.
    pub async fn start(
        js: jetstream::Context,
        settings: PresenceSettings,
        stream: &str,
        node: Arc<Node>,
        refreshers: Vec<RefresherName>,
    ) -> Result<Presence, PresenceError> {
        let store = open_or_create(&js, &settings).await?;
        let reporter = Arc::new(Reporter {
            stream: stream.to_owned(),
            store,
            bucket: settings.bucket.clone(),
            node,
            refreshers: refreshers.iter().map(|r| r.to_string()).collect(),
            started_at: SystemTime::now(),
            instance: uuid::Uuid::new_v4().to_string(),
            revision: std::sync::Mutex::new(None),
        });
        // A bucket just created on a cluster can refuse writes for a moment
        // ("no stream found"); permissions problems persist and fail here.
        let mut attempt = 0;
        while let Err(error) = reporter.put(None).await {
            attempt += 1;
            let transient = matches!(&error, PresenceError::NoLeader { .. });
            if !transient || attempt >= FIRST_WRITE_ATTEMPTS {
                return Err(error);
            }
            tracing::debug!(%error, attempt, "first presence report not stored yet; retrying");
            tokio::time::sleep(Duration::from_millis(100) * attempt).await;
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(report_loop(
            reporter.clone(),
            settings.interval.max(Duration::from_millis(10)),
            cancel.clone(),
        ));
        Ok(Presence {
            cancel,
            task: Some(task),
            reporter,
        })
    }

    /// Stops reporting and writes a last report with state [`STOPPED`] (not
    /// ready, reason `stopped cleanly`), so `invalog status` shows the node as
    /// stopped rather than stale. Deletes nothing. Call it before shutting
    /// the node down or after: either way the last report says `stopped`.
    pub async fn stop(mut self) -> Result<(), PresenceError> {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.reporter.put(Some("stopped cleanly")).await
    }
}

impl Drop for Presence {
    /// Stops the task without a last report: the entry becomes stale.
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn report_loop(reporter: Arc<Reporter>, interval: Duration, cancel: CancellationToken) {
    let mut failures = Failures::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            result = reporter.put(None) => result,
        };
        match failures.record(result.err(), Instant::now()) {
            Some(Log::Recovered) => {
                tracing::info!(bucket = %reporter.bucket, "presence reports are written again");
            }
            Some(Log::Election(e)) => tracing::info!(error = %e, "retrying every interval"),
            Some(Log::Failing(e)) => {
                tracing::warn!(error = %e, "cannot write the presence report; retrying every interval");
            }
            None => {}
        }
    }
}

/// What the reporter logs after a write: each kind of failure once, and a
/// missing stream leader only at INFO until it lasts
/// [`NO_LEADER_WARN_AFTER`].
#[derive(Debug, Default)]
struct Failures {
    /// When the current run of failures began.
    since: Option<Instant>,
    /// Whether the run has been logged at INFO (a leader election).
    told: bool,
    /// Whether the run has been logged at WARN.
    warned: bool,
}

#[derive(Debug)]
enum Log {
    Recovered,
    Election(PresenceError),
    Failing(PresenceError),
}

impl Failures {
    fn record(&mut self, error: Option<PresenceError>, now: Instant) -> Option<Log> {
        let Some(error) = error else {
            let logged = self.told || self.warned;
            *self = Failures::default();
            return logged.then_some(Log::Recovered);
        };
        let since = *self.since.get_or_insert(now);
        if self.warned {
            return None;
        }
        let election = matches!(error, PresenceError::NoLeader { .. });
        if election && now.duration_since(since) < NO_LEADER_WARN_AFTER {
            return (!std::mem::replace(&mut self.told, true)).then_some(Log::Election(error));
        }
        self.warned = true;
        Some(Log::Failing(error))
    }
}

impl Reporter {
    /// Puts the node's current report; `stopped` overrides state and
    /// readiness for the last report of a clean stop.
    async fn put(&self, stopped: Option<&str>) -> Result<(), PresenceError> {
        let snapshot = self.node.snapshot();
        let p = &snapshot.position;
        let (state, ready, reason) = match stopped {
            Some(why) => (STOPPED.to_owned(), false, Some(why.to_owned())),
            None => match snapshot.readiness {
                Readiness::Ready => (p.state.name().to_owned(), true, None),
                Readiness::NotReady(why) => (p.state.name().to_owned(), false, Some(why)),
            },
        };
        let report = NodeReport {
            node: self.node.node_id().to_string(),
            stream: Some(self.stream.clone()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            applied: p.applied,
            stored: p.stored,
            stream_last: p.stream_last,
            lag: p.lag(),
            state,
            ready,
            reason,
            started_at: self.started_at,
            last_seen: SystemTime::now(),
            refreshers: self.refreshers.clone(),
            instance: self.instance.clone(),
            stream_created: Some(p.stream_created()),
            duplicate: snapshot.duplicate.clone(),
        };
        let key = report.node.as_str();
        let value: bytes::Bytes = encode_node_report(&report).into();
        let with_evidence = |evidence: Option<String>| -> bytes::Bytes {
            let report = NodeReport {
                duplicate: evidence,
                ..report.clone()
            };
            encode_node_report(&report).into()
        };
        let kv_err = |e: &(dyn std::error::Error + 'static)| {
            if no_leader(e) {
                PresenceError::NoLeader {
                    bucket: self.bucket.clone(),
                }
            } else {
                PresenceError::Kv {
                    bucket: self.bucket.clone(),
                    message: format!("cannot write key `{key}`: {e}"),
                }
            }
        };
        let known = *self.revision.lock().unwrap();
        let written = match known {
            Some(revision) => match self.store.update(key, value.clone(), revision).await {
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    self.someone_else_wrote(key).await;
                    let value = with_evidence(self.node.duplicate());
                    self.store.put(key, value).await.map_err(|e| kv_err(&e))
                }
                other => other.map_err(|e| kv_err(&e)),
            },
            None => self.store.put(key, value).await.map_err(|e| kv_err(&e)),
        }?;
        *self.revision.lock().unwrap() = Some(written);
        Ok(())
    }

    /// The key was written by someone else since this reporter's last
    /// write: another instance's report there means two processes share
    /// the node id.
    async fn someone_else_wrote(&self, key: &str) {
        let Ok(Some(entry)) = self.store.entry(key).await else {
            return;
        };
        let Ok(other) = decode_node_report(&entry.value, entry.created.into()) else {
            return;
        };
        if !other.instance.is_empty() && other.instance != self.instance {
            self.node.report_duplicate(format!(
                "presence: another process (instance {}, started {}) reports as node `{key}` in bucket `{}`",
                other.instance,
                wire::format_time(other.started_at),
                self.bucket
            ));
        }
    }
}

/// True when a write found no stream to answer it: the stream exists (the
/// bucket was opened) but has no leader.
fn no_leader(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(p) = e.downcast_ref::<jetstream::context::PublishError>() {
            return p.kind() == jetstream::context::PublishErrorKind::StreamNotFound;
        }
        cause = e.source();
    }
    false
}

async fn open_or_create(
    js: &jetstream::Context,
    settings: &PresenceSettings,
) -> Result<kv::Store, PresenceError> {
    let config = kv::Config {
        bucket: settings.bucket.clone(),
        description: "invalog: each node's position and readiness".into(),
        history: 1,
        max_age: ENTRY_MAX_AGE,
        num_replicas: settings.replicas.max(1),
        ..Default::default()
    };
    crate::bucket::open_or_create(js, config)
        .await
        .map_err(|message| PresenceError::Kv {
            bucket: settings.bucket.clone(),
            message,
        })
}

/// The latest report of every node of `stream`, sorted by node id. Entries
/// that are not readable reports are skipped with a warning;
/// [`read_reports`] returns them too.
pub async fn read_all(
    js: &jetstream::Context,
    bucket: &str,
    stream: &str,
) -> Result<Vec<NodeReport>, PresenceError> {
    let all = read_reports(js, bucket, stream).await?;
    for u in &all.unreadable {
        tracing::warn!(bucket, key = %u.key, error = %u.error, "skipping an unreadable presence report");
    }
    Ok(all.reports)
}

/// The latest report of every node of `stream` (and of nodes whose report
/// names no stream), sorted by node id, and the keys whose value is not a
/// readable report.
pub async fn read_reports(
    js: &jetstream::Context,
    bucket: &str,
    stream: &str,
) -> Result<Reports, PresenceError> {
    let kv_err = |message: String| PresenceError::Kv {
        bucket: bucket.to_owned(),
        message,
    };
    // The keys come from the stream's subjects, not from `Store::keys`:
    // its LastPerSubject consumer was seen to end early, missing a node,
    // while reporters kept writing.
    let kv_stream = match js.get_stream(format!("KV_{bucket}")).await {
        Ok(kv_stream) => kv_stream,
        Err(e) => {
            let not_found = matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            return Err(if not_found {
                PresenceError::NoBucket {
                    bucket: bucket.to_owned(),
                }
            } else {
                kv_err(format!("cannot open it: {e}"))
            });
        }
    };
    let prefix = format!("$KV.{bucket}.");
    let subjects: Vec<(String, usize)> = kv_stream
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(|e| kv_err(format!("cannot list keys: {e}")))?
        .try_collect()
        .await
        .map_err(|e| kv_err(format!("cannot list keys: {e}")))?;
    let mut keys: Vec<String> = subjects
        .into_iter()
        .filter_map(|(subject, _)| subject.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    keys.sort();
    let store = js
        .get_key_value(bucket)
        .await
        .map_err(|e| kv_err(format!("cannot open it: {e}")))?;
    let mut out = Reports::default();
    for key in keys {
        let entry = store
            .entry(key.as_str())
            .await
            .map_err(|e| kv_err(format!("cannot read key `{key}`: {e}")))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            continue; // deleted or expired since it was listed
        };
        match decode_node_report(&entry.value, entry.created.into()) {
            Ok(report) if report.stream.as_deref().is_some_and(|s| s != stream) => {}
            Ok(report) => out.reports.push(report),
            Err(e) => out.unreadable.push(Unreadable {
                key,
                error: e.to_string(),
            }),
        }
    }
    out.reports.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_leader() -> Option<PresenceError> {
        Some(PresenceError::NoLeader { bucket: "b".into() })
    }

    fn denied() -> Option<PresenceError> {
        Some(PresenceError::Kv {
            bucket: "b".into(),
            message: "permissions violation".into(),
        })
    }

    #[test]
    fn an_election_is_told_once_and_warned_about_only_when_it_lasts() {
        let t0 = Instant::now();
        let mut f = Failures::default();
        assert!(matches!(f.record(no_leader(), t0), Some(Log::Election(_))));
        let later = t0 + Duration::from_secs(5);
        assert!(f.record(no_leader(), later).is_none());
        let long = t0 + NO_LEADER_WARN_AFTER;
        assert!(matches!(f.record(no_leader(), long), Some(Log::Failing(_))));
        assert!(f
            .record(no_leader(), long + Duration::from_secs(1))
            .is_none());
        assert!(matches!(f.record(None, long), Some(Log::Recovered)));
        assert!(f.record(None, long).is_none(), "told once");
    }

    #[test]
    fn other_failures_warn_at_once() {
        let mut f = Failures::default();
        let t0 = Instant::now();
        assert!(matches!(f.record(denied(), t0), Some(Log::Failing(_))));
        assert!(f.record(denied(), t0).is_none());
        assert!(matches!(f.record(None, t0), Some(Log::Recovered)));
        // An election message reads clearly.
        let text = no_leader().unwrap().to_string();
        assert!(
            text.contains("has no leader (election in progress?)"),
            "{text}"
        );
    }
}
