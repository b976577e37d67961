//! Tests of wire format 1 against its documentation: round trips, the
//! example and invalid messages under `docs/wire-format/`, the subject check,
//! and totality of `decode` over many pseudo-random inputs.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::model::{Batch, Instruction, Provenance, RefresherDef};

const BATCH_ID: &str = "0195953d-d574-7f28-9fb1-7c2390c192cf";
const CONTENT_ID: &str = "4709a46e-47da-42fb-898a-2d1fc2ba1bf5";

fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).expect("a valid UUID")
}

fn at(seconds: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(seconds, nanos)
}

/// A batch for refresher `content` without provenance.
fn batch(instructions: Vec<Instruction>) -> Batch {
    Batch {
        id: uuid(BATCH_ID),
        origin: "web-1".to_owned(),
        published_at: at(1_741_965_612, 404_000_000),
        refresher: RefresherDef::new(uuid(CONTENT_ID), "content").expect("a valid name"),
        provenance: Provenance::default(),
        applied_at_origin: false,
        instructions,
    }
}

/// One instruction of every kind, with edge values.
fn every_kind() -> Vec<Instruction> {
    vec![
        Instruction::RefreshAll,
        Instruction::RefreshIds(vec![1051, 0, -1, i64::MIN, i64::MAX]),
        Instruction::RefreshUuids(vec![Uuid::nil(), Uuid::max(), uuid(BATCH_ID)]),
        Instruction::RefreshKeys(vec![
            String::new(),
            "/fr/équipe/".to_owned(),
            "quote \" backslash \\ newline \n nul \u{0} emoji 🦀".to_owned(),
        ]),
        Instruction::RemoveIds(vec![2044]),
        Instruction::RemoveUuids(vec![uuid(CONTENT_ID)]),
        Instruction::RemoveKeys(vec!["sitemap:en".to_owned()]),
        Instruction::RefreshJson(json!({
            "operation": "sort",
            "ids": [1, 2.5, -0.1, 1e-7, -2.5e300, null, true, "x"],
            "big": u64::MAX,
            "nested": {"a": {"b": [[], {}]}}
        })),
        Instruction::RefreshPayloads(vec![
            json!({"sku": "SKU-1001", "currency": "EUR", "price": 19.99, "vat_rate": 0.2}),
            json!(null),
            json!([1, "two", 3.0]),
        ]),
    ]
}

/// Encodes, decodes (also on its subject) and compares.
fn assert_round_trip(original: &Batch) {
    let body = encode(original);
    let decoded = decode(&body)
        .unwrap_or_else(|e| panic!("decoding {} failed: {e}", String::from_utf8_lossy(&body)));
    assert_eq!(&decoded, original);
    let subject = format!("invalog.{}", original.refresher.name);
    assert_eq!(
        &decode_on_subject(&subject, &body).expect("on its subject"),
        original
    );
}

fn wire_format_dir(sub: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/wire-format")
        .join(sub)
}

