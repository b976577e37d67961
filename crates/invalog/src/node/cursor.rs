//! Where the runner is in the log: the stream incarnation it follows, the
//! next sequence to apply, the target it must pass to be ready, and the
//! sequence it last handed to the checkpoint writer. Only these methods
//! change it; the runner's files (`run`, `consume`, `check`, `direct`)
//! read it and ask for changes. A message superseded while catching up
//! (`window`) holds the stored sequence below it until the refresh-all
//! that covers it is applied: after a crash the node reads the message
//! again, and the refresh-all after it.

use std::time::{Duration, Instant};

use crate::token::Incarnation;

pub(super) struct Cursor {
    /// The stream incarnation being followed.
    incarnation: Incarnation,
    /// The next sequence to apply.
    next: u64,
    /// Ready once `next > target`.
    target: u64,
    /// Last sequence handed to the checkpoint writer.
    stored: Option<u64>,
    /// When the applied sequence was last handed over (or found unmoved).
    last_flush: Instant,
    /// Superseded messages whose cover is not applied yet: `(superseded,
    /// cover)`; nothing at or past `superseded` is stored before `cover` is
    /// applied.
    holds: Vec<(u64, u64)>,
}

impl Cursor {
    /// A runner on `incarnation` that applied and stored `stored` there
    /// (0: nothing), to be ready past `target`.
    pub(super) fn new(incarnation: Incarnation, stored: u64, target: u64) -> Self {
        Self {
            incarnation,
            next: stored.saturating_add(1),
            target,
            stored: (stored > 0).then_some(stored),
            last_flush: Instant::now(),
            holds: Vec::new(),
        }
    }

    pub(super) fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The next sequence to apply.
    pub(super) fn next(&self) -> u64 {
        self.next
    }

    /// The last sequence applied (0: none).
    pub(super) fn applied(&self) -> u64 {
        self.next.saturating_sub(1)
    }

    pub(super) fn target(&self) -> u64 {
        self.target
    }

    /// True once everything up to the target is applied.
    pub(super) fn caught_up(&self) -> bool {
        self.next > self.target
    }

    /// Starts applying at `from` (a replay plan); true when that skips
    /// messages after the stored sequence.
    pub(super) fn start_at(&mut self, from: u64) -> bool {
        let skips = from > self.next;
        self.next = from;
        skips
    }

    /// `sequence` is applied (or covered by a refresh).
    pub(super) fn applied_through(&mut self, sequence: u64) {
        self.next = sequence + 1;
    }

    /// The stream holds at least up to `last`: ready only past it.
    pub(super) fn raise_target(&mut self, last: u64) {
        self.target = self.target.max(last);
    }

    /// A refresh covered everything up to `last`; an earlier target may
    /// belong to a stream that no longer exists.
    pub(super) fn reset_target(&mut self, last: u64) {
        self.target = last;
    }

    /// Follows `incarnation` from its start, nothing applied or stored
    /// there; false (and nothing changes) when it is the one followed.
    pub(super) fn enter(&mut self, incarnation: Incarnation) -> bool {
        if incarnation == self.incarnation {
            return false;
        }
        self.incarnation = incarnation;
        self.stored = None;
        self.holds.clear();
        self.next = 1;
        true
    }

    /// True when `interval` has passed since the last hand-over.
    pub(super) fn flush_due(&self, interval: Duration) -> bool {
        self.last_flush.elapsed() >= interval
    }

    /// The message at `superseded` is not applied: `cover`'s refresh-all
    /// will cover it. Until `cover` is applied, nothing from `superseded`
    /// on is stored.
    pub(super) fn hold(&mut self, superseded: u64, cover: u64) {
        self.holds.push((superseded, cover));
    }

    /// The sequence that may be stored: the applied one, or less while a
    /// superseded message waits for its cover.
    fn storable(&mut self) -> u64 {
        let applied = self.applied();
        self.holds.retain(|&(_, cover)| cover > applied);
        self.holds
            .iter()
            .map(|&(superseded, _)| superseded - 1)
            .fold(applied, u64::min)
    }

    /// The sequence to hand to the checkpoint writer, if it moved since the
    /// last hand-over; restarts the flush clock either way.
    pub(super) fn take_flush(&mut self) -> Option<u64> {
        self.last_flush = Instant::now();
        let storable = self.storable();
        if self.stored == Some(storable) {
            return None;
        }
        self.stored = Some(storable);
        Some(storable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_superseded_message_holds_the_stored_sequence_until_its_cover_is_applied() {
        let mut cursor = Cursor::new(Incarnation::new(std::time::SystemTime::UNIX_EPOCH), 4, 20);
        cursor.applied_through(5);
        cursor.hold(6, 9);
        cursor.applied_through(6);
        cursor.hold(7, 12);
        cursor.applied_through(8);
        assert_eq!(cursor.take_flush(), Some(5));
        cursor.applied_through(9);
        // 6's cover is applied; 7's is not.
        assert_eq!(cursor.take_flush(), Some(6));
        assert_eq!(cursor.take_flush(), None);
        cursor.applied_through(12);
        assert_eq!(cursor.take_flush(), Some(12));
    }
}
