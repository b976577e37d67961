//! The multi-batch applier body (`"format": 2`, documented in
//! `docs/appliers.md`): several consecutive batches of one refresher, in log
//! order, in one request. Each element of `batches` is exactly the
//! single-batch body (`"format": 1`, `super::body`), so a receiver
//! handles a group by handling each element in turn. Only sent by an
//! applier that opted in (`max_batches_per_request` above 1), and only while
//! the node catches up; a single batch is always sent as the format-1 body.

use serde::Serialize;
use uuid::Uuid;

use super::body::{batch_body, Body};
use invalog::refresher::BatchContext;

/// Version of the multi-batch body (its `format` field).
pub const APPLIER_GROUP_FORMAT_VERSION: u32 = 2;

#[derive(Serialize)]
struct GroupBody<'a> {
    format: u32,
    trigger: &'static str,
    refresher: GroupRefresher<'a>,
    first_sequence: u64,
    last_sequence: u64,
    batches: Vec<Body<'a>>,
}

#[derive(Serialize)]
struct GroupRefresher<'a> {
    id: Uuid,
    name: &'a str,
}

/// The body for consecutive batches of one refresher, in the order given
/// (log order). `group` must not be empty.
pub fn encode_applier_group_body(group: &[BatchContext<'_>]) -> Vec<u8> {
    let (first, last) = match group {
        [first, .., last] => (first, last),
        [only] => (only, only),
        [] => panic!("an applier group is never empty"),
    };
    let refresher = &first.batch.refresher;
    let body = GroupBody {
        format: APPLIER_GROUP_FORMAT_VERSION,
        trigger: super::body::ApplierTrigger::Batches.as_str(),
        refresher: GroupRefresher {
            id: refresher.id,
            name: refresher.name.as_str(),
        },
        first_sequence: first.sequence,
        last_sequence: last.sequence,
        batches: group.iter().map(|c| batch_body(*c)).collect(),
    };
    serde_json::to_vec(&body).expect("an applier body always serializes")
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use invalog::model::{Batch, Instruction, Provenance, RefresherDef};

    fn batch(id: u128, ids: Vec<i64>) -> Batch {
        Batch {
            id: Uuid::from_u128(id),
            origin: "web-1".into(),
            published_at: SystemTime::UNIX_EPOCH,
            refresher: RefresherDef::new(Uuid::from_u128(7), "content").unwrap(),
            provenance: Provenance::default(),
            applied_at_origin: false,
            instructions: vec![Instruction::RefreshIds(ids)],
        }
    }

    #[test]
    fn a_group_body_holds_single_bodies_in_the_order_given() {
        let (a, b) = (batch(1, vec![1]), batch(2, vec![2, 3]));
        let group = [
            BatchContext {
                sequence: 41,
                batch: &a,
            },
            BatchContext {
                sequence: 42,
                batch: &b,
            },
        ];
        let body: serde_json::Value =
            serde_json::from_slice(&encode_applier_group_body(&group)).unwrap();
        assert_eq!(body["format"], 2);
        assert_eq!(body["trigger"], "batches");
        assert_eq!(body["refresher"]["name"], "content");
        assert_eq!(
            (
                body["first_sequence"].clone(),
                body["last_sequence"].clone()
            ),
            (41.into(), 42.into())
        );
        let single: serde_json::Value =
            serde_json::from_slice(&super::super::body::encode_applier_body(group[1])).unwrap();
        assert_eq!(body["batches"][1], single);
        assert_eq!(body["batches"][0]["sequence"], 41);
        assert_eq!(body["batches"].as_array().unwrap().len(), 2);
    }
}
