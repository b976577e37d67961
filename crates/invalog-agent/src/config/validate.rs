//! Raw configuration → typed settings: the one place where defaults are
//! applied and every rule of docs/configuration.md is checked. Tables are
//! checked in the order of the reference and the first problem is
//! reported. What only one role needs (a node id for the agent, an applier
//! per refresher) is checked later by `Config::agent`.

use std::net::SocketAddr;
use std::time::Duration;

use super::nats::nats;
use super::raw::{
    Provision, RawCheckpoint, RawConfig, RawNode, RawPresence, RawPublisher, RawStream,
};
use super::refreshers::refreshers;
use super::values::{Cx, Result};
use crate::applier::ApplierSettings;
use crate::{CheckpointSettings, HttpSettings, LogFormat, LoggingSettings};
use invalog::connect::NatsSettings;
use invalog::model::{NodeId, RefresherDef};
use invalog::node::{
    ColdBootLimit, FenceSettings, NewNodePolicy, NodeSettings, RetryPolicy,
    DEFAULT_CATCH_UP_LOOKAHEAD,
};
use invalog::presence::PresenceSettings;
use invalog::publish::PublisherSettings;
use invalog::stream::StreamPolicy;
use invalog::stream::{LogSettings, Storage};

/// The agent's stale-fill guard window when `node.fill_guard_window` is not
/// set (24 bytes an entry: under 100 KiB).
const DEFAULT_FILL_GUARD_WINDOW: u64 = 4096;

/// The largest window accepted (24 MiB).
const MAX_FILL_GUARD_WINDOW: u64 = 1 << 20;

/// The largest catch-up lookahead accepted (a decoded message held per
/// slot: hundreds of MiB at this size).
const MAX_CATCH_UP_LOOKAHEAD: u64 = 1_000_000;

/// Everything the file configures, validated, with defaults filled in.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// `None` without `node.id`.
    pub node: Option<NodeSettings>,
    pub nats: NatsSettings,
    pub log: LogSettings,
    pub provision: StreamPolicy,
    /// `None` when it depends on a node id that is not configured.
    pub checkpoint: Option<CheckpointSettings>,
    pub http: HttpSettings,
    pub logging: LoggingSettings,
    pub publisher: PublisherSettings,
    pub presence: PresenceSettings,
    /// `presence.stale_after`: when `invalog status` calls a node stale.
    pub stale_after: Duration,
    /// `node.catch_up_lookahead`, also without a node id (`replay --dry-run`).
    pub catch_up_lookahead: usize,
    pub refreshers: Vec<(RefresherDef, Option<ApplierSettings>)>,
}

/// `presence.stale_after` unless configured.
pub(super) const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

/// Validates the whole file.
pub(super) fn settings(cx: &Cx, raw: &RawConfig) -> Result<Settings> {
    let node = raw
        .node
        .as_ref()
        .map(|n| node(cx, n))
        .transpose()?
        .flatten();
    let node_id = node.as_ref().map(|n| &n.node_id);
    let catch_up_lookahead = cx.within(
        "node.catch_up_lookahead",
        raw.node
            .as_ref()
            .and_then(|n| n.catch_up_lookahead)
            .unwrap_or(DEFAULT_CATCH_UP_LOOKAHEAD as u64),
        0,
        MAX_CATCH_UP_LOOKAHEAD,
    )? as usize;
    let nats = nats(cx, &raw.nats)?;
    let (log, provision) = stream(cx, &raw.stream)?;
    let (presence, stale_after) = presence(cx, &raw.presence)?;
    let replicas = presence.replicas;
    Ok(Settings {
        checkpoint: checkpoint(cx, raw.checkpoint.as_ref(), node_id)?,
        http: HttpSettings {
            listen: match &raw.http.listen {
                Some(text) => text.trim().parse::<SocketAddr>().map_err(|_| {
                    cx.invalid(
                        "http.listen",
                        format!("`{text}` is not an IP address and port, like `127.0.0.1:9464`"),
                    )
                })?,
                None => HttpSettings::default().listen,
            },
        },
        logging: logging(cx, raw)?,
        publisher: publisher(cx, &raw.publisher, node_id)?,
        presence,
        stale_after,
        catch_up_lookahead,
        refreshers: refreshers(cx, &raw.refreshers)?,
        // The lease bucket is replicated like the presence bucket.
        node: node.map(|mut node| {
            node.cold_boot.replicas = replicas;
            node.catch_up_lookahead = catch_up_lookahead;
            node
        }),
        nats,
        log,
        provision,
    })
}

