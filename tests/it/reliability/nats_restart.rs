//! NATS restarts while publishers publish and nodes consume: publishers
//! retry with the same `Nats-Msg-Id` (nothing stored twice), nodes resume
//! (nothing lost).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use invalog::node::NewNodePolicy;
use invalog::{Publisher, PublisherSettings};

use crate::support::{defs, eventually, within, Call, Fixture, TestNode};

use super::{check_in_order_nothing_lost, slow, time_until};

/// (id, sequence, acknowledged as a duplicate)
type Acks = Arc<Mutex<Vec<(i64, u64, bool)>>>;

/// A publisher that rides out a restart: short acknowledgement timeout,
/// many attempts (always with the same batch id). The acknowledgement wait
/// is the JetStream context's timeout (see
/// `publisher_ack_timeout_bounds_the_wait_for_an_acknowledgement`), so the
/// context gets the short timeout too.
fn patient_publisher(f: &Fixture) -> Publisher {
    let mut settings = PublisherSettings::new("restart-test");
    settings.ack_timeout = Duration::from_millis(500);
    settings.attempts = 120;
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(f.js.client());
    Publisher::new(js, f.log.clone(), settings, defs())
}

/// Ids a node's `content` recorder applied, in order, as stream sequences.
fn applied_sequences(node: &TestNode, seq_of: &HashMap<i64, u64>) -> Vec<u64> {
    node.content
        .calls()
        .into_iter()
        .flat_map(|call| match call {
            Call::Ids(ids) => ids,
            other => panic!("unexpected call {other:?}"),
        })
        .map(|id| seq_of[&id])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarts_lose_nothing_and_store_nothing_twice() {
    let per_publisher: i64 = if slow() { 10_000 } else { 1_500 };
    let publishers = 2;
    let total = per_publisher as usize * publishers;
    let mut f = Fixture::new().await;
    let live = f.node("live", NewNodePolicy::ReplayAll).await;
    live.ready().await;

    let acks: Acks = Arc::default();
    // Publish calls that failed: not acknowledged, perhaps stored. Calling
    // again would publish a new batch id, so the test does not.
    let failures: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..publishers as i64 {
        let (publisher, acks, failures) = (patient_publisher(&f), acks.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per_publisher {
                let id = p * 1_000_000 + i;
                match publisher.refresh_ids("content", &[id]).await {
                    Ok(receipt) => {
                        let message = &receipt.messages[0];
                        acks.lock()
                            .unwrap()
                            .push((id, message.sequence, message.duplicate));
                    }
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push((id, format!("{:?}: {e}", e.kind))),
                }
            }
        }));
    }
    let acked = || acks.lock().unwrap().len() + failures.lock().unwrap().len();

    // Enough new acknowledgements that every publisher completed a publish
    // it started after `at`.
    let resumed = |at: usize| {
        let acks = acks.clone();
        move || acks.lock().unwrap().len() >= at + 2 * publishers
    };
    let acked_only = || acks.lock().unwrap().len();

    // 1. kill -9 while publishing and consuming.
    eventually(Duration::from_secs(60), "a third published", || {
        acked() >= total / 3
    })
    .await;
    let killed_at = acked_only();
    let down = Instant::now();
    f.server.kill().unwrap();
    f.server.restart().await.unwrap();
    let back = down.elapsed();
    time_until(
        Duration::from_secs(30),
        "publishing resumes",
        resumed(killed_at),
    )
    .await;
    eprintln!(
        "nats restart: kill -9 at {killed_at} acks; server accepting again {back:?} after the kill, \
         every publisher acknowledged again {:?} after the kill",
        down.elapsed()
    );

    // 2. The server freezes for 1.5 s (three acknowledgement timeouts):
    // publishes in flight time out and are sent again with the same batch
    // id; after the thaw the server stores the first copy and answers the
    // second as a duplicate.
    let frozen_at = acked_only();
    f.server.freeze().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // the fault's duration
    f.server.thaw().unwrap();
    time_until(
        Duration::from_secs(30),
        "publishing resumes after the thaw",
        resumed(frozen_at),
    )
    .await;

    // 3. Graceful stop and start while publishing and consuming.
    eventually(Duration::from_secs(60), "two thirds published", || {
        acked() >= 2 * total / 3
    })
    .await;
    let stopped_at = acked_only();
    let down = Instant::now();
    f.server.stop().await.unwrap();
    f.server.restart().await.unwrap();
    time_until(
        Duration::from_secs(30),
        "publishing resumes after a stop",
        resumed(stopped_at),
    )
    .await;
    eprintln!("nats restart: graceful restart: every publisher acknowledged again {:?} after the stop began", down.elapsed());

    for task in tasks {
        within(Duration::from_secs(120), task).await.unwrap();
    }
    let acks = acks.lock().unwrap().clone();
    let failures = failures.lock().unwrap().clone();
    assert_eq!(acks.len() + failures.len(), total);
    let seq_of: HashMap<i64, u64> = acks.iter().map(|(id, seq, _)| (*id, *seq)).collect();
    let duplicates_acked = acks.iter().filter(|(_, _, dup)| *dup).count();
    assert!(
        duplicates_acked > 0,
        "the freeze made some publishes be sent twice"
    );

    // Stored once: a fresh node replaying the stream sees every
    // acknowledged id exactly once, at its acknowledged sequence, and
    // nothing else but ids whose publish call failed.
    let mut stream = f.js.get_stream(&f.log.stream).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let highest = state.last_sequence;
    let check = f.node("check", NewNodePolicy::ReplayAll).await;
    check.wait_applied(highest).await;
    let replayed: Vec<i64> = check
        .content
        .calls()
        .into_iter()
        .flat_map(|call| match call {
            Call::Ids(ids) => ids,
            other => panic!("unexpected call {other:?}"),
        })
        .collect();
    assert_eq!(replayed.len() as u64, state.messages);
    let stream_seq: HashMap<i64, u64> = replayed
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i as u64 + 1))
        .collect();
    assert_eq!(
        stream_seq.len(),
        replayed.len(),
        "an instruction stored twice"
    );
    for (id, seq) in &seq_of {
        assert_eq!(
            stream_seq.get(id),
            Some(seq),
            "id {id} acknowledged at {seq}"
        );
    }
    let failed: std::collections::HashSet<i64> = failures.iter().map(|f| f.0).collect();
    for id in &replayed {
        assert!(
            seq_of.contains_key(id) || failed.contains(id),
            "{id} stored but never published"
        );
    }
    let failed_but_stored = replayed.len() - seq_of.len();
    let distinct: Vec<u64> = stream_seq.values().copied().collect();

    // 4. kill -9 while a late node catches up the whole log.
    let late = f.node("late", NewNodePolicy::ReplayAll).await;
    eventually(
        Duration::from_secs(30),
        "the late node started applying",
        || late.node.applied() > 0,
    )
    .await;
    let at_kill = late.node.applied();
    f.server.kill().unwrap();
    f.server.restart().await.unwrap();
    eprintln!(
        "nats restart: late node had applied {at_kill} of {highest} when the server was killed"
    );

    live.wait_applied(highest).await;
    within(Duration::from_secs(60), late.node.wait_applied(highest))
        .await
        .unwrap();
    let live_again = check_in_order_nothing_lost(
        &applied_sequences(&live, &stream_seq),
        distinct.iter().copied(),
    );
    let late_again = check_in_order_nothing_lost(
        &applied_sequences(&late, &stream_seq),
        distinct.iter().copied(),
    );
    eprintln!(
        "nats restart: {total} publishes, {duplicates_acked} acknowledged as duplicates of a retried send, \
         0 stored twice; {} publish calls failed (not acknowledged; {failed_but_stored} of them stored nevertheless), \
         first: {:?}; applied again: live {live_again}, late {late_again}; consumer restarts: live {}, late {}",
        failures.len(),
        failures.first(),
        live.node.stats().consumer_restarts,
        late.node.stats().consumer_restarts
    );
}

