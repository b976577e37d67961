//! What a history read asks for: a [`Query`] (sequence and time range,
//! refreshers, an entry, origin, actor, limit, follow) and the client-side
//! half of its filters. The server filters by subject and finds the start;
//! everything that needs the decoded batch — the entry ([`Target`]), origin
//! and actor — is matched here.
//!
//! # What "touched an entry" means
//!
//! A batch touches the entry `X` of its refresher when one of its
//! instructions
//!
//! - lists `X`: `refresh_ids` / `remove_ids` hold the integer `X`,
//!   `refresh_uuids` / `remove_uuids` the UUID `X`, `refresh_keys` /
//!   `remove_keys` the string `X` ([`Touch::Listed`]);
//! - is a `refresh_all`, which refreshes every entry of the refresher
//!   ([`Touch::RefreshAll`]);
//! - is a `refresh_json` or `refresh_payloads` whose JSON holds `X` as a
//!   scalar anywhere inside (the string, or the integer) ([`Touch::InJson`]).
//!   invalog cannot know what a payload means to its refresher, so this is
//!   a best guess that may include false positives, never false negatives
//!   for payloads that carry the id.
//!
//! A message that does not decode also touches every entry
//! ([`Touch::Undecodable`]): nodes answer it with a `refresh_all` of the
//! refresher named by its subject.

use std::time::SystemTime;

use uuid::Uuid;

use crate::model::{Batch, Instruction, RefresherName};

/// Which messages a history read returns. `Query::default()` reads the
/// whole log as it is now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// First sequence (inclusive).
    pub from_seq: Option<u64>,
    /// Last sequence (inclusive).
    pub to_seq: Option<u64>,
    /// Messages the server stored at or after this time.
    pub since: Option<SystemTime>,
    /// Messages the server stored at or before this time.
    pub until: Option<SystemTime>,
    /// Only these refreshers (server-side subject filter); empty: all.
    pub refreshers: Vec<RefresherName>,
    /// Only messages that touched this entry (see the module docs).
    pub target: Option<Target>,
    /// Only batches with this origin (exact match).
    pub origin: Option<String>,
    /// Only batches with this actor (exact match).
    pub actor: Option<String>,
    /// How many matching messages, and which.
    pub limit: Limit,
    /// Keep reading after the end: wait for new messages, forever.
    pub follow: bool,
}

/// How many of the matching messages a read returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Limit {
    /// All of them.
    #[default]
    All,
    /// The first `n`, in log order; the read stops after the `n`-th (even
    /// when following).
    First(usize),
    /// The last `n` up to the end of the log as it was when the read
    /// started, in log order. When following, new messages come after them.
    Last(usize),
}

impl Query {
    /// Whether a decoded (or undecodable) message passes the client-side
    /// filters: target, origin and actor. Sequence, time and refresher are
    /// checked by the reader and the server.
    pub fn matches(&self, batch: &Result<Batch, impl Sized>) -> bool {
        if let Some(target) = &self.target {
            if target.touches(batch).is_none() {
                return false;
            }
        }
        if self.origin.is_none() && self.actor.is_none() {
            return true;
        }
        let Ok(batch) = batch else {
            return false;
        };
        self.origin.as_ref().is_none_or(|o| &batch.origin == o)
            && self
                .actor
                .as_ref()
                .is_none_or(|a| batch.provenance.actor.as_ref() == Some(a))
    }

    /// True when some filter needs the decoded body.
    pub(super) fn filters_bodies(&self) -> bool {
        self.target.is_some() || self.origin.is_some() || self.actor.is_some()
    }
}

/// One cache entry, as the user names it: an integer id, a UUID or a string
/// key. [`Target::parse`] accepts any text and matches every reading of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    int: Option<i64>,
    uuid: Option<Uuid>,
    key: Option<String>,
}

/// How a batch touched a [`Target`]; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// An instruction lists it; `kind` is that instruction's kind (the
    /// last one in the batch that lists it).
    Listed {
        /// `refresh_ids`, `remove_keys`, ...
        kind: &'static str,
    },
    /// A `refresh_all`.
    RefreshAll,
    /// It appears in a `refresh_json` or `refresh_payloads` document.
    InJson,
    /// The message does not decode: nodes refresh everything of its
    /// refresher instead.
    Undecodable,
}

impl Touch {
    /// A stable name for output: `listed`, `refresh_all`, `in_json`,
    /// `undecodable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Touch::Listed { .. } => "listed",
            Touch::RefreshAll => "refresh_all",
            Touch::InJson => "in_json",
            Touch::Undecodable => "undecodable",
        }
    }
}

impl Target {
    /// Any text: it matches integer ids when it is an integer, UUIDs when
    /// it is a UUID (any case), and string keys equal to it, always.
    pub fn parse(text: &str) -> Target {
        Target {
            int: text.parse().ok(),
            uuid: Uuid::try_parse(text).ok(),
            key: Some(text.to_owned()),
        }
    }

    /// Only the integer id `id`.
    pub fn id(id: i64) -> Target {
        Target {
            int: Some(id),
            uuid: None,
            key: None,
        }
    }

    /// Only the UUID `uuid`.
    pub fn uuid(uuid: Uuid) -> Target {
        Target {
            int: None,
            uuid: Some(uuid),
            key: None,
        }
    }

    /// Only the string key `key`.
    pub fn key(key: impl Into<String>) -> Target {
        Target {
            int: None,
            uuid: None,
            key: Some(key.into()),
        }
    }

