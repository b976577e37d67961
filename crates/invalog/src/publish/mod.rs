//! The publisher: Umbraco's `DistributedCache` API on the log. Each call
//! returns once JetStream acknowledged the message(s), with the stream
//! sequence: a read-your-writes token any node can wait for. A
//! [`UnitOfWork`] collects instructions for several refreshers, removes
//! duplicates and splits them into messages of at most `max_units` units;
//! its messages are sent pipelined and their acknowledgements awaited
//! together. A message whose acknowledgement times out is sent again with the
//! same batch id (`Nats-Msg-Id`), so the stream stores it once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use uuid::Uuid;

use crate::batch::plan_messages;
use crate::model::{Batch, Instruction, Provenance, RefresherDef, RefresherName};
use crate::refresher::{InstanceRefresher, RefreshError};
use crate::stream::LogSettings;
use crate::token::{Incarnation, ReadToken};
use crate::wire;
use crate::wire::encoder::BatchParts;

mod groups;
mod incarnation;
mod send;

/// What can go wrong when publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// The refresher is not in the publisher's catalog.
    UnknownRefresher,
    /// One instruction alone is larger than the stream's message limit.
    TooLarge,
    /// A payload could not be serialized to JSON.
    Serialize,
    /// The local instance refresher failed (nothing was published).
    LocalRefresh,
    /// No acknowledgement came, even after retries.
    TimedOut,
    /// The stream does not exist (or no server answered).
    StreamNotFound,
    /// JetStream refused the message.
    Rejected,
}

/// Why publishing failed. Messages of a unit of work that the stream
/// acknowledged — before the failure, or sent before it and acknowledged
/// after — are listed in `published`.
#[derive(Debug)]
pub struct PublishError {
    /// What kind of failure.
    pub kind: PublishErrorKind,
    message: String,
    /// The underlying error (async-nats's, serde's, the local refresher's),
    /// when there is one: [`std::error::Error::source`].
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// Messages the stream acknowledged although the call failed.
    pub published: Vec<PublishedMessage>,
    /// The stream incarnation `published` is in, when known.
    pub incarnation: Option<Incarnation>,
}

impl PublishError {
    /// `UnknownRefresher` for `name`: "unknown refresher `contnet`; did you
    /// mean `content`?", or the list of `known` names when none is close.
    pub fn unknown_refresher<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        let hint = crate::suggest::did_you_mean(name, known, "refreshers");
        Self::new(
            PublishErrorKind::UnknownRefresher,
            format!("unknown refresher `{name}`; {hint}"),
        )
    }

    /// The error with `source` as its cause; its text is not repeated in
    /// this error's own message (print the chain, as `{:#}` of anyhow does).
    fn caused_by(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// This error's message followed by each of its causes, separated by
    /// `": "`: for logs, which print only the message otherwise.
    pub fn chain(&self) -> String {
        let mut text = self.message.clone();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }

    fn new(kind: PublishErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
            published: Vec::new(),
            incarnation: None,
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedMessage {
    /// The batch id (`Nats-Msg-Id`).
    pub batch_id: Uuid,
    /// The refresher.
    pub refresher: RefresherName,
    /// Its stream sequence.
    pub sequence: u64,
    /// True when the stream already had this batch id (a retry).
    pub duplicate: bool,
}

/// What a publish stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The stored messages, in publish order.
    pub messages: Vec<PublishedMessage>,
    /// The stream incarnation they were stored in, as the publisher knows
    /// it (`None` when the stream's info could not be read; see `incarnation`).
    pub incarnation: Option<Incarnation>,
}

impl Receipt {
    /// The highest sequence stored, `None` when there was nothing to publish
    /// (an empty id list is a no-op). Prefer [`Receipt::token`]: a sequence
    /// alone cannot tell one incarnation of the stream from another.
    pub fn sequence(&self) -> Option<u64> {
        self.messages.iter().map(|m| m.sequence).max()
    }

    /// The read-your-writes token: the highest sequence stored and the
    /// stream incarnation it is in; wait for it with `Node::wait_token` or
    /// the agent's `/applied?token=`. `None` when nothing was published or
    /// the incarnation is unknown.
    pub fn token(&self) -> Option<ReadToken> {
        Some(ReadToken {
            sequence: self.sequence()?,
            incarnation: self.incarnation?,
        })
    }
}

/// Publisher settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherSettings {
    /// Origin written in every batch (usually the node id).
    pub origin: String,
    /// Most units per message (Umbraco: 1000).
    pub max_units_per_message: usize,
    /// How long to wait for one acknowledgement before sending again (a
    /// reconnect of the client ends the wait at once).
    pub ack_timeout: Duration,
    /// How many times a message is sent before giving up.
    pub attempts: u32,
}

