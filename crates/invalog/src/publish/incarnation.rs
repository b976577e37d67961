//! Which incarnation of the stream a publish landed in, for the receipt's
//! read-your-writes token. A JetStream acknowledgement names the stream and
//! the sequence but not the stream's creation time, so the publisher reads
//! the stream's info and keeps it: again when a receipt's sequences are not
//! above every sequence seen so far (the stream may have been created
//! again: its sequences restart at 1), and at least every
//! [`REFRESH_AFTER`]. Within that time of a stream being deleted and created
//! again, a token can still name the old incarnation: nodes on the new one
//! answer it with "another incarnation" (never "applied"); docs/http-api.md
//! says so.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Publisher, Receipt};
use crate::token::Incarnation;

/// How long a known incarnation is used before the stream is read again.
pub(super) const REFRESH_AFTER: Duration = Duration::from_secs(2);

/// The incarnation last read, the highest sequence published in it, and
/// when it was read.
#[derive(Default)]
pub(super) struct Known(Mutex<Option<(Incarnation, u64, Instant)>>);

impl Publisher {
    /// The incarnation `receipt`'s messages are in (`None` for an empty
    /// receipt, or when the stream's info cannot be read).
    pub(super) async fn incarnation_of(&self, receipt: &Receipt) -> Option<Incarnation> {
        let lowest = receipt.messages.iter().map(|m| m.sequence).min()?;
        let highest = receipt.sequence()?;
        {
            let mut known = self.inner.incarnation.0.lock().unwrap();
            if let Some((incarnation, seen, read_at)) = known.as_mut() {
                if lowest > *seen && read_at.elapsed() < REFRESH_AFTER {
                    *seen = highest;
                    return Some(*incarnation);
                }
            }
        }
        let stream = match self.inner.js.get_stream(&self.inner.log.stream).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot read the stream's info: this receipt has no read-your-writes token");
                return None;
            }
        };
        let info = stream.cached_info();
        if info.state.last_sequence < highest {
            // The stream holds fewer messages than were just acknowledged:
            // it was created again after this publish.
            return None;
        }
        let incarnation = Incarnation::new(info.created.into());
        *self.inner.incarnation.0.lock().unwrap() = Some((incarnation, highest, Instant::now()));
        Some(incarnation)
    }
}
