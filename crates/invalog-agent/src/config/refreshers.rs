//! Validation of `[[refreshers]]` and their `[refreshers.applier]` tables:
//! names and UUIDs (each unique), the applier kind and only that kind's
//! keys, required keys, durations and secrets, and Redis key templates
//! (with the applier's own parser). What each applier requires of the rest
//! of its settings (URL schemes, header-safe tokens) is checked by building
//! it with [`crate::applier::build`], which contacts nothing, so the rules
//! live in one place and `config check` refuses exactly what the agent
//! would refuse at start.

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use super::error::display_key;
use super::raw::{RawApplier, RawRefreshAll, RawRefresher};
use super::values::{Cx, Result};
use crate::applier::{
    check_key_template, key_template_pattern, ApplierError, ApplierSettings, CommandSettings,
    RedisRefreshAll, RedisSettings, WebhookSettings,
};
use invalog::model::{RefresherDef, RefresherName};
use invalog::suggest::suggestion;

/// The applier kinds and the keys each accepts besides `kind`.
const KINDS: &[(&str, &[&str])] = &[
    (
        "webhook",
        &[
            "url",
            "timeout",
            "bearer_token",
            "bearer_token_file",
            "hmac_secret",
            "hmac_secret_file",
            "max_batches_per_request",
        ],
    ),
    ("redis", &["url", "url_file", "keys", "refresh_all"]),
    (
        "command",
        &["program", "args", "timeout", "max_batches_per_request"],
    ),
];

/// Default timeout of one webhook request.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `max_batches_per_request` of a webhook.
const MAX_BATCHES_PER_REQUEST: u64 = 10_000;
/// Default longest run of a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// `max_batches_per_request` of a webhook or command: 1 unless set.
fn max_batches(cx: &Cx, path: &str, raw: &RawApplier) -> Result<usize> {
    match raw.max_batches_per_request {
        None => Ok(1),
        Some(n) => Ok(cx.within(path, n, 1, MAX_BATCHES_PER_REQUEST)? as usize),
    }
}

pub(super) fn refreshers(
    cx: &Cx,
    raw: &[RawRefresher],
) -> Result<Vec<(RefresherDef, Option<ApplierSettings>)>> {
    let mut names: HashMap<RefresherName, usize> = HashMap::new();
    let mut ids: HashMap<Uuid, usize> = HashMap::new();
    let mut defs = Vec::with_capacity(raw.len());
    for (i, refresher) in raw.iter().enumerate() {
        let at = format!("refreshers.{i}");
        let def = definition(cx, &at, refresher)?;
        if let Some(first) = names.insert(def.name.clone(), i) {
            return Err(cx.conflict(
                &format!("{at}.name"),
                format!(
                    "duplicate refresher name `{}` in `refreshers[{i}].name` (also in `refreshers[{first}]`); give each refresher its own name",
                    def.name
                ),
            ));
        }
        if let Some(first) = ids.insert(def.id, i) {
            return Err(cx.conflict(
                &format!("{at}.id"),
                format!(
                    "duplicate refresher id `{}` in `refreshers[{i}].id` (also in `refreshers[{first}]`); give each refresher its own UUID",
                    def.id
                ),
            ));
        }
        let applier = refresher
            .applier
            .as_ref()
            .map(|applier| self::applier(cx, &def, &format!("{at}.applier"), applier))
            .transpose()?;
        defs.push((def, applier));
    }
    Ok(defs)
}

fn definition(cx: &Cx, at: &str, raw: &RawRefresher) -> Result<RefresherDef> {
    let name_key = format!("{at}.name");
    let id_key = format!("{at}.id");
    let Some(name) = &raw.name else {
        return Err(cx.missing(
            &name_key,
            "give every refresher a name of letters, digits, `_` and `-`, like `name = \"content\"`",
        ));
    };
    let name = RefresherName::new(name.as_str()).map_err(|e| {
        cx.invalid(
            &name_key,
            format!("`{}` is not a valid refresher name: {}", e.value, e.why),
        )
    })?;
    let Some(id) = &raw.id else {
        return Err(cx.missing(
            &id_key,
            "give every refresher a stable UUID, like `id = \"6902e22c-3a5e-4f7b-9e0f-2d1c4b8a7e55\"` (`uuidgen` makes one), and never change it",
        ));
    };
    let id = Uuid::parse_str(id.trim()).map_err(|_| {
        cx.invalid(
            &id_key,
            format!("`{id}` is not a UUID; `uuidgen` makes one"),
        )
    })?;
    if id.is_nil() {
        return Err(cx.invalid(
            &id_key,
            "the nil UUID is not an identity; `uuidgen` makes one",
        ));
    }
    Ok(RefresherDef { id, name })
}

/// One applier's settings, checked by building the applier.
fn applier(cx: &Cx, def: &RefresherDef, at: &str, raw: &RawApplier) -> Result<ApplierSettings> {
    let settings = settings_of(cx, at, raw)?;
    match crate::applier::build(def, &settings) {
        Ok(_applier) => Ok(settings),
        Err(ApplierError::InvalidSetting { key, message, .. }) => {
            Err(cx.invalid(&format!("{at}.{key}"), message))
        }
        Err(other @ ApplierError::Client { .. }) => Err(cx.invalid(at, other)),
    }
}

