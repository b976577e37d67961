//! The configuration as written: serde structs that mirror the TOML schema
//! of docs/configuration.md table by table. Every table denies unknown keys;
//! every key is optional here (required keys are checked, and defaults
//! applied, by `validate`). Values stay close to the text the user wrote —
//! durations and enum names as strings — so that `validate` can name the key
//! and the fix when one is wrong. This module and `wire` are the only ones
//! that derive serde.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The whole file (after environment overrides).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    pub node: Option<RawNode>,
    pub nats: RawNats,
    pub stream: RawStream,
    pub checkpoint: Option<RawCheckpoint>,
    pub http: RawHttp,
    pub logging: RawLogging,
    pub publisher: RawPublisher,
    pub presence: RawPresence,
    pub refreshers: Vec<RawRefresher>,
}

/// `[node]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNode {
    pub id: Option<String>,
    pub new_node: Option<String>,
    pub cold_boot_threshold: Option<u64>,
    pub fill_guard_window: Option<u64>,
    pub flush_interval: Option<DurationText>,
    pub retry: RawRetry,
    pub fence: RawFence,
    pub cold_boot: RawColdBoot,
}

/// `[node.cold_boot]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawColdBoot {
    pub max_concurrent: Option<u32>,
    pub lease_ttl: Option<DurationText>,
    pub retry_interval: Option<DurationText>,
    pub bucket: Option<String>,
}

/// `[node.retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRetry {
    pub attempts: Option<u32>,
    pub initial_backoff: Option<DurationText>,
    pub max_backoff: Option<DurationText>,
}

/// `[node.fence]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawFence {
    pub max_disconnected: Option<DurationText>,
    pub max_lag_messages: Option<u64>,
}

/// `[nats]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNats {
    pub urls: Option<Urls>,
    pub name: Option<String>,
    pub connect_timeout: Option<DurationText>,
    pub request_timeout: Option<DurationText>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub nkey_seed: Option<String>,
    pub nkey_seed_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    pub tls: Option<RawTls>,
}

/// `[nats.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub required: Option<bool>,
}

/// `[stream]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStream {
    pub name: Option<String>,
    pub subject_prefix: Option<String>,
    pub storage: Option<String>,
    pub replicas: Option<u64>,
    pub max_age: Option<DurationText>,
    pub max_messages: Option<u64>,
    pub max_bytes: Option<Size>,
    pub max_message_size: Option<Size>,
    pub duplicate_window: Option<DurationText>,
    pub provision: Option<Provision>,
}

/// `[checkpoint]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCheckpoint {
    pub store: Option<String>,
    pub path: Option<PathBuf>,
    pub bucket: Option<String>,
    pub replicas: Option<u64>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    pub listen: Option<String>,
}

/// `[logging]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLogging {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[publisher]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPublisher {
    pub origin: Option<String>,
    pub max_units_per_message: Option<u64>,
    pub ack_timeout: Option<DurationText>,
    pub attempts: Option<u32>,
}

/// `[presence]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPresence {
    pub bucket: Option<String>,
    pub interval: Option<DurationText>,
    pub replicas: Option<u64>,
    pub stale_after: Option<DurationText>,
}

/// One `[[refreshers]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRefresher {
    pub name: Option<String>,
    pub id: Option<String>,
    pub applier: Option<RawApplier>,
}

/// `[refreshers.applier]`: the keys of every kind; `validate` checks that
/// only the chosen kind's keys are set.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawApplier {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    pub timeout: Option<DurationText>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub hmac_secret: Option<String>,
    pub hmac_secret_file: Option<PathBuf>,
    pub max_batches_per_request: Option<u64>,
    pub keys: Option<Vec<String>>,
    pub refresh_all: Option<RawRefreshAll>,
    pub program: Option<PathBuf>,
    pub args: Option<Vec<String>>,
}

impl RawApplier {
    /// The keys that are set, besides `kind`.
    pub fn keys_set(&self) -> Vec<&'static str> {
        let set = [
            ("url", self.url.is_some()),
            ("url_file", self.url_file.is_some()),
            ("timeout", self.timeout.is_some()),
            ("bearer_token", self.bearer_token.is_some()),
            ("bearer_token_file", self.bearer_token_file.is_some()),
            ("hmac_secret", self.hmac_secret.is_some()),
            ("hmac_secret_file", self.hmac_secret_file.is_some()),
            (
                "max_batches_per_request",
                self.max_batches_per_request.is_some(),
            ),
            ("keys", self.keys.is_some()),
            ("refresh_all", self.refresh_all.is_some()),
            ("program", self.program.is_some()),
            ("args", self.args.is_some()),
        ];
        set.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect()
    }
}

/// A duration as written (`"5s"`), parsed by `validate`; a value of another
/// type is refused with "expected a duration such as \"5s\"".
#[derive(Debug, Clone)]
pub(super) struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"5s\", \"250ms\" or \"7d\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_owned()))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// `stream.provision`: `"create"`, `"update"` or `"off"`; the booleans of
/// earlier versions (`true` = update, `false` = off) still work.
#[derive(Debug, Clone)]
pub(super) enum Provision {
    Bool(bool),
    Text(String),
}

impl<'de> Deserialize<'de> for Provision {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Provision;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"create\", \"update\" or \"off\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Provision, E> {
                Ok(Provision::Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Provision, E> {
                Ok(Provision::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A size: an integer number of bytes or a string with a unit (`"10GiB"`).
#[derive(Debug, Clone)]
pub(super) enum Size {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: bytes as an integer, or a string such as \"10GiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size::Bytes)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Server URLs: an array of strings, or one string of comma-separated URLs
/// (the form environment variables use).
#[derive(Debug, Clone)]
pub(super) struct Urls(pub Vec<String>);

impl<'de> Deserialize<'de> for Urls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Urls;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of URLs, or one string of comma-separated URLs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Urls, E> {
                Ok(Urls(v.split(',').map(|u| u.trim().to_owned()).collect()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Urls, A::Error> {
                let mut urls = Vec::new();
                while let Some(url) = seq.next_element::<String>()? {
                    urls.push(url);
                }
                Ok(Urls(urls))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A redis applier's `refresh_all`: `"flushdb"`, or `{ patterns = [...] }`.
#[derive(Debug, Clone)]
pub(super) enum RawRefreshAll {
    Named(String),
    Patterns(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternsTable {
    patterns: Vec<String>,
}

impl<'de> Deserialize<'de> for RawRefreshAll {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRefreshAll;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"flushdb\" or a table { patterns = [\"prefix:*\"] }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRefreshAll, E> {
                Ok(RawRefreshAll::Named(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRefreshAll, A::Error> {
                let table = PatternsTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawRefreshAll::Patterns(table.patterns))
            }
        }
        deserializer.deserialize_any(V)
    }
}
