//! Comparing a stream's configuration with the one invalog asks for: each
//! setting invalog manages, written as people write it (`7d`, `10GiB`,
//! `unlimited`), the differences between two configurations, and which of
//! them would delete messages.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};

use crate::units;

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

impl Change {
    /// `max_age: 7d -> unlimited, max_bytes: 10GiB -> unlimited`.
    pub fn list(changes: &[Change]) -> String {
        changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every setting invalog manages, in a fixed order, with its value in
/// `config` written as people write it. `invalog stream show` prints these;
/// [`diff`] compares them.
pub fn fields(config: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("subjects", config.subjects.join(", ")),
        (
            "storage",
            match config.storage {
                StorageType::File => "file",
                StorageType::Memory => "memory",
            }
            .into(),
        ),
        (
            "retention",
            match config.retention {
                RetentionPolicy::Limits => "limits",
                RetentionPolicy::Interest => "interest",
                RetentionPolicy::WorkQueue => "workqueue",
            }
            .into(),
        ),
        (
            "discard",
            match config.discard {
                DiscardPolicy::Old => "old",
                DiscardPolicy::New => "new",
            }
            .into(),
        ),
        ("replicas", config.num_replicas.max(1).to_string()),
        ("max_age", show_age(config.max_age)),
        (
            "max_messages",
            show_limit(config.max_messages, |v| v.to_string()),
        ),
        ("max_bytes", show_limit(config.max_bytes, units::size)),
        (
            "max_message_size",
            show_limit(i64::from(config.max_message_size), units::size),
        ),
        ("duplicate_window", units::duration(config.duplicate_window)),
        ("allow_direct", config.allow_direct.to_string()),
        ("deny_delete", config.deny_delete.to_string()),
    ]
}

/// The settings invalog manages that differ between `current` and `wanted`.
pub fn diff(current: &Config, wanted: &Config) -> Vec<Change> {
    fields(current)
        .into_iter()
        .zip(fields(wanted))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((field, current), (_, wanted))| Change {
            field,
            current,
            wanted,
        })
        .collect()
}

/// The changes among `changes` that the server cannot make in place.
pub(super) fn immutable(changes: &[Change]) -> Vec<Change> {
    changes
        .iter()
        .filter(|c| matches!(c.field, "storage" | "retention"))
        .cloned()
        .collect()
}

/// The changes among `changes` that would delete messages.
pub(super) fn lossy(changes: &[Change], current: &Config, wanted: &Config) -> Vec<Change> {
    changes
        .iter()
        .filter(|c| loses_data(c.field, current, wanted))
        .cloned()
        .collect()
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

pub(super) fn loses_data(field: &str, current: &Config, wanted: &Config) -> bool {
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

fn show_age(d: Duration) -> String {
    if d.is_zero() {
        "unlimited".into()
    } else {
        units::duration(d)
    }
}

fn show_limit(v: i64, show: impl Fn(u64) -> String) -> String {
    match u64::try_from(v) {
        Ok(v) if v > 0 => show(v),
        _ => "unlimited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::LogSettings;

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
    fn diff_names_each_changed_setting_in_human_units() {
        let base = LogSettings::default().stream_config();
        let mut other = base.clone();
        other.num_replicas = 3;
        other.duplicate_window = Duration::from_secs(5);
        other.max_age = Duration::ZERO;
        other.max_bytes = 10 << 30;
        let shown: Vec<_> = diff(&base, &other)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "replicas: 1 -> 3",
                "max_age: 7d -> unlimited",
                "max_bytes: unlimited -> 10GiB",
                "duplicate_window: 2m -> 5s",
            ]
        );
        assert!(diff(&base, &base).is_empty());
    }

    #[test]
    fn fields_show_every_managed_setting() {
        let shown: Vec<String> = fields(&LogSettings::default().stream_config())
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            shown.join(" "),
            "subjects=invalog.> storage=file retention=limits discard=old replicas=1 \
             max_age=7d max_messages=unlimited max_bytes=unlimited max_message_size=1MiB \
             duplicate_window=2m allow_direct=true deny_delete=true"
        );
    }
}
