//! Unit-of-work batching, pure and free of IO: groups instructions by
//! refresher, removes duplicates and splits them into messages of at most N
//! units (Umbraco writes at most 1000 instructions per record).
//!
//! Duplicates are removed by keeping the *last* occurrence of each
//! (kind, id): the relative order of what remains is the original order, so
//! "remove 7, refresh 7" and "refresh 7, remove 7" keep their different
//! meanings. Everything before a `refresh_all` of the same refresher is
//! dropped: the full refresh covers it. Consecutive instructions of one
//! list kind (ids, uuids, keys, payloads) are merged into one instruction.
//!
//! The work is proportional to the number of units: duplicates are found by
//! sorting borrowed identities (no hashing, no per-unit allocation for ids,
//! UUIDs and keys), and id lists are moved or appended, never rebuilt one
//! element at a time through an intermediate form.

use std::mem::Discriminant;

use uuid::Uuid;

use crate::model::Instruction;

/// The de-duplication identity of one unit; the `bool` tells the two kinds
/// that share a value type apart (remove vs refresh, payload vs JSON).
/// JSON values are compared by their text.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Identity<'a> {
    All,
    Id(bool, i64),
    Uuid(bool, Uuid),
    Str(bool, &'a str),
    Json(bool, &'a str),
}

/// De-duplicates one refresher's instructions and splits them into messages
/// of at most `max_units` units each (`max_units` of 0 is treated as 1).
pub fn plan_messages(
    mut instructions: Vec<Instruction>,
    max_units: usize,
) -> Vec<Vec<Instruction>> {
    let max_units = max_units.max(1);
    if let Some(last_all) = instructions
        .iter()
        .rposition(|i| matches!(i, Instruction::RefreshAll))
    {
        instructions.drain(..last_all);
    }
    let dropped = duplicates(&instructions);
    let mut plan = Planner {
        max_units,
        messages: Vec::new(),
        current: Vec::new(),
        units: 0,
    };
    let mut position = 0;
    let mut rest = instructions.into_iter();
    while let Some(instruction) = rest.next() {
        let units = instruction.units();
        let gone = dropped.as_deref().map(|d| &d[position..position + units]);
        position += units;
        let ahead = rest.as_slice();
        let kind = std::mem::discriminant(&instruction);
        macro_rules! list {
            ($variant:ident, $values:expr) => {
                plan.push_list(
                    keep($values, gone),
                    ahead,
                    kind,
                    |v| Instruction::$variant(v),
                    |i| match i {
                        Instruction::$variant(v) => Some(v),
                        _ => None,
                    },
                )
            };
        }
        match instruction {
            Instruction::RefreshAll => plan.push_single(Instruction::RefreshAll),
            Instruction::RefreshJson(json) => {
                if !gone.is_some_and(|g| g[0]) {
                    plan.push_single(Instruction::RefreshJson(json));
                }
            }
            Instruction::RefreshIds(v) => list!(RefreshIds, v),
            Instruction::RemoveIds(v) => list!(RemoveIds, v),
            Instruction::RefreshUuids(v) => list!(RefreshUuids, v),
            Instruction::RemoveUuids(v) => list!(RemoveUuids, v),
            Instruction::RefreshKeys(v) => list!(RefreshKeys, v),
            Instruction::RemoveKeys(v) => list!(RemoveKeys, v),
            Instruction::RefreshPayloads(v) => list!(RefreshPayloads, v),
        }
    }
    if !plan.current.is_empty() {
        plan.messages.push(plan.current);
    }
    plan.messages
}

/// Which units (by position, in order) are duplicates of a later unit:
/// `None` when none is.
fn duplicates(instructions: &[Instruction]) -> Option<Vec<bool>> {
    let total: usize = instructions.iter().map(Instruction::units).sum();
    if total < 2 {
        return None;
    }
    // JSON values compare by their text, written once per value.
    let texts: Vec<String> = instructions
        .iter()
        .flat_map(|i| match i {
            Instruction::RefreshJson(v) => std::slice::from_ref(v),
            Instruction::RefreshPayloads(v) => v.as_slice(),
            _ => &[],
        })
        .map(serde_json::Value::to_string)
        .collect();
    let mut texts = texts.iter().map(String::as_str);
    let mut identities: Vec<(Identity<'_>, usize)> = Vec::with_capacity(total);
    for instruction in instructions {
        let at = identities.len();
        let mut push = |identity| identities.push((identity, identities.len()));
        match instruction {
            Instruction::RefreshAll => push(Identity::All),
            Instruction::RefreshIds(v) => v.iter().for_each(|i| push(Identity::Id(false, *i))),
            Instruction::RemoveIds(v) => v.iter().for_each(|i| push(Identity::Id(true, *i))),
            Instruction::RefreshUuids(v) => v.iter().for_each(|u| push(Identity::Uuid(false, *u))),
            Instruction::RemoveUuids(v) => v.iter().for_each(|u| push(Identity::Uuid(true, *u))),
            Instruction::RefreshKeys(v) => v.iter().for_each(|k| push(Identity::Str(false, k))),
            Instruction::RemoveKeys(v) => v.iter().for_each(|k| push(Identity::Str(true, k))),
            Instruction::RefreshJson(_) => push(Identity::Json(false, texts.next().unwrap_or(""))),
            Instruction::RefreshPayloads(v) => {
                for _ in v {
                    push(Identity::Json(true, texts.next().unwrap_or("")));
                }
            }
        }
        debug_assert_eq!(identities.len() - at, instruction.units());
    }
    // Equal identities end up next to each other, in position order: all
    // but the last of each run are duplicates.
    identities.sort_unstable();
    let mut dropped: Option<Vec<bool>> = None;
    for pair in identities.windows(2) {
        if pair[0].0 == pair[1].0 {
            dropped.get_or_insert_with(|| vec![false; total])[pair[0].1] = true;
        }
    }
    dropped
}

/// `values` without the ones `gone` marks (all of them kept when `None`).
fn keep<T>(mut values: Vec<T>, gone: Option<&[bool]>) -> Vec<T> {
    if let Some(gone) = gone.filter(|g| g.contains(&true)) {
        let mut index = 0;
        values.retain(|_| {
            index += 1;
            !gone[index - 1]
        });
    }
    values
}

/// Builds the messages: the current one fills up to `max_units` units, a
/// list instruction joins the list kind right before it in that message.
struct Planner {
    max_units: usize,
    messages: Vec<Vec<Instruction>>,
    current: Vec<Instruction>,
    units: usize,
}

impl Planner {
    /// Units the current message still takes, starting a new message when
    /// it is full.
    fn room(&mut self) -> usize {
        if self.units == self.max_units {
            self.messages.push(std::mem::take(&mut self.current));
            self.units = 0;
        }
        self.max_units - self.units
    }

    fn push_single(&mut self, instruction: Instruction) {
        self.room();
        self.current.push(instruction);
        self.units += 1;
    }

    /// Appends a list of one kind: to the list of that kind ending the
    /// current message, else as a new instruction (the given `Vec` itself
    /// when it fits whole), split wherever a message fills up. `ahead` are
    /// the instructions still to come: a new list reserves room for the ones
    /// of its `kind` that follow it directly.
    fn push_list<T>(
        &mut self,
        values: Vec<T>,
        ahead: &[Instruction],
        kind: Discriminant<Instruction>,
        wrap: impl Fn(Vec<T>) -> Instruction,
        list_of: impl Fn(&mut Instruction) -> Option<&mut Vec<T>>,
    ) {
        if values.is_empty() {
            return;
        }
        let mut values = Some(values);
        let mut rest = Vec::new().into_iter();
        loop {
            let room = self.room();
            let left = values.as_ref().map_or(rest.len(), Vec::len);
            if left == 0 {
                return;
            }
            let take = room.min(left);
            if let Some(list) = self.current.last_mut().and_then(&list_of) {
                match values.take() {
                    Some(mut whole) if take == whole.len() => list.append(&mut whole),
                    Some(whole) => {
                        rest = whole.into_iter();
                        list.extend(rest.by_ref().take(take));
                    }
                    None => list.extend(rest.by_ref().take(take)),
                }
            } else {
                let mut list = match values.take() {
                    Some(whole) if take == whole.len() => whole,
                    Some(whole) => {
                        rest = whole.into_iter();
                        rest.by_ref().take(take).collect()
                    }
                    None => rest.by_ref().take(take).collect(),
                };
                let following = following_units(ahead, kind, room - take);
                list.reserve(following);
                self.current.push(wrap(list));
            }
            self.units += take;
        }
    }
}

/// Units of the instructions at the start of `ahead` that are of `kind`,
/// up to `limit`.
fn following_units(ahead: &[Instruction], kind: Discriminant<Instruction>, limit: usize) -> usize {
    let mut units = 0;
    for next in ahead {
        if units >= limit || std::mem::discriminant(next) != kind {
            break;
        }
        units += next.units();
    }
    units.min(limit)
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
