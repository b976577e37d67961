//! URLs as they may be shown: in messages, logs, `/readyz` and the
//! effective configuration. A URL's user-info (`user:password@`,
//! `token@`) is a secret, and so may be its query (webhook tokens). The
//! user-info is taken to end at the **last** `@` of the URL, wherever it
//! is: a password with an unencoded `/`, `?` or `#`
//! (`nats://alice:4222/s3cret@host`) fools the usual rule (the user-info
//! ends at the first `/`, `?` or `#`) into showing it, while this one can
//! only hide too much (an `@` in a path or query), never too little. Such
//! URLs are refused by validation anyway ([`misplaced_at`]): parsers read
//! them as another host.

/// What replaces a hidden part.
pub const REDACTED: &str = "[redacted]";

/// Where the part after `scheme://` starts: 0 when the URL has no scheme
/// (a `://` preceded by anything but a scheme name, as in
/// `user:pa://ss@host`, is part of the user-info).
fn after_scheme(url: &str) -> usize {
    match url.find("://") {
        Some(i) if is_scheme(&url[..i]) => i + 3,
        _ => 0,
    }
}

/// RFC 3986: a letter, then letters, digits, `+`, `-` and `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `url` with everything between the scheme's `://` (or the start, when
/// there is no scheme) and the last `@` replaced by `[redacted]`.
pub fn redact_userinfo(url: &str) -> String {
    let start = after_scheme(url);
    match url[start..].rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// [`redact_userinfo`], and the query and fragment (from the first `?` or
/// `#` after the user-info) replaced by `?[redacted]`: for URLs whose
/// query may carry a token, such as webhooks.
pub fn redact_userinfo_and_query(url: &str) -> String {
    let shown = redact_userinfo(url);
    let start = after_scheme(&shown);
    let host_start = shown[start..].find('@').map_or(start, |at| start + at + 1);
    match shown[host_start..].find(['?', '#']) {
        Some(q) => format!("{}?{REDACTED}", &shown[..host_start + q]),
        None => shown,
    }
}

/// Whether `url` has an `@` after its authority (after the first `/`, `?`
/// or `#` that follows the scheme): most likely a user name or password
/// with an unencoded `/`, `?`, `#`, which every URL parser would read as
/// another host, sending the rest of the password as a path. Such a URL
/// is refused: the user-info must be percent-encoded, and an `@` of a
/// path or query written `%40`.
pub fn misplaced_at(url: &str) -> bool {
    let rest = &url[after_scheme(url)..];
    match rest.find(['/', '?', '#']) {
        Some(end) => rest[end..].contains('@'),
        None => false,
    }
}

/// The message for a URL refused by [`misplaced_at`]. The URL itself is not
/// shown.
pub const MISPLACED_AT_FIX: &str = "the URL has an `@` after its host: if it belongs to a user \
     name or password, percent-encode their `/`, `?`, `#` and `@` (as `%2F`, `%3F`, `%23`, \
     `%40`); in a path or query, write `@` as `%40` (the URL is not shown: it may hold a password)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_up_to_the_last_at() {
        for (url, shown) in [
            ("nats://alice:s3cret@h:4222", "nats://[redacted]@h:4222"),
            (
                "nats://alice:4222/s3cret@h:4222",
                "nats://[redacted]@h:4222",
            ),
            ("nats://a:p?w#x@h:4222", "nats://[redacted]@h:4222"),
            ("nats://t0ken@h:4222/x@y", "nats://[redacted]@y"),
            ("alice:pw@h:4222", "[redacted]@h:4222"),
            ("a:pa://ss@h:4222", "[redacted]@h:4222"),
            ("tls://h:4223", "tls://h:4223"),
            (
                "redis://:pw@redis:6379/0",
                "redis://[redacted]@redis:6379/0",
            ),
        ] {
            assert_eq!(redact_userinfo(url), shown, "{url}");
        }
    }

    #[test]
    fn queries_are_hidden_too_when_asked() {
        for (url, shown) in [
            ("https://h/hook?token=abc", "https://h/hook?[redacted]"),
            (
                "https://u:p@h/hook#frag",
                "https://[redacted]@h/hook?[redacted]",
            ),
            ("https://u:p?q@h/x?t=1", "https://[redacted]@h/x?[redacted]"),
            ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x"),
        ] {
            assert_eq!(redact_userinfo_and_query(url), shown, "{url}");
        }
    }

    #[test]
    fn an_at_after_the_host_is_misplaced() {
        assert!(misplaced_at("nats://alice:4222/s3cret@127.0.0.1:4222"));
        assert!(misplaced_at("nats://alice:pw?x@127.0.0.1:4222"));
        assert!(misplaced_at("nats://alice:pw#x@127.0.0.1:4222"));
        assert!(misplaced_at("https://h/hook?mail=a@b"));
        assert!(!misplaced_at("nats://alice:p%2Fw@127.0.0.1:4222"));
        assert!(!misplaced_at("nats://alice:p@ss@127.0.0.1:4222"));
        assert!(!misplaced_at("https://h/hook?mail=a%40b"));
        assert!(!misplaced_at("127.0.0.1:4222"));
        assert!(misplaced_at("a:pa://ss@h:4222"));
    }
}
