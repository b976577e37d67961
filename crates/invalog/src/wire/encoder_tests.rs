//! The hand-written encoder against serde: byte-for-byte the same body for
//! generated batches (every instruction kind, strings that need escaping,
//! extreme ids and times), decodable back to the same batch, and appending
//! to a buffer that already holds other messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

use super::{encode_into, BatchParts};
use crate::model::{Batch, Instruction, Provenance, RefresherDef};
use crate::wire::v1::encode_with_serde;

/// Text with what JSON escapes (quotes, backslashes, control characters),
/// non-ASCII and plain letters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{0,12}",
        "[\"\\\\/\u{0}-\u{1f}\u{7f}a é😀\u{2028}]{0,8}",
        any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        text().prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn instruction() -> impl Strategy<Value = Instruction> {
    let ids = || prop::collection::vec(any::<i64>(), 0..5);
    let uuids = || prop::collection::vec(any::<u128>().prop_map(Uuid::from_u128), 0..3);
    let keys = || prop::collection::vec(text(), 0..3);
    prop_oneof![
        Just(Instruction::RefreshAll),
        ids().prop_map(Instruction::RefreshIds),
        ids().prop_map(Instruction::RemoveIds),
        uuids().prop_map(Instruction::RefreshUuids),
        uuids().prop_map(Instruction::RemoveUuids),
        keys().prop_map(Instruction::RefreshKeys),
        keys().prop_map(Instruction::RemoveKeys),
        value().prop_map(Instruction::RefreshJson),
        prop::collection::vec(value(), 0..3).prop_map(Instruction::RefreshPayloads),
    ]
}

/// Times from before the epoch to past year 9999 (clamped when encoded).
fn time() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        (0..4_102_444_800u64, 0..1_000_000_000u32)
            .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n)),
        (0..100_000_000_000u64, 0..1_000_000_000u32)
            .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n)),
        (1..70_000_000_000u64).prop_map(|s| UNIX_EPOCH - Duration::from_secs(s)),
        Just(UNIX_EPOCH),
    ]
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        any::<u128>(),
        text(),
        time(),
        (any::<u128>(), "[A-Za-z0-9_-]{1,64}"),
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(text()),
        ),
        any::<bool>(),
        prop::collection::vec(instruction(), 0..5),
    )
        .prop_map(
            |(
                id,
                origin,
                published_at,
                (refresher, name),
                (actor, reason, trace_id),
                applied,
                instructions,
            )| Batch {
                id: Uuid::from_u128(id),
                origin,
                published_at,
                refresher: RefresherDef::new(Uuid::from_u128(refresher), &name)
                    .expect("a valid name"),
                provenance: Provenance {
                    actor,
                    reason,
                    trace_id,
                },
                applied_at_origin: applied,
                instructions,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Same bytes as serde_json writing the owned envelope, and they decode
    /// to the batch (its time clamped to what RFC 3339 expresses).
    #[test]
    fn writes_what_serde_writes(batch in batch()) {
        let mut out = BytesMut::new();
        encode_into(BatchParts::of(&batch), &mut out);
        let expected = encode_with_serde(&batch);
        prop_assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
        prop_assert_eq!(&out[..], &expected[..]);
        let decoded = crate::wire::decode(&out).expect("decodes");
        prop_assert_eq!(decoded.id, batch.id);
        prop_assert_eq!(&decoded.instructions, &batch.instructions);
        prop_assert_eq!(&decoded.provenance, &batch.provenance);
        prop_assert_eq!(&decoded.origin, &batch.origin);
    }

    /// Encoding after other messages in the same buffer appends exactly
    /// the body, whatever was there.
    #[test]
    fn appends_after_what_the_buffer_holds(first in batch(), second in batch()) {
        let mut out = BytesMut::new();
        encode_into(BatchParts::of(&first), &mut out);
        let one = out.split().freeze();
        encode_into(BatchParts::of(&second), &mut out);
        prop_assert_eq!(&one[..], &encode_with_serde(&first)[..]);
        prop_assert_eq!(&out[..], &encode_with_serde(&second)[..]);
    }
}

#[test]
fn integer_edges_are_written_like_serde() {
    for id in [
        0,
        1,
        -1,
        9,
        10,
        -10,
        99,
        100,
        i64::MIN,
        i64::MAX,
        i64::MIN + 1,
    ] {
        let mut out = BytesMut::new();
        super::put_i64(&mut out, id);
        assert_eq!(&out[..], serde_json::to_string(&id).unwrap().as_bytes());
    }
}
