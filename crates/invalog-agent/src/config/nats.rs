//! Validation of `[nats]` and `[nats.tls]`: server URLs (`nats://`,
//! `tls://`, `ws://`, `wss://`), at most one way to authenticate (user and
//! password, token, nkey seed or creds file; secrets inline or read from a
//! `*_file`), and a client certificate only with its key.

use super::raw::RawNats;
use super::values::{Cx, Result};
use invalog::connect::{NatsAuth, NatsSettings, TlsSettings};

pub(super) fn nats(cx: &Cx, raw: &RawNats) -> Result<NatsSettings> {
    let defaults = NatsSettings::default();
    let urls = match &raw.urls {
        Some(urls) => urls.0.clone(),
        None => defaults.urls,
    };
    if urls.is_empty() || urls.iter().all(String::is_empty) {
        return Err(cx.invalid("nats.urls", "give at least one server URL"));
    }
    for (i, url) in urls.iter().enumerate() {
        cx.url(
            &format!("nats.urls.{i}"),
            url,
            &["nats", "tls", "ws", "wss"],
        )?;
    }
    let tls = raw.tls.as_ref().map(|tls| TlsSettings {
        ca_file: tls.ca_file.clone(),
        cert_file: tls.cert_file.clone(),
        key_file: tls.key_file.clone(),
        required: tls.required.unwrap_or(false),
    });
    if let Some(tls) = &tls {
        match (&tls.cert_file, &tls.key_file) {
            (Some(_), None) => {
                return Err(cx.missing(
                    "nats.tls.key_file",
                    "a client certificate (`cert_file`) needs its private key",
                ))
            }
            (None, Some(_)) => {
                return Err(cx.missing(
                    "nats.tls.cert_file",
                    "a private key (`key_file`) needs its client certificate",
                ))
            }
            _ => {}
        }
    }
    if let Some(name) = &raw.name {
        if name.trim().is_empty() {
            return Err(cx.invalid("nats.name", "the name is empty"));
        }
    }
    Ok(NatsSettings {
        urls,
        auth: nats_auth(cx, raw)?,
        tls,
        name: raw.name.clone(),
        connect_timeout: cx.duration_or(
            "nats.connect_timeout",
            raw.connect_timeout.as_ref(),
            defaults.connect_timeout,
        )?,
        request_timeout: cx.duration_or(
            "nats.request_timeout",
            raw.request_timeout.as_ref(),
            defaults.request_timeout,
        )?,
    })
}

/// At most one way to authenticate.
fn nats_auth(cx: &Cx, raw: &RawNats) -> Result<NatsAuth> {
    let password = cx.secret(
        "nats.password",
        raw.password.as_ref(),
        raw.password_file.as_ref(),
    )?;
    let token = cx.secret("nats.token", raw.token.as_ref(), raw.token_file.as_ref())?;
    let seed = cx.secret(
        "nats.nkey_seed",
        raw.nkey_seed.as_ref(),
        raw.nkey_seed_file.as_ref(),
    )?;
    let seed_key = given_as(&raw.nkey_seed, "nats.nkey_seed");
    if seed.as_ref().is_some_and(|s| !s.expose().starts_with("SU")) {
        return Err(cx.invalid(&seed_key, "not a user nkey seed (those start with `SU`)"));
    }
    let mut chosen: Vec<(String, NatsAuth)> = Vec::new();
    match (&raw.user, password) {
        (Some(user), Some(password)) => chosen.push((
            "nats.user".into(),
            NatsAuth::UserPassword {
                user: user.clone(),
                password,
            },
        )),
        (Some(_), None) => {
            return Err(cx.missing(
                "nats.password",
                "`nats.user` needs a password (`password` or `password_file`)",
            ))
        }
        (None, Some(_)) => return Err(cx.missing("nats.user", "a password needs its user name")),
        (None, None) => {}
    }
    if let Some(token) = token {
        chosen.push((given_as(&raw.token, "nats.token"), NatsAuth::Token(token)));
    }
    if let Some(seed) = seed {
        chosen.push((seed_key, NatsAuth::NkeySeed(seed)));
    }
    if let Some(creds) = &raw.creds_file {
        chosen.push(("nats.creds_file".into(), NatsAuth::CredsFile(creds.clone())));
    }
    match chosen.len() {
        0 => Ok(NatsAuth::None),
        1 => Ok(chosen.pop().expect("one").1),
        _ => Err(cx.conflict(
            &chosen[1].0,
            format!(
                "`{}` conflicts with `{}`; authenticate one way only: user and password, token, nkey seed or creds file",
                chosen[1].0, chosen[0].0
            ),
        )),
    }
}

/// The key a secret was given with: `key`, or `key_file` when not inline.
fn given_as(inline: &Option<String>, key: &str) -> String {
    match inline {
        Some(_) => key.to_owned(),
        None => format!("{key}_file"),
    }
}
