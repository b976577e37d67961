//! The effective configuration as TOML, for `invalog config check`: every
//! key with the value in force (defaults filled in, environment overrides
//! applied), secrets written as `"[redacted]"`, user-info in URLs as
//! `[redacted]@`, webhook and Redis URL queries as `?[redacted]`, and each
//! command argument as `"[redacted]"` (see [`crate::redact`]). The output is
//! itself a valid configuration file in the schema of docs/configuration.md.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::validate::Settings;
use crate::agent::{CheckpointSettings, LogFormat};
use crate::applier::{ApplierSettings, RedisRefreshAll};
use crate::connect::NatsAuth;
use crate::node::NewNodePolicy;
use crate::redact::{redact_userinfo, redact_userinfo_and_query, REDACTED};
use crate::stream::{Storage, StreamPolicy};

/// Renders validated settings.
pub(super) fn effective_toml(settings: &Settings) -> String {
    let mut out = Toml(String::from(
        "# Effective configuration: defaults filled in, environment overrides applied,\n\
         # secrets redacted.\n",
    ));
    if let Some(node) = &settings.node {
        out.table("node");
        out.string("id", node.node_id.as_str());
        out.string(
            "new_node",
            match node.new_node {
                NewNodePolicy::ColdBoot => "cold_boot",
                NewNodePolicy::ReplayAll => "replay_all",
                NewNodePolicy::Tail => "tail",
            },
        );
        if let Some(threshold) = node.cold_boot_threshold {
            out.int("cold_boot_threshold", threshold);
        }
        out.int(
            "fill_guard_window",
            node.fill_guard_window.map_or(0, |n| n as u64),
        );
        out.duration("flush_interval", node.flush_interval);
        out.table("node.retry");
        out.int("attempts", node.retry.attempts.into());
        out.duration("initial_backoff", node.retry.initial_backoff);
        out.duration("max_backoff", node.retry.max_backoff);
        let limit = &node.cold_boot;
        out.table("node.cold_boot");
        out.int("max_concurrent", limit.max_concurrent.into());
        out.duration("lease_ttl", limit.lease_ttl);
        out.duration("retry_interval", limit.retry_interval);
        out.string("bucket", &limit.bucket);
        let fence = &node.fence;
        if fence.max_disconnected.is_some() || fence.max_lag_messages.is_some() {
            out.table("node.fence");
            if let Some(max) = fence.max_disconnected {
                out.duration("max_disconnected", max);
            }
            if let Some(max) = fence.max_lag_messages {
                out.int("max_lag_messages", max);
            }
        }
    }

    let nats = &settings.nats;
    out.table("nats");
    let urls: Vec<String> = nats.urls.iter().map(|url| redact_userinfo(url)).collect();
    out.strings("urls", &urls);
    if let Some(name) = &nats.name {
        out.string("name", name);
    }
    out.duration("connect_timeout", nats.connect_timeout);
    out.duration("request_timeout", nats.request_timeout);
    match &nats.auth {
        NatsAuth::None => {}
        NatsAuth::UserPassword { user, .. } => {
            out.string("user", user);
            out.string("password", REDACTED);
        }
        NatsAuth::Token(_) => out.string("token", REDACTED),
        NatsAuth::NkeySeed(_) => out.string("nkey_seed", REDACTED),
        NatsAuth::CredsFile(path) => out.path("creds_file", path),
    }
    if let Some(tls) = &nats.tls {
        out.table("nats.tls");
        for (key, path) in [
            ("ca_file", &tls.ca_file),
            ("cert_file", &tls.cert_file),
            ("key_file", &tls.key_file),
        ] {
            if let Some(path) = path {
                out.path(key, path);
            }
        }
        out.bool("required", tls.required);
    }

    let log = &settings.log;
    out.table("stream");
    out.string("name", &log.stream);
    out.string("subject_prefix", &log.subject_prefix);
    out.string(
        "storage",
        match log.storage {
            Storage::File => "file",
            Storage::Memory => "memory",
        },
    );
    out.int("replicas", log.replicas as u64);
    match log.max_age {
        Some(age) => out.duration("max_age", age),
        None => out.string("max_age", "unlimited"),
    }
    if let Some(max) = log.max_messages {
        out.int("max_messages", max);
    }
    if let Some(max) = log.max_bytes {
        out.size("max_bytes", max);
    }
    out.size("max_message_size", log.max_message_size.into());
    out.duration("duplicate_window", log.duplicate_window);
    out.string(
        "provision",
        match settings.provision {
            StreamPolicy::Create => "create",
            StreamPolicy::Update => "update",
            StreamPolicy::Off => "off",
        },
    );

    match &settings.checkpoint {
        Some(CheckpointSettings::File { path }) => {
            out.table("checkpoint");
            out.string("store", "file");
            out.path("path", path);
        }
        Some(CheckpointSettings::Kv { bucket, replicas }) => {
            out.table("checkpoint");
            out.string("store", "kv");
            out.string("bucket", bucket);
            out.int("replicas", *replicas as u64);
        }
        None => {}
    }

    out.table("http");
    out.string("listen", &settings.http.listen.to_string());
    out.table("logging");
    out.string(
        "format",
        match settings.logging.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
    );
    out.string("level", &settings.logging.level);

    let publisher = &settings.publisher;
    out.table("publisher");
    out.string("origin", &publisher.origin);
    out.int(
        "max_units_per_message",
        publisher.max_units_per_message as u64,
    );
    out.duration("ack_timeout", publisher.ack_timeout);
    out.int("attempts", publisher.attempts.into());

    let presence = &settings.presence;
    out.table("presence");
    out.string("bucket", &presence.bucket);
    out.duration("interval", presence.interval);
    out.int("replicas", presence.replicas as u64);
    out.duration("stale_after", settings.stale_after);

    for (def, applier) in &settings.refreshers {
        out.0.push_str("\n[[refreshers]]\n");
        out.string("name", def.name.as_str());
        out.string("id", &def.id.to_string());
        if let Some(applier) = applier {
            applier_table(&mut out, applier);
        }
    }
    out.0
}

