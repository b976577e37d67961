//! Connecting to NATS from typed settings: several server URLs,
//! user/password, token, nkey seed or creds file, TLS (CA, client
//! certificate and key), reconnecting forever with capped exponential
//! backoff and jitter. Secrets are held in [`Secret`] and never logged:
//! `Debug` of the settings, [`ConnectError`] messages and the connection
//! events this module logs contain no password, token or seed, and URLs are
//! shown through [`display_urls`]. Credentials written into a URL
//! (`nats://user:pass@host`, `nats://token@host`) are moved out of it before
//! the client sees it, because async-nats ignores them and would log them.
//! `docs/nats-connection.md` is the operator's guide.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::rustls::pki_types::pem::PemObject;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use async_nats::{ConnectErrorKind, ServerAddr};

use crate::secret::Secret;

/// The first reconnect attempt after a lost connection is immediate; the
/// following ones wait about this long, doubling each time.
pub const RECONNECT_BASE_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two reconnect attempts.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

/// How to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// User and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A token.
    Token(Secret),
    /// An nkey seed (`SU...`).
    NkeySeed(Secret),
    /// A `.creds` file (JWT + nkey seed).
    CredsFile(PathBuf),
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// CA certificate(s) to trust, PEM. Without it the system roots are used.
    pub ca_file: Option<PathBuf>,
    /// Client certificate, PEM (with `key_file`), for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    /// Client private key, PEM (with `cert_file`).
    pub key_file: Option<PathBuf>,
    /// Refuse to connect without TLS. Otherwise TLS is used when the URL is
    /// `tls://` or the server requires it.
    pub required: bool,
}

/// Everything needed to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Server URLs (`nats://host:port`, `tls://host:port`); several for a cluster.
    pub urls: Vec<String>,
    /// Authentication.
    pub auth: NatsAuth,
    /// TLS, when configured.
    pub tls: Option<TlsSettings>,
    /// Connection name shown by the server (`invalog-agent web-1`).
    pub name: Option<String>,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Timeout of JetStream API requests and publish acknowledgements.
    pub request_timeout: Duration,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".into()],
            auth: NatsAuth::None,
            tls: None,
            name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Like a derived `Debug`, but URLs lose any `user:password@` part.
impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("urls", &display_urls(&self.urls))
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("name", &self.name)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Why a connection could not be set up. Never contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A credentials file could not be read.
    #[error("NATS creds file {path} (nats.creds_file): {source}")]
    CredsFile {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A TLS file (CA, client certificate or key) is missing or unusable.
    #[error("NATS TLS file {path} ({setting}): {message}")]
    TlsFile {
        /// The setting naming the file, e.g. `nats.tls.ca_file`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The settings contradict each other.
    #[error("NATS settings: {0}")]
    Settings(String),
    /// The server could not be reached or refused the connection.
    #[error("connecting to NATS at {urls}: {message}")]
    Connect {
        /// The URLs tried, without credentials.
        urls: String,
        /// What failed.
        message: String,
        /// Whether trying again later may succeed (no server answered, a
        /// timeout, a name that did not resolve) rather than a refusal that
        /// needs a settings change (credentials, TLS).
        transient: bool,
    },
}

impl ConnectError {
    /// Whether connecting again later may succeed without changing settings.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connect {
                transient: true,
                ..
            }
        )
    }
}

/// Connects with `settings`: tries every URL (in random order) once, then,
/// after a lost connection, reconnects forever with capped exponential
/// backoff (a node keeps its caches meanwhile), and logs connection events
/// without credentials.
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, ConnectError> {
    let urls = display_urls(&settings.urls);
    let (addresses, url_auth) = server_addresses(&settings.urls, &urls)?;
    let auth = match (url_auth, &settings.auth) {
        (None, auth) => auth.clone(),
        (Some(from_url), NatsAuth::None) => from_url,
        (Some(_), _) => {
            return Err(ConnectError::Settings(format!(
                "the URLs {urls} carry credentials and another way to authenticate is \
                 configured too; authenticate one way only"
            )))
        }
    };
    let mut options = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        // Notice a frozen or silently dead server within ~20 s.
        .ping_interval(Duration::from_secs(10))
        .reconnect_delay_callback(reconnect_delay)
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(settings.request_timeout))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                other => tracing::info!(event = %other, "NATS connection event"),
            }
        });
    if let Some(name) = &settings.name {
        options = options.name(name);
    }
    options = match &auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsAuth::Token(token) => options.token(token.expose().to_owned()),
        NatsAuth::NkeySeed(seed) => options.nkey(seed.expose().to_owned()),
        NatsAuth::CredsFile(path) => {
            options
                .credentials_file(path)
                .await
                .map_err(|source| ConnectError::CredsFile {
                    path: path.clone(),
                    source,
                })?
        }
    };
    if let Some(tls) = &settings.tls {
        check_tls_files(tls)?;
        options = options.require_tls(tls.required);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    options
        .connect(addresses)
        .await
        .map_err(|e| ConnectError::Connect {
            message: scrub(&explain(&e, &auth, settings), &auth),
            urls,
            transient: matches!(
                e.kind(),
                ConnectErrorKind::Io
                    | ConnectErrorKind::TimedOut
                    | ConnectErrorKind::Dns
                    | ConnectErrorKind::MaxReconnects
            ),
        })
}

