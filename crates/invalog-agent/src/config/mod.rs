//! Configuration: a TOML file plus `INVALOG_<TABLE>__<KEY>` environment
//! overrides, merged with figment and validated once, here, into the typed
//! settings the rest of the crate takes ([`AgentSettings`],
//! [`ClientSettings`]). Nothing else in the crate reads configuration or
//! the environment. The schema, every default and every rule are in
//! docs/configuration.md.
//!
//! # Layout
//!
//! - `source`: reads the file and the environment, merges them, and
//!   remembers where each value came from.
//! - `raw`: the file as written (serde, unknown keys denied).
//! - `validate`, `nats` and `refreshers`: raw → typed, defaults applied;
//!   `values` parses single values (durations, sizes, URLs, secrets).
//! - `render`: the effective configuration as TOML, secrets redacted.
//! - `error`: [`ConfigError`], which names the file or the environment
//!   variable, the key, the problem and the fix, and never a secret.

mod error;
mod nats;
mod raw;
mod refreshers;
mod render;
mod source;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, ConfigErrorKind, Origin};
pub use invalog::suggest::did_you_mean;

use crate::AgentSettings;
use invalog::connect::NatsSettings;
use invalog::model::{NodeId, RefresherDef};
use invalog::presence::PresenceSettings;
use invalog::publish::PublisherSettings;
use invalog::stream::LogSettings;
use source::Sources;
use validate::Settings;
use values::Cx;

/// Environment variables that start with this and contain `__` override
/// the file: `INVALOG_NODE__ID=web-2` sets `node.id`.
pub const ENV_PREFIX: &str = "INVALOG_";

/// What `invalog publish` (and other clients of the log) need. Appliers
/// are optional for clients, and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// NATS connection.
    pub nats: NatsSettings,
    /// The stream.
    pub log: LogSettings,
    /// Publishing.
    pub publisher: PublisherSettings,
    /// The refreshers one can publish to.
    pub refreshers: Vec<RefresherDef>,
    /// The presence bucket nodes report to (`invalog status`, `explain`).
    pub presence: PresenceSettings,
    /// `presence.stale_after`: a node whose last report is older is stale.
    pub stale_after: Duration,
    /// `node.id`, when configured.
    pub node_id: Option<NodeId>,
    /// `node.catch_up_lookahead` (`invalog replay --dry-run`), also when
    /// `node.id` is not configured.
    pub catch_up_lookahead: usize,
}

/// A configuration file, merged with the environment and validated.
/// [`Config::agent`] and [`Config::client`] add what each role requires.
#[derive(Debug, Clone)]
pub struct Config {
    file: PathBuf,
    settings: Settings,
}

/// Reads the TOML file at `path`, applies the `INVALOG_…__…` variables of
/// the process environment, and validates the result.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|name| source::is_override(name)) else {
            continue;
        };
        let value = value.into_string().map_err(|_| {
            ConfigError::new(
                ConfigErrorKind::InvalidValue,
                Origin::Env(name.to_owned()),
                None,
                "the value is not valid UTF-8".into(),
            )
        })?;
        env.push((name.to_owned(), value));
    }
    load_with_env(path, &env)
}

/// Like [`load`], with the environment given as (name, value) pairs instead
/// of read from the process (tests).
pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let sources = Sources::read(path, env.iter().cloned())?;
    let raw = sources.raw()?;
    let settings = validate::settings(&Cx { sources: &sources }, &raw)?;
    Ok(Config {
        file: path.to_owned(),
        settings,
    })
}

impl Config {
    /// The configuration file this was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The agent's settings: needs `node.id` and, for every refresher, an
    /// applier.
    pub fn agent(&self) -> Result<AgentSettings, ConfigError> {
        let s = &self.settings;
        let (Some(node), Some(checkpoint)) = (&s.node, &s.checkpoint) else {
            return Err(self.missing(
                "node.id",
                "the agent needs a stable node id, like `id = \"web-1\"` in `[node]` (or INVALOG_NODE__ID=web-1)",
            ));
        };
        if s.refreshers.is_empty() {
            return Err(self.missing(
                "refreshers",
                "the agent needs at least one `[[refreshers]]` entry with its `[refreshers.applier]`",
            ));
        }
        let mut refreshers = Vec::with_capacity(s.refreshers.len());
        for (i, (def, applier)) in s.refreshers.iter().enumerate() {
            let Some(applier) = applier else {
                return Err(self.missing(
                    &format!("refreshers[{i}].applier"),
                    &format!(
                        "the agent applies refresher `{}` through an applier: add `[refreshers.applier]` with `kind = \"webhook\"`, `\"redis\"` or `\"command\"`",
                        def.name
                    ),
                ));
            };
            refreshers.push((def.clone(), applier.clone()));
        }
        Ok(AgentSettings {
            node: node.clone(),
            nats: s.nats.clone(),
            log: s.log.clone(),
            provision: s.provision,
            checkpoint: checkpoint.clone(),
            http: s.http.clone(),
            logging: s.logging.clone(),
            presence: s.presence.clone(),
            refreshers,
        })
    }

    /// A client's settings (`invalog publish`); appliers are ignored.
    pub fn client(&self) -> Result<ClientSettings, ConfigError> {
        let s = &self.settings;
        Ok(ClientSettings {
            nats: s.nats.clone(),
            log: s.log.clone(),
            publisher: s.publisher.clone(),
            refreshers: s.refreshers.iter().map(|(def, _)| def.clone()).collect(),
            presence: s.presence.clone(),
            stale_after: s.stale_after,
            node_id: s.node.as_ref().map(|n| n.node_id.clone()),
            catch_up_lookahead: s.catch_up_lookahead,
        })
    }

    /// The effective configuration as TOML: defaults filled in, environment
    /// overrides applied, secrets as `"[redacted]"`.
    pub fn effective_toml(&self) -> String {
        render::effective_toml(&self.settings)
    }

    fn missing(&self, key: &str, hint: &str) -> ConfigError {
        ConfigError::missing(&self.file, key, hint)
    }
}