    /// How `batch` touched this entry, or `None`. The strongest reason wins:
    /// a listed instruction over a `refresh_all` over a JSON mention.
    pub fn touches(&self, batch: &Result<Batch, impl Sized>) -> Option<Touch> {
        let Ok(batch) = batch else {
            return Some(Touch::Undecodable);
        };
        let mut best = None;
        for instruction in &batch.instructions {
            let touch = match instruction {
                Instruction::RefreshAll => Some(Touch::RefreshAll),
                Instruction::RefreshIds(v) | Instruction::RemoveIds(v) => {
                    self.int.filter(|i| v.contains(i)).map(|_| Touch::Listed {
                        kind: instruction.kind(),
                    })
                }
                Instruction::RefreshUuids(v) | Instruction::RemoveUuids(v) => {
                    self.uuid.filter(|u| v.contains(u)).map(|_| Touch::Listed {
                        kind: instruction.kind(),
                    })
                }
                Instruction::RefreshKeys(v) | Instruction::RemoveKeys(v) => self
                    .key
                    .as_ref()
                    .filter(|k| v.contains(k))
                    .map(|_| Touch::Listed {
                        kind: instruction.kind(),
                    }),
                Instruction::RefreshJson(json) => self.in_json(json, 0).then_some(Touch::InJson),
                Instruction::RefreshPayloads(v) => v
                    .iter()
                    .any(|p| self.in_json(p, 0))
                    .then_some(Touch::InJson),
            };
            best = match (best, touch) {
                (_, Some(t @ Touch::Listed { .. })) => Some(t),
                (Some(b @ Touch::Listed { .. }), _) => Some(b),
                (_, Some(Touch::RefreshAll)) => Some(Touch::RefreshAll),
                (b, t) => b.or(t),
            };
        }
        best
    }

    fn in_json(&self, value: &serde_json::Value, depth: usize) -> bool {
        use serde_json::Value;
        // Decoded messages nest at most 127 levels; this bound only guards
        // values built by hand.
        if depth > 200 {
            return false;
        }
        match value {
            Value::Number(n) => self.int.is_some() && n.as_i64() == self.int,
            Value::String(s) => {
                self.key.as_deref() == Some(s.as_str())
                    || (self.uuid.is_some() && Uuid::try_parse(s).ok() == self.uuid)
            }
            Value::Array(items) => items.iter().any(|v| self.in_json(v, depth + 1)),
            Value::Object(map) => map.values().any(|v| self.in_json(v, depth + 1)),
            Value::Null | Value::Bool(_) => false,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.key, self.int, self.uuid) {
            (Some(key), _, _) => f.write_str(key),
            (None, Some(int), _) => write!(f, "{int}"),
            (None, None, Some(uuid)) => write!(f, "{uuid}"),
            (None, None, None) => f.write_str("?"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Provenance, RefresherDef};

    fn batch(instructions: Vec<Instruction>) -> Result<Batch, ()> {
        Ok(Batch {
            id: Uuid::nil(),
            origin: "web-1".into(),
            published_at: SystemTime::UNIX_EPOCH,
            refresher: RefresherDef::new(Uuid::nil(), "content").unwrap(),
            provenance: Provenance {
                actor: Some("ops".into()),
                ..Provenance::default()
            },
            applied_at_origin: false,
            instructions,
        })
    }

    #[test]
    fn targets_match_ids_uuids_keys_refresh_all_and_json() {
        let u = Uuid::from_u128(42);
        let listed = |kind| Some(Touch::Listed { kind });
        let t = Target::parse("42");
        assert_eq!(
            t.touches(&batch(vec![Instruction::RefreshIds(vec![1, 42])])),
            listed("refresh_ids")
        );
        assert_eq!(
            t.touches(&batch(vec![Instruction::RemoveKeys(vec!["42".into()])])),
            listed("remove_keys")
        );
        assert_eq!(
            t.touches(&batch(vec![Instruction::RefreshIds(vec![4, 2])])),
            None
        );
        assert_eq!(
            t.touches(&batch(vec![Instruction::RefreshAll])),
            Some(Touch::RefreshAll)
        );
        let json = Instruction::RefreshPayloads(vec![serde_json::json!({"id": 42})]);
        assert_eq!(t.touches(&batch(vec![json.clone()])), Some(Touch::InJson));
        assert_eq!(Target::key("x").touches(&batch(vec![json])), None);
        // Listed beats refresh_all, whatever the order.
        let both = batch(vec![
            Instruction::RemoveIds(vec![42]),
            Instruction::RefreshAll,
        ]);
        assert_eq!(t.touches(&both), listed("remove_ids"));
        let upper = Target::parse(&u.to_string().to_uppercase());
        assert_eq!(
            upper.touches(&batch(vec![Instruction::RemoveUuids(vec![u])])),
            listed("remove_uuids")
        );
        assert_eq!(
            Target::id(42).touches(&batch(vec![Instruction::RefreshKeys(vec!["42".into()])])),
            None
        );
        assert_eq!(t.touches(&Err::<Batch, ()>(())), Some(Touch::Undecodable));
    }

    #[test]
    fn origin_and_actor_need_a_decoded_batch() {
        let q = Query {
            origin: Some("web-1".into()),
            actor: Some("ops".into()),
            ..Query::default()
        };
        assert!(q.matches(&batch(vec![])));
        assert!(!q.matches(&Err::<Batch, ()>(())));
        let other = Query {
            actor: Some("someone".into()),
            ..Query::default()
        };
        assert!(!other.matches(&batch(vec![])));
        assert!(Query::default().matches(&Err::<Batch, ()>(())));
    }
}