/// Parses the URLs and moves credentials out of them: `user:pass@` becomes
/// user/password authentication, a lone `token@` a token.
fn server_addresses(
    urls: &[String],
    shown: &str,
) -> Result<(Vec<ServerAddr>, Option<NatsAuth>), ConnectError> {
    if urls.is_empty() {
        return Err(ConnectError::Settings("no server URL (nats.urls)".into()));
    }
    let mut addresses = Vec::with_capacity(urls.len());
    let mut found: Option<NatsAuth> = None;
    for (i, url) in urls.iter().enumerate() {
        let bad = |why: String| ConnectError::Connect {
            urls: shown.to_owned(),
            message: format!("bad URL nats.urls.{i}: {why}"),
            transient: false,
        };
        if crate::redact::misplaced_at(url) {
            return Err(bad(crate::redact::MISPLACED_AT_FIX.to_owned()));
        }
        let address: ServerAddr = url
            .parse()
            .map_err(|e: std::io::Error| bad(e.to_string()))?;
        if !address.has_user_pass() {
            addresses.push(address);
            continue;
        }
        let auth = match address.password() {
            Some(password) => NatsAuth::UserPassword {
                user: percent_decode(address.username().unwrap_or_default()),
                password: Secret::new(percent_decode(password)),
            },
            None => NatsAuth::Token(Secret::new(percent_decode(
                address.username().unwrap_or_default(),
            ))),
        };
        if found.as_ref().is_some_and(|f| *f != auth) {
            return Err(ConnectError::Settings(format!(
                "the URLs {shown} carry different credentials; use the same everywhere"
            )));
        }
        found = Some(auth);
        let mut inner = address.into_inner();
        let _ = inner.set_password(None);
        let _ = inner.set_username("");
        addresses.push(ServerAddr::from_url(inner).map_err(|e| bad(e.to_string()))?);
    }
    Ok((addresses, found))
}

/// Decodes `%XX` escapes of a URL's user or password.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex
            .filter(|_| bytes[i] == b'%')
            .map(|h| u8::from_str_radix(h, 16))
        {
            Some(Ok(byte)) => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the TLS files up front, so that a missing or wrong file is reported
/// by its setting and path instead of as a bare IO error during connecting.
fn check_tls_files(tls: &TlsSettings) -> Result<(), ConnectError> {
    let read = |setting, path: &Path| {
        std::fs::read(path).map_err(|e| ConnectError::TlsFile {
            setting,
            path: path.to_owned(),
            message: e.to_string(),
        })
    };
    let certificates = |setting, path: &Path| {
        let pem = read(setting, path)?;
        let found = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
        match found {
            Ok(certs) if !certs.is_empty() => Ok(()),
            Ok(_) => Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned()),
            Err(e) => Err(format!("not a PEM certificate file: {e}")),
        }
        .map_err(|message| ConnectError::TlsFile {
            setting,
            path: path.to_owned(),
            message,
        })
    };
    if let Some(ca) = &tls.ca_file {
        certificates("nats.tls.ca_file", ca)?;
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            certificates("nats.tls.cert_file", cert)?;
            let pem = read("nats.tls.key_file", key)?;
            // The parse error is not shown: it could quote the key.
            if PrivateKeyDer::from_pem_slice(&pem).is_err() {
                return Err(ConnectError::TlsFile {
                    setting: "nats.tls.key_file",
                    path: key.clone(),
                    message: "no PEM private key in it".into(),
                });
            }
            Ok(())
        }
        (Some(_), None) => Err(ConnectError::Settings(
            "nats.tls.cert_file needs nats.tls.key_file".into(),
        )),
        (None, Some(_)) => Err(ConnectError::Settings(
            "nats.tls.key_file needs nats.tls.cert_file".into(),
        )),
        (None, None) => Ok(()),
    }
}

