//! The reply-subject validator against a table of attacks and an
//! exhaustive sweep of short strings over an alphabet of troublemakers
//! (wildcards, separators, `$`, whitespace, control and non-ASCII
//! characters).

use super::*;

fn canary(probe: &str, reply: &str) -> Canary {
    Canary {
        probe: probe.into(),
        canary: 0,
        reply: reply.into(),
    }
}

#[test]
fn the_runs_own_reply_subject_is_accepted() {
    let id = "01a21b42-5471-7381-a944-feac1ad245f1";
    let reply = reply_subject(id).unwrap();
    assert_eq!(reply, format!("_INVALOG.probe.{id}"));
    assert_eq!(
        check_reply(&canary(id, &reply), "invalog"),
        Ok(reply.as_str())
    );
    let longest = "x".repeat(64);
    let reply = reply_subject(&longest).unwrap();
    assert!(check_reply(&canary(&longest, &reply), "invalog").is_ok());
}

#[test]
fn attacks_are_refused() {
    use ReplyRefused::*;
    let id = "run-1";
    let table: &[(&str, &str, &str, ReplyRefused)] = &[
        (
            id,
            "$KV.invalog_checkpoints.web-1",
            "invalog",
            OutsideNamespace,
        ),
        (
            id,
            "$JS.API.STREAM.DELETE.INVALOG",
            "invalog",
            OutsideNamespace,
        ),
        (id, "invalog.content", "invalog", OutsideNamespace),
        (id, "_INBOX.abc", "invalog", OutsideNamespace),
        (id, "_INVALOG.probe.run-2", "invalog", OutsideNamespace),
        (id, "_INVALOG.probe.run-1.x", "invalog", OutsideNamespace),
        (id, "_INVALOG.probe.*", "invalog", OutsideNamespace),
        (id, "_INVALOG.probe.>", "invalog", OutsideNamespace),
        (id, "_INVALOG.>", "invalog", OutsideNamespace),
        (id, "_invalog.probe.run-1", "invalog", OutsideNamespace),
        (id, "_INVALOG.probe.run-1 ", "invalog", OutsideNamespace),
        (id, "", "invalog", OutsideNamespace),
        ("*", "_INVALOG.probe.*", "invalog", BadRunId),
        (">", "_INVALOG.probe.>", "invalog", BadRunId),
        ("a.b", "_INVALOG.probe.a.b", "invalog", BadRunId),
        ("a b", "_INVALOG.probe.a b", "invalog", BadRunId),
        (
            "a\r\nPUB x 1",
            "_INVALOG.probe.a\r\nPUB x 1",
            "invalog",
            BadRunId,
        ),
        ("$KV", "_INVALOG.probe.$KV", "invalog", BadRunId),
        ("é", "_INVALOG.probe.é", "invalog", BadRunId),
        ("", "_INVALOG.probe.", "invalog", BadRunId),
        (id, "_INVALOG.probe.run-1", "_INVALOG", InsideLog),
        (id, "_INVALOG.probe.run-1", "_INVALOG.probe", InsideLog),
        (
            id,
            "_INVALOG.probe.run-1",
            "_INVALOG.probe.run-1",
            InsideLog,
        ),
    ];
    for (probe, reply, prefix, why) in table {
        assert_eq!(
            check_reply(&canary(probe, reply), prefix),
            Err(*why),
            "probe {probe:?} reply {reply:?} log {prefix:?}"
        );
    }
    let long = "x".repeat(65);
    let reply = format!("_INVALOG.probe.{long}");
    assert_eq!(
        check_reply(&canary(&long, &reply), "invalog"),
        Err(BadRunId)
    );
    // A log prefix that merely starts like the namespace is not inside it.
    assert!(check_reply(&canary(id, "_INVALOG.probe.run-1"), "_INVALOG.pro").is_ok());
}

/// Every string of up to `max` characters over `alphabet`.
fn strings(alphabet: &[char], max: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    let mut last = vec![String::new()];
    for _ in 0..max {
        last = last
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        all.extend(last.iter().cloned());
    }
    all
}

#[test]
fn whatever_is_accepted_is_one_plain_token_under_the_namespace() {
    let alphabet = [
        'a', 'Z', '0', '_', '-', '.', '*', '>', '$', ' ', '\t', '\n', '\0', 'é',
    ];
    let prefixes = ["invalog", "_INVALOG", "_INVALOG.probe", "a"];
    let mut accepted = 0;
    for s in strings(&alphabet, 3) {
        let replies = [
            format!("{REPLY_PREFIX}.{s}"),
            s.clone(),
            format!("{REPLY_PREFIX}.{s}.a"),
            format!("{REPLY_PREFIX}{s}"),
        ];
        for reply in &replies {
            let candidate = canary(&s, reply);
            for prefix in prefixes {
                let Ok(subject) = check_reply(&candidate, prefix) else {
                    continue;
                };
                accepted += 1;
                let tokens: Vec<&str> = subject.split('.').collect();
                assert_eq!(tokens[..2], ["_INVALOG", "probe"], "{subject:?}");
                assert_eq!(tokens.len(), 3, "{subject:?}");
                assert_eq!(tokens[2], s, "{subject:?}");
                assert!(
                    s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                    "{subject:?}"
                );
                assert!(!s.is_empty());
                assert!(!subject.starts_with(&format!("{prefix}.")), "{subject:?}");
            }
        }
        // Completeness: a token run id's own subject is accepted under a
        // log prefix outside the namespace.
        if crate::model::check_token("t", &s).is_ok() {
            assert!(check_reply(&canary(&s, &replies[0]), "invalog").is_ok());
        }
    }
    assert!(accepted > 0, "the sweep accepted nothing");
}

#[test]
fn refused_subjects_are_logged_in_a_safe_form() {
    assert_eq!(
        redact_subject("$KV.invalog_checkpoints.web-1"),
        "$KV.… (29 bytes)"
    );
    assert_eq!(redact_subject("invalog.content"), "invalog.… (15 bytes)");
    assert_eq!(redact_subject("\x1b[31mred.x"), "?.… (10 bytes)");
    assert_eq!(
        redact_subject("a-very-long-first-token-with-a-secret.x"),
        "?.… (39 bytes)"
    );
    assert_eq!(redact_subject(""), "?.… (0 bytes)");
}
