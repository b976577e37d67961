//! The one error type of configuration: where the bad value came from (the
//! file, or an `INVALOG_…` environment variable), the dotted key, what is
//! wrong and how to fix it, and a [`ConfigErrorKind`] to match on. Messages
//! never contain a secret: values of secret keys, URLs and file contents are
//! never echoed.

use std::fmt;
use std::path::PathBuf;

/// What kind of problem a [`ConfigError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file (or a file a key names, like `token_file`) cannot be read.
    Read,
    /// The file is not valid TOML.
    Syntax,
    /// A key that does not exist in its table.
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong type, out of range, or not in the allowed set.
    InvalidValue,
    /// Keys or values that contradict each other: two ways to authenticate,
    /// a refresher name used twice, a key of another applier kind.
    Conflict,
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The TOML file.
    File(PathBuf),
    /// An environment variable (its name, like `INVALOG_NATS__URLS`).
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// A configuration that cannot be used. `Display` gives one line: origin,
/// key, problem and fix, for example
/// ``config/agent.toml: unknown key `nats.ulr`; did you mean `urls`?``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ConfigError {
    kind: ConfigErrorKind,
    origin: Origin,
    key: Option<String>,
    message: String,
}

impl ConfigError {
    pub(super) fn new(
        kind: ConfigErrorKind,
        origin: Origin,
        key: Option<String>,
        message: String,
    ) -> Self {
        Self {
            kind,
            origin,
            key,
            message,
        }
    }

    /// "missing required key `key`; hint", against the file, where the key
    /// belongs. `key` is shown as given.
    pub(super) fn missing(file: &std::path::Path, key: &str, hint: &str) -> Self {
        Self::new(
            ConfigErrorKind::MissingKey,
            Origin::File(file.to_owned()),
            Some(key.to_owned()),
            format!("missing required key `{key}`; {hint}"),
        )
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// Where the offending value came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The dotted key (`nats.urls`, `refreshers[1].applier.kind`), when the
    /// problem has one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

/// Shows a figment path (`refreshers.0.applier`) the way the docs write
/// keys (`refreshers[0].applier`).
pub(super) fn display_key(path: &str) -> String {
    let mut shown = String::new();
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            shown.push_str(&format!("[{segment}]"));
        } else {
            if !shown.is_empty() {
                shown.push('.');
            }
            shown.push_str(segment);
        }
    }
    shown
}

/// The environment variable that sets a dotted key (`nats.urls` →
/// `INVALOG_NATS__URLS`).
pub(super) fn env_var_for(path: &str) -> String {
    format!(
        "{}{}",
        super::ENV_PREFIX,
        path.split('.')
            .collect::<Vec<_>>()
            .join("__")
            .to_uppercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shown_with_indexes() {
        assert_eq!(
            display_key("refreshers.0.applier.kind"),
            "refreshers[0].applier.kind"
        );
        assert_eq!(display_key("nats.urls"), "nats.urls");
        assert_eq!(
            env_var_for("nats.connect_timeout"),
            "INVALOG_NATS__CONNECT_TIMEOUT"
        );
    }
}