/// A message for a failed connection that says which setting to look at.
fn explain(error: &async_nats::ConnectError, auth: &NatsAuth, settings: &NatsSettings) -> String {
    let detail = error.to_string();
    match error.kind() {
        ConnectErrorKind::AuthorizationViolation => {
            format!("authorization violation: {}", auth_hint(auth))
        }
        ConnectErrorKind::Authentication => match auth {
            NatsAuth::NkeySeed(_) => "could not sign the server's challenge: \
                 check nats.nkey_seed, it must be a user nkey seed (SU…)"
                .into(),
            NatsAuth::CredsFile(path) => format!(
                "could not sign the server's challenge: check nats.creds_file {}",
                path.display()
            ),
            _ => format!("authentication failed: {detail}"),
        },
        ConnectErrorKind::TimedOut => format!(
            "timed out after {:?} (nats.connect_timeout) on every server{}",
            settings.connect_timeout,
            tls_hint(&detail, settings).unwrap_or_default()
        ),
        _ => match tls_hint(&detail, settings) {
            Some(hint) => format!("{detail}{hint}"),
            None => detail,
        },
    }
}

/// Which setting to check after the server refused the credentials.
fn auth_hint(auth: &NatsAuth) -> String {
    match auth {
        NatsAuth::None => "the server requires authentication; set nats.user and \
             nats.password, nats.token, nats.nkey_seed or nats.creds_file"
            .into(),
        NatsAuth::UserPassword { .. } => "check nats.user/nats.password".into(),
        NatsAuth::Token(_) => "check nats.token".into(),
        NatsAuth::NkeySeed(_) => {
            "check nats.nkey_seed: the server must list its public key (U…)".into()
        }
        NatsAuth::CredsFile(path) => format!(
            "check nats.creds_file {}: its user JWT must be signed by an account the \
             server trusts, and neither be expired nor revoked",
            path.display()
        ),
    }
}

/// A hint for TLS failures, recognised by the rustls error text.
fn tls_hint(detail: &str, settings: &NatsSettings) -> Option<String> {
    let tls = settings.tls.as_ref();
    let ca = tls.and_then(|t| t.ca_file.as_ref());
    let has = |needle: &str| detail.contains(needle);
    let hint = if has("UnknownIssuer") || has("invalid peer certificate") {
        if has("NotValidForName") {
            "the server's TLS certificate does not name the host of the URL".to_owned()
        } else {
            match ca {
                Some(ca) => format!(
                    "the server's TLS certificate is not signed by the CA in \
                     nats.tls.ca_file {}",
                    ca.display()
                ),
                None => "the server's TLS certificate is not signed by a CA of the system \
                         roots; set nats.tls.ca_file to the CA that signed it"
                    .to_owned(),
            }
        }
    } else if has("CertificateRequired") || has("certificate required") {
        "the server requires a client certificate; set nats.tls.cert_file and \
         nats.tls.key_file"
            .to_owned()
    } else if has("BadCertificate") || has("UnknownCA") || has("alert") {
        "the server rejected the TLS handshake; check that the client certificate \
         (nats.tls.cert_file) is signed by a CA the server trusts"
            .to_owned()
    } else if has("corrupt message") || has("InvalidContentType") {
        "TLS handshake failed; is TLS enabled on the server?".to_owned()
    } else {
        return None;
    };
    Some(format!(" ({hint})"))
}

/// Replaces every secret of `auth` that is long enough to be recognised
/// (4 characters or more) by `[redacted]`: defence in depth, should a
/// library ever echo one.
fn scrub(message: &str, auth: &NatsAuth) -> String {
    let secret = match auth {
        NatsAuth::UserPassword { password, .. } => password,
        NatsAuth::Token(secret) | NatsAuth::NkeySeed(secret) => secret,
        NatsAuth::None | NatsAuth::CredsFile(_) => return message.to_owned(),
    };
    match secret.expose() {
        s if s.chars().count() >= 4 => message.replace(s, "[redacted]"),
        _ => message.to_owned(),
    }
}