fn node(cx: &Cx, raw: &RawNode) -> Result<Option<NodeSettings>> {
    let defaults = RetryPolicy::default();
    let retry = RetryPolicy {
        attempts: match raw.retry.attempts {
            Some(0) => return Err(cx.invalid("node.retry.attempts", "use at least 1")),
            Some(attempts) => attempts,
            None => defaults.attempts,
        },
        initial_backoff: cx.duration_or(
            "node.retry.initial_backoff",
            raw.retry.initial_backoff.as_ref(),
            defaults.initial_backoff,
        )?,
        max_backoff: cx.duration_or(
            "node.retry.max_backoff",
            raw.retry.max_backoff.as_ref(),
            defaults.max_backoff,
        )?,
    };
    if retry.max_backoff < retry.initial_backoff {
        return Err(cx.conflict(
            "node.retry.max_backoff",
            "`node.retry.max_backoff` is shorter than `node.retry.initial_backoff`".into(),
        ));
    }
    let fence = FenceSettings {
        max_disconnected: raw
            .fence
            .max_disconnected
            .as_ref()
            .map(|d| cx.duration("node.fence.max_disconnected", d))
            .transpose()?,
        max_lag_messages: raw
            .fence
            .max_lag_messages
            .map(|n| cx.within("node.fence.max_lag_messages", n, 1, u64::MAX))
            .transpose()?,
    };
    let new_node = match &raw.new_node {
        Some(policy) => cx.choice(
            "node.new_node",
            policy,
            &[
                ("cold_boot", NewNodePolicy::ColdBoot),
                ("replay_all", NewNodePolicy::ReplayAll),
                ("tail", NewNodePolicy::Tail),
            ],
        )?,
        None => NewNodePolicy::default(),
    };
    let cold_boot_threshold = raw
        .cold_boot_threshold
        .map(|n| cx.within("node.cold_boot_threshold", n, 1, u64::MAX))
        .transpose()?;
    // The agent keeps the stale-fill guard by default (`/may-fill`); 0 turns it off.
    let fill_guard_window = cx.within(
        "node.fill_guard_window",
        raw.fill_guard_window.unwrap_or(DEFAULT_FILL_GUARD_WINDOW),
        0,
        MAX_FILL_GUARD_WINDOW,
    )?;
    let fill_guard_window = (fill_guard_window > 0).then_some(fill_guard_window as usize);
    let flush_interval = cx.duration_or(
        "node.flush_interval",
        raw.flush_interval.as_ref(),
        Duration::from_secs(1),
    )?;
    let Some(id) = &raw.id else { return Ok(None) };
    let node_id = NodeId::new(id.as_str()).map_err(|e| {
        cx.invalid(
            "node.id",
            format!("`{}` is not a valid node id: {}", e.value, e.why),
        )
    })?;
    Ok(Some(NodeSettings {
        new_node,
        cold_boot_threshold,
        fill_guard_window,
        retry,
        flush_interval,
        fence,
        cold_boot: cold_boot(cx, &raw.cold_boot)?,
        ..NodeSettings::new(node_id)
    }))
}

/// `[node.cold_boot]`: how many nodes of the fleet cold boot at once.
fn cold_boot(cx: &Cx, raw: &super::raw::RawColdBoot) -> Result<ColdBootLimit> {
    let defaults = ColdBootLimit::default();
    let lease_ttl = cx.duration_or(
        "node.cold_boot.lease_ttl",
        raw.lease_ttl.as_ref(),
        defaults.lease_ttl,
    )?;
    if lease_ttl < Duration::from_secs(1) {
        return Err(cx.invalid(
            "node.cold_boot.lease_ttl",
            "use at least `1s`: the lease is renewed every third of it",
        ));
    }
    Ok(ColdBootLimit {
        max_concurrent: match raw.max_concurrent {
            Some(n) => cx.within("node.cold_boot.max_concurrent", n.into(), 0, 1000)? as u32,
            None => defaults.max_concurrent,
        },
        lease_ttl,
        retry_interval: cx.duration_or(
            "node.cold_boot.retry_interval",
            raw.retry_interval.as_ref(),
            defaults.retry_interval,
        )?,
        bucket: match &raw.bucket {
            Some(bucket) => cx.token("node.cold_boot.bucket", bucket)?,
            None => defaults.bucket,
        },
        replicas: defaults.replicas,
    })
}

