//! Provisioning and publishing against a real server: idempotent
//! provisioning, refused destructive changes, unknown refreshers, splitting,
//! pipelining, instance refreshers, KV checkpoints.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use invalog::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, KvStore};
use invalog::node::NewNodePolicy;
use invalog::refresher::InstanceRefresher;
use invalog::stream::{ProvisionError, Provisioned};
use invalog::{
    Instruction, LogSettings, NodeId, PublishErrorKind, RefreshResult, Refresher, Storage,
};

use crate::support::{Call, Fixture};

#[tokio::test]
async fn provisioning_is_idempotent_and_refuses_data_loss() {
    let f = Fixture::new().await;
    let again = invalog::provision(&f.js, &f.log).await.unwrap();
    assert!(matches!(again, Provisioned::Unchanged(_)));

    let longer = LogSettings {
        max_age: Some(Duration::from_secs(30 * 24 * 3600)),
        duplicate_window: Duration::from_secs(60),
        ..f.log.clone()
    };
    match invalog::provision(&f.js, &longer).await.unwrap() {
        Provisioned::Updated(info, changes) => {
            let fields: Vec<_> = changes.iter().map(|c| c.field).collect();
            assert_eq!(fields, vec!["max_age", "duplicate_window"]);
            assert_eq!(info.config.max_age, Duration::from_secs(30 * 24 * 3600));
        }
        other => panic!("expected an update, got {other:?}"),
    }

    let shorter = LogSettings {
        max_messages: Some(100),
        ..longer.clone()
    };
    let err = invalog::provision(&f.js, &shorter).await.unwrap_err();
    assert!(matches!(err, ProvisionError::WouldLoseData { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("max_messages: unlimited -> 100"), "{text}");
    assert!(text.contains("--allow-data-loss"), "{text}");
    invalog::provision_allowing_data_loss(&f.js, &shorter)
        .await
        .unwrap();

    let memory = LogSettings {
        storage: Storage::Memory,
        ..shorter
    };
    let err = invalog::provision(&f.js, &memory).await.unwrap_err();
    assert!(matches!(err, ProvisionError::Immutable { .. }), "{err}");
}

#[tokio::test]
async fn publishing_to_an_unknown_refresher_is_an_error() {
    let f = Fixture::new().await;
    let err = f
        .publisher()
        .refresh_ids("contnet", &[1])
        .await
        .unwrap_err();
    assert_eq!(err.kind, PublishErrorKind::UnknownRefresher);
    assert_eq!(
        err.to_string(),
        "unknown refresher `contnet`; did you mean `content`?"
    );
    let mut uow = f.publisher().unit_of_work();
    uow.add("content", vec![Instruction::RefreshAll]);
    uow.add("nope", vec![Instruction::RefreshAll]);
    let err = uow.commit().await.unwrap_err();
    assert_eq!(err.kind, PublishErrorKind::UnknownRefresher);
    assert_eq!(
        err.to_string(),
        "unknown refresher `nope`; known refreshers: content, media, other"
    );
    let mut stream = f.js.get_stream(&f.log.stream).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        0,
        "nothing published"
    );
}

#[tokio::test]
async fn a_unit_of_work_deduplicates_splits_and_pipelines() {
    let f = Fixture::new().await;
    let p = f.publisher();
    let mut uow = p.unit_of_work();
    uow.add(
        "content",
        vec![Instruction::RefreshIds((0..2500).collect())],
    );
    uow.add(
        "media",
        vec![Instruction::RefreshKeys(vec!["a".into(), "b".into()])],
    );
    uow.add("content", vec![Instruction::RefreshIds((0..100).collect())]);
    let receipt = uow.commit().await.unwrap();
    let sequences: Vec<u64> = receipt.messages.iter().map(|m| m.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4]);
    assert_eq!(receipt.sequence(), Some(4));
    let entries = invalog::history::read_range(&f.js, &f.log, 1, None, 10)
        .await
        .unwrap();
    let units: Vec<usize> = entries
        .iter()
        .map(|e| e.batch.as_ref().unwrap().units())
        .collect();
    assert_eq!(
        units,
        vec![1000, 1000, 500, 2],
        "2600 ids de-duplicated to 2500, split by 1000"
    );

    let empty = p.refresh_ids("content", &[]).await.unwrap();
    assert_eq!(empty.sequence(), None, "an empty id list is a no-op");
}

