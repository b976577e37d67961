//! Refreshers: the handlers a node runs for its caches, after Umbraco's
//! `ICacheRefresher` family. A [`Refresher`] has per-kind methods whose
//! defaults fall back to a full refresh, so a minimal refresher implements
//! only [`Refresher::refresh_all`]. [`PayloadRefresher`] receives typed
//! payloads; [`InstanceRefresher`] applies object instances locally and sends
//! ids to the other nodes. A [`Registry`] maps names to the refreshers a node
//! hosts.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use uuid::Uuid;

use crate::model::{Instruction, RefresherDef, RefresherName};

/// The error a refresher returns. Any `std::error::Error` converts into it
/// with `?`; [`RefreshError::permanent`] marks an error that retrying cannot
/// fix (for example a payload of the wrong type), so the node escalates at
/// once.
pub struct RefreshError {
    source: Box<dyn std::error::Error + Send + Sync>,
    permanent: bool,
}

impl RefreshError {
    /// An error from a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            source: message.to_string().into(),
            permanent: false,
        }
    }

    /// An error that retrying the same instruction cannot fix.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self {
            permanent: true,
            ..Self::msg(message)
        }
    }

    /// True when retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The underlying error, to chain it as the cause of another.
    pub fn into_source(self) -> Box<dyn std::error::Error + Send + Sync> {
        self.source
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for RefreshError {
    fn from(error: E) -> Self {
        Self {
            source: Box::new(error),
            permanent: false,
        }
    }
}

impl fmt::Debug for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

/// What a refresher method returns.
pub type RefreshResult = Result<(), RefreshError>;

/// Where a batch being applied comes from: handed to [`Refresher::apply`],
/// so a refresher that forwards whole batches (the agent's webhook) can pass
/// the sequence and provenance along.
#[derive(Debug, Clone, Copy)]
pub struct BatchContext<'a> {
    /// The message's stream sequence.
    pub sequence: u64,
    /// The batch.
    pub batch: &'a crate::model::Batch,
}

/// A handler for one cache (or family of caches) on this node.
///
/// Delivery is at-least-once: every method must be idempotent. Methods other
/// than `refresh_all` default to a full refresh (removals to the matching
/// refresh), which is always correct, only slower.
#[async_trait]
pub trait Refresher: Send + Sync + 'static {
    /// Drops or reloads everything this refresher caches.
    async fn refresh_all(&self) -> RefreshResult;

    /// Applies one batch; the default dispatches each instruction in order to
    /// the per-kind methods. Override it to handle a batch at once.
    async fn apply(&self, context: BatchContext<'_>) -> RefreshResult {
        for instruction in &context.batch.instructions {
            dispatch_dyn(self, instruction).await?;
        }
        Ok(())
    }

    /// Most consecutive batches [`Refresher::apply_group`] takes at once;
    /// 1 (the default) means the node never groups this refresher's batches.
    fn max_group(&self) -> usize {
        1
    }

    /// Applies 2 to [`Refresher::max_group`] consecutive batches of this
    /// refresher at once, in log order. The node groups only while it
    /// catches up (not ready), and treats the group as one unit: it
    /// advances past the group only when this returns `Ok`, and on failure
    /// retries the whole group, then escalates to `refresh_all`. The
    /// default applies each batch with [`Refresher::apply`].
    async fn apply_group(&self, group: &[BatchContext<'_>]) -> RefreshResult {
        for context in group {
            self.apply(*context).await?;
        }
        Ok(())
    }

    /// Refreshes entries by integer id.
    async fn refresh_ids(&self, _ids: &[i64]) -> RefreshResult {
        self.refresh_all().await
    }

    /// Refreshes entries by UUID.
    async fn refresh_uuids(&self, _ids: &[Uuid]) -> RefreshResult {
        self.refresh_all().await
    }

    /// Refreshes entries by string key.
    async fn refresh_keys(&self, _keys: &[String]) -> RefreshResult {
        self.refresh_all().await
    }

    /// Removes entries by integer id.
    async fn remove_ids(&self, ids: &[i64]) -> RefreshResult {
        self.refresh_ids(ids).await
    }

    /// Removes entries by UUID.
    async fn remove_uuids(&self, ids: &[Uuid]) -> RefreshResult {
        self.refresh_uuids(ids).await
    }

    /// Removes entries by string key.
    async fn remove_keys(&self, keys: &[String]) -> RefreshResult {
        self.refresh_keys(keys).await
    }

    /// Refreshes by a free-form JSON document.
    async fn refresh_json(&self, _json: &serde_json::Value) -> RefreshResult {
        self.refresh_all().await
    }

    /// Refreshes by payloads (JSON values). [`Payloads`] implements this for a
    /// [`PayloadRefresher`] by typing each value.
    async fn refresh_payloads(&self, _payloads: &[serde_json::Value]) -> RefreshResult {
        self.refresh_all().await
    }
}

