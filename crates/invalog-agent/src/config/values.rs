//! Parsing single values during validation — durations, sizes, names from a
//! fixed set, URLs, secrets inline or in a file — each failure turned into
//! a [`ConfigError`] that names the key, its source and the fix. `Cx` is the
//! validation context that every section's check receives.

use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{display_key, ConfigError, ConfigErrorKind};
use super::raw::{DurationText, Size};
use super::source::Sources;
use invalog::secret::Secret;
use invalog::suggest::suggestion;

/// The validation context: where values came from, for error messages.
pub(super) struct Cx<'a> {
    pub sources: &'a Sources,
}

pub(super) type Result<T> = std::result::Result<T, ConfigError>;

impl Cx<'_> {
    fn error(&self, kind: ConfigErrorKind, path: &str, message: String) -> ConfigError {
        ConfigError::new(
            kind,
            self.sources.origin(path),
            Some(display_key(path)),
            message,
        )
    }

    /// "invalid value for `key`: why".
    pub fn invalid(&self, path: &str, why: impl Display) -> ConfigError {
        let message = format!("invalid value for `{}`: {why}", display_key(path));
        self.error(ConfigErrorKind::InvalidValue, path, message)
    }

    /// A value that contradicts another; `message` names both keys.
    pub fn conflict(&self, path: &str, message: String) -> ConfigError {
        self.error(ConfigErrorKind::Conflict, path, message)
    }

    /// "missing required key `key`; hint". Reported against the file, where
    /// the key belongs.
    pub fn missing(&self, path: &str, hint: &str) -> ConfigError {
        ConfigError::missing(self.sources.file(), &display_key(path), hint)
    }

    /// A duration longer than zero (`"250ms"`, `"5s"`, `"7d"`).
    pub fn duration(&self, path: &str, text: &DurationText) -> Result<Duration> {
        let text = text.0.trim();
        let duration = humantime::parse_duration(text).map_err(|e| {
            self.invalid(
                path,
                format!(
                    "`{text}` is not a duration ({e}); write a number and a unit, like `500ms`, `30s`, `5m` or `7d`"
                ),
            )
        })?;
        if duration.is_zero() {
            return Err(self.invalid(path, "the duration must be longer than zero"));
        }
        Ok(duration)
    }

    /// An optional duration with its default.
    pub fn duration_or(
        &self,
        path: &str,
        text: Option<&DurationText>,
        default: Duration,
    ) -> Result<Duration> {
        text.map_or(Ok(default), |text| self.duration(path, text))
    }

    /// A size in bytes: an integer, or a number and a unit (`"10GiB"`).
    pub fn size(&self, path: &str, size: &Size) -> Result<u64> {
        match size {
            Size::Bytes(bytes) => Ok(*bytes),
            Size::Text(text) => text
                .trim()
                .parse::<bytesize::ByteSize>()
                .map(|size| size.as_u64())
                .map_err(|_| {
                    self.invalid(
                        path,
                        format!(
                            "`{text}` is not a size; write a number of bytes (`1048576`) or a number and a unit (`512KiB`, `1MiB`, `10GiB`)"
                        ),
                    )
                }),
        }
    }

    /// One of a fixed set of names.
    pub fn choice<T: Clone>(&self, path: &str, given: &str, choices: &[(&str, T)]) -> Result<T> {
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == given) {
            return Ok(value.clone());
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        Err(self.invalid(
            path,
            format!("unknown value `{given}`; {}", suggestion(given, &names)),
        ))
    }

    /// A number within `min..=max`.
    pub fn within(&self, path: &str, value: u64, min: u64, max: u64) -> Result<u64> {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(path, format!("{value} is out of range; use {min} to {max}")))
        }
    }

    /// A NATS-safe token (stream, bucket): letters, digits, `_` and `-`.
    pub fn token(&self, path: &str, value: &str) -> Result<String> {
        let ok = !value.is_empty()
            && value.len() <= 255
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(value.to_owned())
        } else {
            Err(self.invalid(
                path,
                format!("`{value}` is not a valid name; use 1 to 255 letters, digits, `_` and `-`"),
            ))
        }
    }

    /// A secret given inline (`path`) or read from a file (`path_file`),
    /// never both. The file's trailing whitespace (a final newline) is
    /// dropped.
    pub fn secret(
        &self,
        path: &str,
        inline: Option<&String>,
        file: Option<&PathBuf>,
    ) -> Result<Option<Secret>> {
        let file_path = format!("{path}_file");
        let value = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(self.conflict(
                    path,
                    format!(
                        "both `{}` and `{}` are set; keep one",
                        display_key(path),
                        display_key(&file_path)
                    ),
                ))
            }
            (None, None) => return Ok(None),
            (Some(inline), None) => inline.clone(),
            (None, Some(file)) => {
                let mut text = std::fs::read_to_string(file).map_err(|e| {
                    self.error(
                        ConfigErrorKind::Read,
                        &file_path,
                        format!(
                            "cannot read `{}` (`{}`): {e}",
                            display_key(&file_path),
                            file.display()
                        ),
                    )
                })?;
                text.truncate(text.trim_end().len());
                text
            }
        };
        if value.trim().is_empty() {
            let key = if inline.is_some() { path } else { &file_path };
            return Err(self.invalid(key, "the secret is empty"));
        }
        Ok(Some(Secret::new(value)))
    }

    /// A URL with one of `schemes`. The URL is never echoed: it may hold a
    /// password.
    pub fn url(&self, path: &str, url: &str, schemes: &[&str]) -> Result<()> {
        let schemes_text = schemes
            .iter()
            .map(|s| format!("`{s}://`"))
            .collect::<Vec<_>>()
            .join(", ");
        let why = match UrlParts::split(url) {
            _ if url.chars().any(char::is_whitespace) => "the URL contains whitespace".into(),
            _ if invalog::redact::misplaced_at(url) => invalog::redact::MISPLACED_AT_FIX.into(),
            None => format!(
                "the URL has no scheme; write it like `{}://host:port`",
                schemes[0]
            ),
            Some(parts) if !schemes.contains(&parts.scheme) => format!(
                "URL scheme `{}` is not allowed here; use {schemes_text}",
                parts.scheme
            ),
            Some(parts) if parts.host.is_empty() => "the URL has no host".into(),
            Some(parts)
                if parts
                    .port
                    .is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) =>
            {
                "the URL's port is not a number from 1 to 65535".into()
            }
            Some(_) => return Ok(()),
        };
        Err(self.invalid(path, why))
    }
}

/// The parts of `scheme://[userinfo@]host[:port][/rest]` that validation
/// needs (redaction is [`invalog::redact`]'s).
pub(super) struct UrlParts<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    pub fn split(url: &'a str) -> Option<UrlParts<'a>> {
        let (scheme, remainder) = url.split_once("://")?;
        let authority_end = remainder.find(['/', '?', '#']).unwrap_or(remainder.len());
        let authority = &remainder[..authority_end];
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            match bracketed.split_once(']') {
                Some((host, tail)) => (host, tail.strip_prefix(':')),
                None => ("", None),
            }
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        Some(UrlParts { scheme, host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_parts() {
        let parts = UrlParts::split("redis://:pw@redis:6379/0").unwrap();
        assert_eq!(
            (parts.scheme, parts.host, parts.port),
            ("redis", "redis", Some("6379"))
        );
        let parts = UrlParts::split("nats://[::1]:4222").unwrap();
        assert_eq!((parts.host, parts.port), ("::1", Some("4222")));
        assert!(UrlParts::split("127.0.0.1:4222").is_none());
    }
}
