//! The propagation probe. `invalog probe` publishes *canary* batches to the
//! reserved refresher [`PROBE_REFRESHER`]; every running [`crate::Node`]
//! answers each canary it applies — in stream order, like any message — with
//! a core NATS reply naming the node and the sequence, so the probe can time
//! publish → applied on every node, from one clock.
//!
//! A canary is a `refresh_json` instruction whose JSON is
//! `{"probe": "<run id>", "canary": <n>, "reply": "<subject>"}`; the reply is
//! encoded by [`crate::wire::encode_probe_reply`].

use uuid::Uuid;

use crate::model::{RefresherDef, RefresherName};

/// Name of the reserved probe refresher (subject `<prefix>._probe`).
pub const PROBE_REFRESHER: &str = "_probe";

/// Fixed id of the reserved probe refresher.
pub const PROBE_REFRESHER_ID: Uuid = Uuid::from_u128(0x1a7a_10c0_0000_4000_8000_0000_0000_b0b0);

/// The reserved probe refresher's definition.
pub fn probe_refresher() -> RefresherDef {
    RefresherDef {
        id: PROBE_REFRESHER_ID,
        name: RefresherName::new(PROBE_REFRESHER).expect("a valid name"),
    }
}
