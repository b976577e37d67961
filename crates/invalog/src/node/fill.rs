//! The stale-fill guard: lets an app fill its cache without writing back a
//! value that an invalidation applied meanwhile made stale. The app takes a
//! [`FillTicket`] (the node's applied position) before reading the source of
//! truth; after reading it asks whether it may cache the value for a
//! (refresher, key). The answer is yes only if nothing that could change
//! that entry was applied after the ticket: an invalidation of the key, a
//! refresh-all of the refresher (escalations too), an instruction that names
//! no keys (JSON, payloads, a message that did not decode) — and no cold
//! boot or skipped messages (a reset, which refreshes everything or skips).
//!
//! Memory is bounded: the guard keeps the last `capacity` applied
//! (refresher, unit) entries, each 24 bytes (a sequence and two hashes; a
//! hash collision can only make the answer "no"). A ticket older than the
//! window, of another incarnation, of another start of the node, or taken
//! during a reset is answered "do not cache": the guard never says "safe"
//! when it cannot know.
//!
//! Entries are recorded *before* the refresher runs, under the same lock
//! that [`crate::Node::fill_if_fresh`] holds while the app inserts: an insert
//! either happens before the invalidation (which then removes it) or sees
//! the entry and is refused.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;
use std::sync::Mutex;

use tokio::sync::watch;
use uuid::Uuid;

use super::position::Position;
use crate::model::{Instruction, RefresherName};
use crate::token::{ReadToken, TokenError};

/// The entry of a cache that a fill is for: what the refresher's
/// instructions name (`refresh_ids`/`remove_ids`, `…_uuids`, `…_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FillKey<'a> {
    /// An integer id.
    Id(i64),
    /// A UUID.
    Uuid(Uuid),
    /// A string key.
    Key(&'a str),
}

/// Taken before reading the source of truth: the node's applied position
/// (sequence and stream incarnation) and the guard's epoch (which changes on
/// every start, cold boot and skip). Written as
/// `<sequence>@<incarnation>.<epoch>` (the epoch in hexadecimal), for
/// example `42@18a3c5e2f0b1d400.6c1f0a2e9b3d4f58`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FillTicket {
    /// The node's applied position when the ticket was taken.
    pub position: ReadToken,
    /// The guard's epoch then (odd: a reset was running; never fills).
    pub epoch: u64,
}

impl fmt::Display for FillTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:x}", self.position, self.epoch)
    }
}

impl FromStr for FillTicket {
    type Err = TokenError;

    /// Parses what [`fmt::Display`] writes.
    fn from_str(s: &str) -> Result<Self, TokenError> {
        let bad = || {
            TokenError::new(format!(
                "bad fill ticket `{s}`: expected `<sequence>@<incarnation>.<epoch>` as \
                 `/fill-ticket` (or `Node::fill_ticket`) returned it"
            ))
        };
        let (position, epoch) = s.trim().rsplit_once('.').ok_or_else(bad)?;
        if epoch.is_empty() || epoch.len() > 16 || !epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self {
            position: position.parse().map_err(|_| bad())?,
            epoch: u64::from_str_radix(epoch, 16).map_err(|_| bad())?,
        })
    }
}

/// Why the guard cannot answer a ticket (the answer is then "do not cache").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknowable {
    /// The node runs without a guard (`NodeSettings::fill_guard_window`).
    GuardOff,
    /// The node does not host the refresher asked about (a typo?): it
    /// records nothing of its messages.
    NotHosted,
    /// The ticket was taken during a cold boot or a skip.
    TakenDuringReset,
    /// The ticket is of another start of the node (or names a sequence the
    /// node has not applied: none of its tickets), or a cold boot, a skip
    /// or a new stream incarnation came after it.
    OtherEpoch,
    /// Invalidations after the ticket have left the window.
    OlderThanWindow {
        /// The oldest ticket sequence the window can answer for.
        oldest: u64,
    },
}

