//! Validation of `[[refreshers]]` and their `[refreshers.applier]` tables:
//! names and UUIDs (each unique), the applier kind and only that kind's
//! keys, URLs, secrets and Redis key templates.
//!
//! Key templates: a template must contain the placeholder `{id}` at least
//! once, and no other `{` or `}`. The applier replaces `{id}` with each
//! integer id, UUID (hyphenated, lowercase) or string key of an
//! instruction. Without `refresh_all`, refresh-all deletes the keys that
//! match the templates with `{id}` replaced by `*` (glob characters of the
//! rest escaped).

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use super::error::{display_key, suggestion};
use super::raw::{RawApplier, RawRefreshAll, RawRefresher};
use super::values::{Cx, Result};
use crate::applier::{
    ApplierSettings, CommandSettings, RedisRefreshAll, RedisSettings, WebhookSettings,
};
use crate::model::{RefresherDef, RefresherName};
use crate::secret::Secret;

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
        ],
    ),
    ("redis", &["url", "keys", "refresh_all"]),
    ("command", &["program", "args", "timeout"]),
];

/// Default timeout of one webhook request.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest run of a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

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
                    "refresher name `{}` is used by `refreshers[{first}]` and `refreshers[{i}]`; give each refresher its own name",
                    def.name
                ),
            ));
        }
        if let Some(first) = ids.insert(def.id, i) {
            return Err(cx.conflict(
                &format!("{at}.id"),
                format!(
                    "refresher id `{}` is used by `refreshers[{first}]` and `refreshers[{i}]`; give each refresher its own UUID",
                    def.id
                ),
            ));
        }
        let applier = refresher
            .applier
            .as_ref()
            .map(|applier| self::applier(cx, &format!("{at}.applier"), applier))
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
    let id = Uuid::parse_str(id.trim())
        .map_err(|_| cx.invalid(&id_key, format!("`{id}` is not a UUID; `uuidgen` makes one")))?;
    if id.is_nil() {
        return Err(cx.invalid(
            &id_key,
            "the nil UUID is not an identity; `uuidgen` makes one",
        ));
    }
    Ok(RefresherDef { id, name })
}

fn applier(cx: &Cx, at: &str, raw: &RawApplier) -> Result<ApplierSettings> {
    let kind_key = format!("{at}.kind");
    let Some(kind) = &raw.kind else {
        return Err(cx.missing(
            &kind_key,
            "set it to `webhook`, `redis` or `command`",
        ));
    };
    let Some((kind, allowed)) = KINDS.iter().find(|(name, _)| name == kind) else {
        let names: Vec<&str> = KINDS.iter().map(|(name, _)| *name).collect();
        return Err(cx.invalid(
            &kind_key,
            format!("unknown applier kind `{kind}`; {}", suggestion(kind, &names)),
        ));
    };
    if let Some(foreign) = raw.keys_set().into_iter().find(|k| !allowed.contains(k)) {
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
            cx.url(&key("url"), &url, &["http", "https"])?;
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
            }))
        }
    }
}

fn redis(cx: &Cx, at: &str, raw: &RawApplier) -> Result<ApplierSettings> {
    let url_key = format!("{at}.url");
    let keys_key = format!("{at}.keys");
    let Some(url) = &raw.url else {
        return Err(cx.missing(
            &url_key,
            "a redis applier needs the server, like `url = \"redis://127.0.0.1:6379/0\"`",
        ));
    };
    cx.url(&url_key, url, &["redis", "rediss"])?;
    let database = super::values::UrlParts::split(url).map_or("", |parts| parts.rest);
    let database = database.trim_start_matches('/');
    if !database.is_empty() && database.parse::<u32>().is_err() {
        return Err(cx.invalid(
            &url_key,
            "the URL's path must be a database number, like `/0`",
        ));
    }
    let templates = match &raw.keys {
        Some(keys) if !keys.is_empty() => keys.clone(),
        _ => {
            return Err(cx.missing(
                &keys_key,
                "a redis applier needs key templates, like `keys = [\"content:{id}\"]`",
            ))
        }
    };
    for (i, template) in templates.iter().enumerate() {
        check_template(template)
            .map_err(|why| cx.invalid(&format!("{keys_key}.{i}"), format!("`{template}`: {why}")))?;
    }
    let refresh_all = match &raw.refresh_all {
        None => RedisRefreshAll::Patterns(templates.iter().map(|t| pattern_of(t)).collect()),
        Some(RawRefreshAll::Named(name)) => cx.choice(
            &format!("{at}.refresh_all"),
            name,
            &[("flushdb", RedisRefreshAll::FlushDb)],
        )?,
        Some(RawRefreshAll::Patterns(patterns)) => {
            if patterns.is_empty() || patterns.iter().any(|p| p.trim().is_empty()) {
                return Err(cx.invalid(
                    &format!("{at}.refresh_all.patterns"),
                    "give at least one non-empty pattern, like `[\"content:*\"]`",
                ));
            }
            RedisRefreshAll::Patterns(patterns.clone())
        }
    };
    Ok(ApplierSettings::Redis(RedisSettings {
        url: Secret::new(url.clone()),
        key_templates: templates,
        refresh_all,
    }))
}

/// A key template holds `{id}` and no other braces.
fn check_template(template: &str) -> std::result::Result<(), &'static str> {
    if !template.contains("{id}") {
        return Err("a key template needs the placeholder `{id}`, like `content:{id}`");
    }
    if template.replace("{id}", "").contains(['{', '}']) {
        return Err("the only placeholder is `{id}`");
    }
    Ok(())
}

/// The SCAN pattern that matches every key a template renders.
fn pattern_of(template: &str) -> String {
    template
        .split("{id}")
        .map(|literal| {
            literal
                .chars()
                .flat_map(|c| match c {
                    '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_become_patterns() {
        assert_eq!(pattern_of("content:{id}"), "content:*");
        assert_eq!(pattern_of("page:{id}:html"), "page:*:html");
        assert_eq!(pattern_of("odd*key:{id}"), "odd\\*key:*");
        assert!(check_template("content:{id}").is_ok());
        assert!(check_template("content:{ids}").is_err());
        assert!(check_template("content").is_err());
    }
}
