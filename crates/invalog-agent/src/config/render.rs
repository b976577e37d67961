//! The effective configuration as TOML, for `invalog config check`: every
//! key with the value in force (defaults filled in, environment overrides
//! applied), secrets written as `"[redacted]"`, user-info in URLs as
//! `[redacted]@`, webhook and Redis URL queries as `?[redacted]`, and each
//! command argument as `"[redacted]"` (see [`invalog::redact`]). The output is
//! itself a valid configuration file in the schema of docs/configuration.md.
//!
//! It is the schema's own structs (`raw`), filled from the validated
//! settings and serialized: a key is named once, in `raw`, for reading and
//! for printing.

use std::time::Duration;

use super::raw::{
    DurationText, Provision, RawApplier, RawCheckpoint, RawColdBoot, RawConfig, RawFence, RawHttp,
    RawLogging, RawNats, RawNode, RawPresence, RawPublisher, RawRefreshAll, RawRefresher, RawRetry,
    RawStream, RawTls, Size, Urls,
};
use super::validate::Settings;
use crate::applier::{ApplierSettings, RedisRefreshAll};
use crate::{CheckpointSettings, LogFormat};
use invalog::connect::NatsAuth;
use invalog::node::NewNodePolicy;
use invalog::redact::{redact_userinfo, redact_userinfo_and_query, REDACTED};
use invalog::stream::{Storage, StreamPolicy};

/// Renders validated settings.
pub(super) fn effective_toml(settings: &Settings) -> String {
    let text = toml::to_string(&effective(settings)).expect("the schema serializes to TOML");
    format!(
        "# Effective configuration: defaults filled in, environment overrides applied,\n\
         # secrets redacted.\n\n{text}"
    )
}

/// The settings in force, in the schema's shape.
fn effective(settings: &Settings) -> RawConfig {
    let node = settings.node.as_ref().map(|node| RawNode {
        id: Some(node.node_id.to_string()),
        new_node: Some(
            match node.new_node {
                NewNodePolicy::ColdBoot => "cold_boot",
                NewNodePolicy::ReplayAll => "replay_all",
                NewNodePolicy::Tail => "tail",
            }
            .into(),
        ),
        cold_boot_threshold: node.cold_boot_threshold,
        fill_guard_window: Some(node.fill_guard_window.map_or(0, |n| n as u64)),
        catch_up_lookahead: Some(node.catch_up_lookahead as u64),
        flush_interval: duration(node.flush_interval),
        retry: RawRetry {
            attempts: Some(node.retry.attempts),
            initial_backoff: duration(node.retry.initial_backoff),
            max_backoff: duration(node.retry.max_backoff),
        },
        fence: RawFence {
            max_disconnected: node.fence.max_disconnected.and_then(duration),
            max_lag_messages: node.fence.max_lag_messages,
        },
        cold_boot: RawColdBoot {
            max_concurrent: Some(node.cold_boot.max_concurrent),
            lease_ttl: duration(node.cold_boot.lease_ttl),
            retry_interval: duration(node.cold_boot.retry_interval),
            bucket: Some(node.cold_boot.bucket.clone()),
        },
    });
    RawConfig {
        node,
        nats: nats(settings),
        stream: stream(settings),
        checkpoint: settings.checkpoint.as_ref().map(|c| match c {
            CheckpointSettings::File { path } => RawCheckpoint {
                store: Some("file".into()),
                path: Some(path.clone()),
                ..Default::default()
            },
            CheckpointSettings::Kv { bucket, replicas } => RawCheckpoint {
                store: Some("kv".into()),
                bucket: Some(bucket.clone()),
                replicas: Some(*replicas as u64),
                ..Default::default()
            },
        }),
        http: RawHttp {
            listen: Some(settings.http.listen.to_string()),
        },
        logging: RawLogging {
            format: Some(
                match settings.logging.format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                }
                .into(),
            ),
            level: Some(settings.logging.level.clone()),
        },
        publisher: RawPublisher {
            origin: Some(settings.publisher.origin.clone()),
            max_units_per_message: Some(settings.publisher.max_units_per_message as u64),
            ack_timeout: duration(settings.publisher.ack_timeout),
            attempts: Some(settings.publisher.attempts),
        },
        presence: RawPresence {
            bucket: Some(settings.presence.bucket.clone()),
            interval: duration(settings.presence.interval),
            replicas: Some(settings.presence.replicas as u64),
            stale_after: duration(settings.stale_after),
        },
        refreshers: settings
            .refreshers
            .iter()
            .map(|(def, applier)| RawRefresher {
                name: Some(def.name.to_string()),
                id: Some(def.id.to_string()),
                applier: applier.as_ref().map(applier_table),
            })
            .collect(),
    }
}

