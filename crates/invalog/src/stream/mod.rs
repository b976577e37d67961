//! The log itself: one JetStream stream on subjects `<prefix>.<refresher>`,
//! provisioned from [`LogSettings`]. Provisioning is idempotent: it creates a
//! missing stream, updates one whose settings changed, refuses changes that
//! would lose data (unless asked through
//! [`provision_allowing_data_loss`]) and refuses to go on when the server
//! applied something other than what was asked (older servers silently drop
//! fields they do not know). Agents by default only create a missing stream
//! and otherwise compare ([`prepare`] with [`StreamPolicy::Create`]), so
//! that agents with different settings never change the stream under each
//! other; `invalog stream provision` / `edit` change it on purpose.
//! `diff` compares configurations, setting by setting, in human units.

mod diff;

use std::fmt;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{
    self,
    stream::{Config, DiscardPolicy, Info, RetentionPolicy, StorageType},
};

use crate::model::RefresherName;
pub use diff::{diff, fields, Change};

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

impl LogSettings {
    /// The settings of an existing stream (`invalog stream edit` starts from
    /// them): the inverse of [`stream_config`](Self::stream_config) for a
    /// stream invalog created. The subject prefix is the first subject
    /// without its `.>`.
    pub fn of_stream(config: &Config) -> Self {
        let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
        let subject = config.subjects.first().map(String::as_str).unwrap_or("");
        Self {
            stream: config.name.clone(),
            subject_prefix: subject.strip_suffix(".>").unwrap_or(subject).to_owned(),
            storage: match config.storage {
                StorageType::File => Storage::File,
                StorageType::Memory => Storage::Memory,
            },
            replicas: config.num_replicas.max(1),
            max_age: Some(config.max_age).filter(|age| !age.is_zero()),
            max_messages: positive(config.max_messages),
            max_bytes: positive(config.max_bytes),
            max_message_size: u32::try_from(config.max_message_size)
                .ok()
                .filter(|v| *v > 0)
                .unwrap_or(i32::MAX as u32),
            duplicate_window: config.duplicate_window,
        }
    }
}

fn limit(value: Option<u64>) -> i64 {
    value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error("stream `{stream}`: refusing a change that can delete messages ({}); to apply it on purpose run `invalog stream provision --config <file> --allow-data-loss` (library: `provision_allowing_data_loss`), or keep the stream's current values in the file's [stream] (`invalog stream show --config <file>` lists both)", Change::list(.changes))]
    WouldLoseData {
        /// The stream.
        stream: String,
        /// The changes that would delete messages.
        changes: Vec<Change>,
    },
    /// The server cannot make this change in place.
    #[error("stream `{stream}`: the server cannot change {} in place; keep the current value in [stream] (`invalog stream show --config <file>` lists it) or use a new stream under another name", Change::list(.changes))]
    Immutable {
        /// The stream.
        stream: String,
        /// The changes.
        changes: Vec<Change>,
    },
    /// The server stored other settings than those asked for.
    #[error("stream `{stream}`: the server applied other settings than asked ({}); the nats-server is probably too old (invalog needs 2.10.25 or later)", Change::list(.changes))]
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
    /// The stream exists with other settings and was left as it is
    /// ([`create_or_verify`]); `current` is the stream's, `wanted` these
    /// settings'.
    Differs(Box<Info>, Vec<Change>),
}

impl Provisioned {
    /// The stream's info after provisioning.
    pub fn info(&self) -> &Info {
        match self {
            Provisioned::Created(i)
            | Provisioned::Unchanged(i)
            | Provisioned::Updated(i, _)
            | Provisioned::Differs(i, _) => i,
        }
    }
}

/// What an agent does with the stream when it starts (`[stream] provision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StreamPolicy {
    /// Create the stream when it is missing; otherwise leave it as it is and
    /// report how its settings differ (the default). The stream then has one
    /// owner: whoever runs `invalog stream provision` / `edit`.
    #[default]
    Create,
    /// Create the stream, or update it to these settings ([`provision`]:
    /// changes that would delete messages are refused).
    Update,
    /// Neither create nor change the stream (someone else owns it, or the
    /// agent lacks the permission); report differences like `Create`.
    Off,
}

