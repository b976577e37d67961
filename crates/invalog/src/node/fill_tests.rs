//! Unit tests of the stale-fill guard's window (the node-level race is in
//! tests/it/stale_fill.rs).

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::token::Incarnation;

fn name(s: &str) -> RefresherName {
    RefresherName::new(s).unwrap()
}

fn incarnation(secs: u64) -> Incarnation {
    Incarnation::new(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A guard and a position at `applied` in incarnation 1.
fn setup(capacity: usize) -> (FillGuard, watch::Sender<Position>) {
    let position = watch::Sender::new(Position::starting(incarnation(1), 0, 0));
    let hosted = ["products", "prices", "tags", "other"];
    (FillGuard::new(capacity, hosted), position)
}

fn apply(position: &watch::Sender<Position>, sequence: u64) {
    position.send_modify(|p| p.applied = sequence);
}

/// The node's position: `sequence` in incarnation `of`.
fn at(sequence: u64, of: u64) -> ReadToken {
    ReadToken {
        sequence,
        incarnation: incarnation(of),
    }
}

fn verdict(guard: &FillGuard, ticket: &FillTicket, refresher: &str, key: FillKey) -> FillVerdict {
    match guard.fill_with(ticket, at(u64::MAX, 1), &[(refresher, key)], || ()) {
        Ok(()) => FillVerdict::Fill,
        Err(v) => v,
    }
}

#[test]
fn tickets_round_trip_through_text_and_bad_ones_are_refused() {
    let (guard, position) = setup(8);
    apply(&position, 42);
    let ticket = guard.ticket(&position);
    assert_eq!(ticket.to_string().parse::<FillTicket>(), Ok(ticket));
    assert_eq!(ticket.position.sequence, 42);
    for bad in [
        "",
        "42@ff",
        "42@ff.",
        "42@ff.xyz",
        "x@ff.1",
        "42.1",
        "42@ff.11111111111111111",
    ] {
        let error = bad.parse::<FillTicket>().unwrap_err().to_string();
        assert!(error.contains("bad fill ticket"), "{bad}: {error}");
    }
}

#[test]
fn only_a_change_of_the_entry_after_the_ticket_refuses_the_fill() {
    let (guard, position) = setup(64);
    guard.record(1, &name("products"), &[Instruction::RefreshIds(vec![7])]);
    apply(&position, 1);
    let ticket = guard.ticket(&position);
    let products = |key| verdict(&guard, &ticket, "products", key);
    assert_eq!(
        products(FillKey::Id(7)),
        FillVerdict::Fill,
        "the change came before the ticket"
    );
    guard.record(2, &name("products"), &[Instruction::RemoveIds(vec![7])]);
    guard.record(
        3,
        &name("tags"),
        &[Instruction::RefreshKeys(vec!["8".into()])],
    );
    let changed = FillVerdict::Changed {
        sequence: 2,
        whole_refresher: false,
    };
    assert_eq!(products(FillKey::Id(7)), changed);
    assert_eq!(products(FillKey::Id(8)), FillVerdict::Fill, "another key");
    assert_eq!(
        products(FillKey::Key("7")),
        FillVerdict::Fill,
        "a key is not an id"
    );
    assert!(!verdict(&guard, &ticket, "tags", FillKey::Key("8")).may_fill());
    assert_eq!(
        verdict(&guard, &ticket, "other", FillKey::Id(7)),
        FillVerdict::Fill
    );
    let uuid = Uuid::from_u128(5);
    guard.record(
        4,
        &name("products"),
        &[Instruction::RemoveUuids(vec![uuid])],
    );
    assert!(!products(FillKey::Uuid(uuid)).may_fill());
}

#[test]
fn whole_refresher_instructions_refuse_every_key_of_their_refresher() {
    for (sequence, instruction) in [
        (2, Instruction::RefreshAll),
        (3, Instruction::RefreshJson(serde_json::json!({"any": 1}))),
        (4, Instruction::RefreshPayloads(vec![serde_json::json!(1)])),
    ] {
        let (guard, position) = setup(64);
        apply(&position, 1);
        let ticket = guard.ticket(&position);
        guard.record(sequence, &name("products"), &[instruction]);
        let whole = FillVerdict::Changed {
            sequence,
            whole_refresher: true,
        };
        assert_eq!(verdict(&guard, &ticket, "products", FillKey::Id(9)), whole);
        assert_eq!(
            verdict(&guard, &ticket, "prices", FillKey::Id(9)),
            FillVerdict::Fill
        );
    }
    let (guard, position) = setup(64);
    let ticket = guard.ticket(&position);
    guard.record_all(1, &name("products"));
    assert!(
        !verdict(&guard, &ticket, "products", FillKey::Key("k")).may_fill(),
        "an escalation"
    );
}

#[test]
fn a_ticket_older_than_the_window_is_never_safe() {
    let (guard, position) = setup(4);
    let old = guard.ticket(&position);
    for sequence in 1..=6 {
        guard.record(
            sequence,
            &name("products"),
            &[Instruction::RefreshIds(vec![sequence as i64])],
        );
        apply(&position, sequence);
    }
    // Entries 1 and 2 left the window: a ticket before 2 cannot be answered.
    assert_eq!(
        verdict(&guard, &old, "products", FillKey::Id(100)),
        FillVerdict::Unknown(Unknowable::OlderThanWindow { oldest: 2 })
    );
    let recent = guard.ticket(&position);
    assert_eq!(
        verdict(&guard, &recent, "products", FillKey::Id(100)),
        FillVerdict::Fill
    );
    // A batch larger than the window is one entry for the whole refresher.
    guard.record(
        7,
        &name("products"),
        &[Instruction::RefreshIds((0..100).collect())],
    );
    assert_eq!(
        verdict(&guard, &recent, "products", FillKey::Id(1_000)),
        FillVerdict::Changed {
            sequence: 7,
            whole_refresher: true
        }
    );
}

#[test]
fn resets_and_other_incarnations_refuse_every_ticket_before_and_during_them() {
    let (guard, position) = setup(8);
    let before = guard.ticket(&position);
    guard.begin_reset();
    let during = guard.ticket(&position);
    guard.end_reset();
    let after = guard.ticket(&position);
    let unknown = |t: &FillTicket| verdict(&guard, t, "products", FillKey::Id(1));
    assert_eq!(
        unknown(&before),
        FillVerdict::Unknown(Unknowable::OtherEpoch)
    );
    assert_eq!(
        unknown(&during),
        FillVerdict::Unknown(Unknowable::TakenDuringReset)
    );
    assert_eq!(unknown(&after), FillVerdict::Fill);
    assert_eq!(
        verdict(&guard, &after, "product", FillKey::Id(1)),
        FillVerdict::Unknown(Unknowable::NotHosted),
        "a refresher this node does not host"
    );
    let entries = [("products", FillKey::Id(1))];
    let other = guard.fill_with(&after, at(5, 2), &entries, || ());
    assert_eq!(other, Err(FillVerdict::Unknown(Unknowable::OtherEpoch)));
    let mut future = after;
    future.position.sequence = 6;
    let forged = guard.fill_with(&future, at(5, 1), &entries, || ());
    assert_eq!(
        forged,
        Err(FillVerdict::Unknown(Unknowable::OtherEpoch)),
        "a sequence the node has not applied is none of its tickets"
    );
    let (restarted, _) = setup(8);
    assert_ne!(
        restarted.ticket(&position).epoch,
        after.epoch,
        "a restarted node does not accept the tickets of its previous start"
    );
}

/// Not a benchmark: prints what recording costs on the apply path, so a
/// change that makes it expensive is noticed (run with `--nocapture`).
#[test]
fn recording_is_cheap() {
    let (guard, position) = setup(4096);
    let products = name("products");
    let batch = [Instruction::RefreshIds(vec![42])];
    let rounds = 200_000u64;
    let started = Instant::now();
    for sequence in 1..=rounds {
        guard.record(sequence, &products, &batch);
    }
    let per_record = started.elapsed().as_nanos() / u128::from(rounds);
    apply(&position, rounds - 1);
    let ticket = guard.ticket(&position);
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(verdict(&guard, &ticket, "products", FillKey::Id(7)));
    }
    let per_check = started.elapsed().as_nanos() / u128::from(rounds);
    println!("fill guard: {per_record} ns per one-id record, {per_check} ns per check");
    assert!(!verdict(&guard, &ticket, "products", FillKey::Id(42)).may_fill());
}
