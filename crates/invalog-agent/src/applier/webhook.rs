//! The `webhook` applier: POSTs each batch, as the JSON body of
//! `body::encode_applier_body`, to a URL of the node's app, one request
//! per batch; with `max_batches_per_request` above 1, consecutive batches of
//! a catching-up node go together in the body of
//! `body_group::encode_applier_group_body`. A 2xx answer means applied; 408, 429, 5xx, timeouts and
//! connection errors are retried by the node; any other answer is permanent
//! and escalated at once. Requests carry an optional bearer token and an
//! optional HMAC-SHA256 signature of `"<timestamp>.<body>"` (see
//! `docs/appliers.md`), so the app can check the sender.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use sha2::Sha256;

use super::body::{encode_applier_body, encode_refresh_all_body};
use super::body_group::encode_applier_group_body;
use super::{check_timeout, error_chain, ApplierError, WebhookSettings};
use invalog::model::RefresherDef;
use invalog::refresher::{BatchContext, RefreshError, RefreshResult, Refresher};
use invalog::secret::Secret;

/// Header with the signature: `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const HEADER_SIGNATURE: &str = "Invalog-Signature";

/// Header with the send time in whole Unix seconds; it is part of the signed
/// string, so a receiver that rejects old timestamps rejects replays.
pub const HEADER_TIMESTAMP: &str = "Invalog-Timestamp";

/// Longest part of an error answer's body quoted in the error.
const QUOTED_BODY_BYTES: usize = 200;

/// A `webhook` applier. See the module docs.
pub struct WebhookApplier {
    def: RefresherDef,
    client: reqwest::Client,
    url: Url,
    /// The URL without credentials, query or fragment, for messages.
    shown_url: String,
    timeout: Duration,
    bearer_token: Option<Secret>,
    hmac_secret: Option<Secret>,
    max_batches: usize,
}

