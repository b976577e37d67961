//! The configuration as written: serde structs that mirror the TOML schema
//! of docs/configuration.md table by table. Every table denies unknown keys;
//! every key is optional here (required keys are checked, and defaults
//! applied, by `validate`). Values stay close to the text the user wrote —
//! durations and enum names as strings — so that `validate` can name the key
//! and the fix when one is wrong. The same structs, filled with the values
//! in force, are what `render` serializes: each key is named once, here.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The whole file (after environment overrides).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<RawNode>,
    pub nats: RawNats,
    pub stream: RawStream,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<RawCheckpoint>,
    pub http: RawHttp,
    pub logging: RawLogging,
    pub publisher: RawPublisher,
    pub presence: RawPresence,
    pub refreshers: Vec<RawRefresher>,
}

/// `[node]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNode {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_boot_threshold: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill_guard_window: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_lookahead: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_interval: Option<DurationText>,
    pub retry: RawRetry,
    pub fence: RawFence,
    pub cold_boot: RawColdBoot,
}

/// `[node.cold_boot]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawColdBoot {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

/// `[node.retry]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRetry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_backoff: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<DurationText>,
}

/// `[node.fence]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawFence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_disconnected: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lag_messages: Option<u64>,
}

/// `[nats]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urls: Option<Urls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey_seed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey_seed_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
}

/// `[nats.tls]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

/// `[stream]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStream {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_window: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provision: Option<Provision>,
}

/// `[checkpoint]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCheckpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// `[logging]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLogging {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// `[publisher]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPublisher {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_units_per_message: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_timeout: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// `[presence]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPresence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<DurationText>,
}

/// One `[[refreshers]]` entry.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRefresher {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applier: Option<RawApplier>,
}

/// `[refreshers.applier]`: the keys of every kind; `validate` checks that
/// only the chosen kind's keys are set.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawApplier {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batches_per_request: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_all: Option<RawRefreshAll>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
}

impl RawApplier {
    /// The keys that are set, besides `kind` (read off the serialized
    /// table, so the list cannot miss a key).
    pub fn keys_set(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| k != "kind")
                .collect(),
            _ => Vec::new(),
        }
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

impl Serialize for DurationText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
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

impl Serialize for Provision {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Provision::Bool(b) => serializer.serialize_bool(*b),
            Provision::Text(t) => serializer.serialize_str(t),
        }
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

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Size::Bytes(n) => serializer.serialize_u64(*n),
            Size::Text(t) => serializer.serialize_str(t),
        }
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

impl Serialize for Urls {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A redis applier's `refresh_all`: `"flushdb"`, or `{ patterns = [...] }`.
#[derive(Debug, Clone)]
pub(super) enum RawRefreshAll {
    Named(String),
    Patterns(Vec<String>),
}

#[derive(Deserialize, Serialize)]
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

impl Serialize for RawRefreshAll {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RawRefreshAll::Named(name) => serializer.serialize_str(name),
            RawRefreshAll::Patterns(patterns) => PatternsTable {
                patterns: patterns.clone(),
            }
            .serialize(serializer),
        }
    }
}
