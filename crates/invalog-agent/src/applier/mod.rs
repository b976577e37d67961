//! Appliers: how the `invalog agent` applies batches to the caches of a node
//! written in any language. Each applier is a [`invalog::Refresher`] built from
//! its settings: `webhook` POSTs the batch to the node's app, `redis`
//! deletes keys rendered from templates, `command` runs a program with the
//! batch on stdin. Failures follow the node's policy (retry, escalate,
//! stall); appliers only report them.

use std::path::PathBuf;
use std::time::Duration;

use invalog::secret::Secret;

/// Settings of a `webhook` applier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// URL to POST each batch to (`http://127.0.0.1:8080/invalidate`).
    pub url: String,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
    /// Key of the HMAC-SHA256 signature header.
    pub hmac_secret: Option<Secret>,
    /// Most batches in one request while the node catches up: 1 (the
    /// default) sends every batch alone in the single-batch body; above 1,
    /// consecutive batches go together in the multi-batch body
    /// (`"format": 2`), which the receiver must understand.
    pub max_batches_per_request: usize,
}

/// What a `redis` applier does on refresh-all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisRefreshAll {
    /// Delete every key matching these patterns (SCAN + UNLINK, never KEYS).
    Patterns(Vec<String>),
    /// FLUSHDB the configured database.
    FlushDb,
}

/// Settings of a `redis` applier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db` (a secret: it may hold a password).
    pub url: Secret,
    /// Key templates rendered per id/uuid/key: `content:{id}`.
    pub key_templates: Vec<String>,
    /// What refresh-all deletes.
    pub refresh_all: RedisRefreshAll,
}

/// Settings of a `command` applier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSettings {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Longest run; the program is killed after it.
    pub timeout: Duration,
    /// Most batches in one run while the node catches up: 1 (the default)
    /// runs the program once per batch with the single-batch body; above 1,
    /// consecutive batches go together in the multi-batch body.
    pub max_batches_per_request: usize,
}

/// One refresher's applier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplierSettings {
    /// POST to the node's app.
    Webhook(WebhookSettings),
    /// Delete Redis keys.
    Redis(RedisSettings),
    /// Run a program.
    Command(CommandSettings),
}

mod body;
mod body_group;
mod command;
mod redis;
mod template;
mod webhook;

use std::sync::Arc;

use invalog::model::{RefresherDef, RefresherName};
use invalog::refresher::Refresher;

pub use self::redis::RedisApplier;
pub use body::{encode_applier_body, encode_refresh_all_body, ApplierTrigger};
pub use body_group::{encode_applier_group_body, APPLIER_GROUP_FORMAT_VERSION};
pub use command::CommandApplier;
pub use template::{check_key_template, key_template_pattern};
pub use webhook::{WebhookApplier, HEADER_SIGNATURE, HEADER_TIMESTAMP};

/// Why an applier could not be built from its settings. Messages name the
/// refresher and the setting (as written under `[refreshers.applier]`) and
/// never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplierError {
    /// A setting has a value the applier cannot use.
    #[error("refresher `{refresher}`: applier setting `{key}`: {message}")]
    InvalidSetting {
        /// The refresher.
        refresher: RefresherName,
        /// The setting, as written in the configuration (`url`, `keys`).
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("refresher `{refresher}`: cannot build the webhook client: {message}")]
    Client {
        /// The refresher.
        refresher: RefresherName,
        /// What failed.
        message: String,
    },
}

impl ApplierError {
    fn invalid(def: &RefresherDef, key: &'static str, message: impl Into<String>) -> Self {
        ApplierError::InvalidSetting {
            refresher: def.name.clone(),
            key,
            message: message.into(),
        }
    }
}

/// Builds the applier of one refresher. Nothing is contacted yet: webhooks
/// and Redis connect on first use, commands run per batch.
pub fn build(
    def: &RefresherDef,
    settings: &ApplierSettings,
) -> Result<Arc<dyn Refresher>, ApplierError> {
    Ok(match settings {
        ApplierSettings::Webhook(s) => Arc::new(WebhookApplier::new(def, s)?),
        ApplierSettings::Redis(s) => Arc::new(RedisApplier::new(def, s)?),
        ApplierSettings::Command(s) => Arc::new(CommandApplier::new(def, s)?),
    })
}

/// Checks a timeout setting: more than zero.
fn check_timeout(def: &RefresherDef, timeout: Duration) -> Result<(), ApplierError> {
    if timeout.is_zero() {
        return Err(ApplierError::invalid(def, "timeout", "must be more than 0"));
    }
    Ok(())
}

/// An error and its sources, `outer: inner: innermost` (the `Display` of
/// most errors shows only the outer message).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let message = inner.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = inner.source();
    }
    text
}