/// Delay before reconnect attempt `attempts` (1-based, counted since the
/// last successful connection): none for the first, then about
/// [`RECONNECT_BASE_DELAY`] doubling up to [`RECONNECT_MAX_DELAY`], with
/// jitter so that a fleet does not reconnect in lockstep.
pub fn reconnect_delay(attempts: usize) -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(attempts);
    backoff(attempts, hasher.finish() as f64 / u64::MAX as f64)
}

/// The backoff for `attempts` with `jitter` in `0..=1`: uniformly between
/// half of the capped exponential delay and all of it.
fn backoff(attempts: usize, jitter: f64) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let doublings = (attempts - 2).min(20) as u32;
    let ceiling = RECONNECT_BASE_DELAY
        .saturating_mul(1 << doublings)
        .min(RECONNECT_MAX_DELAY);
    ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The URLs for messages: any `user:password@` (or `token@`) part, up to
/// the last `@`, is replaced by `[redacted]@` (see [`crate::redact`]).
pub fn display_urls(urls: &[String]) -> String {
    urls.iter()
        .map(|url| crate::redact::redact_userinfo(url))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        let urls = vec![
            "nats://alice:s3cret@127.0.0.1:4222".to_owned(),
            "tls://127.0.0.1:4223".to_owned(),
            "nats://alice:4222/s3cret@127.0.0.1:4222".to_owned(),
            "127.0.0.1:4222".to_owned(),
        ];
        assert_eq!(
            display_urls(&urls),
            "nats://[redacted]@127.0.0.1:4222,tls://127.0.0.1:4223,\
             nats://[redacted]@127.0.0.1:4222,127.0.0.1:4222"
        );
    }

    #[test]
    fn debug_of_settings_shows_no_secret() {
        let settings = NatsSettings {
            urls: vec!["nats://alice:url-pw@h:4222".into()],
            auth: NatsAuth::Token(Secret::new("tok-secret")),
            ..NatsSettings::default()
        };
        let text = format!("{settings:?}");
        assert!(
            !text.contains("url-pw") && !text.contains("tok-secret"),
            "{text}"
        );
        assert!(text.contains("nats://[redacted]@h:4222"), "{text}");
    }

    #[test]
    fn url_credentials_move_into_auth() {
        let urls = vec![
            "nats://alice:p%40ss@127.0.0.1:4222".to_owned(),
            "nats://alice:p%40ss@127.0.0.1:4223".to_owned(),
        ];
        let (addresses, auth) = server_addresses(&urls, "shown").unwrap();
        assert_eq!(
            auth,
            Some(NatsAuth::UserPassword {
                user: "alice".into(),
                password: Secret::new("p@ss"),
            })
        );
        for address in &addresses {
            assert!(!address.has_user_pass());
            assert!(!format!("{address:?}").contains("p%40ss"));
        }
        let (_, token) = server_addresses(&["nats://tok@h:1".into()], "").unwrap();
        assert_eq!(token, Some(NatsAuth::Token(Secret::new("tok"))));
        let mixed = ["nats://a:b@h:1".to_owned(), "nats://c:d@h:2".to_owned()];
        assert!(matches!(
            server_addresses(&mixed, ""),
            Err(ConnectError::Settings(_))
        ));
        assert!(server_addresses(&[], "").is_err());
        assert!(server_addresses(&["http://h:1".into()], "").is_err());
        let misread = ["nats://alice:4222/s3cret@127.0.0.1:4222".to_owned()];
        let refused = server_addresses(&misread, "shown").unwrap_err().to_string();
        assert!(refused.contains("percent-encode"), "{refused}");
        assert!(!refused.contains("s3cret"), "{refused}");
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }

    #[test]
    fn backoff_is_capped_exponential_with_jitter() {
        assert_eq!(backoff(0, 1.0), Duration::ZERO);
        assert_eq!(backoff(1, 1.0), Duration::ZERO);
        assert_eq!(backoff(2, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(5, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(50, 1.0), RECONNECT_MAX_DELAY);
        assert_eq!(backoff(usize::MAX, 0.0), RECONNECT_MAX_DELAY / 2);
        for attempts in 2..40 {
            let delay = reconnect_delay(attempts);
            assert!(delay >= backoff(attempts, 0.0) && delay <= backoff(attempts, 1.0));
        }
    }

    #[test]
    fn scrub_removes_long_secrets_only() {
        let auth = NatsAuth::Token(Secret::new("hunter2"));
        assert_eq!(scrub("x hunter2 y", &auth), "x [redacted] y");
        let short = NatsAuth::Token(Secret::new("io"));
        assert_eq!(scrub("IO error", &short), "IO error");
    }
}
