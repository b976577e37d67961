//! The instruction model: plain Rust types for refreshers, instructions and
//! the batches that carry them. Nothing here knows serde; `wire` converts
//! these types to and from the bytes stored in the stream.

use std::fmt;
use std::time::SystemTime;

use uuid::Uuid;

/// Why a name or id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: {why}")]
pub struct InvalidName {
    /// Which kind of name (`refresher name`, `node id`, ...).
    pub what: &'static str,
    /// The value as given (names are never secrets).
    pub value: String,
    /// What rule it broke.
    pub why: &'static str,
}

/// Checks a NATS-subject-safe token: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
pub(crate) fn check_token(what: &'static str, value: &str) -> Result<(), InvalidName> {
    let fail = |why| {
        Err(InvalidName {
            what,
            value: value.to_owned(),
            why,
        })
    };
    if value.is_empty() {
        return fail("it is empty");
    }
    if value.len() > 64 {
        return fail("it is longer than 64 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return fail("use only letters, digits, `_` and `-`");
    }
    Ok(())
}

macro_rules! token_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
                let value = value.into();
                check_token($what, &value)?;
                Ok(Self(value))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

token_type!(
    /// A refresher's name: a subject-safe token, the last token of its subject
    /// `<prefix>.<name>`.
    RefresherName,
    "refresher name"
);

token_type!(
    /// A node's stable identity, chosen by configuration (never derived from
    /// the process or the machine). It keys the node's stored sequence.
    NodeId,
    "node id"
);

/// A refresher's identity: a stable UUID and a subject-safe name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefresherDef {
    /// Stable identity; survives renames in the history.
    pub id: Uuid,
    /// Subject-safe name.
    pub name: RefresherName,
}

impl RefresherDef {
    /// Builds a definition from a UUID and a name, validating the name.
    pub fn new(id: Uuid, name: &str) -> Result<Self, InvalidName> {
        Ok(Self {
            id,
            name: RefresherName::new(name)?,
        })
    }
}

/// One invalidation instruction for one refresher.
///
/// Id lists are "units": a batch of at most N instructions counts each id,
/// uuid, key and payload as one unit, and `RefreshAll`/`RefreshJson` as one.
#[derive(Debug, Clone, PartialEq)]
pub enum Instruction {
    /// Refresh everything this refresher caches.
    RefreshAll,
    /// Refresh the entries with these integer ids.
    RefreshIds(Vec<i64>),
    /// Refresh the entries with these UUIDs.
    RefreshUuids(Vec<Uuid>),
    /// Refresh the entries with these string keys.
    RefreshKeys(Vec<String>),
    /// Remove the entries with these integer ids.
    RemoveIds(Vec<i64>),
    /// Remove the entries with these UUIDs.
    RemoveUuids(Vec<Uuid>),
    /// Remove the entries with these string keys.
    RemoveKeys(Vec<String>),
    /// Refresh by a free-form JSON document (Umbraco's `Refresh(string json)`).
    RefreshJson(serde_json::Value),
    /// Refresh by typed payloads, carried as JSON values and typed again by a
    /// [`crate::PayloadRefresher`] on the receiving node.
    RefreshPayloads(Vec<serde_json::Value>),
}

impl Instruction {
    /// How many units this instruction counts for batching.
    pub fn units(&self) -> usize {
        match self {
            Instruction::RefreshAll | Instruction::RefreshJson(_) => 1,
            Instruction::RefreshIds(v) | Instruction::RemoveIds(v) => v.len(),
            Instruction::RefreshUuids(v) | Instruction::RemoveUuids(v) => v.len(),
            Instruction::RefreshKeys(v) | Instruction::RemoveKeys(v) => v.len(),
            Instruction::RefreshPayloads(v) => v.len(),
        }
    }

    /// The wire name of this instruction's kind (`refresh_ids`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Instruction::RefreshAll => "refresh_all",
            Instruction::RefreshIds(_) => "refresh_ids",
            Instruction::RefreshUuids(_) => "refresh_uuids",
            Instruction::RefreshKeys(_) => "refresh_keys",
            Instruction::RemoveIds(_) => "remove_ids",
            Instruction::RemoveUuids(_) => "remove_uuids",
            Instruction::RemoveKeys(_) => "remove_keys",
            Instruction::RefreshJson(_) => "refresh_json",
            Instruction::RefreshPayloads(_) => "refresh_payloads",
        }
    }
}