fn nats(settings: &Settings) -> RawNats {
    let nats = &settings.nats;
    let mut raw = RawNats {
        urls: Some(Urls(
            nats.urls.iter().map(|url| redact_userinfo(url)).collect(),
        )),
        name: nats.name.clone(),
        connect_timeout: duration(nats.connect_timeout),
        request_timeout: duration(nats.request_timeout),
        tls: nats.tls.as_ref().map(|tls| RawTls {
            ca_file: tls.ca_file.clone(),
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            required: Some(tls.required),
        }),
        ..Default::default()
    };
    match &nats.auth {
        NatsAuth::None => {}
        NatsAuth::UserPassword { user, .. } => {
            raw.user = Some(user.clone());
            raw.password = Some(REDACTED.into());
        }
        NatsAuth::Token(_) => raw.token = Some(REDACTED.into()),
        NatsAuth::NkeySeed(_) => raw.nkey_seed = Some(REDACTED.into()),
        NatsAuth::CredsFile(path) => raw.creds_file = Some(path.clone()),
    }
    raw
}

fn stream(settings: &Settings) -> RawStream {
    let log = &settings.log;
    RawStream {
        name: Some(log.stream.clone()),
        subject_prefix: Some(log.subject_prefix.clone()),
        storage: Some(
            match log.storage {
                Storage::File => "file",
                Storage::Memory => "memory",
            }
            .into(),
        ),
        replicas: Some(log.replicas as u64),
        max_age: Some(match log.max_age {
            Some(age) => DurationText(invalog::units::duration(age)),
            None => DurationText("unlimited".into()),
        }),
        max_messages: log.max_messages,
        max_bytes: log.max_bytes.map(size),
        max_message_size: Some(size(log.max_message_size.into())),
        duplicate_window: duration(log.duplicate_window),
        provision: Some(Provision::Text(
            match settings.provision {
                StreamPolicy::Create => "create",
                StreamPolicy::Update => "update",
                StreamPolicy::Off => "off",
            }
            .into(),
        )),
    }
}

fn applier_table(applier: &ApplierSettings) -> RawApplier {
    match applier {
        ApplierSettings::Webhook(webhook) => RawApplier {
            kind: Some("webhook".into()),
            url: Some(redact_userinfo_and_query(&webhook.url)),
            timeout: duration(webhook.timeout),
            bearer_token: webhook.bearer_token.as_ref().map(|_| REDACTED.into()),
            hmac_secret: webhook.hmac_secret.as_ref().map(|_| REDACTED.into()),
            max_batches_per_request: Some(webhook.max_batches_per_request as u64),
            ..Default::default()
        },
        ApplierSettings::Redis(redis) => RawApplier {
            kind: Some("redis".into()),
            url: Some(redact_userinfo_and_query(redis.url.expose())),
            keys: Some(redis.key_templates.clone()),
            refresh_all: Some(match &redis.refresh_all {
                RedisRefreshAll::FlushDb => RawRefreshAll::Named("flushdb".into()),
                RedisRefreshAll::Patterns(patterns) => RawRefreshAll::Patterns(patterns.clone()),
            }),
            ..Default::default()
        },
        ApplierSettings::Command(command) => RawApplier {
            kind: Some("command".into()),
            program: Some(command.program.clone()),
            // Arguments may hold secrets (the applier never shows them
            // either); their number stays visible.
            args: Some(vec![REDACTED.to_owned(); command.args.len()]),
            timeout: duration(command.timeout),
            max_batches_per_request: Some(command.max_batches_per_request as u64),
            ..Default::default()
        },
    }
}

fn duration(value: Duration) -> Option<DurationText> {
    Some(DurationText(invalog::units::duration(value)))
}

/// Whole KiB, MiB or GiB with their unit, anything else in bytes.
fn size(bytes: u64) -> Size {
    match invalog::units::size(bytes) {
        text if text.ends_with("iB") => Size::Text(text),
        _ => Size::Bytes(bytes),
    }
}
