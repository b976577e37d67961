//! Superseded messages (the spec's "catch-up does only the work that
//! matters"). While a node catches up it looks ahead over a window of the
//! messages that follow the one it is about to apply; a message of
//! refresher R is *superseded* when a later message in that window carries
//! a refresh-all of R that the node will apply: applying the earlier one
//! first would be work the refresh-all redoes. A superseded message is not
//! applied but counted, and the node never stores a sequence past it
//! before the refresh-all that covers it is applied (`node::lookahead`).
//! `replay --dry-run` marks the same messages with the same rule
//! (`replay`). This module holds only the rule; the windows are the
//! callers'.

use std::collections::HashMap;

use crate::model::{Batch, Instruction, RefresherName};

/// What a window of messages says of refresh-alls: per refresher, the
/// last sequence seen entering the window that refreshes all of it.
/// Callers report every message as it enters their window
/// ([`Lookahead::entered`]) and ask about each as it leaves it, in order
/// ([`Lookahead::superseded`]).
#[derive(Debug, Default)]
pub(crate) struct Lookahead {
    last_all: HashMap<RefresherName, u64>,
}

impl Lookahead {
    /// A message entered the window; `batch` is what it decoded to, and
    /// `applies` whether the node applies it (an own message applied at
    /// its origin is skipped, so its refresh-all covers nothing).
    pub(crate) fn entered(&mut self, sequence: u64, batch: &Batch, applies: bool) {
        if applies && refreshes_all(batch) {
            match self.last_all.get_mut(&batch.refresher.name) {
                Some(last) => *last = (*last).max(sequence),
                None => {
                    self.last_all.insert(batch.refresher.name.clone(), sequence);
                }
            }
        }
    }

    /// The sequence of the refresh-all that supersedes the message at
    /// `sequence` of `refresher`, if one entered the window after it.
    pub(crate) fn superseded(&self, sequence: u64, refresher: &RefresherName) -> Option<u64> {
        self.last_all
            .get(refresher)
            .copied()
            .filter(|&cover| cover > sequence)
    }

    /// Forgets everything (the window was emptied, e.g. a new consumer).
    pub(crate) fn clear(&mut self) {
        self.last_all.clear();
    }
}

/// True when the batch refreshes everything of its refresher.
pub(crate) fn refreshes_all(batch: &Batch) -> bool {
    batch
        .instructions
        .iter()
        .any(|i| matches!(i, Instruction::RefreshAll))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Provenance, RefresherDef};
    use std::time::SystemTime;

    fn batch(refresher: &str, instructions: Vec<Instruction>) -> Batch {
        Batch {
            id: uuid::Uuid::new_v4(),
            origin: "n".into(),
            published_at: SystemTime::now(),
            refresher: RefresherDef::new(uuid::Uuid::nil(), refresher).unwrap(),
            provenance: Provenance::default(),
            applied_at_origin: false,
            instructions,
        }
    }

    #[test]
    fn a_later_refresh_all_of_the_same_refresher_supersedes() {
        let mut look = Lookahead::default();
        let content = batch("content", vec![Instruction::RefreshIds(vec![1])]);
        let media = batch("media", vec![Instruction::RefreshIds(vec![2])]);
        let all = batch(
            "content",
            vec![Instruction::RefreshIds(vec![3]), Instruction::RefreshAll],
        );
        look.entered(1, &content, true);
        look.entered(2, &media, true);
        look.entered(3, &all, true);
        let name = |b: &Batch| b.refresher.name.clone();
        assert_eq!(look.superseded(1, &name(&content)), Some(3));
        assert_eq!(look.superseded(2, &name(&media)), None);
        // The refresh-all itself is applied.
        assert_eq!(look.superseded(3, &name(&all)), None);
        // An earlier refresh-all is superseded by a later one.
        look.entered(4, &all, true);
        assert_eq!(look.superseded(3, &name(&all)), Some(4));
        look.clear();
        assert_eq!(look.superseded(1, &name(&content)), None);
    }

    #[test]
    fn a_refresh_all_the_node_skips_covers_nothing() {
        let mut look = Lookahead::default();
        let all = batch("content", vec![Instruction::RefreshAll]);
        look.entered(5, &all, false);
        assert_eq!(look.superseded(4, &all.refresher.name), None);
    }
}