/// Dispatches one instruction to the matching refresher method.
pub async fn dispatch(refresher: &dyn Refresher, instruction: &Instruction) -> RefreshResult {
    dispatch_dyn(refresher, instruction).await
}

async fn dispatch_dyn<R: Refresher + ?Sized>(
    refresher: &R,
    instruction: &Instruction,
) -> RefreshResult {
    match instruction {
        Instruction::RefreshAll => refresher.refresh_all().await,
        Instruction::RefreshIds(ids) => refresher.refresh_ids(ids).await,
        Instruction::RefreshUuids(ids) => refresher.refresh_uuids(ids).await,
        Instruction::RefreshKeys(keys) => refresher.refresh_keys(keys).await,
        Instruction::RemoveIds(ids) => refresher.remove_ids(ids).await,
        Instruction::RemoveUuids(ids) => refresher.remove_uuids(ids).await,
        Instruction::RemoveKeys(keys) => refresher.remove_keys(keys).await,
        Instruction::RefreshJson(json) => refresher.refresh_json(json).await,
        Instruction::RefreshPayloads(values) => refresher.refresh_payloads(values).await,
    }
}

/// A refresher of typed payloads: the app publishes `&[P]`, every node
/// receives `Vec<P>`. Register it wrapped in [`Payloads`].
#[async_trait]
pub trait PayloadRefresher: Send + Sync + 'static {
    /// The payload type, as serialized to JSON by the publisher.
    type Payload: DeserializeOwned + Send;

    /// Drops or reloads everything (cold boot and escalation use it).
    async fn refresh_all(&self) -> RefreshResult;

    /// Applies a list of payloads.
    async fn refresh(&self, payloads: Vec<Self::Payload>) -> RefreshResult;
}

/// Adapts a [`PayloadRefresher`] to [`Refresher`]. A payload that does not
/// match the type is a permanent error, escalated to a full refresh.
pub struct Payloads<R>(pub R);

#[async_trait]
impl<R: PayloadRefresher> Refresher for Payloads<R> {
    async fn refresh_all(&self) -> RefreshResult {
        self.0.refresh_all().await
    }

    async fn refresh_payloads(&self, values: &[serde_json::Value]) -> RefreshResult {
        let mut typed = Vec::with_capacity(values.len());
        for (index, value) in values.iter().enumerate() {
            let payload = R::Payload::deserialize(value).map_err(|e| {
                RefreshError::permanent(format!(
                    "payload {index} does not match {}: {e}",
                    std::any::type_name::<R::Payload>()
                ))
            })?;
            typed.push(payload);
        }
        self.0.refresh(typed).await
    }
}

/// A refresher whose local calls take object instances, which cannot travel:
/// the publisher applies the instances here, then publishes their ids to the
/// other nodes (see [`crate::Publisher::refresh_instances`]).
#[async_trait]
pub trait InstanceRefresher: Refresher {
    /// The instance type (an entity the app just saved).
    type Instance: Send + Sync;

    /// The integer id other nodes refresh for this instance.
    fn id_of(&self, instance: &Self::Instance) -> i64;

    /// Applies saved instances to this node's caches.
    async fn refresh_instances(&self, instances: &[Self::Instance]) -> RefreshResult;

    /// Applies removed instances to this node's caches.
    async fn remove_instances(&self, instances: &[Self::Instance]) -> RefreshResult;
}

/// One hosted refresher: its definition and its handler.
#[derive(Clone)]
pub struct Hosted {
    /// Id and name.
    pub def: RefresherDef,
    /// The handler.
    pub handler: Arc<dyn Refresher>,
}

impl Hosted {
    /// Applies a batch; a panic in the handler is a failure like any other
    /// (retried, then escalated), not the end of the node.
    pub(crate) async fn apply_guarded(&self, context: BatchContext<'_>) -> RefreshResult {
        guarded(self.handler.apply(context)).await
    }

    /// Applies a group of batches (see [`Refresher::apply_group`]); a panic
    /// counts as a failure.
    pub(crate) async fn apply_group_guarded(&self, group: &[BatchContext<'_>]) -> RefreshResult {
        guarded(self.handler.apply_group(group)).await
    }

    /// Refreshes everything; a panic in the handler counts as a failure.
    pub(crate) async fn refresh_all_guarded(&self) -> RefreshResult {
        guarded(self.handler.refresh_all()).await
    }
}

async fn guarded(call: impl std::future::Future<Output = RefreshResult>) -> RefreshResult {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(RefreshError::msg(format_args!(
                "the refresher panicked: {}",
                panic_message(panic.as_ref())
            )))
        })
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Why a registry refused a refresher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two refreshers share a name.
    #[error("refresher name `{0}` is registered twice")]
    DuplicateName(RefresherName),
    /// Two refreshers share an id.
    #[error("refresher id {id} is registered twice (`{first}` and `{second}`)")]
    DuplicateId {
        /// The shared id.
        id: Uuid,
        /// The first name.
        first: RefresherName,
        /// The second name.
        second: RefresherName,
    },
}