/// Applies `policy` at an agent's start: `None` only when the policy is
/// `Off` and the stream does not exist.
pub async fn prepare(
    js: &jetstream::Context,
    settings: &LogSettings,
    policy: StreamPolicy,
) -> Result<Option<Provisioned>, ProvisionError> {
    match policy {
        StreamPolicy::Create => create_or_verify(js, settings).await.map(Some),
        StreamPolicy::Update => provision(js, settings).await.map(Some),
        StreamPolicy::Off => Ok(inspect(js, settings)
            .await?
            .map(|info| compared(settings, info))),
    }
}

/// The stream's info, `None` when it does not exist.
pub async fn inspect(
    js: &jetstream::Context,
    settings: &LogSettings,
) -> Result<Option<Info>, ProvisionError> {
    match js.get_stream(&settings.stream).await {
        Ok(mut stream) => Ok(Some(
            stream
                .info()
                .await
                .map_err(|e| api_error(settings, "reading info", &e))?
                .clone(),
        )),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(api_error(settings, "reading info", &e)),
    }
}

/// Creates the stream when it is missing; otherwise changes nothing and
/// returns [`Provisioned::Differs`] when its settings are not these.
pub async fn create_or_verify(
    js: &jetstream::Context,
    settings: &LogSettings,
) -> Result<Provisioned, ProvisionError> {
    match inspect(js, settings).await? {
        Some(info) => Ok(compared(settings, info)),
        None => create(js, settings).await,
    }
}

/// `Unchanged` or `Differs`: the existing stream against `settings`.
fn compared(settings: &LogSettings, info: Info) -> Provisioned {
    let changes = diff(&info.config, &settings.stream_config());
    if changes.is_empty() {
        Provisioned::Unchanged(Box::new(info))
    } else {
        Provisioned::Differs(Box::new(info), changes)
    }
}

fn api_error(settings: &LogSettings, action: &'static str, e: &dyn fmt::Display) -> ProvisionError {
    ProvisionError::Api {
        stream: settings.stream.clone(),
        action,
        message: e.to_string(),
    }
}

async fn create(
    js: &jetstream::Context,
    settings: &LogSettings,
) -> Result<Provisioned, ProvisionError> {
    let wanted = settings.stream_config();
    let stream = js
        .create_stream(wanted.clone())
        .await
        .map_err(|e| api_error(settings, "creating the stream", &e))?;
    let info = stream.cached_info().clone();
    check_applied(settings, &wanted, &info.config)?;
    Ok(Provisioned::Created(Box::new(info)))
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
    let Some(existing) = inspect(js, settings).await? else {
        return create(js, settings).await;
    };
    let wanted = settings.stream_config();
    let changes = diff(&existing.config, &wanted);
    if changes.is_empty() {
        check_applied(settings, &wanted, &existing.config)?;
        return Ok(Provisioned::Unchanged(Box::new(existing)));
    }
    let immutable = diff::immutable(&changes);
    if !immutable.is_empty() {
        return Err(ProvisionError::Immutable {
            stream: settings.stream.clone(),
            changes: immutable,
        });
    }
    let lossy = diff::lossy(&changes, &existing.config, &wanted);
    if !lossy.is_empty() && !allow_data_loss {
        return Err(ProvisionError::WouldLoseData {
            stream: settings.stream.clone(),
            changes: lossy,
        });
    }
    let info = js
        .update_stream(wanted.clone())
        .await
        .map_err(|e| api_error(settings, "updating the stream", &e))?;
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
    fn the_settings_of_a_stream_invalog_created_are_those_it_asked_for() {
        let settings = LogSettings {
            stream: "S".into(),
            subject_prefix: "acme.invalog".into(),
            storage: Storage::Memory,
            replicas: 3,
            max_age: None,
            max_messages: Some(1000),
            max_bytes: Some(10 << 30),
            max_message_size: 4096,
            duplicate_window: Duration::from_secs(30),
        };
        assert_eq!(LogSettings::of_stream(&settings.stream_config()), settings);
        let default = LogSettings::default();
        assert_eq!(LogSettings::of_stream(&default.stream_config()), default);
    }
}