fn settings_of(cx: &Cx, at: &str, raw: &RawApplier) -> Result<ApplierSettings> {
    let kind_key = format!("{at}.kind");
    let Some(kind) = &raw.kind else {
        return Err(cx.missing(&kind_key, "set it to `webhook`, `redis` or `command`"));
    };
    let Some((kind, allowed)) = KINDS.iter().find(|(name, _)| name == kind) else {
        let names: Vec<&str> = KINDS.iter().map(|(name, _)| *name).collect();
        return Err(cx.invalid(
            &kind_key,
            format!(
                "unknown applier kind `{kind}`; {}",
                suggestion(kind, &names)
            ),
        ));
    };
    if let Some(foreign) = raw
        .keys_set()
        .into_iter()
        .find(|k| !allowed.contains(&k.as_str()))
    {
        let key = format!("{at}.{foreign}");
        return Err(cx.conflict(
            &key,
            format!(
                "`{}` does not apply to applier kind `{kind}`, whose keys are: {}",
                display_key(&key),
                allowed
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let key = |name: &str| format!("{at}.{name}");
    match *kind {
        "webhook" => {
            let Some(url) = raw.url.clone() else {
                return Err(cx.missing(
                    &key("url"),
                    "a webhook needs the URL to POST to, like `url = \"http://127.0.0.1:8080/invalidate\"`",
                ));
            };
            Ok(ApplierSettings::Webhook(WebhookSettings {
                url,
                timeout: cx.duration_or(&key("timeout"), raw.timeout.as_ref(), WEBHOOK_TIMEOUT)?,
                bearer_token: cx.secret(
                    &key("bearer_token"),
                    raw.bearer_token.as_ref(),
                    raw.bearer_token_file.as_ref(),
                )?,
                hmac_secret: cx.secret(
                    &key("hmac_secret"),
                    raw.hmac_secret.as_ref(),
                    raw.hmac_secret_file.as_ref(),
                )?,
                max_batches_per_request: max_batches(cx, &key("max_batches_per_request"), raw)?,
            }))
        }
        "redis" => redis(cx, at, raw),
        _ => {
            let program = raw.program.clone().filter(|p| !p.as_os_str().is_empty());
            let Some(program) = program else {
                return Err(cx.missing(
                    &key("program"),
                    "a command applier needs the program to run, like `program = \"/usr/local/bin/purge\"`",
                ));
            };
            Ok(ApplierSettings::Command(CommandSettings {
                program,
                args: raw.args.clone().unwrap_or_default(),
                timeout: cx.duration_or(&key("timeout"), raw.timeout.as_ref(), COMMAND_TIMEOUT)?,
                max_batches_per_request: max_batches(cx, &key("max_batches_per_request"), raw)?,
            }))
        }
    }
}

/// The refresh-all patterns derived from the key templates. A template that
/// starts with a placeholder would derive `*…`, deleting every key of the
/// database on any publisher's refresh-all: refused unless `refresh_all`
/// says what to delete.
fn derived_patterns(cx: &Cx, keys_key: &str, templates: &[String]) -> Result<Vec<String>> {
    let mut patterns = Vec::with_capacity(templates.len());
    for (i, template) in templates.iter().enumerate() {
        let pattern = key_template_pattern(template).expect("checked above");
        if pattern.starts_with('*') {
            let example = format!("page:{template}");
            return Err(cx.invalid(
                &format!("{keys_key}.{i}"),
                format!(
                    "the template `{template}` starts with a placeholder, so the refresh-all \
                     derived from it would delete every key of the database (any publisher \
                     can ask for a refresh-all); give it a literal prefix, like `{example}`, \
                     or say what refresh-all deletes: `refresh_all = {{ patterns = \
                     [\"page:*\"] }}`, or `refresh_all = \"flushdb\"` to empty the database \
                     on purpose"
                ),
            ));
        }
        patterns.push(pattern);
    }
    Ok(patterns)
}

fn redis(cx: &Cx, at: &str, raw: &RawApplier) -> Result<ApplierSettings> {
    let url_key = format!("{at}.url");
    let keys_key = format!("{at}.keys");
    let Some(url) = cx.secret(&url_key, raw.url.as_ref(), raw.url_file.as_ref())? else {
        return Err(cx.missing(
            &url_key,
            "a redis applier needs the server, like `url = \"redis://127.0.0.1:6379/0\"` (or `url_file`)",
        ));
    };
    let Some(templates) = raw.keys.clone().filter(|keys| !keys.is_empty()) else {
        return Err(cx.missing(
            &keys_key,
            "a redis applier needs key templates, like `keys = [\"content:{id}\"]`",
        ));
    };
    for (i, template) in templates.iter().enumerate() {
        check_key_template(template).map_err(|why| cx.invalid(&format!("{keys_key}.{i}"), why))?;
    }
    let refresh_all = match &raw.refresh_all {
        None => RedisRefreshAll::Patterns(derived_patterns(cx, &keys_key, &templates)?),
        Some(RawRefreshAll::Named(name)) => cx.choice(
            &format!("{at}.refresh_all"),
            name,
            &[("flushdb", RedisRefreshAll::FlushDb)],
        )?,
        Some(RawRefreshAll::Patterns(patterns)) => RedisRefreshAll::Patterns(patterns.clone()),
    };
    Ok(ApplierSettings::Redis(RedisSettings {
        url,
        key_templates: templates,
        refresh_all,
    }))
}