/// The guard's answer for one (refresher, key) and a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillVerdict {
    /// Nothing that changes the entry was applied after the ticket: cache.
    Fill,
    /// Something that changes the entry was applied after the ticket (at
    /// `sequence`): the value read may be stale; do not cache it.
    Changed {
        /// The sequence of the change (the newest one in the window).
        sequence: u64,
        /// True when the change names no key (refresh-all, escalation, JSON
        /// or payload instruction, undecodable message).
        whole_refresher: bool,
    },
    /// The guard cannot know: do not cache.
    Unknown(Unknowable),
}

impl FillVerdict {
    /// True only for [`FillVerdict::Fill`].
    pub fn may_fill(&self) -> bool {
        matches!(self, FillVerdict::Fill)
    }
}

impl fmt::Display for FillVerdict {
    /// Why, in a sentence (the `why` of `/may-fill`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FillVerdict::Fill => f.write_str("nothing that changes this entry was applied after the ticket"),
            FillVerdict::Changed { sequence, whole_refresher: false } => write!(f, "an invalidation of this entry was applied after the ticket (sequence {sequence})"),
            FillVerdict::Changed { sequence, .. } => write!(f, "an instruction for the whole refresher (refresh-all, escalation, JSON or payloads) was applied after the ticket (sequence {sequence})"),
            FillVerdict::Unknown(Unknowable::GuardOff) => f.write_str("the node keeps no fill guard (set `fill_guard_window`); do not cache"),
            FillVerdict::Unknown(Unknowable::NotHosted) => f.write_str("this node hosts no refresher of that name, so it knows nothing of its invalidations; do not cache"),
            FillVerdict::Unknown(Unknowable::TakenDuringReset) => f.write_str("the ticket was taken during a cold boot; do not cache"),
            FillVerdict::Unknown(Unknowable::OtherEpoch) => f.write_str("a cold boot, a restart or a new stream incarnation came after the ticket; do not cache"),
            FillVerdict::Unknown(Unknowable::OlderThanWindow { oldest }) => write!(f, "the ticket is older than the recent-invalidation window (it answers tickets from sequence {oldest}); do not cache"),
        }
    }
}

/// Unit values with a meaning of their own (hashes are moved above them).
const WHOLE_REFRESHER: u64 = 0;
const FIRST_HASH: u64 = 1;

#[derive(Debug, Clone, Copy)]
struct Entry {
    sequence: u64,
    refresher: u64,
    unit: u64,
}

#[derive(Debug)]
struct Window {
    entries: VecDeque<Entry>,
    capacity: usize,
    /// Changes on every reset; odd while one runs.
    epoch: u64,
    /// Tickets with a lower sequence cannot be answered (entries after
    /// them were evicted).
    oldest: u64,
}

/// The recent-invalidation window, fed by the runner (see the module docs).
#[derive(Debug)]
pub(crate) struct FillGuard {
    window: Mutex<Window>,
    hasher: RandomState,
    /// The hashes of the hosted refreshers' names.
    hosted: Vec<u64>,
}