/// The refreshers a node hosts, by name.
#[derive(Clone, Default)]
pub struct Registry {
    by_name: HashMap<RefresherName, Hosted>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a refresher; names and ids must be unique.
    pub fn register(
        &mut self,
        def: RefresherDef,
        handler: impl Refresher,
    ) -> Result<&mut Self, RegistryError> {
        self.register_arc(def, Arc::new(handler))
    }

    /// Adds a refresher already behind an `Arc` (to share it with the app).
    pub fn register_arc(
        &mut self,
        def: RefresherDef,
        handler: Arc<dyn Refresher>,
    ) -> Result<&mut Self, RegistryError> {
        if self.by_name.contains_key(&def.name) {
            return Err(RegistryError::DuplicateName(def.name));
        }
        if let Some(other) = self.by_name.values().find(|h| h.def.id == def.id) {
            return Err(RegistryError::DuplicateId {
                id: def.id,
                first: other.def.name.clone(),
                second: def.name,
            });
        }
        self.by_name
            .insert(def.name.clone(), Hosted { def, handler });
        Ok(self)
    }

    /// The refresher hosted under `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Hosted> {
        self.by_name.get(name)
    }

    /// True when some hosted refresher takes groups of batches
    /// ([`Refresher::max_group`] above 1).
    pub(crate) fn groups(&self) -> bool {
        self.by_name.values().any(|h| h.handler.max_group() > 1)
    }

    /// Every hosted refresher, sorted by name (a stable order for cold boots).
    pub fn hosted(&self) -> Vec<&Hosted> {
        let mut all: Vec<_> = self.by_name.values().collect();
        all.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        all
    }

    /// The definitions, for a publisher's catalog.
    pub fn defs(&self) -> Vec<RefresherDef> {
        self.hosted().into_iter().map(|h| h.def.clone()).collect()
    }

    /// Number of hosted refreshers.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when nothing is hosted.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl std::borrow::Borrow<str> for RefresherName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait]
    impl Refresher for Recorder {
        async fn refresh_all(&self) -> RefreshResult {
            self.0.lock().unwrap().push("all".into());
            Ok(())
        }
        async fn refresh_ids(&self, ids: &[i64]) -> RefreshResult {
            self.0.lock().unwrap().push(format!("ids {ids:?}"));
            Ok(())
        }
    }

    #[tokio::test]
    async fn unimplemented_kinds_fall_back_to_the_safe_refresh() {
        let r = Recorder::default();
        dispatch(&r, &Instruction::RemoveIds(vec![3]))
            .await
            .unwrap();
        dispatch(&r, &Instruction::RefreshKeys(vec!["k".into()]))
            .await
            .unwrap();
        assert_eq!(*r.0.lock().unwrap(), vec!["ids [3]", "all"]);
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Change {
        id: u32,
    }

    #[derive(Default)]
    struct Typed(Mutex<Vec<u32>>);

    #[async_trait]
    impl PayloadRefresher for Typed {
        type Payload = Change;
        async fn refresh_all(&self) -> RefreshResult {
            Ok(())
        }
        async fn refresh(&self, payloads: Vec<Change>) -> RefreshResult {
            self.0.lock().unwrap().extend(payloads.iter().map(|c| c.id));
            Ok(())
        }
    }

    #[tokio::test]
    async fn payloads_are_typed_and_mismatches_are_permanent() {
        let r = Payloads(Typed::default());
        let good = vec![serde_json::json!({"id": 1}), serde_json::json!({"id": 2})];
        r.refresh_payloads(&good).await.unwrap();
        assert_eq!(*r.0 .0.lock().unwrap(), vec![1, 2]);
        let bad = vec![serde_json::json!({"id": "x"})];
        let err = r.refresh_payloads(&bad).await.unwrap_err();
        assert!(err.is_permanent());
        assert!(
            err.to_string().contains("payload 0 does not match"),
            "{err}"
        );
    }

    #[test]
    fn registry_refuses_duplicates() {
        let mut reg = Registry::new();
        let a = RefresherDef::new(Uuid::from_u128(1), "a").unwrap();
        let a2 = RefresherDef::new(Uuid::from_u128(2), "a").unwrap();
        let b = RefresherDef::new(Uuid::from_u128(1), "b").unwrap();
        reg.register(a, Recorder::default()).unwrap();
        assert!(matches!(
            reg.register(a2, Recorder::default()),
            Err(RegistryError::DuplicateName(_))
        ));
        assert!(matches!(
            reg.register(b, Recorder::default()),
            Err(RegistryError::DuplicateId { .. })
        ));
        assert!(reg.get("a").is_some());
        assert!(reg.get("b").is_none());
    }
}
