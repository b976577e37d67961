//! Tests of `plan_messages`, among them an equivalence property against the
//! straightforward implementation it replaced (`reference`): one atom per
//! unit, a hash map of last positions, runs regrouped atom by atom.

use super::*;
use proptest::prelude::*;
use serde_json::json;
use Instruction::*;

#[test]
fn keeps_the_last_occurrence_in_order() {
    let plan = plan_messages(
        vec![
            RefreshIds(vec![1, 2, 1]),
            RemoveIds(vec![2]),
            RefreshIds(vec![2, 3]),
        ],
        1000,
    );
    assert_eq!(
        plan,
        vec![vec![
            RefreshIds(vec![1]),
            RemoveIds(vec![2]),
            RefreshIds(vec![2, 3])
        ]]
    );
}

#[test]
fn refresh_all_covers_what_came_before() {
    let plan = plan_messages(
        vec![
            RefreshIds(vec![1]),
            RefreshAll,
            RefreshKeys(vec!["a".into()]),
            RefreshAll,
            RemoveUuids(vec![Uuid::nil()]),
        ],
        1000,
    );
    assert_eq!(plan, vec![vec![RefreshAll, RemoveUuids(vec![Uuid::nil()])]]);
}

#[test]
fn splits_at_the_unit_limit() {
    let plan = plan_messages(
        vec![RefreshIds((1..=5).collect()), RefreshJson(json!({"a": 1}))],
        2,
    );
    assert_eq!(
        plan,
        vec![
            vec![RefreshIds(vec![1, 2])],
            vec![RefreshIds(vec![3, 4])],
            vec![RefreshIds(vec![5]), RefreshJson(json!({"a": 1}))],
        ]
    );
    let total: usize = plan.iter().flatten().map(Instruction::units).sum();
    assert_eq!(total, 6);
}

#[test]
fn json_and_payloads_deduplicate_by_value() {
    let plan = plan_messages(
        vec![
            RefreshJson(json!([1])),
            RefreshPayloads(vec![json!({"id": 1}), json!({"id": 2})]),
            RefreshJson(json!([1])),
            RefreshPayloads(vec![json!({"id": 1})]),
        ],
        1000,
    );
    assert_eq!(
        plan,
        vec![vec![
            RefreshPayloads(vec![json!({"id": 2})]),
            RefreshJson(json!([1])),
            RefreshPayloads(vec![json!({"id": 1})]),
        ]]
    );
}

#[test]
fn nothing_in_nothing_out() {
    assert!(plan_messages(vec![], 10).is_empty());
    assert!(plan_messages(vec![RefreshIds(vec![])], 10).is_empty());
}

fn value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (0..4i64).prop_map(|i| json!(i)),
        (0..3i64).prop_map(|i| json!({ "id": i })),
        Just(json!(null)),
    ]
}