impl FillGuard {
    /// A guard for the refreshers named `hosted`, remembering the last
    /// `capacity` (at least 1) entries, with a random even epoch (tickets of
    /// an earlier start never match).
    pub(crate) fn new<'a>(capacity: usize, hosted: impl IntoIterator<Item = &'a str>) -> Self {
        let capacity = capacity.max(1);
        let epoch = (Uuid::new_v4().as_u64_pair().0) & !1;
        let hasher = RandomState::new();
        Self {
            hosted: hosted.into_iter().map(|n| hasher.hash_one(n)).collect(),
            window: Mutex::new(Window {
                entries: VecDeque::with_capacity(capacity),
                capacity,
                epoch,
                oldest: 0,
            }),
            hasher,
        }
    }

    /// The ticket for the position now (read under the lock, so that it is
    /// consistent with the epoch).
    pub(crate) fn ticket(&self, position: &watch::Sender<Position>) -> FillTicket {
        let window = self.window.lock().unwrap();
        FillTicket {
            position: current(&position.borrow()),
            epoch: window.epoch,
        }
    }

    /// Records the units of a message about to be applied at `sequence`.
    pub(crate) fn record(&self, sequence: u64, refresher: &RefresherName, batch: &[Instruction]) {
        let r = self.hasher.hash_one(refresher.as_str());
        let units: usize = batch.iter().map(Instruction::units).sum();
        let mut window = self.window.lock().unwrap();
        if units > window.capacity {
            // More than the window holds: one entry for the whole refresher
            // answers as much, for less.
            return window.push(sequence, r, WHOLE_REFRESHER);
        }
        let mut push = |units: &mut dyn Iterator<Item = u64>| {
            units.for_each(|unit| window.push(sequence, r, unit))
        };
        for instruction in batch {
            match instruction {
                Instruction::RefreshIds(ids) | Instruction::RemoveIds(ids) => {
                    push(&mut ids.iter().map(|&id| self.unit(FillKey::Id(id))))
                }
                Instruction::RefreshUuids(ids) | Instruction::RemoveUuids(ids) => {
                    push(&mut ids.iter().map(|&id| self.unit(FillKey::Uuid(id))))
                }
                Instruction::RefreshKeys(keys) | Instruction::RemoveKeys(keys) => {
                    push(&mut keys.iter().map(|key| self.unit(FillKey::Key(key))))
                }
                Instruction::RefreshAll
                | Instruction::RefreshJson(_)
                | Instruction::RefreshPayloads(_) => push(&mut std::iter::once(WHOLE_REFRESHER)),
            }
        }
    }

    /// Records a refresh-all of `refresher` about to run for `sequence`.
    pub(crate) fn record_all(&self, sequence: u64, refresher: &RefresherName) {
        let r = self.hasher.hash_one(refresher.as_str());
        self.window
            .lock()
            .unwrap()
            .push(sequence, r, WHOLE_REFRESHER);
    }

    /// A cold boot or a skip begins: every ticket taken before, or until
    /// [`FillGuard::end_reset`], is refused.
    pub(crate) fn begin_reset(&self) {
        let mut window = self.window.lock().unwrap();
        window.epoch = (window.epoch | 1).wrapping_add(2);
        window.entries.clear();
        window.oldest = 0;
    }

    /// The reset is done: tickets taken from now on can fill again.
    pub(crate) fn end_reset(&self) {
        let mut window = self.window.lock().unwrap();
        window.epoch = (window.epoch | 1).wrapping_add(1);
    }

    /// The answer for `ticket` and each (refresher, key) of `entries`, the
    /// node being at `now` (read before the lock: it only grows within an
    /// epoch); when every one is [`FillVerdict::Fill`], runs `insert` before
    /// anything else can be recorded.
    pub(crate) fn fill_with<R>(
        &self,
        ticket: &FillTicket,
        now: ReadToken,
        entries: &[(&str, FillKey<'_>)],
        insert: impl FnOnce() -> R,
    ) -> Result<R, FillVerdict> {
        let window = self.window.lock().unwrap();
        for &(refresher, key) in entries {
            let verdict = self.verdict(&window, ticket, now, refresher, key);
            if !verdict.may_fill() {
                return Err(verdict);
            }
        }
        Ok(insert())
    }

    fn verdict(
        &self,
        window: &Window,
        ticket: &FillTicket,
        now: ReadToken,
        refresher: &str,
        key: FillKey<'_>,
    ) -> FillVerdict {
        if ticket.epoch & 1 == 1 {
            return FillVerdict::Unknown(Unknowable::TakenDuringReset);
        }
        if ticket.epoch != window.epoch
            || ticket.position.incarnation != now.incarnation
            || ticket.position.sequence > now.sequence
        {
            return FillVerdict::Unknown(Unknowable::OtherEpoch);
        }
        let (r, unit) = (self.hasher.hash_one(refresher), self.unit(key));
        if !self.hosted.contains(&r) {
            return FillVerdict::Unknown(Unknowable::NotHosted);
        }
        let after = ticket.position.sequence;
        let changed = window
            .entries
            .iter()
            .rev()
            .take_while(|e| e.sequence > after)
            .find(|e| e.refresher == r && (e.unit == WHOLE_REFRESHER || e.unit == unit));
        if let Some(e) = changed {
            return FillVerdict::Changed {
                sequence: e.sequence,
                whole_refresher: e.unit == WHOLE_REFRESHER,
            };
        }
        if after < window.oldest {
            return FillVerdict::Unknown(Unknowable::OlderThanWindow {
                oldest: window.oldest,
            });
        }
        FillVerdict::Fill
    }

    fn unit(&self, key: FillKey<'_>) -> u64 {
        self.hasher.hash_one(key).max(FIRST_HASH)
    }
}

impl Window {
    fn push(&mut self, sequence: u64, refresher: u64, unit: u64) {
        if self.entries.len() == self.capacity {
            if let Some(evicted) = self.entries.pop_front() {
                self.oldest = self.oldest.max(evicted.sequence);
            }
        }
        self.entries.push_back(Entry {
            sequence,
            refresher,
            unit,
        });
    }
}

impl super::Node {
    /// Takes a ticket before reading the source of truth for a cache fill;
    /// see [`super::Node::fill_if_fresh`]. Cheap (a lock and a copy).
    pub fn fill_ticket(&self) -> FillTicket {
        match &self.shared.fill {
            Some(guard) => guard.ticket(&self.shared.position),
            None => unguarded_ticket(&self.shared.position.borrow()),
        }
    }

    /// Whether a value read after `ticket` may be cached for `key` of
    /// `refresher`: [`FillVerdict::Fill`] only if nothing that changes that
    /// entry was applied since. Between this answer and the insert an
    /// invalidation may still be applied; [`super::Node::fill_if_fresh`]
    /// closes that gap. Use this form to ask without inserting (or insert,
    /// then ask, and undo the insert on "no": equally safe).
    pub fn may_fill(&self, ticket: &FillTicket, refresher: &str, key: FillKey<'_>) -> FillVerdict {
        match self.fill_if_fresh(ticket, &[(refresher, key)], || ()) {
            Ok(()) => FillVerdict::Fill,
            Err(verdict) => verdict,
        }
    }

    /// Runs `insert` (the cache insert of a value read after `ticket`) only
    /// if, for every (refresher, key) of `entries`, nothing that changes
    /// that entry was applied after the ticket; otherwise returns why not.
    /// The node applies nothing while `insert` runs, so an invalidation
    /// either comes after the insert (and removes the value) or refuses it:
    /// keep `insert` short (an in-memory insert) and do not call the node
    /// from it. Name every refresher whose messages change the entry (a
    /// payload refresher that edits cached values in place, too).
    ///
    /// Needs `NodeSettings::fill_guard_window`; without it every answer is
    /// [`Unknowable::GuardOff`].
    ///
    /// ```no_run
    /// # async fn demo(node: &invalog::Node, cache: &std::sync::Mutex<std::collections::HashMap<i64, String>>) {
    /// use invalog::node::FillKey;
    /// # async fn read_from_database(id: i64) -> String { String::new() }
    /// let ticket = node.fill_ticket(); // before reading
    /// let value = read_from_database(7).await;
    /// let cached = node.fill_if_fresh(&ticket, &[("products", FillKey::Id(7))], || {
    ///     cache.lock().unwrap().insert(7, value.clone());
    /// });
    /// if let Err(why) = cached {
    ///     tracing::debug!(%why, "served without caching");
    /// }
    /// # }
    /// ```
    pub fn fill_if_fresh<R>(
        &self,
        ticket: &FillTicket,
        entries: &[(&str, FillKey<'_>)],
        insert: impl FnOnce() -> R,
    ) -> Result<R, FillVerdict> {
        let Some(guard) = &self.shared.fill else {
            return Err(FillVerdict::Unknown(Unknowable::GuardOff));
        };
        let now = current(&self.shared.position.borrow());
        guard.fill_with(ticket, now, entries, insert)
    }
}

/// The position as a token (sequence 0 before anything was applied).
fn current(position: &Position) -> ReadToken {
    ReadToken {
        sequence: position.applied,
        incarnation: position.incarnation,
    }
}

/// The ticket a node without a guard hands out (never fills).
pub(crate) fn unguarded_ticket(position: &Position) -> FillTicket {
    FillTicket {
        position: current(position),
        epoch: 1,
    }
}

#[cfg(test)]
#[path = "fill_tests.rs"]
mod tests;