fn stream(cx: &Cx, raw: &RawStream) -> Result<(LogSettings, StreamPolicy)> {
    let defaults = LogSettings::default();
    let max_age = match &raw.max_age {
        Some(text) if text.0.trim() == "unlimited" => None,
        Some(text) => Some(cx.duration("stream.max_age", text)?),
        None => defaults.max_age,
    };
    let duplicate_window = cx.duration_or(
        "stream.duplicate_window",
        raw.duplicate_window.as_ref(),
        defaults.duplicate_window,
    )?;
    if max_age.is_some_and(|age| duplicate_window > age) {
        return Err(cx.conflict(
            "stream.duplicate_window",
            "`stream.duplicate_window` is longer than `stream.max_age`; shorten it or keep messages longer".into(),
        ));
    }
    let max_message_size = match &raw.max_message_size {
        Some(size) => {
            let bytes = cx.size("stream.max_message_size", size)?;
            let bytes = cx.within("stream.max_message_size", bytes, 1024, u64::from(u32::MAX))?;
            u32::try_from(bytes).expect("checked range")
        }
        None => defaults.max_message_size,
    };
    let subject_prefix = match &raw.subject_prefix {
        Some(prefix) => {
            for token in prefix.split('.') {
                cx.token("stream.subject_prefix", token).map_err(|_| {
                    cx.invalid(
                        "stream.subject_prefix",
                        format!("`{prefix}` is not a subject prefix; use dot-separated tokens of letters, digits, `_` and `-`, like `invalog` or `acme.invalog`"),
                    )
                })?;
            }
            prefix.clone()
        }
        None => defaults.subject_prefix,
    };
    let log = LogSettings {
        stream: match &raw.name {
            Some(name) => cx.token("stream.name", name)?,
            None => defaults.stream,
        },
        subject_prefix,
        storage: match &raw.storage {
            Some(storage) => cx.choice(
                "stream.storage",
                storage,
                &[("file", Storage::File), ("memory", Storage::Memory)],
            )?,
            None => defaults.storage,
        },
        replicas: match raw.replicas {
            Some(n) => cx.within("stream.replicas", n, 1, 5)? as usize,
            None => defaults.replicas,
        },
        max_age,
        max_messages: raw
            .max_messages
            .map(|n| cx.within("stream.max_messages", n, 1, u64::MAX))
            .transpose()?,
        max_bytes: match &raw.max_bytes {
            Some(size) => {
                let bytes = cx.size("stream.max_bytes", size)?;
                Some(cx.within("stream.max_bytes", bytes, 1, u64::MAX)?)
            }
            None => defaults.max_bytes,
        },
        max_message_size,
        duplicate_window,
    };
    let provision = match &raw.provision {
        None => StreamPolicy::default(),
        Some(Provision::Bool(true)) => StreamPolicy::Update,
        Some(Provision::Bool(false)) => StreamPolicy::Off,
        Some(Provision::Text(text)) => cx.choice(
            "stream.provision",
            text,
            &[
                ("create", StreamPolicy::Create),
                ("update", StreamPolicy::Update),
                ("off", StreamPolicy::Off),
                // What an environment variable gives for a boolean.
                ("true", StreamPolicy::Update),
                ("false", StreamPolicy::Off),
            ],
        )?,
    };
    Ok((log, provision))
}