impl PublisherSettings {
    /// Defaults for an origin: 1000 units per message, 5 s acks, 5 attempts.
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            max_units_per_message: 1000,
            ack_timeout: Duration::from_secs(5),
            attempts: 5,
        }
    }
}

/// Publishes instructions to the log. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    /// The client's statistics, kept once: `connects` tells a reconnect
    /// (`send.rs`) without cloning the client per message.
    connection: Arc<async_nats::client::Statistics>,
    log: LogSettings,
    settings: PublisherSettings,
    catalog: HashMap<String, RefresherDef>,
    /// The stream incarnation receipts name (`incarnation`).
    incarnation: incarnation::Known,
}

impl Publisher {
    /// A publisher for the refreshers in `catalog`; publishing to any other
    /// name is an error.
    pub fn new(
        js: jetstream::Context,
        log: LogSettings,
        settings: PublisherSettings,
        catalog: impl IntoIterator<Item = RefresherDef>,
    ) -> Self {
        let catalog = catalog
            .into_iter()
            .map(|def| (def.name.to_string(), def))
            .collect();
        Self {
            inner: Arc::new(Inner {
                connection: js.client().statistics(),
                js,
                log,
                settings,
                catalog,
                incarnation: incarnation::Known::default(),
            }),
        }
    }

    /// The refresher named `name`, or `UnknownRefresher`.
    pub fn refresher(&self, name: &str) -> Result<&RefresherDef, PublishError> {
        self.inner.catalog.get(name).ok_or_else(|| {
            PublishError::unknown_refresher(name, self.inner.catalog.keys().map(String::as_str))
        })
    }

    /// Starts a unit of work (one web request, one job).
    pub fn unit_of_work(&self) -> UnitOfWork {
        UnitOfWork {
            publisher: self.clone(),
            provenance: Provenance::default(),
            pending: Vec::new(),
            error: None,
        }
    }

    /// Publishes instructions for one refresher with the given provenance.
    pub async fn publish(
        &self,
        refresher: &str,
        instructions: Vec<Instruction>,
        provenance: &Provenance,
    ) -> Result<Receipt, PublishError> {
        let mut uow = self.unit_of_work().provenance(provenance.clone());
        uow.add(refresher, instructions);
        uow.commit().await
    }

    /// Publishes many independent groups of instructions at once, pipelined:
    /// each `(refresher, instructions)` group becomes its own message(s)
    /// (de-duplicated and split within the group only, never merged with
    /// another group), all are sent before any acknowledgement is awaited,
    /// and the receipt lists them in the order given. For bulk producers
    /// (imports, backfills) that would otherwise await one acknowledgement
    /// per call. An unknown refresher anywhere publishes nothing.
    pub async fn publish_many<S: AsRef<str>>(
        &self,
        groups: impl IntoIterator<Item = (S, Vec<Instruction>)>,
        provenance: &Provenance,
    ) -> Result<Receipt, PublishError> {
        let groups = groups
            .into_iter()
            .map(|(refresher, instructions)| {
                Ok((self.refresher(refresher.as_ref())?, instructions))
            })
            .collect::<Result<Vec<_>, PublishError>>()?;
        self.send_groups(groups, provenance, false).await
    }

    /// Refreshes everything in `refresher`'s cache on every node.
    pub async fn refresh_all(&self, refresher: &str) -> Result<Receipt, PublishError> {
        self.one(refresher, Instruction::RefreshAll).await
    }

    /// Refreshes entries by integer id.
    pub async fn refresh_ids(&self, refresher: &str, ids: &[i64]) -> Result<Receipt, PublishError> {
        self.one(refresher, Instruction::RefreshIds(ids.to_vec()))
            .await
    }

    /// Refreshes entries by UUID.
    pub async fn refresh_uuids(
        &self,
        refresher: &str,
        ids: &[Uuid],
    ) -> Result<Receipt, PublishError> {
        self.one(refresher, Instruction::RefreshUuids(ids.to_vec()))
            .await
    }

    /// Refreshes entries by string key.
    pub async fn refresh_keys(
        &self,
        refresher: &str,
        keys: &[&str],
    ) -> Result<Receipt, PublishError> {
        let keys = keys.iter().map(|k| (*k).to_owned()).collect();
        self.one(refresher, Instruction::RefreshKeys(keys)).await
    }

