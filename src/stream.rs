//! The log itself: one JetStream stream on subjects `<prefix>.<refresher>`,
//! provisioned from [`LogSettings`]. Provisioning is idempotent: it creates a
//! missing stream, updates one whose settings changed, refuses changes that
//! would lose data (unless asked through
//! [`provision_allowing_data_loss`]) and refuses to go on when the server
//! applied something other than what was asked (older servers silently drop
//! fields they do not know).

use std::fmt;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{
    self,
    stream::{Config, DiscardPolicy, Info, RetentionPolicy, StorageType},
};

use crate::model::RefresherName;

/// Where messages are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// On disk (the default; survives a server restart).
    File,
    /// In memory (tests, throwaway demos).
    Memory,
}

/// The log's stream settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// JetStream stream name.
    pub stream: String,
    /// Subject prefix; messages go to `<prefix>.<refresher-name>`.
    pub subject_prefix: String,
    /// File or memory.
    pub storage: Storage,
    /// Replicas (3 on a cluster).
    pub replicas: usize,
    /// Oldest message kept; `None` keeps messages forever.
    pub max_age: Option<Duration>,
    /// Most messages kept; `None` for no limit.
    pub max_messages: Option<u64>,
    /// Most bytes kept; `None` for no limit.
    pub max_bytes: Option<u64>,
    /// Largest message the stream accepts, in bytes.
    pub max_message_size: u32,
    /// How long a batch id (`Nats-Msg-Id`) is remembered for de-duplication.
    pub duplicate_window: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            stream: "INVALOG".into(),
            subject_prefix: "invalog".into(),
            storage: Storage::File,
            replicas: 1,
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_messages: None,
            max_bytes: None,
            max_message_size: 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl LogSettings {
    /// The subject of one refresher's messages.
    pub fn subject(&self, refresher: &RefresherName) -> String {
        format!("{}.{}", self.subject_prefix, refresher)
    }

    /// The subject filter that matches every refresher.
    pub fn all_subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// The JetStream config these settings ask for.
    pub fn stream_config(&self) -> Config {
        Config {
            name: self.stream.clone(),
            subjects: vec![self.all_subjects()],
            storage: match self.storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            num_replicas: self.replicas,
            max_age: self.max_age.unwrap_or(Duration::ZERO),
            max_messages: limit(self.max_messages),
            max_bytes: limit(self.max_bytes),
            max_message_size: i32::try_from(self.max_message_size).unwrap_or(i32::MAX),
            duplicate_window: self.duplicate_window,
            allow_direct: true,
            deny_delete: true,
            ..Default::default()
        }
    }
}

fn limit(value: Option<u64>) -> i64 {
    value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// One difference between the stream on the server and the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The setting (`max_age`, `subjects`, ...).
    pub field: &'static str,
    /// Its value on the server.
    pub current: String,
    /// The value asked for.
    pub wanted: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.field, self.current, self.wanted)
    }
}

fn list(changes: &[Change]) -> String {
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The JetStream API call failed.
    #[error("stream `{stream}`: {action} failed: {message}")]
    Api {
        /// The stream.
        stream: String,
        /// What was being done.
        action: &'static str,
        /// The server's or client's message.
        message: String,
    },
    /// The change would delete messages.
    #[error("stream `{stream}`: refusing a change that can delete messages ({}); apply it on purpose with `provision_allowing_data_loss` (CLI: `--allow-data-loss`)", list(.changes))]
    WouldLoseData {
        /// The stream.
        stream: String,
        /// The changes that would delete messages.
        changes: Vec<Change>,
    },
    /// The server cannot make this change in place.
    #[error("stream `{stream}`: the server cannot change {} in place; keep the current value or create a new stream under another name", list(.changes))]
    Immutable {
        /// The stream.
        stream: String,
        /// The changes.
        changes: Vec<Change>,
    },
    /// The server stored other settings than those asked for.
    #[error("stream `{stream}`: the server applied other settings than asked ({}); the nats-server is probably too old (invalog needs 2.10.25 or later)", list(.changes))]
    NotApplied {
        /// The stream.
        stream: String,
        /// asked (wanted) versus applied (current).
        changes: Vec<Change>,
    },
}

