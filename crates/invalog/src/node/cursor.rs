//! Where the runner is in the log: the stream incarnation it follows, the
//! next sequence to apply, the target it must pass to be ready, and the
//! sequence it last handed to the checkpoint writer. Only these methods
//! change it; the runner's files (`run`, `consume`, `check`, `direct`)
//! read it and ask for changes.

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
        self.next = 1;
        true
    }

    /// True when `interval` has passed since the last hand-over.
    pub(super) fn flush_due(&self, interval: Duration) -> bool {
        self.last_flush.elapsed() >= interval
    }

    /// The applied sequence to hand to the checkpoint writer, if it moved
    /// since the last hand-over; restarts the flush clock either way.
    pub(super) fn take_flush(&mut self) -> Option<u64> {
        self.last_flush = Instant::now();
        let applied = self.applied();
        if self.stored == Some(applied) {
            return None;
        }
        self.stored = Some(applied);
        Some(applied)
    }
}
