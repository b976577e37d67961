//! Property tests (proptest) of the text handling added for issue 11:
//! URL user-info redaction and the "misplaced `@`" check
//! (`invalog::redact`), and the terminal sanitiser (`invalog::printable`).
//! `PROPTEST_CASES` sets the number of cases (256 by default); the long
//! runs and their figures are in docs/reliability.md.

use invalog::printable::{is_unprintable, printable, printable_lines};
use invalog::redact::{misplaced_at, redact_userinfo, redact_userinfo_and_query};
use proptest::prelude::*;

/// Secrets are drawn from upper-case letters and the characters that
/// break naive URL parsing; everything else of a URL has no upper case, so
/// an upper-case letter in the output is a leaked secret.
const SECRET: &str = "[A-Z/?#@:%]{1,12}";
const PLAIN: &str = "[a-z0-9.-]{1,12}";

fn url() -> impl Strategy<Value = (String, String, bool)> {
    (
        prop_oneof![
            Just("nats://"),
            Just("tls://"),
            Just("redis://"),
            Just("https://"),
            Just("")
        ],
        SECRET,
        proptest::option::of(SECRET),
        PLAIN,
        proptest::option::of(1u16..),
        "(/[a-z0-9=&?#]{0,8}){0,2}",
    )
        // Without a scheme, `A://…@host` is a scheme `A` with an empty
        // user-info: no longer the URL meant.
        .prop_filter("a scheme-less URL whose user-info holds `://`", |t| {
            !t.0.is_empty()
                || !format!("{}:{}", t.1, t.2.clone().unwrap_or_default()).contains("://")
        })
        .prop_map(|(scheme, user, password, host, port, path)| {
            let userinfo = match password {
                Some(password) => format!("{user}:{password}"),
                None => user,
            };
            let port = port.map_or(String::new(), |p| format!(":{p}"));
            let url = format!("{scheme}{userinfo}@{host}{port}{path}");
            let misread = userinfo.contains(['/', '?', '#']);
            (url, format!("@{host}{port}{path}"), misread)
        })
}

/// Reverses `printable` for a text that had no backslash.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\\u{") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').expect("closed escape") + at;
        let code = u32::from_str_radix(&rest[at + 3..end], 16).expect("hex");
        out.push(char::from_u32(code).expect("a char"));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

proptest! {
    #[test]
    fn redaction_never_shows_userinfo((url, tail, _) in url()) {
        for shown in [redact_userinfo(&url), redact_userinfo_and_query(&url)] {
            prop_assert!(!shown.chars().any(|c| c.is_ascii_uppercase()), "{url} → {shown}");
        }
        // Only the user-info goes: the rest is kept as it was.
        let kept = format!("[redacted]{tail}");
        prop_assert!(redact_userinfo(&url).ends_with(&kept), "{}", url);
    }

    #[test]
    fn an_unencoded_slash_query_or_hash_in_userinfo_is_misplaced((url, _, misread) in url()) {
        prop_assert_eq!(misplaced_at(&url), misread, "{}", url);
    }

    #[test]
    fn redaction_and_the_check_are_total(text in any::<String>()) {
        let _ = (redact_userinfo(&text), redact_userinfo_and_query(&text), misplaced_at(&text));
        if !text.contains('@') {
            prop_assert_eq!(redact_userinfo(&text), text);
        }
    }

    #[test]
    fn printable_text_has_no_control_character_and_round_trips(text in any::<String>()) {
        let shown = printable(&text);
        prop_assert!(!shown.chars().any(is_unprintable), "{:?}", shown);
        if !text.chars().any(is_unprintable) {
            prop_assert_eq!(&*shown, &*text);
        }
        if !text.contains('\\') {
            prop_assert_eq!(unescape(&shown), text.clone());
        }
        let lines = printable_lines(&text);
        prop_assert!(!lines.chars().any(|c| c != '\n' && is_unprintable(c)));
        prop_assert_eq!(lines.matches('\n').count(), text.matches('\n').count());
    }
}