/// What provisioning did.
#[derive(Debug, Clone)]
pub enum Provisioned {
    /// The stream did not exist and was created.
    Created(Box<Info>),
    /// The stream existed with these settings.
    Unchanged(Box<Info>),
    /// The stream existed and was updated.
    Updated(Box<Info>, Vec<Change>),
}

impl Provisioned {
    /// The stream's info after provisioning.
    pub fn info(&self) -> &Info {
        match self {
            Provisioned::Created(i) | Provisioned::Unchanged(i) | Provisioned::Updated(i, _) => i,
        }
    }
}

/// Creates or updates the log's stream; refuses changes that lose data.
pub async fn provision(
    js: &jetstream::Context,
    settings: &LogSettings,
) -> Result<Provisioned, ProvisionError> {
    provision_inner(js, settings, false).await
}

/// Like [`provision`], but applies changes that delete messages (shorter
/// retention, a new subject prefix).
pub async fn provision_allowing_data_loss(
    js: &jetstream::Context,
    settings: &LogSettings,
) -> Result<Provisioned, ProvisionError> {
    provision_inner(js, settings, true).await
}

async fn provision_inner(
    js: &jetstream::Context,
    settings: &LogSettings,
    allow_data_loss: bool,
) -> Result<Provisioned, ProvisionError> {
    let wanted = settings.stream_config();
    let api = |action| {
        let stream = settings.stream.clone();
        move |e: &dyn fmt::Display| ProvisionError::Api {
            stream,
            action,
            message: e.to_string(),
        }
    };
    let existing = match js.get_stream(&settings.stream).await {
        Ok(mut stream) => Some(
            stream
                .info()
                .await
                .map_err(|e| api("reading info")(&e))?
                .clone(),
        ),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(api("reading info")(&e)),
    };
    let Some(existing) = existing else {
        let stream = js
            .create_stream(wanted.clone())
            .await
            .map_err(|e| api("creating the stream")(&e))?;
        let info = stream.cached_info().clone();
        check_applied(settings, &wanted, &info.config)?;
        return Ok(Provisioned::Created(Box::new(info)));
    };
    let changes = diff(&existing.config, &wanted);
    if changes.is_empty() {
        check_applied(settings, &wanted, &existing.config)?;
        return Ok(Provisioned::Unchanged(Box::new(existing)));
    }
    let immutable: Vec<Change> = changes
        .iter()
        .filter(|c| matches!(c.field, "storage" | "retention"))
        .cloned()
        .collect();
    if !immutable.is_empty() {
        return Err(ProvisionError::Immutable {
            stream: settings.stream.clone(),
            changes: immutable,
        });
    }
    let lossy: Vec<Change> = changes
        .iter()
        .filter(|c| loses_data(c.field, &existing.config, &wanted))
        .cloned()
        .collect();
    if !lossy.is_empty() && !allow_data_loss {
        return Err(ProvisionError::WouldLoseData {
            stream: settings.stream.clone(),
            changes: lossy,
        });
    }
    let info = js
        .update_stream(wanted.clone())
        .await
        .map_err(|e| api("updating the stream")(&e))?;
    check_applied(settings, &wanted, &info.config)?;
    Ok(Provisioned::Updated(Box::new(info), changes))
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(ref js)
            if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// A limit of -1 or 0 means "none"; compare limits as "none or a number".
fn unlimited_to_max(v: i64) -> i64 {
    if v <= 0 {
        i64::MAX
    } else {
        v
    }
}

fn age(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::MAX
    } else {
        d
    }
}

fn loses_data(field: &str, current: &Config, wanted: &Config) -> bool {
    match field {
        "subjects" => true,
        "max_age" => age(wanted.max_age) < age(current.max_age),
        "max_messages" => {
            unlimited_to_max(wanted.max_messages) < unlimited_to_max(current.max_messages)
        }
        "max_bytes" => unlimited_to_max(wanted.max_bytes) < unlimited_to_max(current.max_bytes),
        _ => false,
    }
}

