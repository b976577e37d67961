//! Publish → apply on real nodes: every instruction kind, stream order,
//! restart and late join, read-your-writes.

use std::time::Duration;

use futures::future::join_all;
use invalog::history;
use invalog::node::NewNodePolicy;
use serde_json::json;
use uuid::Uuid;

use crate::support::{eventually, within, Call, Fixture};

#[tokio::test]
async fn every_instruction_kind_is_applied_on_two_nodes() {
    let f = Fixture::new().await;
    let a = f.node("a", NewNodePolicy::ReplayAll).await;
    let b = f.node("b", NewNodePolicy::ReplayAll).await;
    a.ready().await;
    b.ready().await;
    let p = f.publisher();
    let u = Uuid::from_u128(0xabc);
    p.refresh_all("content").await.unwrap();
    p.refresh_ids("content", &[1, -2]).await.unwrap();
    p.refresh_uuids("content", &[u]).await.unwrap();
    p.refresh_keys("content", &["home", "about"]).await.unwrap();
    p.remove_ids("content", &[3]).await.unwrap();
    p.remove_uuids("content", &[u]).await.unwrap();
    p.remove_keys("content", &["gone"]).await.unwrap();
    p.refresh_json("content", json!({"type": "menu", "ids": [4]}))
        .await
        .unwrap();
    let last = p
        .refresh_payloads("media", &[json!({"id": 9, "path": "/a.png"})])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    assert_eq!(last, 9);
    let expected = vec![
        Call::All,
        Call::Ids(vec![1, -2]),
        Call::Uuids(vec![u]),
        Call::Keys(vec!["home".into(), "about".into()]),
        Call::RemoveIds(vec![3]),
        Call::RemoveUuids(vec![u]),
        Call::RemoveKeys(vec!["gone".into()]),
        Call::Json(json!({"type": "menu", "ids": [4]})),
    ];
    for node in [&a, &b] {
        node.wait_applied(last).await;
        assert_eq!(node.content.calls(), expected);
        assert_eq!(
            node.media.calls(),
            vec![Call::Payloads(vec![json!({"id": 9, "path": "/a.png"})])]
        );
        let stats = node.node.stats();
        assert_eq!(stats.applied_messages, 9);
        assert_eq!(stats.decode_errors, 0);
    }
}

#[tokio::test]
async fn nodes_apply_in_stream_order() {
    let f = Fixture::new().await;
    let a = f.node("a", NewNodePolicy::ReplayAll).await;
    a.ready().await;
    let p = f.publisher();
    let receipts = join_all((0..200).map(|i| {
        let p = p.clone();
        async move { p.refresh_ids("content", &[i]).await.unwrap() }
    }))
    .await;
    let last = receipts.iter().filter_map(|r| r.sequence()).max().unwrap();
    a.wait_applied(last).await;
    let stream_order: Vec<Call> = history::read_range(&f.js, &f.log, 1, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| match &e.batch.unwrap().instructions[0] {
            invalog::Instruction::RefreshIds(ids) => Call::Ids(ids.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(stream_order.len(), 200);
    assert_eq!(a.content.calls(), stream_order);
}

#[tokio::test]
async fn a_node_stopped_mid_stream_resumes_from_its_stored_sequence() {
    let f = Fixture::new().await;
    let first = f.node("a", NewNodePolicy::ReplayAll).await;
    first.ready().await;
    let p = f.publisher();
    let publishing = tokio::spawn({
        let p = p.clone();
        async move {
            for i in 1..=300 {
                p.refresh_ids("content", &[i]).await.unwrap();
            }
        }
    });
    eventually(Duration::from_secs(10), "first run applies 50", || {
        first.node.applied() >= 50
    })
    .await;
    let first_calls = first.content.clone();
    first.node.shutdown().await.unwrap();
    within(Duration::from_secs(30), publishing).await.unwrap();

    let second = f.node("a", NewNodePolicy::ReplayAll).await;
    second.ready().await;
    second.wait_applied(300).await;
    let mut all = first_calls.calls();
    let resumed_at = all.len();
    all.extend(second.content.calls());
    let expected: Vec<Call> = (1..=300).map(|i| Call::Ids(vec![i])).collect();
    assert_eq!(
        all, expected,
        "a clean stop neither loses nor repeats (stopped after {resumed_at})"
    );
}

#[tokio::test]
async fn a_late_node_is_not_ready_until_caught_up() {
    let f = Fixture::new().await;
    let p = f.publisher();
    let mut uow = p.unit_of_work();
    for i in 0..3000 {
        uow.add("content", vec![invalog::Instruction::RefreshIds(vec![i])]);
    }
    let last = uow.commit().await.unwrap().sequence().unwrap();
    assert_eq!(last, 3, "3000 units split into messages of 1000");
    for i in 0..300 {
        p.refresh_keys("media", &[&format!("k{i}")]).await.unwrap();
    }
    let late = f.node("late", NewNodePolicy::ReplayAll).await;
    let mut states = late.node.watch_position();
    let seen_at_ready = tokio::spawn({
        let media = late.media.clone();
        async move {
            states.wait_for(|p| p.state.is_ready()).await.unwrap();
            media.calls().len()
        }
    });
    assert!(!late.node.is_ready(), "not ready before replaying");
    let applied_when_ready = within(Duration::from_secs(10), seen_at_ready)
        .await
        .unwrap();
    assert_eq!(
        applied_when_ready, 300,
        "ready only after every message up to the start's last"
    );
    assert!(late.node.applied() >= 303);
    assert_eq!(late.content.calls().len(), 3);
}

#[tokio::test]
async fn read_your_writes_waits_for_the_published_sequence() {
    let f = Fixture::new().await;
    let a = f.node("a", NewNodePolicy::Tail).await;
    a.ready().await;
    let token = f
        .publisher()
        .refresh_ids("content", &[42])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    within(Duration::from_secs(5), a.node.wait_applied(token))
        .await
        .unwrap();
    assert_eq!(a.content.calls(), vec![Call::Ids(vec![42])]);
}

#[tokio::test]
async fn new_node_policies_choose_replay_cold_boot_or_tail() {
    let f = Fixture::new().await;
    let p = f.publisher();
    for i in 0..5 {
        p.refresh_ids("content", &[i]).await.unwrap();
    }
    let replay = f.node("replay", NewNodePolicy::ReplayAll).await;
    let cold = f.node("cold", NewNodePolicy::ColdBoot).await;
    let tail = f.node("tail", NewNodePolicy::Tail).await;
    for n in [&replay, &cold, &tail] {
        n.ready().await;
    }
    assert_eq!(replay.content.calls().len(), 5);
    assert_eq!(cold.content.calls(), vec![Call::All]);
    assert_eq!(cold.media.calls(), vec![Call::All]);
    assert!(tail.content.calls().is_empty());
    let next = p
        .refresh_ids("content", &[99])
        .await
        .unwrap()
        .sequence()
        .unwrap();
    for n in [&replay, &cold, &tail] {
        n.wait_applied(next).await;
        assert_eq!(n.content.calls().last(), Some(&Call::Ids(vec![99])));
    }
}