fn checkpoint(
    cx: &Cx,
    raw: Option<&RawCheckpoint>,
    node_id: Option<&NodeId>,
) -> Result<Option<CheckpointSettings>> {
    let default_raw = RawCheckpoint::default();
    let raw = raw.unwrap_or(&default_raw);
    let store = match &raw.store {
        Some(store) => cx.choice("checkpoint.store", store, &[("file", true), ("kv", false)])?,
        None => true,
    };
    let foreign = if store {
        [
            ("bucket", raw.bucket.is_some()),
            ("replicas", raw.replicas.is_some()),
        ]
    } else {
        [("path", raw.path.is_some()), ("", false)]
    };
    if let Some((key, _)) = foreign.iter().find(|(_, set)| *set) {
        let path = format!("checkpoint.{key}");
        let other = if store { "kv" } else { "file" };
        return Err(cx.conflict(
            &path,
            format!("`{path}` applies to `checkpoint.store = \"{other}\"` only; remove it or change the store"),
        ));
    }
    if store {
        let path = raw
            .path
            .clone()
            .or_else(|| node_id.map(|id| format!("./invalog-{id}.checkpoint.json").into()));
        return Ok(path.map(|path| CheckpointSettings::File { path }));
    }
    Ok(Some(CheckpointSettings::Kv {
        bucket: match &raw.bucket {
            Some(bucket) => cx.token("checkpoint.bucket", bucket)?,
            None => "invalog_checkpoints".into(),
        },
        replicas: match raw.replicas {
            Some(n) => cx.within("checkpoint.replicas", n, 1, 5)? as usize,
            None => 1,
        },
    }))
}

fn logging(cx: &Cx, raw: &RawConfig) -> Result<LoggingSettings> {
    let defaults = LoggingSettings::default();
    let level = match &raw.logging.level {
        Some(level) if level.trim().is_empty() => {
            return Err(cx.invalid(
                "logging.level",
                "the filter is empty; use `info`, `debug` or `invalog=debug,warn`",
            ))
        }
        Some(level) => level.trim().to_owned(),
        None => defaults.level,
    };
    let format = match &raw.logging.format {
        Some(format) => cx.choice(
            "logging.format",
            format,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )?,
        None => defaults.format,
    };
    Ok(LoggingSettings { format, level })
}

fn publisher(cx: &Cx, raw: &RawPublisher, node_id: Option<&NodeId>) -> Result<PublisherSettings> {
    let origin = match (&raw.origin, node_id) {
        (Some(origin), _) => {
            if origin.trim().is_empty()
                || origin.len() > 255
                || origin.chars().any(char::is_control)
            {
                return Err(cx.invalid(
                    "publisher.origin",
                    "use 1 to 255 printable characters, like `cms` or `web-1`",
                ));
            }
            origin.clone()
        }
        (None, Some(id)) => id.to_string(),
        (None, None) => "invalog-cli".into(),
    };
    let defaults = PublisherSettings::new(origin);
    Ok(PublisherSettings {
        max_units_per_message: match raw.max_units_per_message {
            Some(n) => cx.within("publisher.max_units_per_message", n, 1, 100_000)? as usize,
            None => defaults.max_units_per_message,
        },
        ack_timeout: cx.duration_or(
            "publisher.ack_timeout",
            raw.ack_timeout.as_ref(),
            defaults.ack_timeout,
        )?,
        attempts: match raw.attempts {
            Some(0) => return Err(cx.invalid("publisher.attempts", "use at least 1")),
            Some(n) => n,
            None => defaults.attempts,
        },
        ..defaults
    })
}

fn presence(cx: &Cx, raw: &RawPresence) -> Result<(PresenceSettings, Duration)> {
    let defaults = PresenceSettings::default();
    let settings = PresenceSettings {
        bucket: match &raw.bucket {
            Some(bucket) => cx.token("presence.bucket", bucket)?,
            None => defaults.bucket,
        },
        interval: cx.duration_or(
            "presence.interval",
            raw.interval.as_ref(),
            defaults.interval,
        )?,
        replicas: match raw.replicas {
            Some(n) => cx.within("presence.replicas", n, 1, 5)? as usize,
            None => defaults.replicas,
        },
    };
    let stale_after = cx.duration_or(
        "presence.stale_after",
        raw.stale_after.as_ref(),
        DEFAULT_STALE_AFTER,
    )?;
    if stale_after <= settings.interval {
        return Err(cx.conflict(
            "presence.stale_after",
            "`presence.stale_after` is not longer than `presence.interval`: every node would look stale between two reports; use at least 3 intervals".into(),
        ));
    }
    Ok((settings, stale_after))
}