fn applier_table(out: &mut Toml, applier: &ApplierSettings) {
    out.table("refreshers.applier");
    match applier {
        ApplierSettings::Webhook(webhook) => {
            out.string("kind", "webhook");
            out.string("url", &redact_userinfo_and_query(&webhook.url));
            out.duration("timeout", webhook.timeout);
            if webhook.bearer_token.is_some() {
                out.string("bearer_token", REDACTED);
            }
            if webhook.hmac_secret.is_some() {
                out.string("hmac_secret", REDACTED);
            }
            let batches = webhook.max_batches_per_request as u64;
            out.int("max_batches_per_request", batches);
        }
        ApplierSettings::Redis(redis) => {
            out.string("kind", "redis");
            out.string("url", &redact_userinfo_and_query(redis.url.expose()));
            out.strings("keys", &redis.key_templates);
            match &redis.refresh_all {
                RedisRefreshAll::FlushDb => out.string("refresh_all", "flushdb"),
                RedisRefreshAll::Patterns(patterns) => {
                    let _ = writeln!(out.0, "refresh_all = {{ patterns = {} }}", array(patterns));
                }
            }
        }
        ApplierSettings::Command(command) => {
            out.string("kind", "command");
            out.path("program", &command.program);
            // Arguments may hold secrets (the applier never shows them
            // either); their number stays visible.
            out.strings("args", &vec![REDACTED.to_owned(); command.args.len()]);
            out.duration("timeout", command.timeout);
            let batches = command.max_batches_per_request as u64;
            out.int("max_batches_per_request", batches);
        }
    }
}

/// A TOML document being written.
struct Toml(String);

impl Toml {
    fn table(&mut self, name: &str) {
        let _ = write!(self.0, "\n[{name}]\n");
    }

    fn string(&mut self, key: &str, value: &str) {
        let _ = writeln!(self.0, "{key} = {}", quote(value));
    }

    fn path(&mut self, key: &str, value: &Path) {
        self.string(key, &value.to_string_lossy());
    }

    fn strings(&mut self, key: &str, values: &[String]) {
        let _ = writeln!(self.0, "{key} = {}", array(values));
    }

    fn int(&mut self, key: &str, value: u64) {
        let _ = writeln!(self.0, "{key} = {value}");
    }

    fn bool(&mut self, key: &str, value: bool) {
        let _ = writeln!(self.0, "{key} = {value}");
    }

    fn duration(&mut self, key: &str, value: Duration) {
        self.string(key, &crate::units::duration(value));
    }

    /// Whole KiB, MiB or GiB with their unit, anything else in bytes.
    fn size(&mut self, key: &str, bytes: u64) {
        match crate::units::size(bytes) {
            text if text.ends_with("iB") => self.string(key, &text),
            _ => self.int(key, bytes),
        }
    }
}

fn array(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| quote(v)).collect();
    format!("[{}]", items.join(", "))
}

/// A TOML basic string. JSON's escapes are TOML's, except that TOML also
/// wants DEL escaped.
fn quote(value: &str) -> String {
    serde_json::to_string(value)
        .expect("a string serializes")
        .replace('\u{7f}', "\\u007f")
}
