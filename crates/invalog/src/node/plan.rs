//! The start rules of the spec's "Start and catch-up", as a pure function of
//! the stored checkpoint and the stream's position: replay from `S + 1`, cold
//! boot, or start at the tail.

use super::status::ColdBootReason;
use crate::checkpoint::Checkpoint;
use crate::stream::StreamPosition;

/// What a node without a stored sequence does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NewNodePolicy {
    /// Refresh every refresher fully, then follow new messages (the safe
    /// default: correct whatever the caches hold).
    #[default]
    ColdBoot,
    /// Replay every message the stream retains.
    ReplayAll,
    /// Start at the tail: the caches are known to be empty.
    Tail,
}

/// How a node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPlan {
    /// Replay from this sequence.
    Replay {
        /// First sequence to apply.
        from: u64,
    },
    /// Refresh everything, then follow from the stream's last sequence + 1.
    ColdBoot(ColdBootReason),
    /// Follow from the stream's last sequence + 1 without refreshing.
    Tail,
}

/// Chooses how to start from the stored checkpoint (if any) and the stream.
pub fn plan_start(
    stored: Option<&Checkpoint>,
    stream_name: &str,
    position: StreamPosition,
    new_node: NewNodePolicy,
    cold_boot_threshold: Option<u64>,
) -> StartPlan {
    let Some(stored) = stored else {
        return match new_node {
            NewNodePolicy::ColdBoot => StartPlan::ColdBoot(ColdBootReason::NewNode),
            NewNodePolicy::ReplayAll => StartPlan::Replay {
                from: position.first.max(1),
            },
            NewNodePolicy::Tail => StartPlan::Tail,
        };
    };
    if stored.stream != stream_name || stored.stream_created != position.created {
        return StartPlan::ColdBoot(ColdBootReason::StreamRecreated);
    }
    let s = stored.sequence;
    // A sequence past the stream's last one, or one without a successor
    // (u64::MAX, a corrupt checkpoint), cannot be replayed from.
    let next = match s.checked_add(1) {
        Some(next) if s <= position.last => next,
        _ => {
            return StartPlan::ColdBoot(ColdBootReason::StoredAheadOfStream {
                stored: s,
                last: position.last,
            })
        }
    };
    if next < position.first {
        return StartPlan::ColdBoot(ColdBootReason::BehindRetention {
            stored: s,
            first: position.first,
        });
    }
    let pending = position.last - s;
    if let Some(threshold) = cold_boot_threshold {
        if pending > threshold {
            return StartPlan::ColdBoot(ColdBootReason::OverThreshold { pending, threshold });
        }
    }
    StartPlan::Replay { from: next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn pos(first: u64, last: u64) -> StreamPosition {
        StreamPosition {
            first,
            last,
            created: at(100),
        }
    }

    fn stored(sequence: u64) -> Checkpoint {
        Checkpoint {
            stream: "S".into(),
            stream_created: at(100),
            sequence,
        }
    }

    fn plan(s: Option<u64>, first: u64, last: u64) -> StartPlan {
        plan_start(
            s.map(stored).as_ref(),
            "S",
            pos(first, last),
            NewNodePolicy::ColdBoot,
            Some(1000),
        )
    }

    #[test]
    fn replays_from_the_next_sequence_when_it_is_retained() {
        assert_eq!(plan(Some(10), 5, 20), StartPlan::Replay { from: 11 });
        assert_eq!(
            plan(Some(4), 5, 20),
            StartPlan::Replay { from: 5 },
            "S + 1 == F"
        );
        assert_eq!(
            plan(Some(20), 5, 20),
            StartPlan::Replay { from: 21 },
            "caught up"
        );
        assert_eq!(
            plan(Some(0), 0, 0),
            StartPlan::Replay { from: 1 },
            "empty stream"
        );
        assert_eq!(
            plan(Some(7), 8, 7),
            StartPlan::Replay { from: 8 },
            "purged, nothing lost"
        );
    }

    #[test]
    fn cold_boots_behind_retention_over_threshold_or_ahead() {
        assert_eq!(
            plan(Some(3), 5, 20),
            StartPlan::ColdBoot(ColdBootReason::BehindRetention {
                stored: 3,
                first: 5
            })
        );
        assert_eq!(
            plan(Some(10), 1, 2000),
            StartPlan::ColdBoot(ColdBootReason::OverThreshold {
                pending: 1990,
                threshold: 1000
            })
        );
        assert_eq!(
            plan(Some(30), 1, 20),
            StartPlan::ColdBoot(ColdBootReason::StoredAheadOfStream {
                stored: 30,
                last: 20
            })
        );
    }

    #[test]
    fn an_impossible_stored_sequence_is_a_cold_boot_not_a_panic() {
        let ahead = |last| {
            StartPlan::ColdBoot(ColdBootReason::StoredAheadOfStream {
                stored: u64::MAX,
                last,
            })
        };
        assert_eq!(plan(Some(u64::MAX), 1, 20), ahead(20));
        assert_eq!(plan(Some(u64::MAX), 0, 0), ahead(0));
        // Even a stream claiming the largest sequence: no successor exists.
        assert_eq!(plan(Some(u64::MAX), 1, u64::MAX), ahead(u64::MAX));
        assert_eq!(
            plan(Some(u64::MAX - 1), u64::MAX, u64::MAX - 1),
            StartPlan::Replay { from: u64::MAX },
            "the largest sequence that still has a successor"
        );
    }

    #[test]
    fn a_recreated_stream_is_a_cold_boot_even_when_sequences_look_fine() {
        let mut other = pos(1, 50);
        other.created = at(200);
        assert_eq!(
            plan_start(Some(&stored(10)), "S", other, NewNodePolicy::ColdBoot, None),
            StartPlan::ColdBoot(ColdBootReason::StreamRecreated)
        );
        assert_eq!(
            plan_start(
                Some(&stored(10)),
                "OTHER",
                pos(1, 50),
                NewNodePolicy::ColdBoot,
                None
            ),
            StartPlan::ColdBoot(ColdBootReason::StreamRecreated)
        );
    }

    #[test]
    fn new_nodes_follow_their_policy() {
        let p = |policy| plan_start(None, "S", pos(5, 20), policy, None);
        assert_eq!(
            p(NewNodePolicy::ColdBoot),
            StartPlan::ColdBoot(ColdBootReason::NewNode)
        );
        assert_eq!(p(NewNodePolicy::ReplayAll), StartPlan::Replay { from: 5 });
        assert_eq!(p(NewNodePolicy::Tail), StartPlan::Tail);
        let empty = plan_start(None, "S", pos(0, 0), NewNodePolicy::ReplayAll, None);
        assert_eq!(empty, StartPlan::Replay { from: 1 });
    }
}