impl fmt::Display for Instruction {
    /// A short human description: `refresh_ids [1, 2, 3]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
            const SHOWN: usize = 8;
            f.write_str("[")?;
            for (i, item) in items.iter().take(SHOWN).enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")?;
            }
            if items.len() > SHOWN {
                write!(f, ", … {} more", items.len() - SHOWN)?;
            }
            f.write_str("]")
        }
        write!(f, "{}", self.kind())?;
        match self {
            Instruction::RefreshAll => Ok(()),
            Instruction::RefreshIds(v) | Instruction::RemoveIds(v) => {
                f.write_str(" ")?;
                list(f, v)
            }
            Instruction::RefreshUuids(v) | Instruction::RemoveUuids(v) => {
                f.write_str(" ")?;
                list(f, v)
            }
            Instruction::RefreshKeys(v) | Instruction::RemoveKeys(v) => {
                f.write_str(" ")?;
                list(f, v)
            }
            Instruction::RefreshJson(v) => write!(f, " {v}"),
            Instruction::RefreshPayloads(v) => {
                f.write_str(" ")?;
                list(f, v)
            }
        }
    }
}

/// Who and why: provenance carried by every batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The user or service on whose behalf the change was made.
    pub actor: Option<String>,
    /// Free text: why the change was made.
    pub reason: Option<String>,
    /// A distributed-tracing id (for example a W3C trace id).
    pub trace_id: Option<String>,
}

/// One message of the log: one batch of instructions for one refresher.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Unique id of this batch; also its `Nats-Msg-Id`.
    pub id: Uuid,
    /// Node (or service) that published it.
    pub origin: String,
    /// When it was published (publisher's clock).
    pub published_at: SystemTime,
    /// The refresher it is for.
    pub refresher: RefresherDef,
    /// Who and why.
    pub provenance: Provenance,
    /// True when the origin node already applied these instructions locally
    /// (instance refreshers); the origin then skips them when it replays.
    pub applied_at_origin: bool,
    /// The instructions, applied in order.
    pub instructions: Vec<Instruction>,
}

impl Batch {
    /// Total units in this batch (see [`Instruction::units`]).
    pub fn units(&self) -> usize {
        self.instructions.iter().map(Instruction::units).sum()
    }
}

/// Name of the reserved refresher of `invalog probe`'s canaries, which
/// every node hosts built in (subject `<prefix>._probe`).
pub const PROBE_REFRESHER: &str = "_probe";

/// Fixed id of the reserved probe refresher.
pub const PROBE_REFRESHER_ID: Uuid = Uuid::from_u128(0x1a7a_10c0_0000_4000_8000_0000_0000_b0b0);

/// The reserved probe refresher's definition.
pub fn probe_refresher() -> RefresherDef {
    RefresherDef {
        id: PROBE_REFRESHER_ID,
        name: RefresherName::new(PROBE_REFRESHER).expect("a valid name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_accept_safe_names_and_refuse_the_rest() {
        assert!(RefresherName::new("content").is_ok());
        assert!(RefresherName::new("media_v2-x").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65), "é"] {
            let err = RefresherName::new(bad).unwrap_err();
            assert_eq!(err.what, "refresher name", "{bad}");
        }
        let err = NodeId::new("web 1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid node id `web 1`: use only letters, digits, `_` and `-`"
        );
    }

    #[test]
    fn units_count_ids_and_display_is_bounded() {
        let i = Instruction::RefreshIds((1..=10).collect());
        assert_eq!(i.units(), 10);
        assert_eq!(
            i.to_string(),
            "refresh_ids [1, 2, 3, 4, 5, 6, 7, 8, … 2 more]"
        );
        assert_eq!(Instruction::RefreshAll.units(), 1);
        assert_eq!(Instruction::RefreshAll.to_string(), "refresh_all");
    }
}