    /// Removes entries by integer id.
    pub async fn remove_ids(&self, refresher: &str, ids: &[i64]) -> Result<Receipt, PublishError> {
        self.one(refresher, Instruction::RemoveIds(ids.to_vec()))
            .await
    }

    /// Removes entries by UUID.
    pub async fn remove_uuids(
        &self,
        refresher: &str,
        ids: &[Uuid],
    ) -> Result<Receipt, PublishError> {
        self.one(refresher, Instruction::RemoveUuids(ids.to_vec()))
            .await
    }

    /// Removes entries by string key.
    pub async fn remove_keys(
        &self,
        refresher: &str,
        keys: &[&str],
    ) -> Result<Receipt, PublishError> {
        let keys = keys.iter().map(|k| (*k).to_owned()).collect();
        self.one(refresher, Instruction::RemoveKeys(keys)).await
    }

    /// Refreshes by a JSON document.
    pub async fn refresh_json(
        &self,
        refresher: &str,
        json: serde_json::Value,
    ) -> Result<Receipt, PublishError> {
        self.one(refresher, Instruction::RefreshJson(json)).await
    }

    /// Refreshes by typed payloads; a [`crate::PayloadRefresher`] on every
    /// node receives them typed again.
    pub async fn refresh_payloads<P: Serialize>(
        &self,
        refresher: &str,
        payloads: &[P],
    ) -> Result<Receipt, PublishError> {
        self.one(refresher, payloads_instruction(payloads)?).await
    }

    /// Applies instances with the local instance refresher, then publishes
    /// their ids to the other nodes (marked as applied at this origin).
    pub async fn refresh_instances<R: InstanceRefresher>(
        &self,
        refresher: &str,
        local: &R,
        instances: &[R::Instance],
    ) -> Result<Receipt, PublishError> {
        local
            .refresh_instances(instances)
            .await
            .map_err(local_failed)?;
        let ids = instances.iter().map(|i| local.id_of(i)).collect();
        self.publish_applied(refresher, Instruction::RefreshIds(ids))
            .await
    }

    /// Removes instances with the local instance refresher, then publishes
    /// their ids to the other nodes.
    pub async fn remove_instances<R: InstanceRefresher>(
        &self,
        refresher: &str,
        local: &R,
        instances: &[R::Instance],
    ) -> Result<Receipt, PublishError> {
        local
            .remove_instances(instances)
            .await
            .map_err(local_failed)?;
        let ids = instances.iter().map(|i| local.id_of(i)).collect();
        self.publish_applied(refresher, Instruction::RemoveIds(ids))
            .await
    }

    async fn publish_applied(
        &self,
        refresher: &str,
        instruction: Instruction,
    ) -> Result<Receipt, PublishError> {
        let def = self.refresher(refresher)?;
        self.send_groups(vec![(def, vec![instruction])], &Provenance::default(), true)
            .await
    }

    async fn one(
        &self,
        refresher: &str,
        instruction: Instruction,
    ) -> Result<Receipt, PublishError> {
        self.publish(refresher, vec![instruction], &Provenance::default())
            .await
    }