/// The files of `docs/wire-format/<sub>`, sorted by name.
fn files(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = wire_format_dir(sub);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a UTF-8 file name")
                .to_owned();
            let bytes = std::fs::read(&path).expect("a readable file");
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

fn examples() -> Vec<(String, Vec<u8>)> {
    files("examples")
        .into_iter()
        .filter(|(name, _)| name.ends_with(".json"))
        .collect()
}

/// A body whose `published_at` and instructions are given as JSON text.
fn body_with(published_at: &str, instructions: &str) -> String {
    format!(
        r#"{{"format":1,"batch_id":"{BATCH_ID}","origin":"web-1","published_at":"{published_at}","refresher":{{"id":"{CONTENT_ID}","name":"content"}},"instructions":[{instructions}]}}"#
    )
}

#[test]
fn every_kind_round_trips_alone_and_together() {
    for instruction in every_kind() {
        assert_round_trip(&batch(vec![instruction]));
    }
    assert_round_trip(&batch(every_kind()));
    assert_round_trip(&batch(Vec::new()));
}

#[test]
fn provenance_and_applied_at_origin_round_trip() {
    let provenances = [
        Provenance::default(),
        Provenance {
            actor: Some("editor:maria.lopez@example.com".to_owned()),
            reason: Some("publish branch /en/products".to_owned()),
            trace_id: Some("55bd3da308fc4270ae13fcba7aa2583e".to_owned()),
        },
        Provenance {
            actor: Some(String::new()),
            reason: None,
            trace_id: Some("00-55bd3da308fc4270ae13fcba7aa2583e-1e1b5a8c2f0d4b7a-01".to_owned()),
        },
    ];
    for provenance in provenances {
        for applied_at_origin in [false, true] {
            assert_round_trip(&Batch {
                provenance: provenance.clone(),
                applied_at_origin,
                origin: "web-3".to_owned(),
                ..batch(every_kind())
            });
        }
    }
}

#[test]
fn published_at_round_trips_to_the_nanosecond() {
    let times = [
        (at(0, 0), "1970-01-01T00:00:00Z"),
        (at(0, 1), "1970-01-01T00:00:00.000000001Z"),
        (at(1_741_965_612, 404_000_000), "2025-03-14T15:20:12.404Z"),
        (
            at(1_741_944_413, 589_793_000),
            "2025-03-14T09:26:53.589793Z",
        ),
        (
            at(1_741_959_465, 918_273_645),
            "2025-03-14T13:37:45.918273645Z",
        ),
        (
            at(253_402_300_799, 999_999_999),
            "9999-12-31T23:59:59.999999999Z",
        ),
        (
            UNIX_EPOCH - Duration::new(86_400, 5),
            "1969-12-30T23:59:59.999999995Z",
        ),
    ];
    for (time, text) in times {
        assert_eq!(format_time(time), text);
        let original = Batch {
            published_at: time,
            ..batch(vec![Instruction::RefreshAll])
        };
        let body = encode(&original);
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(value["published_at"], text);
        assert_round_trip(&original);
    }
    let now = Batch {
        published_at: SystemTime::now(),
        ..batch(vec![Instruction::RefreshAll])
    };
    assert_round_trip(&now);

    // Any offset is read; the instant is what counts. Digits past the
    // nanosecond are dropped.
    let expected = at(1_741_965_612, 404_000_000);
    for text in [
        "2025-03-14T15:20:12.404Z",
        "2025-03-14T16:20:12.404+01:00",
        "2025-03-14T10:20:12.404000-05:00",
        "2025-03-14T15:20:12.404-00:00",
        "2025-03-14t15:20:12.404z",
        "2025-03-14T15:20:12.4040000009Z",
    ] {
        let decoded = decode(body_with(text, "").as_bytes()).expect(text);
        assert_eq!(decoded.published_at, expected, "{text}");
    }
    for text in [
        "2025-03-14T15:20:12",
        "2025-03-14",
        "2025-03-14T15:20Z",
        "2025-02-30T15:20:12Z",
        "2025-03-14T15:20:12+24:00",
    ] {
        let error = decode(body_with(text, "").as_bytes()).expect_err(text);
        assert!(
            matches!(error, DecodeError::Invalid(_)),
            "{text}: {error:?}"
        );
    }
}

#[test]
fn encoding_is_pinned() {
    let minimal = batch(vec![
        Instruction::RefreshAll,
        Instruction::RefreshIds(vec![1051, -1]),
    ]);
    assert_eq!(
        String::from_utf8(encode(&minimal)).expect("UTF-8"),
        concat!(
            r#"{"format":1,"batch_id":"0195953d-d574-7f28-9fb1-7c2390c192cf","origin":"web-1","#,
            r#""published_at":"2025-03-14T15:20:12.404Z","#,
            r#""refresher":{"id":"4709a46e-47da-42fb-898a-2d1fc2ba1bf5","name":"content"},"#,
            r#""instructions":[{"kind":"refresh_all"},{"kind":"refresh_ids","ids":[1051,-1]}]}"#
        )
    );
    let full = Batch {
        provenance: Provenance {
            actor: Some("editor:maria".to_owned()),
            reason: Some("publish".to_owned()),
            trace_id: Some("55bd3da308fc4270ae13fcba7aa2583e".to_owned()),
        },
        applied_at_origin: true,
        ..batch(vec![
            Instruction::RefreshUuids(vec![uuid(CONTENT_ID)]),
            Instruction::RefreshKeys(vec!["a".to_owned()]),
            Instruction::RemoveIds(vec![7]),
            Instruction::RemoveUuids(vec![Uuid::nil()]),
            Instruction::RemoveKeys(vec!["b".to_owned()]),
            Instruction::RefreshJson(json!({"x": null})),
            Instruction::RefreshPayloads(vec![json!(1), json!("two")]),
        ])
    };
    assert_eq!(
        String::from_utf8(encode(&full)).expect("UTF-8"),
        concat!(
            r#"{"format":1,"batch_id":"0195953d-d574-7f28-9fb1-7c2390c192cf","origin":"web-1","#,
            r#""published_at":"2025-03-14T15:20:12.404Z","#,
            r#""refresher":{"id":"4709a46e-47da-42fb-898a-2d1fc2ba1bf5","name":"content"},"#,
            r#""actor":"editor:maria","reason":"publish","trace_id":"55bd3da308fc4270ae13fcba7aa2583e","#,
            r#""applied_at_origin":true,"instructions":["#,
            r#"{"kind":"refresh_uuids","uuids":["4709a46e-47da-42fb-898a-2d1fc2ba1bf5"]},"#,
            r#"{"kind":"refresh_keys","keys":["a"]},"#,
            r#"{"kind":"remove_ids","ids":[7]},"#,
            r#"{"kind":"remove_uuids","uuids":["00000000-0000-0000-0000-000000000000"]},"#,
            r#"{"kind":"remove_keys","keys":["b"]},"#,
            r#"{"kind":"refresh_json","json":{"x":null}},"#,
            r#"{"kind":"refresh_payloads","payloads":[1,"two"]}]}"#
        )
    );
}

#[test]
fn examples_decode_and_re_encode_to_the_same_batch() {
    let examples = examples();
    assert!(
        examples.len() >= 9,
        "docs/wire-format/examples/ holds {} examples, expected at least 9",
        examples.len()
    );
    let mut kinds = std::collections::BTreeSet::new();
    for (name, body) in &examples {
        let decoded = decode(body).unwrap_or_else(|e| panic!("examples/{name}: {e}"));
        let subject = format!("invalog.{}", decoded.refresher.name);
        assert_eq!(
            decode_on_subject(&subject, body).as_ref(),
            Ok(&decoded),
            "examples/{name} on {subject}"
        );
        assert_eq!(
            decode(&encode(&decoded)).as_ref(),
            Ok(&decoded),
            "examples/{name} re-encoded"
        );
        kinds.extend(decoded.instructions.iter().map(Instruction::kind));
    }
    let all: std::collections::BTreeSet<_> = every_kind().iter().map(Instruction::kind).collect();
    assert_eq!(kinds, all, "every instruction kind has an example");
}

/// The error an invalid message must produce.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Json,
    NotUtf8 { offset: usize },
    MissingVersion,
    Version(u64),
    Invalid,
    BadName,
}

