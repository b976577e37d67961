//! The dry run's sliding lookahead window: messages are held until
//! `lookahead` more have entered after them (or the range ends), then
//! released in log order with the refresh-all that supersedes them, if any
//! (the rule of `crate::supersede`, as a catching-up node applies it). Every
//! message read occupies a slot — filtered out, canaries, undecodable and
//! not hosted ones too, as every delivered message does in the node's
//! window — but only those the node would apply are superseded or cover
//! others. Missing ranges are queued with the messages to keep the order.
//! With a lookahead of 0 every message is released as soon as it entered.

use std::collections::VecDeque;

use crate::history::Entry;
use crate::supersede::Lookahead;

/// A queued item. (Missing ranges are rare; boxing messages to shrink
/// them would cost an allocation per message.)
#[allow(clippy::large_enum_variant)]
enum Held {
    Message { entry: Entry, applies: bool },
    Missing { from: u64, to: u64 },
}

/// An item leaving the window, in log order.
#[allow(clippy::large_enum_variant)]
pub(super) enum Released {
    /// A message, with the sequence of the refresh-all that supersedes it.
    Message { entry: Entry, cover: Option<u64> },
    /// Sequences no longer in the stream.
    Missing { from: u64, to: u64 },
}

/// At most `lookahead` + 1 messages (and the missing ranges between them).
pub(super) struct Window {
    lookahead: usize,
    held: VecDeque<Held>,
    /// Messages in `held`.
    messages: usize,
    look: Lookahead,
}

impl Window {
    pub(super) fn new(lookahead: usize) -> Self {
        Self {
            lookahead,
            held: VecDeque::new(),
            messages: 0,
            look: Lookahead::default(),
        }
    }

    /// Sequences `from..=to` are missing (after the messages pushed so far).
    pub(super) fn missing(&mut self, from: u64, to: u64) {
        self.held.push_back(Held::Missing { from, to });
    }

    /// A message enters; `applies`: the node would apply it.
    pub(super) fn push(&mut self, entry: Entry, applies: bool) {
        if applies {
            if let Ok(batch) = &entry.batch {
                self.look.entered(entry.sequence, batch, true);
            }
        }
        self.held.push_back(Held::Message { entry, applies });
        self.messages += 1;
    }

    /// The oldest item, once `lookahead` messages have entered after it.
    pub(super) fn pop(&mut self) -> Option<Released> {
        match self.held.front()? {
            Held::Message { .. } if self.messages <= self.lookahead => None,
            _ => self.release(),
        }
    }

    /// The oldest item, whatever follows it (the range ended).
    pub(super) fn drain(&mut self) -> Option<Released> {
        self.release()
    }

    fn release(&mut self) -> Option<Released> {
        Some(match self.held.pop_front()? {
            Held::Missing { from, to } => Released::Missing { from, to },
            Held::Message { entry, applies } => {
                self.messages -= 1;
                let cover = match &entry.batch {
                    Ok(batch) if applies => {
                        self.look.superseded(entry.sequence, &batch.refresher.name)
                    }
                    _ => None,
                };
                Released::Message { entry, cover }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::model::{Batch, Instruction, Provenance, RefresherDef};

    fn entry(sequence: u64, refresher: &str, all: bool) -> Entry {
        let instruction = if all {
            Instruction::RefreshAll
        } else {
            Instruction::RefreshIds(vec![sequence as i64])
        };
        Entry {
            sequence,
            subject: format!("invalog.{refresher}"),
            stored_at: SystemTime::now(),
            batch: Ok(Batch {
                id: uuid::Uuid::new_v4(),
                origin: "cms".into(),
                published_at: SystemTime::now(),
                refresher: RefresherDef::new(uuid::Uuid::nil(), refresher).unwrap(),
                provenance: Provenance::default(),
                applied_at_origin: false,
                instructions: vec![instruction],
            }),
        }
    }

    /// Pushes `(sequence, refresher, refresh_all, applies)` through a
    /// window of `lookahead`, returning what leaves it, in order.
    fn run(lookahead: usize, log: &[(u64, &str, bool, bool)]) -> Vec<String> {
        let mut window = Window::new(lookahead);
        let mut out = Vec::new();
        let mut report = |r: Released| match r {
            Released::Missing { from, to } => out.push(format!("missing {from}..={to}")),
            Released::Message { entry, cover } => out.push(match cover {
                Some(by) => format!("{} by {by}", entry.sequence),
                None => entry.sequence.to_string(),
            }),
        };
        let mut last = 0;
        for &(sequence, refresher, all, applies) in log {
            if sequence > last + 1 {
                window.missing(last + 1, sequence - 1);
            }
            last = sequence;
            window.push(entry(sequence, refresher, all), applies);
            assert!(window.messages <= lookahead + 1);
            while let Some(r) = window.pop() {
                report(r);
            }
        }
        while let Some(r) = window.drain() {
            report(r);
        }
        out
    }

    #[test]
    fn only_a_refresh_all_within_the_window_supersedes() {
        let log = [
            (1, "content", false, true),
            (2, "media", false, true),
            (3, "content", false, true),
            (5, "content", true, true),
            (6, "content", false, true),
        ];
        // 1 is three messages before the refresh-all at 5; 3 is one before.
        let all = ["1 by 5", "2", "3 by 5", "missing 4..=4", "5", "6"];
        assert_eq!(run(3, &log), all);
        assert_eq!(run(1000, &log), all);
        assert_eq!(
            run(2, &log),
            ["1", "2", "3 by 5", "missing 4..=4", "5", "6"]
        );
        assert_eq!(run(0, &log), ["1", "2", "3", "missing 4..=4", "5", "6"]);
    }

    #[test]
    fn messages_the_node_skips_are_neither_superseded_nor_covers() {
        // 2 is not applied by the node (not hosted, a canary, its own, or
        // undecodable): it still takes a slot.
        let log = [
            (1, "content", false, true),
            (2, "content", false, false),
            (3, "content", true, false),
            (4, "content", true, true),
        ];
        assert_eq!(run(3, &log), ["1 by 4", "2", "3", "4"]);
        assert_eq!(run(2, &log), ["1", "2", "3", "4"]);
    }
}
