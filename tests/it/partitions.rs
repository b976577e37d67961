//! Network partitions against the real binaries (docs/reliability.md,
//! section 8): a 3-server JetStream cluster, agents and publishers, each in
//! its own network namespace ([`crate::netns`]). (a) a server cut off from
//! the other two while publishing and consuming, (b) the stream leader
//! isolated, (c) an agent cut off from every server, (d) a publisher on the
//! minority side. Each asserts that no acknowledged publish is lost, nothing
//! is applied out of order, a minority publisher gets errors and never an
//! acknowledgement, a cut-off agent is fenced within its bound and ready
//! again after the heal; duplicates are counted and printed.
//!
//! The tests need root and `ip`; elsewhere they print why they skip. Cuts
//! last 5 s by default, 45 s with `INVALOG_SLOW_TESTS=1` (longer than the
//! clients' ping timeout, so connections are declared dead and replaced).

pub mod fleet;
mod isolated;
mod servers;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::netns::Net;
use crate::reliability::{check_in_order_nothing_lost, slow, time_until};

use fleet::{NsAgent, Record};

/// `node.fence.max_disconnected` of every agent.
const FENCE: Duration = Duration::from_secs(2);

/// How long a cut lasts (the fault's duration, the only timed pause).
fn cut_length() -> Duration {
    Duration::from_secs(if slow() { 45 } else { 5 })
}

/// The hosts, or `None` (the reason printed) where namespaces cannot be made.
fn net_or_skip(test: &str, hosts: &[&str]) -> Option<Net> {
    match Net::new(hosts) {
        Ok(net) => {
            match net.netem_available() {
                Ok(()) => eprintln!("{test}: tc netem available"),
                Err(why) => eprintln!("{test}: {why}"),
            }
            Some(net)
        }
        Err(why) => {
            eprintln!("{test}: SKIPPED: {why}");
            None
        }
    }
}

/// Waits until `agent` applied every acknowledged sequence in `records`,
/// then checks the order (never past a sequence not yet applied) and that
/// each acknowledged id arrived at its sequence. Returns how many
/// sequences it applied more than once.
async fn check_applied(agent: &NsAgent, records: &[&Record], what: &str) -> usize {
    let acked: Vec<(i64, u64)> = records
        .iter()
        .flat_map(|r| r.acks.iter().map(|(id, seq, _, _)| (*id, *seq)))
        .collect();
    let wanted: HashSet<u64> = acked.iter().map(|(_, seq)| *seq).collect();
    let started = Instant::now();
    time_until(
        Duration::from_secs(90),
        &format!(
            "{what}: {} applies every acknowledged publish",
            agent.host.name()
        ),
        || {
            let seen: HashSet<u64> = agent.hook.sequences().into_iter().collect();
            wanted.is_subset(&seen)
        },
    )
    .await;
    let calls = agent.hook.calls();
    let sequences: Vec<u64> = calls.iter().map(|(s, _)| *s).collect();
    let again = check_in_order_nothing_lost(&sequences, wanted.iter().copied());
    for (id, seq) in &acked {
        let (_, ids) = calls.iter().find(|(s, _)| s == seq).unwrap();
        assert_eq!(ids, &vec![*id], "{what}: acknowledged id {id} at {seq}");
    }
    eprintln!(
        "{what}: {} applied all {} acknowledged publishes {:?} after asking, {} sequences in all, {again} applied again",
        agent.host.name(),
        acked.len(),
        started.elapsed(),
        sequences.len() - again,
    );
    again
}

/// Failed publishes whose id reached `agent` anyway (stored though the
/// publisher was not told so).
fn failed_but_stored(agent: &NsAgent, record: &Record) -> usize {
    let applied: HashSet<i64> = agent
        .hook
        .calls()
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect();
    record
        .failures
        .iter()
        .filter(|(id, _, _)| applied.contains(id))
        .count()
}