/// `PublisherSettings::ack_timeout` is documented as "how long to wait for
/// one acknowledgement before sending again", but only bounds the *send*;
/// the acknowledgement is awaited for the JetStream context's timeout (5 s
/// by default). With a server frozen for 1.5 s and `ack_timeout` 300 ms the
/// publish must have been sent again (its acknowledgement says duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_ack_timeout_bounds_the_wait_for_an_acknowledgement() {
    let mut f = Fixture::new().await;
    let mut settings = PublisherSettings::new("ack-timeout-test");
    settings.ack_timeout = Duration::from_millis(300);
    settings.attempts = 20;
    let publisher = Publisher::new(f.js.clone(), f.log.clone(), settings, defs());
    publisher.refresh_ids("content", &[1]).await.unwrap();
    f.server.freeze().unwrap();
    let pending = tokio::spawn(async move { publisher.refresh_ids("content", &[2]).await });
    tokio::time::sleep(Duration::from_millis(1500)).await; // the fault's duration
    f.server.thaw().unwrap();
    let receipt = within(Duration::from_secs(30), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(
        receipt.messages[0].duplicate,
        "not sent again within 1.5 s although ack_timeout is 300 ms: {receipt:?}"
    );
    let mut stream = f.js.get_stream(&f.log.stream).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        2,
        "stored once"
    );
}

/// A reconnect loses the acknowledgements addressed to the old connection:
/// the publisher sends such a message again as soon as the client has
/// reconnected, not after `ack_timeout`. The server is frozen before the
/// publish (so the message is sent but never read), then killed and
/// started again; with `ack_timeout` (and the context's timeout) at two
/// minutes, only the reconnect can end the wait within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_lost_with_the_connection_is_sent_again_on_reconnect() {
    let mut f = Fixture::new().await;
    let mut settings = PublisherSettings::new("reconnect-test");
    settings.ack_timeout = Duration::from_secs(120);
    let client = f.js.client();
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(120))
        .build(client.clone());
    let publisher = Publisher::new(js, f.log.clone(), settings, defs());
    publisher.refresh_ids("content", &[1]).await.unwrap();
    f.server.freeze().unwrap();
    let sent_before = client.statistics().out_messages.load(Ordering::Relaxed);
    let pending = tokio::spawn(async move { publisher.refresh_ids("content", &[2]).await });
    eventually(Duration::from_secs(10), "the publish is sent", || {
        client.statistics().out_messages.load(Ordering::Relaxed) > sent_before
    })
    .await;
    f.server.restart().await.unwrap();
    let receipt = within(Duration::from_secs(30), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(receipt.sequence(), Some(2), "{receipt:?}");
    let mut stream = f.js.get_stream(&f.log.stream).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
}