impl WebhookApplier {
    /// Validates the settings and builds the HTTP client (no request yet).
    pub fn new(def: &RefresherDef, settings: &WebhookSettings) -> Result<Self, ApplierError> {
        if invalog::redact::misplaced_at(&settings.url) {
            return Err(ApplierError::invalid(
                def,
                "url",
                invalog::redact::MISPLACED_AT_FIX,
            ));
        }
        let url = Url::parse(&settings.url)
            .map_err(|e| ApplierError::invalid(def, "url", format!("is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ApplierError::invalid(
                def,
                "url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        check_timeout(def, settings.timeout)?;
        if settings.max_batches_per_request == 0 {
            return Err(ApplierError::invalid(
                def,
                "max_batches_per_request",
                "must be at least 1 (1 sends each batch alone)",
            ));
        }
        if let Some(token) = &settings.bearer_token {
            // Printable ASCII only: an HTTP header would also take tabs and
            // bytes above 127, sent as raw UTF-8 that servers read apart.
            let valid = !token.expose().is_empty()
                && token.expose().bytes().all(|b| (b' '..=b'~').contains(&b));
            if !valid {
                return Err(ApplierError::invalid(
                    def,
                    "bearer_token",
                    "must be non-empty printable ASCII (the value is not shown)",
                ));
            }
        }
        if settings
            .hmac_secret
            .as_ref()
            .is_some_and(|s| s.expose().is_empty())
        {
            return Err(ApplierError::invalid(
                def,
                "hmac_secret",
                "must not be empty",
            ));
        }
        // reqwest is built without a default TLS crypto provider; installing
        // one is idempotent (a second install fails harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("invalog/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApplierError::Client {
                refresher: def.name.clone(),
                message: error_chain(&e.without_url()),
            })?;
        Ok(Self {
            def: def.clone(),
            client,
            shown_url: shown_url(&url),
            url,
            timeout: settings.timeout,
            bearer_token: settings.bearer_token.clone(),
            hmac_secret: settings.hmac_secret.clone(),
            max_batches: settings.max_batches_per_request,
        })
    }

    /// Sends one body; `Ok` on a 2xx answer.
    async fn post(&self, body: Vec<u8>) -> RefreshResult {
        let timestamp = unix_seconds(SystemTime::now());
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(HEADER_TIMESTAMP, timestamp.to_string());
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(secret) = &self.hmac_secret {
            request = request.header(HEADER_SIGNATURE, signature(secret, timestamp, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| self.send_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let quoted = quote_body(response).await;
        let message = format!(
            "webhook {} of refresher `{}` answered {status}{quoted}",
            self.shown_url, self.def.name
        );
        if is_retryable(status) {
            Err(RefreshError::msg(message))
        } else {
            Err(RefreshError::permanent(format!(
                "{message} (the batch is not sent again: only 408, 429 and 5xx are; \
                 the node escalates to a refresh-all, and while that fails too it is stalled \
                 and tries the refresh-all again with backoff)"
            )))
        }
    }

    fn send_error(&self, error: reqwest::Error) -> RefreshError {
        let cause = if error.is_timeout() {
            format!("timed out after {:?}", self.timeout)
        } else {
            error_chain(&error.without_url())
        };
        RefreshError::msg(format!(
            "webhook {} of refresher `{}`: {cause}",
            self.shown_url, self.def.name
        ))
    }
}

#[async_trait]
impl Refresher for WebhookApplier {
    async fn refresh_all(&self) -> RefreshResult {
        self.post(encode_refresh_all_body(&self.def)).await
    }

    async fn apply(&self, context: BatchContext<'_>) -> RefreshResult {
        self.post(encode_applier_body(context)).await
    }

    fn max_group(&self) -> usize {
        self.max_batches
    }

    async fn apply_group(&self, group: &[BatchContext<'_>]) -> RefreshResult {
        match group {
            [one] => self.post(encode_applier_body(*one)).await,
            _ => self.post(encode_applier_group_body(group)).await,
        }
    }
}

/// 408, 429 and 5xx are worth retrying; other non-2xx answers are not.
fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// `sha256=` and the hex HMAC-SHA256, keyed by the secret's UTF-8 bytes, of
/// the timestamp's decimal digits, a `.`, and the raw body.
fn signature(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The URL without user, password, query or fragment (they may hold secrets).
fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// `: <start of the answer's body>`, or nothing when it is empty or unreadable.
async fn quote_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < QUOTED_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_BODY_BYTES)]);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.escape_debug())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> RefresherDef {
        RefresherDef::new(uuid::Uuid::from_u128(1), "content").unwrap()
    }

    fn settings(url: &str) -> WebhookSettings {
        WebhookSettings {
            url: url.into(),
            timeout: Duration::from_secs(1),
            bearer_token: None,
            hmac_secret: None,
            max_batches_per_request: 1,
        }
    }

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        // Python: hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature(&Secret::new("key"), 1_700_000_000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn settings_are_checked_without_showing_secrets() {
        let bad_url = WebhookApplier::new(&def(), &settings("ftp://example.com/x")).err();
        assert!(matches!(
            bad_url,
            Some(ApplierError::InvalidSetting { key: "url", .. })
        ));
        let mut with_token = settings("http://127.0.0.1:1/hook");
        with_token.bearer_token = Some(Secret::new("hunter2\n"));
        let error = WebhookApplier::new(&def(), &with_token).err().unwrap();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        for token in ["caf\u{e9}-token", "tab\there"] {
            with_token.bearer_token = Some(Secret::new(token));
            let error = WebhookApplier::new(&def(), &with_token).err().unwrap();
            assert!(error.to_string().contains("printable ASCII"), "{error}");
        }
        let misread = settings("http://user:1/s3cr3t@127.0.0.1:1/hook");
        let error = WebhookApplier::new(&def(), &misread).err().unwrap();
        assert!(error.to_string().contains("percent-encode"), "{error}");
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
        let mut zero = settings("http://127.0.0.1:1/hook");
        zero.timeout = Duration::ZERO;
        assert!(WebhookApplier::new(&def(), &zero).is_err());
    }

    #[tokio::test]
    async fn connection_errors_are_retryable_and_explained_without_secrets() {
        // Port 1 on loopback: nothing listens, the connection is refused.
        let mut s = settings("http://user:pw@127.0.0.1:1/hook?token=query-secret");
        s.bearer_token = Some(Secret::new("bearer-secret"));
        let applier = WebhookApplier::new(&def(), &s).unwrap();
        let error = applier.refresh_all().await.unwrap_err();
        let text = error.to_string();
        assert!(!error.is_permanent(), "{text}");
        assert!(
            text.starts_with("webhook http://127.0.0.1:1/hook of refresher `content`: "),
            "{text}"
        );
        assert!(text.to_lowercase().contains("connect"), "{text}");
        for secret in ["pw", "query-secret", "bearer-secret"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn an_https_client_builds_with_the_installed_crypto_provider() {
        WebhookApplier::new(&def(), &settings("https://app.internal/hook")).unwrap();
        WebhookApplier::new(&def(), &settings("https://app.internal/hook")).unwrap();
    }

    #[test]
    fn shown_urls_drop_credentials_and_query() {
        let url = Url::parse("https://user:pw@app.local:8443/hook?token=t#f").unwrap();
        assert_eq!(shown_url(&url), "https://app.local:8443/hook");
    }

    #[test]
    fn only_408_429_and_5xx_are_retried() {
        for code in [408, 429, 500, 502, 503] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [301, 400, 401, 403, 404, 422] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
