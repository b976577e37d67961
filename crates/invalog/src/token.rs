//! Read-your-writes tokens. A stream sequence alone names a message only
//! within one incarnation of the stream: a stream deleted and created again
//! numbers its messages from 1 again. A [`ReadToken`] therefore carries the
//! sequence *and* the incarnation (the stream's creation time), written as
//! `<sequence>@<incarnation>`, the incarnation being the creation time in
//! nanoseconds since the Unix epoch, in lowercase hexadecimal — for example
//! `42@18a3c5e2f0b1d400`. A node answers a token of another incarnation with
//! [`TokenCheck::OtherIncarnation`], never with "applied"
//! (docs/http-api.md, `/applied`).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// One incarnation of the stream: its creation time as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation(SystemTime);

impl Incarnation {
    /// The incarnation created at `created` (from the stream's info).
    pub fn new(created: SystemTime) -> Self {
        Self(created)
    }

    /// The stream's creation time.
    pub fn created(&self) -> SystemTime {
        self.0
    }

    fn nanos(&self) -> u128 {
        self.0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    }
}

impl fmt::Display for Incarnation {
    /// Nanoseconds since the epoch, in hexadecimal (the token's second half).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.nanos())
    }
}

impl FromStr for Incarnation {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let bad = || {
            TokenError(format!(
                "bad incarnation `{s}`: expected hexadecimal digits"
            ))
        };
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let nanos = u128::from_str_radix(s, 16).map_err(|_| bad())?;
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
        let created = SystemTime::UNIX_EPOCH
            .checked_add(Duration::new(secs, (nanos % 1_000_000_000) as u32))
            .ok_or_else(bad)?;
        Ok(Self(created))
    }
}

/// A read-your-writes token: a stream sequence in one incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadToken {
    /// The stream sequence of the message.
    pub sequence: u64,
    /// The incarnation it was stored in.
    pub incarnation: Incarnation,
}

impl fmt::Display for ReadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.sequence, self.incarnation)
    }
}

/// Why a token could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

impl TokenError {
    pub(crate) fn new(message: String) -> Self {
        Self(message)
    }
}

impl FromStr for ReadToken {
    type Err = TokenError;

    /// Parses `<sequence>@<incarnation>` (as [`fmt::Display`] writes it).
    fn from_str(s: &str) -> Result<Self, TokenError> {
        let (sequence, incarnation) = s.trim().split_once('@').ok_or_else(|| {
            TokenError(format!(
                "bad token `{s}`: expected `<sequence>@<incarnation>` as a publish returned it, \
                 for example `42@18a3c5e2f0b1d400`"
            ))
        })?;
        let sequence = sequence.parse::<u64>().map_err(|_| {
            TokenError(format!(
                "bad token `{s}`: `{sequence}` is not a stream sequence (a whole number)"
            ))
        })?;
        Ok(Self {
            sequence,
            incarnation: incarnation.parse()?,
        })
    }
}

/// What a node can say about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// The node follows the token's incarnation and has applied its sequence.
    Applied,
    /// The node follows the token's incarnation (or an older one it is about
    /// to leave) and has not applied the sequence yet.
    Pending,
    /// The token belongs to an older incarnation than the one the node
    /// follows: its message is gone with that stream; the node's caches were
    /// refreshed fully since (a cold boot), so whatever it wrote is visible,
    /// but the token proves nothing about the current stream.
    OtherIncarnation,
}

impl TokenCheck {
    /// Checks `token` against a node that follows `incarnation` and has
    /// applied up to `applied` in it.
    pub fn of(token: &ReadToken, incarnation: Incarnation, applied: u64) -> Self {
        if token.incarnation == incarnation {
            if applied >= token.sequence {
                Self::Applied
            } else {
                Self::Pending
            }
        } else if token.incarnation < incarnation {
            Self::OtherIncarnation
        } else {
            // A newer incarnation than the node's: it has not noticed the
            // recreation yet, and will cold boot into it.
            Self::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(nanos: u64) -> Incarnation {
        Incarnation::new(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
    }

    #[test]
    fn tokens_round_trip_through_text() {
        for nanos in [0, 1, 1_764_691_200_123_456_789, u64::MAX] {
            let token = ReadToken {
                sequence: 42,
                incarnation: at(nanos),
            };
            let text = token.to_string();
            assert_eq!(text.parse::<ReadToken>(), Ok(token), "{text}");
        }
        assert_eq!(
            "7@ff".parse::<ReadToken>().unwrap().to_string(),
            "7@ff",
            "short incarnations are fine"
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_the_expected_form() {
        for bad in ["", "42", "@ff", "x@ff", "42@", "42@xyz", "42@-1", "-1@ff"] {
            let error = bad.parse::<ReadToken>().unwrap_err().to_string();
            assert!(error.contains("bad"), "{bad}: {error}");
        }
        let too_long = format!("1@{}", "f".repeat(33));
        assert!(too_long.parse::<ReadToken>().is_err());
        let past_time = format!("1@{}", "f".repeat(32));
        assert!(past_time.parse::<ReadToken>().is_err());
    }

    #[test]
    fn a_token_is_applied_only_in_its_own_incarnation() {
        let (old, new) = (at(1_000), at(2_000));
        let token = |sequence, incarnation| ReadToken {
            sequence,
            incarnation,
        };
        assert_eq!(TokenCheck::of(&token(5, new), new, 5), TokenCheck::Applied);
        assert_eq!(TokenCheck::of(&token(6, new), new, 5), TokenCheck::Pending);
        assert_eq!(
            TokenCheck::of(&token(1, old), new, 60),
            TokenCheck::OtherIncarnation,
            "an old stream's token is not read against the new one"
        );
        assert_eq!(
            TokenCheck::of(&token(1, new), old, 60),
            TokenCheck::Pending,
            "a node still on the old stream waits for its cold boot"
        );
    }
}
