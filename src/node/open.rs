//! Opening the node's consumer: an ordered consumer (no server-side state
//! to clean up) from the next sequence to apply. While the server takes
//! longer than [`CREATE_PATIENCE`] to answer, the node applies what waits
//! by reading directly (`direct`), so a creation that will never be
//! answered (a consumer placed on a cluster peer that died) does not hold
//! up applying until the request times out.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};

use super::run::{Flow, Runner};

/// How long a consumer creation may be pending before the node reads what
/// waits directly (and again after every such interval).
const CREATE_PATIENCE: Duration = Duration::from_secs(1);

/// What opening a consumer gave.
pub(super) enum Opened {
    /// A consumer's message stream.
    Consumer(Box<pull::Ordered>),
    /// No consumer: do this instead.
    Flow(Flow),
}

impl Runner {
    /// Creates an ordered consumer at `next`, unless the stream check asks
    /// for something else first (a cold boot). A consumer that starts
    /// before `next` (messages were read directly meanwhile) is fine: what
    /// it delivers below `next` is skipped.
    pub(super) async fn open_consumer(&mut self) -> Result<Opened, String> {
        let position = self.position().await?;
        if let Some(flow) = self.check_stream(position).await {
            return Ok(Opened::Flow(flow));
        }
        let creating = create_ordered(
            self.js.clone(),
            self.log.stream.clone(),
            self.log.all_subjects(),
            self.next,
        );
        tokio::pin!(creating);
        let start = tokio::time::Instant::now() + CREATE_PATIENCE;
        let mut patience = tokio::time::interval_at(start, CREATE_PATIENCE);
        patience.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                created = &mut creating => return created.map(Opened::Consumer),
                _ = patience.tick() => match self.read_direct().await {
                    Flow::Continue => {}
                    flow => return Ok(Opened::Flow(flow)),
                },
            }
        }
    }
}

/// Creates an ordered consumer from `start` and its message stream; owns
/// what it needs, so the node can go on while it waits.
async fn create_ordered(
    js: jetstream::Context,
    stream: String,
    filter: String,
    start: u64,
) -> Result<Box<pull::Ordered>, String> {
    // No stream-info request: the caller has just read the stream.
    let stream = js
        .get_stream_no_info(&stream)
        .await
        .map_err(|e| format!("opening stream: {e}"))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating consumer: {e}"))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| format!("starting consumer: {e}"))?;
    Ok(Box::new(messages))
}