#[tokio::test]
async fn an_instruction_over_the_message_limit_is_refused_and_batches_shrink_to_fit() {
    let f = Fixture::with_log(LogSettings {
        max_message_size: 4096,
        ..LogSettings::default()
    })
    .await;
    let p = f.publisher();
    let big = "x".repeat(5000);
    let err = p.refresh_keys("content", &[&big]).await.unwrap_err();
    assert_eq!(err.kind, PublishErrorKind::TooLarge);
    assert!(err.to_string().contains("max_message_size"), "{err}");
    let keys: Vec<String> = (0..200)
        .map(|i| format!("key-{i:04}-{}", "y".repeat(40)))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let receipt = p.refresh_keys("content", &keys).await.unwrap();
    assert!(receipt.messages.len() > 2, "split to fit 4 KiB");
}

#[derive(Default)]
struct Local {
    applied: Mutex<Vec<String>>,
}

#[async_trait]
impl Refresher for Local {
    async fn refresh_all(&self) -> RefreshResult {
        Ok(())
    }
}

#[async_trait]
impl InstanceRefresher for Local {
    type Instance = (i64, &'static str);
    fn id_of(&self, instance: &Self::Instance) -> i64 {
        instance.0
    }
    async fn refresh_instances(&self, instances: &[Self::Instance]) -> RefreshResult {
        self.applied
            .lock()
            .unwrap()
            .extend(instances.iter().map(|i| i.1.to_owned()));
        Ok(())
    }
    async fn remove_instances(&self, _instances: &[Self::Instance]) -> RefreshResult {
        Ok(())
    }
}

#[tokio::test]
async fn instance_refreshes_apply_locally_and_travel_as_ids() {
    let f = Fixture::new().await;
    let origin = f.node("test-publisher", NewNodePolicy::ReplayAll).await;
    let other = f.node("other", NewNodePolicy::ReplayAll).await;
    let local = Local::default();
    let receipt = f
        .publisher()
        .refresh_instances("content", &local, &[(5, "five"), (6, "six")])
        .await
        .unwrap();
    let seq = receipt.sequence().unwrap();
    assert_eq!(*local.applied.lock().unwrap(), vec!["five", "six"]);
    other.wait_applied(seq).await;
    origin.wait_applied(seq).await;
    assert_eq!(other.content.calls(), vec![Call::Ids(vec![5, 6])]);
    assert!(
        origin.content.calls().is_empty(),
        "the origin applied it already"
    );
    assert_eq!(origin.node.stats().own_messages_skipped, 1);
}

#[tokio::test]
async fn kv_checkpoints_round_trip_and_catch_a_shared_node_id() {
    let f = Fixture::new().await;
    let node = NodeId::new("web-1").unwrap();
    let first = KvStore::open(&f.js, "invalog_nodes", 1, node.clone())
        .await
        .unwrap();
    assert_eq!(first.load().await.unwrap(), None);
    let checkpoint = Checkpoint {
        stream: "INVALOG".into(),
        stream_created: std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        sequence: 12,
    };
    first.save(&checkpoint).await.unwrap();
    let second = KvStore::open(&f.js, "invalog_nodes", 1, node)
        .await
        .unwrap();
    assert_eq!(second.load().await.unwrap(), Some(checkpoint.clone()));
    second
        .save(&Checkpoint {
            sequence: 13,
            ..checkpoint.clone()
        })
        .await
        .unwrap();
    let err = first
        .save(&Checkpoint {
            sequence: 14,
            ..checkpoint
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CheckpointError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("configured on two nodes"), "{err}");
}

/// invalog's publisher sends only `Nats-Msg-Id`; messages from other
/// publishers that also carry the optional `Invalog-Format` header (any
/// value: readers ignore it) are applied the same.
#[tokio::test]
async fn the_optional_format_header_is_ignored_by_readers() {
    let f = Fixture::new().await;
    let node = f.node("reader", NewNodePolicy::ReplayAll).await;
    let sent = f.publisher().refresh_ids("content", &[1]).await.unwrap();
    let stored =
        f.js.get_stream(&f.log.stream)
            .await
            .unwrap()
            .get_raw_message(sent.sequence().unwrap())
            .await
            .unwrap();
    let headers = stored.headers;
    assert!(
        headers.get(invalog::wire::HEADER_MSG_ID).is_some(),
        "the batch id header is sent"
    );
    assert!(
        headers.get(invalog::wire::HEADER_FORMAT).is_none(),
        "the optional format header is not"
    );

    let body = format!(
        r#"{{"format":1,"batch_id":"{}","origin":"other","published_at":"2025-03-14T09:27:05Z","refresher":{{"id":"{}","name":"content"}},"instructions":[{{"kind":"refresh_ids","ids":[2]}}]}}"#,
        uuid::Uuid::now_v7(),
        crate::support::defs()[0].id
    );
    let mut with_header = async_nats::HeaderMap::new();
    with_header.insert(invalog::wire::HEADER_FORMAT, "7");
    let ack =
        f.js.publish_with_headers("invalog.content", with_header, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    node.wait_applied(ack.sequence).await;
    assert_eq!(
        node.content.calls(),
        vec![Call::Ids(vec![1]), Call::Ids(vec![2])]
    );
    assert_eq!(node.node.stats().decode_errors, 0);
}

/// `publish_many` sends each message as soon as it is built when nothing can
/// be refused (ids, short keys): the stream holds exactly the planned
/// messages, in the order given, a group over the size limit shrunk to fit.
/// When one group could be over the limit, every message is encoded before
/// the first is sent: the refused call publishes nothing.
#[tokio::test]
async fn publish_many_streams_in_order_and_a_refused_call_publishes_nothing() {
    let f = Fixture::with_log(LogSettings {
        max_message_size: 4096,
        ..LogSettings::default()
    })
    .await;
    let p = f.publisher();
    let keys: Vec<String> = (0..200)
        .map(|i| format!("key-{i:04}-{}", "y".repeat(40)))
        .collect();
    let mut groups: Vec<(&str, Vec<Instruction>)> = (0..300)
        .map(|i| {
            let name = if i % 3 == 0 { "media" } else { "content" };
            // One id per instruction, a duplicate in each group.
            let ids = [i, i + 1, i];
            (
                name,
                ids.map(|id| Instruction::RefreshIds(vec![id])).to_vec(),
            )
        })
        .collect();
    groups.insert(150, ("content", vec![Instruction::RemoveKeys(keys)]));
    let receipt = p
        .publish_many(groups, &invalog::Provenance::default())
        .await
        .unwrap();
    let sequences: Vec<u64> = receipt.messages.iter().map(|m| m.sequence).collect();
    let count = sequences.len() as u64;
    assert!(count > 302, "the 200 keys split to fit 4 KiB: {count}");
    assert_eq!(sequences, (1..=count).collect::<Vec<_>>());
    let entries = invalog::history::read_range(&f.js, &f.log, 1, None, count as usize + 1)
        .await
        .unwrap();
    assert_eq!(entries.len() as u64, count);
    let stored: Vec<_> = entries.iter().map(|e| e.batch.as_ref().unwrap()).collect();
    assert_eq!(
        stored[0].instructions,
        vec![Instruction::RefreshIds(vec![1, 0])],
        "de-duplicated, last occurrence kept, merged into one list"
    );
    assert_eq!(stored[0].refresher.name.as_str(), "media");
    assert_eq!(stored[1].refresher.name.as_str(), "content");
    let last = stored.last().unwrap();
    assert_eq!(
        last.instructions,
        vec![Instruction::RefreshIds(vec![300, 299])]
    );
    let key_units: usize = stored[150..stored.len() - 150]
        .iter()
        .map(|b| {
            assert!(matches!(b.instructions[..], [Instruction::RemoveKeys(_)]));
            b.units()
        })
        .sum();
    assert_eq!(
        key_units, 200,
        "every key, in messages between groups 150 and 151"
    );
    for (message, batch) in receipt.messages.iter().zip(&stored) {
        assert_eq!(message.batch_id, batch.id);
    }

    let big = "x".repeat(5000);
    let refused = p
        .publish_many(
            vec![
                ("content", vec![Instruction::RefreshIds(vec![1])]),
                ("media", vec![Instruction::RefreshIds(vec![2])]),
                ("content", vec![Instruction::RefreshKeys(vec![big])]),
            ],
            &invalog::Provenance::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.kind, PublishErrorKind::TooLarge);
    assert!(refused.published.is_empty());
    let mut stream = f.js.get_stream(&f.log.stream).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.last_sequence,
        count,
        "nothing of the refused call was published"
    );
}