    /// The batches (messages) of one refresher's instructions: de-duplicated
    /// and split at `max_units_per_message`.
    fn batches<'a>(
        &'a self,
        def: &'a RefresherDef,
        instructions: Vec<Instruction>,
        provenance: &'a Provenance,
        applied_at_origin: bool,
    ) -> impl Iterator<Item = Batch> + 'a {
        self.plan(instructions)
            .map(move |instructions| self.batch(def, instructions, provenance, applied_at_origin))
    }

    /// The instructions of each message: de-duplicated and split at
    /// `max_units_per_message`.
    fn plan(&self, instructions: Vec<Instruction>) -> impl Iterator<Item = Vec<Instruction>> {
        // One instruction of one unit has nothing to de-duplicate or split:
        // `plan_messages` would return it unchanged (a bulk-publish fast
        // path, without even a list of messages to allocate).
        let (one, many) = if instructions.len() == 1 && instructions[0].units() == 1 {
            (Some(instructions), Vec::new())
        } else {
            let max = self.inner.settings.max_units_per_message;
            (None, plan_messages(instructions, max))
        };
        one.into_iter().chain(many)
    }

    /// A new batch (new id, published now) of `instructions`.
    fn batch(
        &self,
        def: &RefresherDef,
        instructions: Vec<Instruction>,
        provenance: &Provenance,
        applied_at_origin: bool,
    ) -> Batch {
        Batch {
            id: Uuid::now_v7(),
            origin: self.inner.settings.origin.clone(),
            published_at: SystemTime::now(),
            refresher: def.clone(),
            provenance: provenance.clone(),
            applied_at_origin,
            instructions,
        }
    }

    /// Encodes a batch at the end of `buffer` and moves it out as the
    /// message body, halving a batch that is over the stream's size limit.
    fn encode_within_limit(
        &self,
        batch: Batch,
        buffer: &mut BytesMut,
        out: &mut Vec<(Batch, Bytes)>,
    ) -> Result<(), PublishError> {
        buffer.clear();
        wire::encoder::encode_into(BatchParts::of(&batch), buffer);
        let limit = self.inner.log.max_message_size as usize;
        if buffer.len() <= limit.saturating_sub(512) {
            out.push((batch, buffer.split().freeze()));
            return Ok(());
        }
        let size = buffer.len();
        buffer.clear();
        let units = batch.units();
        if units <= 1 {
            return Err(PublishError::new(
                PublishErrorKind::TooLarge,
                format!(
                    "one `{}` instruction for `{}` encodes to {size} bytes, over the stream's max_message_size of {limit}; send smaller payloads or raise `max_message_size`",
                    batch.instructions.first().map_or("?", Instruction::kind),
                    batch.refresher.name,
                ),
            ));
        }
        for half in plan_messages(batch.instructions.clone(), units.div_ceil(2)) {
            let part = Batch {
                id: Uuid::now_v7(),
                instructions: half,
                ..batch.clone()
            };
            self.encode_within_limit(part, buffer, out)?;
        }
        Ok(())
    }
}

fn local_failed(e: RefreshError) -> PublishError {
    PublishError::new(
        PublishErrorKind::LocalRefresh,
        "local instance refresh failed, nothing was published",
    )
    .caused_by(e.into_source())
}

fn payloads_instruction<P: Serialize>(payloads: &[P]) -> Result<Instruction, PublishError> {
    payloads
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map(Instruction::RefreshPayloads)
        .map_err(|e| {
            PublishError::new(
                PublishErrorKind::Serialize,
                "payload does not serialize to JSON",
            )
            .caused_by(e)
        })
}

/// Instructions collected during one unit of work (a web request, a job),
/// published together by [`UnitOfWork::commit`]: grouped by refresher,
/// de-duplicated, split into messages of at most `max_units` units, sent
/// pipelined.
pub struct UnitOfWork {
    publisher: Publisher,
    provenance: Provenance,
    pending: Vec<(RefresherDef, Vec<Instruction>)>,
    error: Option<PublishError>,
}

impl UnitOfWork {
    /// Sets who and why for every message of this unit of work.
    pub fn provenance(mut self, provenance: Provenance) -> Self {
        self.provenance = provenance;
        self
    }

    /// Adds instructions for `refresher`. An unknown refresher is reported by
    /// `commit`, which then publishes nothing.
    pub fn add(&mut self, refresher: &str, instructions: Vec<Instruction>) -> &mut Self {
        match self.publisher.refresher(refresher) {
            Ok(def) => match self.pending.iter_mut().find(|(d, _)| d.name == def.name) {
                Some((_, list)) => list.extend(instructions),
                None => self.pending.push((def.clone(), instructions)),
            },
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Adds typed payloads for `refresher`.
    pub fn add_payloads<P: Serialize>(&mut self, refresher: &str, payloads: &[P]) -> &mut Self {
        match payloads_instruction(payloads) {
            Ok(instruction) => self.add(refresher, vec![instruction]),
            Err(e) => {
                self.error.get_or_insert(e);
                self
            }
        }
    }

    /// Units collected so far (before de-duplication).
    pub fn units(&self) -> usize {
        self.pending
            .iter()
            .flat_map(|(_, l)| l)
            .map(Instruction::units)
            .sum()
    }

    /// Publishes everything and waits for every acknowledgement.
    pub async fn commit(self) -> Result<Receipt, PublishError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let (defs, lists): (Vec<RefresherDef>, Vec<Vec<Instruction>>) =
            self.pending.into_iter().unzip();
        let groups = defs.iter().zip(lists).collect();
        self.publisher
            .send_groups(groups, &self.provenance, false)
            .await
    }
}
