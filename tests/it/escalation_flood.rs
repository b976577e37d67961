//! A flood of undecodable messages for a hosted refresher costs one
//! refresh-all, not one per message: a refresh-all covers every message of
//! its refresher stored before it began. Coalesced escalations are counted,
//! and a message of the refresher applied in between ends the cover.

use std::time::Duration;

use invalog::node::NewNodePolicy;

use crate::support::{eventually, Call, Fixture};

async fn undecodable(f: &Fixture, subject: &str) -> u64 {
    let ack = f.js.publish(subject.to_owned(), "{not json".into());
    ack.await.unwrap().await.unwrap().sequence
}

#[tokio::test]
async fn two_hundred_undecodable_messages_cost_a_handful_of_refresh_alls() {
    let f = Fixture::new().await;
    for _ in 0..200 {
        undecodable(&f, "invalog.content").await;
    }
    let valid = f.publisher().refresh_ids("content", &[7]).await.unwrap();
    let valid = valid.sequence().unwrap();
    assert_eq!(valid, 201);

    let a = f.node("web-1", NewNodePolicy::ReplayAll).await;
    a.ready().await;
    a.wait_applied(valid).await;
    let calls = a.content.calls();
    let refresh_alls = calls.iter().filter(|c| **c == Call::All).count();
    assert!(
        (1..=3).contains(&refresh_alls),
        "{refresh_alls} refresh-alls"
    );
    assert_eq!(calls.last(), Some(&Call::Ids(vec![7])), "order kept");
    let stats = a.node.stats();
    assert_eq!(stats.decode_errors, 200);
    assert_eq!(stats.escalations as usize, refresh_alls);
    assert_eq!(stats.escalations + stats.escalations_coalesced, 200);
    assert_eq!(stats.applied_messages, 201, "none skipped silently");
}

#[tokio::test]
async fn a_message_applied_between_two_escalations_ends_the_cover() {
    let f = Fixture::new().await;
    let p = f.publisher();
    undecodable(&f, "invalog.content").await;
    p.refresh_ids("content", &[1]).await.unwrap();
    undecodable(&f, "invalog.media").await;
    undecodable(&f, "invalog.content").await;
    undecodable(&f, "invalog.media").await;
    let last = p.refresh_ids("content", &[2]).await.unwrap();

    let a = f.node("web-1", NewNodePolicy::ReplayAll).await;
    a.wait_applied(last.sequence().unwrap()).await;
    // content: applying id 1 after the first refresh-all may have undone
    // part of it, so the second undecodable message refreshes again.
    assert_eq!(
        a.content.calls(),
        vec![Call::All, Call::Ids(vec![1]), Call::All, Call::Ids(vec![2])]
    );
    // media: nothing of it applied in between; one refresh-all covers both.
    assert_eq!(a.media.calls(), vec![Call::All]);
    let stats = a.node.stats();
    assert_eq!((stats.escalations, stats.escalations_coalesced), (3, 1));
}

#[tokio::test]
async fn a_cover_does_not_outlive_its_stream() {
    let f = Fixture::new().await;
    let a = f.node("web-1", NewNodePolicy::ReplayAll).await;
    a.ready().await;
    for _ in 0..5 {
        undecodable(&f, "invalog.content").await;
    }
    eventually(Duration::from_secs(10), "the flood is handled", || {
        let s = a.node.stats();
        s.escalations + s.escalations_coalesced == 5
    })
    .await;
    let before = a.node.stats().escalations;

    // The stream is recreated: sequences restart, and an undecodable
    // message at sequence 2 of the new stream is not covered by the old
    // refresh-all that covered sequences 1..5 of the old one.
    f.recreate_stream().await;
    eventually(Duration::from_secs(10), "the node cold boots", || {
        // Applied 0: the cold boot followed the new, empty stream.
        a.node.stats().cold_boots == 1 && a.node.is_ready() && a.node.applied() == 0
    })
    .await;
    let sequence = undecodable(&f, "invalog.content").await;
    assert_eq!(sequence, 1, "new stream");
    eventually(
        Duration::from_secs(10),
        "the new message is escalated",
        || a.node.stats().escalations == before + 1,
    )
    .await;
}