/// Small value ranges, so that duplicates are frequent.
fn instruction() -> impl Strategy<Value = Instruction> {
    let ids = || prop::collection::vec(-3..6i64, 0..6);
    let uuids = || prop::collection::vec((0..4u128).prop_map(Uuid::from_u128), 0..4);
    let keys = || prop::collection::vec(r#"[ab"\\]{0,2}"#, 0..4);
    prop_oneof![
        1 => Just(RefreshAll),
        4 => ids().prop_map(RefreshIds),
        3 => ids().prop_map(RemoveIds),
        2 => uuids().prop_map(RefreshUuids),
        2 => uuids().prop_map(RemoveUuids),
        2 => keys().prop_map(RefreshKeys),
        2 => keys().prop_map(RemoveKeys),
        1 => value().prop_map(RefreshJson),
        1 => prop::collection::vec(value(), 0..4).prop_map(RefreshPayloads),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Same messages, same instructions, same order as the implementation
    /// it replaced, for any mix of kinds, duplicates and limits.
    #[test]
    fn plans_like_the_reference(
        instructions in prop::collection::vec(instruction(), 0..12),
        max_units in 0..8usize,
    ) {
        let expected = reference::plan_messages(instructions.clone(), max_units);
        prop_assert_eq!(plan_messages(instructions, max_units), expected);
    }
}

#[test]
fn single_id_instructions_merge_into_one_list_per_message() {
    let input: Vec<Instruction> = (0..250).map(|i| RefreshIds(vec![i])).collect();
    let plan = plan_messages(input, 100);
    let sizes: Vec<Vec<usize>> = plan
        .iter()
        .map(|m| m.iter().map(Instruction::units).collect())
        .collect();
    assert_eq!(sizes, vec![vec![100], vec![100], vec![50]]);
    assert_eq!(plan[2][0], RefreshIds((200..250).collect()));
}

/// The implementation `plan_messages` replaced, kept as the specification
/// of its output.
mod reference {
    use std::collections::HashMap;

    use uuid::Uuid;

    use crate::model::Instruction;

    /// One instruction reduced to a single id (or a whole-refresher action).
    #[derive(Debug, Clone, PartialEq)]
    enum Atom {
        All,
        RefreshId(i64),
        RefreshUuid(Uuid),
        RefreshKey(String),
        RemoveId(i64),
        RemoveUuid(Uuid),
        RemoveKey(String),
        Json(serde_json::Value),
        Payload(serde_json::Value),
    }

    /// The de-duplication identity of an [`Atom`]; the `bool` tells the two
    /// kinds that share a value type apart (remove vs refresh, payload vs JSON).
    #[derive(PartialEq, Eq, Hash)]
    enum Identity<'a> {
        All,
        Id(bool, i64),
        Uuid(bool, Uuid),
        Str(bool, &'a str),
        Json(bool, String),
    }

    impl Atom {
        /// A hashable identity for de-duplication: no allocation for ids and
        /// UUIDs; keys are borrowed; JSON values are compared by their text.
        fn key(&self) -> Identity<'_> {
            match self {
                Atom::All => Identity::All,
                Atom::RefreshId(i) => Identity::Id(false, *i),
                Atom::RemoveId(i) => Identity::Id(true, *i),
                Atom::RefreshUuid(u) => Identity::Uuid(false, *u),
                Atom::RemoveUuid(u) => Identity::Uuid(true, *u),
                Atom::RefreshKey(k) => Identity::Str(false, k),
                Atom::RemoveKey(k) => Identity::Str(true, k),
                Atom::Json(v) => Identity::Json(false, v.to_string()),
                Atom::Payload(v) => Identity::Json(true, v.to_string()),
            }
        }

        /// Whether `next` can join the instruction this atom starts.
        fn same_run(&self, next: &Atom) -> bool {
            matches!(
                (self, next),
                (Atom::RefreshId(_), Atom::RefreshId(_))
                    | (Atom::RefreshUuid(_), Atom::RefreshUuid(_))
                    | (Atom::RefreshKey(_), Atom::RefreshKey(_))
                    | (Atom::RemoveId(_), Atom::RemoveId(_))
                    | (Atom::RemoveUuid(_), Atom::RemoveUuid(_))
                    | (Atom::RemoveKey(_), Atom::RemoveKey(_))
                    | (Atom::Payload(_), Atom::Payload(_))
            )
        }
    }

    fn atoms(instructions: Vec<Instruction>) -> Vec<Atom> {
        let mut out = Vec::new();
        for instruction in instructions {
            match instruction {
                Instruction::RefreshAll => out.push(Atom::All),
                Instruction::RefreshIds(v) => out.extend(v.into_iter().map(Atom::RefreshId)),
                Instruction::RefreshUuids(v) => out.extend(v.into_iter().map(Atom::RefreshUuid)),
                Instruction::RefreshKeys(v) => out.extend(v.into_iter().map(Atom::RefreshKey)),
                Instruction::RemoveIds(v) => out.extend(v.into_iter().map(Atom::RemoveId)),
                Instruction::RemoveUuids(v) => out.extend(v.into_iter().map(Atom::RemoveUuid)),
                Instruction::RemoveKeys(v) => out.extend(v.into_iter().map(Atom::RemoveKey)),
                Instruction::RefreshJson(v) => out.push(Atom::Json(v)),
                Instruction::RefreshPayloads(v) => out.extend(v.into_iter().map(Atom::Payload)),
            }
        }
        out
    }

    /// Regroups a run of atoms of one kind into one instruction.
    fn instruction_of(run: Vec<Atom>) -> Instruction {
        macro_rules! collect {
            ($variant:ident, $instr:ident) => {
                Instruction::$instr(
                    run.into_iter()
                        .map(|a| match a {
                            Atom::$variant(x) => x,
                            _ => unreachable!("a run holds one kind"),
                        })
                        .collect(),
                )
            };
        }
        match &run[0] {
            Atom::All => Instruction::RefreshAll,
            Atom::Json(v) => Instruction::RefreshJson(v.clone()),
            Atom::RefreshId(_) => collect!(RefreshId, RefreshIds),
            Atom::RefreshUuid(_) => collect!(RefreshUuid, RefreshUuids),
            Atom::RefreshKey(_) => collect!(RefreshKey, RefreshKeys),
            Atom::RemoveId(_) => collect!(RemoveId, RemoveIds),
            Atom::RemoveUuid(_) => collect!(RemoveUuid, RemoveUuids),
            Atom::RemoveKey(_) => collect!(RemoveKey, RemoveKeys),
            Atom::Payload(_) => collect!(Payload, RefreshPayloads),
        }
    }

    /// De-duplicates one refresher's instructions and splits them into messages
    /// of at most `max_units` units each (`max_units` of 0 is treated as 1).
    pub(super) fn plan_messages(
        instructions: Vec<Instruction>,
        max_units: usize,
    ) -> Vec<Vec<Instruction>> {
        let max_units = max_units.max(1);
        let mut all = atoms(instructions);
        if let Some(last_all) = all.iter().rposition(|a| *a == Atom::All) {
            all.drain(..last_all);
        }
        let keys: Vec<Identity<'_>> = all.iter().map(Atom::key).collect();
        let mut last_index: HashMap<&Identity<'_>, usize> = HashMap::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            last_index.insert(key, index);
        }
        let keep: Vec<bool> = keys
            .iter()
            .enumerate()
            .map(|(index, key)| last_index[key] == index)
            .collect();
        drop(last_index);
        drop(keys);
        let kept = all
            .into_iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|(atom, _)| atom);

        let mut messages: Vec<Vec<Instruction>> = Vec::new();
        let mut current: Vec<Instruction> = Vec::new();
        let mut units = 0;
        let mut run: Vec<Atom> = Vec::new();
        let flush_run = |run: &mut Vec<Atom>, current: &mut Vec<Instruction>| {
            if !run.is_empty() {
                current.push(instruction_of(std::mem::take(run)));
            }
        };
        for atom in kept {
            if units == max_units {
                flush_run(&mut run, &mut current);
                messages.push(std::mem::take(&mut current));
                units = 0;
            }
            if run.first().is_some_and(|first| !first.same_run(&atom)) {
                flush_run(&mut run, &mut current);
            }
            run.push(atom);
            units += 1;
        }
        flush_run(&mut run, &mut current);
        if !current.is_empty() {
            messages.push(current);
        }
        messages
    }
}