/// The settings invalog manages that differ between `current` and `wanted`.
pub fn diff(current: &Config, wanted: &Config) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut check = |field, a: String, b: String| {
        if a != b {
            changes.push(Change {
                field,
                current: a,
                wanted: b,
            });
        }
    };
    check(
        "subjects",
        format!("{:?}", current.subjects),
        format!("{:?}", wanted.subjects),
    );
    check(
        "storage",
        format!("{:?}", current.storage),
        format!("{:?}", wanted.storage),
    );
    check(
        "retention",
        format!("{:?}", current.retention),
        format!("{:?}", wanted.retention),
    );
    check(
        "discard",
        format!("{:?}", current.discard),
        format!("{:?}", wanted.discard),
    );
    check(
        "replicas",
        current.num_replicas.max(1).to_string(),
        wanted.num_replicas.max(1).to_string(),
    );
    check(
        "max_age",
        show_age(current.max_age),
        show_age(wanted.max_age),
    );
    check(
        "max_messages",
        show_limit(current.max_messages),
        show_limit(wanted.max_messages),
    );
    check(
        "max_bytes",
        show_limit(current.max_bytes),
        show_limit(wanted.max_bytes),
    );
    check(
        "max_message_size",
        show_limit(i64::from(current.max_message_size)),
        show_limit(i64::from(wanted.max_message_size)),
    );
    check(
        "duplicate_window",
        format!("{:?}", current.duplicate_window),
        format!("{:?}", wanted.duplicate_window),
    );
    check(
        "allow_direct",
        current.allow_direct.to_string(),
        wanted.allow_direct.to_string(),
    );
    check(
        "deny_delete",
        current.deny_delete.to_string(),
        wanted.deny_delete.to_string(),
    );
    changes
}

fn show_age(d: Duration) -> String {
    if d.is_zero() {
        "unlimited".into()
    } else {
        format!("{d:?}")
    }
}

fn show_limit(v: i64) -> String {
    if v <= 0 {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn check_applied(
    settings: &LogSettings,
    wanted: &Config,
    applied: &Config,
) -> Result<(), ProvisionError> {
    let changes: Vec<Change> = diff(wanted, applied)
        .into_iter()
        .map(|c| Change {
            field: c.field,
            current: c.wanted,
            wanted: c.current,
        })
        .collect();
    if changes.is_empty() {
        Ok(())
    } else {
        Err(ProvisionError::NotApplied {
            stream: settings.stream.clone(),
            changes,
        })
    }
}

/// The facts about the stream a node needs at start and to detect a stream
/// that was deleted and created again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPosition {
    /// First sequence still stored (`last + 1` when empty).
    pub first: u64,
    /// Last sequence ever stored (0 for a new stream).
    pub last: u64,
    /// When the stream was created; identifies this incarnation.
    pub created: SystemTime,
}

impl StreamPosition {
    /// Reads the position from a stream info.
    pub fn of(info: &Info) -> Self {
        Self {
            first: info.state.first_sequence,
            last: info.state.last_sequence,
            created: info.created.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorter_retention_loses_data_and_longer_does_not() {
        let base = LogSettings::default().stream_config();
        let mut shorter = base.clone();
        shorter.max_age = Duration::from_secs(60);
        let mut unlimited = base.clone();
        unlimited.max_age = Duration::ZERO;
        assert!(loses_data("max_age", &base, &shorter));
        assert!(!loses_data("max_age", &base, &unlimited));
        assert!(loses_data("max_age", &unlimited, &base));
        let mut fewer = base.clone();
        fewer.max_messages = 10;
        assert!(loses_data("max_messages", &base, &fewer));
        assert!(!loses_data("max_messages", &fewer, &base));
    }

    #[test]
    fn diff_names_each_changed_setting() {
        let base = LogSettings::default().stream_config();
        let mut other = base.clone();
        other.num_replicas = 3;
        other.duplicate_window = Duration::from_secs(5);
        let fields: Vec<_> = diff(&base, &other).iter().map(|c| c.field).collect();
        assert_eq!(fields, vec!["replicas", "duplicate_window"]);
        assert!(diff(&base, &base).is_empty());
    }
}
