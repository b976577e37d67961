//! Connecting to NATS from typed settings: several server URLs,
//! user/password, token, nkey seed or creds file, TLS (CA, client
//! certificate and key), reconnecting forever with backoff. Secrets are held
//! in [`Secret`] and never logged.

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

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
    /// CA certificate(s) to trust, PEM.
    pub ca_file: Option<PathBuf>,
    /// Client certificate, PEM (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// Client private key, PEM (with `cert_file`).
    pub key_file: Option<PathBuf>,
    /// Refuse to connect without TLS.
    pub required: bool,
}

/// Everything needed to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Why a connection could not be set up. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A credentials file could not be read.
    #[error("NATS creds file {path}: {source}")]
    CredsFile {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The server could not be reached or refused the connection.
    #[error("connecting to NATS at {urls}: {message}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// What failed.
        message: String,
    },
}

/// Connects with `settings`: tries every URL, reconnects forever with
/// backoff after a lost connection (a node keeps its caches meanwhile), and
/// logs connection events without credentials.
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, ConnectError> {
    let mut options = async_nats::ConnectOptions::new()
        .max_reconnects(None)
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
    options = match &settings.auth {
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
        options = options.require_tls(tls.required);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let urls = display_urls(&settings.urls);
    let addresses: Vec<async_nats::ServerAddr> = settings
        .urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| ConnectError::Connect {
            urls: urls.clone(),
            message: format!("bad URL: {e}"),
        })?;
    options
        .connect(addresses)
        .await
        .map_err(|e| ConnectError::Connect {
            urls,
            message: e.to_string(),
        })
}

/// The URLs for messages: any `user:password@` part is replaced by
/// `[redacted]@`.
pub fn display_urls(urls: &[String]) -> String {
    urls.iter()
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}[redacted]{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.clone(),
        })
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
        ];
        assert_eq!(
            display_urls(&urls),
            "nats://[redacted]@127.0.0.1:4222,tls://127.0.0.1:4223"
        );
    }
}