impl Expect {
    fn matches(self, error: &DecodeError) -> bool {
        match (self, error) {
            (Expect::Json, DecodeError::Json(_))
            | (Expect::MissingVersion, DecodeError::MissingVersion)
            | (Expect::Invalid, DecodeError::Invalid(_)) => true,
            (Expect::NotUtf8 { offset }, DecodeError::NotUtf8 { offset: found }) => {
                offset == *found
            }
            (Expect::Version(version), DecodeError::UnsupportedVersion { found }) => {
                version == *found
            }
            (Expect::BadName, DecodeError::BadName(e)) => e.what == "refresher name",
            _ => false,
        }
    }
}

#[test]
fn invalid_messages_fail_with_the_expected_error() {
    use Expect::*;
    let expected: &[(&str, Expect)] = &[
        ("actor-not-string.json", Invalid),
        ("applied-at-origin-null.json", Invalid),
        ("applied-at-origin-string.json", Invalid),
        ("bad-batch-id.json", Invalid),
        ("bad-refresher-name.json", BadName),
        ("duplicate-field.json", Invalid),
        ("empty-refresher-name.json", BadName),
        ("empty.json", Json),
        ("format-as-string.json", MissingVersion),
        ("format-float.json", MissingVersion),
        ("format-zero.json", Version(0)),
        ("ids-floats.json", Invalid),
        ("ids-integral-floats.json", Invalid),
        ("ids-negative-zero.json", Invalid),
        ("ids-not-integers.json", Invalid),
        ("ids-null.json", Invalid),
        ("ids-out-of-range.json", Invalid),
        ("instructions-not-array.json", Invalid),
        ("keys-not-strings.json", Invalid),
        ("kind-wrong-case.json", Invalid),
        ("lone-surrogate.json", Json),
        ("missing-batch-id.json", Invalid),
        ("missing-format.json", MissingVersion),
        ("missing-ids.json", Invalid),
        ("missing-instructions.json", Invalid),
        ("missing-kind.json", Invalid),
        ("missing-origin.json", Invalid),
        ("missing-published-at.json", Invalid),
        ("missing-refresher-id.json", Invalid),
        ("missing-refresher.json", Invalid),
        ("nan-in-payload.json", Json),
        ("not-an-object.json", MissingVersion),
        ("not-json.json", Json),
        ("not-utf8.bin", NotUtf8 { offset: 92 }),
        ("payloads-not-array.json", Invalid),
        ("published-at-bad-date.json", Invalid),
        ("published-at-epoch-millis.json", Invalid),
        ("published-at-no-offset.json", Invalid),
        ("refresh-json-missing-json.json", Invalid),
        ("refresher-as-string.json", Invalid),
        ("refresher-name-non-ascii.json", BadName),
        ("refresher-name-too-long.json", BadName),
        ("too-deeply-nested.json", Json),
        ("trailing-comma.json", Json),
        ("trailing-garbage.json", Json),
        ("truncated.json", Json),
        ("unknown-instruction-field.json", Invalid),
        ("unknown-kind.json", Invalid),
        ("unknown-version.json", Version(2)),
        ("utf8-bom.json", Json),
        ("uuids-not-uuids.json", Invalid),
    ];
    let on_disk = files("invalid");
    let named: Vec<&str> = on_disk.iter().map(|(name, _)| name.as_str()).collect();
    let listed: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        named, listed,
        "docs/wire-format/invalid/ and this table must list the same files, sorted"
    );
    for ((name, body), (_, expect)) in on_disk.iter().zip(expected) {
        let error = decode(body).expect_err(name);
        assert!(
            expect.matches(&error),
            "invalid/{name}: expected {expect:?}, got {error:?}"
        );
        // Messages name the problem and never panic on display.
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn the_size_limit_comes_first_and_is_inclusive() {
    let (_, example) = &examples()[0];
    let mut exactly = example.clone();
    exactly.resize(MAX_DECODE_BYTES, b' ');
    assert!(decode(&exactly).is_ok(), "a body of exactly 8 MiB decodes");
    exactly.push(b' ');
    assert_eq!(
        decode(&exactly),
        Err(DecodeError::TooLarge {
            size: MAX_DECODE_BYTES + 1,
            limit: MAX_DECODE_BYTES
        })
    );
    assert_eq!(MAX_DECODE_BYTES, 8 * 1024 * 1024);
}

#[test]
fn unknown_top_level_and_refresher_fields_are_ignored() {
    let body = format!(
        r#"{{"format":1,"future_field":{{"any":[1,2]}},"batch_id":"{BATCH_ID}","origin":"web-1","published_at":"2025-03-14T15:20:12.404Z","refresher":{{"id":"{CONTENT_ID}","name":"content","display":"Content"}},"instructions":[{{"kind":"refresh_ids","ids":[1051]}}],"priority":"high"}}"#
    );
    assert_eq!(
        decode(body.as_bytes()),
        Ok(batch(vec![Instruction::RefreshIds(vec![1051])]))
    );
}

#[test]
fn optional_fields_accept_null_or_absence() {
    let body = format!(
        r#"{{"format":1,"batch_id":"{BATCH_ID}","origin":"web-1","published_at":"2025-03-14T15:20:12.404Z","refresher":{{"id":"{CONTENT_ID}","name":"content"}},"actor":null,"reason":null,"trace_id":null,"instructions":[]}}"#
    );
    let decoded = decode(body.as_bytes()).expect("nulls are absent values");
    assert_eq!(decoded.provenance, Provenance::default());
    assert!(
        !decoded.applied_at_origin,
        "applied_at_origin defaults to false"
    );
    assert!(decoded.instructions.is_empty(), "an empty list is valid");
}

#[test]
fn every_kind_rejects_unknown_fields() {
    for strict in [
        r#"{"kind":"refresh_all","ids":[1]}"#,
        r#"{"kind":"refresh_ids","ids":[1],"x":1}"#,
        r#"{"kind":"refresh_json","json":1,"x":1}"#,
        r#"{"kind":"refresh_payloads","payloads":[],"x":1}"#,
    ] {
        let body = body_with("2025-03-14T15:20:12Z", strict);
        assert!(
            matches!(decode(body.as_bytes()), Err(DecodeError::Invalid(_))),
            "{strict}"
        );
    }
}

#[test]
fn the_version_is_judged_before_the_fields() {
    let with_format = |format: &str, name: &str| {
        format!(
            r#"{{"format":{format},"batch_id":"{BATCH_ID}","origin":"web-1","published_at":"2025-03-14T15:20:12Z","refresher":{{"id":"{CONTENT_ID}","name":"{name}"}},"instructions":[]}}"#
        )
    };
    let cases = [
        (
            "2",
            "content.pages",
            DecodeError::UnsupportedVersion { found: 2 },
        ),
        (
            "4294967296",
            "content",
            DecodeError::UnsupportedVersion {
                found: 4_294_967_296,
            },
        ),
        ("-1", "content", DecodeError::MissingVersion),
        ("null", "content", DecodeError::MissingVersion),
    ];
    for (format, name, expected) in cases {
        assert_eq!(
            decode(with_format(format, name).as_bytes()),
            Err(expected),
            "format {format}"
        );
    }
    assert!(matches!(
        decode(with_format("1", "content.pages").as_bytes()),
        Err(DecodeError::BadName(_))
    ));
    // A syntax error is reported as such, whatever the version.
    let broken = with_format("2", "content").replace("\"origin\"", "origin");
    assert!(matches!(
        decode(broken.as_bytes()),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn nesting_is_limited_to_127_levels() {
    // The envelope, `instructions` and the instruction object are three
    // levels; `json` may nest 124 more.
    let nested = |depth: usize| {
        let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        body_with(
            "2025-03-14T15:20:12Z",
            &format!(r#"{{"kind":"refresh_json","json":{json}}}"#),
        )
    };
    assert!(decode(nested(124).as_bytes()).is_ok());
    assert!(matches!(
        decode(nested(125).as_bytes()),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn decode_on_subject_rejects_a_mismatched_subject() {
    let body = encode(&batch(vec![Instruction::RefreshIds(vec![1051])]));
    assert_eq!(
        decode_on_subject("invalog.media", &body),
        Err(DecodeError::SubjectMismatch {
            subject: "invalog.media".to_owned(),
            name: "content".to_owned(),
        })
    );
    assert!(matches!(
        decode_on_subject("invalog.Content", &body),
        Err(DecodeError::SubjectMismatch { .. })
    ));
    assert!(decode_on_subject("invalog.content", &body).is_ok());
    // Only the last token is compared, so a prefix may contain dots.
    assert!(decode_on_subject("acme.cache.content", &body).is_ok());
    // A body that does not decode reports why, whatever the subject.
    assert!(matches!(
        decode_on_subject("invalog.media", b"{"),
        Err(DecodeError::Json(_))
    ));
}

/// xorshift64: deterministic, dependency-free pseudo-random numbers.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Bytes and tokens that make random inputs look like JSON and like v1.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u",
    "\\ud800",
    "null",
    "true",
    "false",
    "0",
    "-0",
    "1",
    "1.0",
    "-1",
    "1e999",
    "9223372036854775808",
    "\"format\"",
    "\"kind\"",
    "\"refresh_all\"",
    "\"refresh_ids\"",
    "\"refresh_json\"",
    "\"ids\"",
    "\"json\"",
    "\"instructions\"",
    "\"refresher\"",
    "\"name\"",
    "\"published_at\"",
    "\"2025-03-14T15:20:12Z\"",
    "\"4709a46e-47da-42fb-898a-2d1fc2ba1bf5\"",
    " ",
    "\n",
    "é",
    "\u{feff}",
    "\u{0}",
];

fn mutate(rng: &mut XorShift, mut input: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if at < input.len() => input[at] ^= 1 << rng.below(8),
            1 if at < input.len() => input[at] = rng.byte(),
            2 => {
                let end = (at + rng.below(16)).min(input.len());
                input.drain(at..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            4 if at < input.len() => {
                let end = (at + rng.below(64)).min(input.len());
                let copy = input[at..end].to_vec();
                input.splice(at..at, copy);
            }
            _ => input.truncate(at),
        }
    }
    input
}

/// Decodes `input` in every way a node does; panics with the input if the
/// decoder panics, and checks that whatever decodes re-encodes to itself.
fn check_total(input: &[u8]) {
    let outcome = std::panic::catch_unwind(|| {
        let plain = decode(input);
        let on_subject = decode_on_subject("invalog.content", input);
        if let Err(error) = &plain {
            let _ = error.to_string();
        }
        (plain, on_subject)
    });
    let (plain, on_subject) = match outcome {
        Ok(results) => results,
        Err(_) => panic!(
            "decode panicked on {} bytes: {:?}",
            input.len(),
            String::from_utf8_lossy(&input[..input.len().min(2000)])
        ),
    };
    if let Ok(decoded) = plain {
        assert_eq!(
            decode(&encode(&decoded)).as_ref(),
            Ok(&decoded),
            "re-encoding {:?}",
            String::from_utf8_lossy(input)
        );
        if decoded.refresher.name.as_str() == "content" {
            assert_eq!(on_subject, Ok(decoded));
        }
    }
}

#[test]
fn decoding_is_total() {
    let seeds: Vec<Vec<u8>> = examples().into_iter().map(|(_, body)| body).collect();
    let mut inputs_checked = 0;
    let mut check = |input: &[u8]| {
        check_total(input);
        inputs_checked += 1;
    };

    // Deep nesting, alone and inside a valid envelope.
    for open in ["[", "{\"a\":", "{", "[{\"kind\":"] {
        check(open.repeat(10_000).as_bytes());
        check(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).as_bytes());
        check(
            body_with(
                "2025-03-14T15:20:12Z",
                &format!(r#"{{"kind":"refresh_json","json":{}"#, open.repeat(10_000)),
            )
            .as_bytes(),
        );
    }
    for odd in [
        &b""[..],
        b"\"",
        b"-",
        b"1e99999",
        b"{\"format\":1e99999}",
        b"{\"format\":18446744073709551616}",
        b"\xff\xfe{}",
        b"\xef\xbb\xbf{}",
    ] {
        check(odd);
    }
    check("9".repeat(100_000).as_bytes());

    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for round in 0..24_000 {
        let input = match round % 4 {
            0 => (0..rng.below(256)).map(|_| rng.byte()).collect(),
            1 => (0..rng.below(64))
                .flat_map(|_| TOKENS[rng.below(TOKENS.len())].bytes())
                .collect(),
            2 => {
                let example = seeds[rng.below(seeds.len())].clone();
                mutate(&mut rng, example)
            }
            _ => {
                let first = &seeds[rng.below(seeds.len())];
                let second = &seeds[rng.below(seeds.len())];
                let cut = rng.below(first.len());
                let from = rng.below(second.len());
                [&first[..cut], &second[from..]].concat()
            }
        };
        check(&input);
    }
    assert!(inputs_checked >= 20_000, "{inputs_checked} inputs");
}
