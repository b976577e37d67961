//! Publishing groups of instructions (one refresher each) as a stream: the
//! groups are planned (de-duplicated, split) first, then each message is
//! encoded and sent before the next one is built, so the client builds
//! message N+1 while nats-server stores message N, instead of encoding every
//! message of a call before sending the first. (Sending in runs of 32 instead
//! measured no better on this 2-core machine: 1b 0.59 and 0.46 of raw against
//! 0.43–0.56 one at a time.)
//!
//! That order must not publish part of a call that is refused, so it is
//! only taken when nothing can be refused after the first send: every
//! refresher is known (checked by the callers before) and no instruction
//! can be over the stream's size limit, which an upper bound of the
//! encoded size of a one-unit message shows without encoding anything
//! ([`envelope_bound`], [`unit_bound`]). Otherwise (free-form JSON, or
//! strings long enough to come near the limit) every message is encoded
//! first, as [`Publisher::send`] does.

use bytes::BytesMut;

use super::send::Subjects;
use super::{PublishError, Publisher, Receipt};
use crate::model::{Instruction, Provenance, RefresherDef};

impl Publisher {
    /// Publishes `groups` pipelined (see the module documentation).
    pub(super) async fn send_groups(
        &self,
        groups: Vec<(&RefresherDef, Vec<Instruction>)>,
        provenance: &Provenance,
        applied_at_origin: bool,
    ) -> Result<Receipt, PublishError> {
        let limit = (self.inner.log.max_message_size as usize).saturating_sub(512);
        let origin = &self.inner.settings.origin;
        let streamable = groups.iter().all(|(def, instructions)| {
            let envelope = envelope_bound(origin, def, provenance);
            instructions
                .iter()
                .all(|i| unit_bound(i).is_some_and(|unit| envelope + unit <= limit))
        });
        if !streamable {
            let batches = groups.into_iter().flat_map(|(def, instructions)| {
                self.batches(def, instructions, provenance, applied_at_origin)
            });
            return self.send(batches).await;
        }
        let mut buffer = BytesMut::with_capacity((groups.len() * 512).clamp(1024, 64 * 1024));
        let mut subjects = Subjects::default();
        let mut encoded = Vec::with_capacity(groups.len());
        let mut in_flight = Vec::with_capacity(groups.len());
        let mut failed = None;
        let planned: Vec<_> = groups
            .into_iter()
            .map(|(def, instructions)| (def, self.plan(instructions)))
            .collect();
        'groups: for (def, messages) in planned {
            for instructions in messages {
                let batch = self.batch(def, instructions, provenance, applied_at_origin);
                let from = encoded.len();
                // Cannot fail given the bound; should it, what was sent is
                // still awaited and reported in the error.
                if let Err(error) = self.encode_within_limit(batch, &mut buffer, &mut encoded) {
                    failed = Some(error);
                    break 'groups;
                }
                for (batch, body) in &encoded[from..] {
                    let subject = subjects.of(self, batch);
                    in_flight.push(self.send_one(subject, batch, body).await);
                }
            }
        }
        self.finish(encoded, in_flight, failed).await
    }
}

/// An upper bound of the encoded size of a message holding one unit of
/// `instruction` (with this envelope), or `None` when it cannot be told
/// without encoding (free-form JSON).
#[cfg(test)]
fn one_unit_bound(
    origin: &str,
    def: &RefresherDef,
    provenance: &Provenance,
    instruction: &Instruction,
) -> Option<usize> {
    Some(envelope_bound(origin, def, provenance) + unit_bound(instruction)?)
}

/// An upper bound of the encoded size of a message without its one
/// instruction.
fn envelope_bound(origin: &str, def: &RefresherDef, provenance: &Provenance) -> usize {
    // The field names, punctuation, format, UUIDs, timestamp (at most 30
    // characters) and `applied_at_origin` of format 1 take under 300 bytes.
    let strings = [
        Some(origin),
        Some(def.name.as_str()),
        provenance.actor.as_deref(),
        provenance.reason.as_deref(),
        provenance.trace_id.as_deref(),
    ];
    300 + strings.iter().flatten().map(|s| escaped(s)).sum::<usize>()
}

/// An upper bound of the encoded size of one unit of `instruction` as the
/// only instruction of a message, `None` for free-form JSON.
fn unit_bound(instruction: &Instruction) -> Option<usize> {
    // `{"kind":"refresh_uuids","uuids":[...]}` and the like: under 40 bytes
    // around the one value.
    Some(
        40 + match instruction {
            Instruction::RefreshAll => 0,
            Instruction::RefreshIds(_) | Instruction::RemoveIds(_) => 20,
            Instruction::RefreshUuids(_) | Instruction::RemoveUuids(_) => 38,
            Instruction::RefreshKeys(keys) | Instruction::RemoveKeys(keys) => {
                keys.iter().map(|k| escaped(k)).max().unwrap_or(0)
            }
            Instruction::RefreshJson(_) | Instruction::RefreshPayloads(_) => return None,
        },
    )
}

/// The most bytes `text` can take as a JSON string: each byte escaped as
/// `\u00XX` at worst, and the quotes.
fn escaped(text: &str) -> usize {
    6 * text.len() + 2
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::model::Batch;

    /// The bound is above the real size of one-unit messages, with the
    /// longest values of each kind and strings that need every escape.
    #[test]
    fn the_bound_is_above_the_encoded_size() {
        let nasty = "\u{0}\"\\\u{1f}".repeat(20);
        let def = RefresherDef::new(Uuid::max(), &"n".repeat(64)).unwrap();
        let provenance = Provenance {
            actor: Some(nasty.clone()),
            reason: Some(nasty.clone()),
            trace_id: Some(nasty.clone()),
        };
        let units = [
            Instruction::RefreshAll,
            Instruction::RefreshIds(vec![i64::MIN]),
            Instruction::RemoveIds(vec![i64::MIN]),
            Instruction::RefreshUuids(vec![Uuid::max()]),
            Instruction::RemoveUuids(vec![Uuid::max()]),
            Instruction::RefreshKeys(vec![nasty.clone()]),
            Instruction::RemoveKeys(vec![nasty.clone()]),
        ];
        for unit in units {
            let batch = Batch {
                id: Uuid::max(),
                origin: nasty.clone(),
                published_at: std::time::SystemTime::UNIX_EPOCH
                    + std::time::Duration::new(253_402_300_799, 999_999_999),
                refresher: def.clone(),
                provenance: provenance.clone(),
                applied_at_origin: true,
                instructions: vec![unit.clone()],
            };
            let size = crate::wire::encode(&batch).len();
            let bound = one_unit_bound(&batch.origin, &def, &provenance, &unit).unwrap();
            assert!(size <= bound, "{unit:?}: {size} > {bound}");
        }
        assert_eq!(
            one_unit_bound("o", &def, &provenance, &Instruction::RefreshJson(1.into())),
            None
        );
    }
}
