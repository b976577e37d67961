//! The `redis` applier: deletes keys of a node-local Redis. Each id, uuid or
//! string key of a batch is rendered through the refresher's key templates
//! (`content:{id}`, `product:{uuid}`, `page:{key}`) and the keys are deleted
//! with UNLINK, one pipeline per batch — or, while the node catches up, one
//! pipeline per group of up to 100 consecutive batches. Refresh-all deletes every key that
//! matches configured patterns (SCAN + UNLINK, never KEYS) or flushes the
//! URL's database. Instructions no template can render (JSON, payloads, or
//! ids of a kind without a template) fall back to the refresh-all, the safe
//! choice: nothing is skipped.

use std::future::Future;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError, RedisResult};
use async_trait::async_trait;
use uuid::Uuid;

use super::template::{Placeholder, Template};
use super::{ApplierError, RedisRefreshAll, RedisSettings};
use invalog::model::{Instruction, RefresherDef};
use invalog::refresher::{BatchContext, RefreshError, RefreshResult, Refresher};

/// Longest wait to connect, and for one reply.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Keys per UNLINK command, and the COUNT hint of each SCAN.
const KEYS_PER_COMMAND: usize = 1000;

/// Most batches whose keys go in one pipeline while the node catches up
/// ([`Refresher::max_group`]).
const BATCHES_PER_PIPELINE: usize = 100;

/// A `redis` applier. See the module docs.
pub struct RedisApplier {
    def: RefresherDef,
    client: Client,
    templates: Vec<Template>,
    refresh_all: RedisRefreshAll,
    /// The open connection; emptied after an error so the next call
    /// connects again.
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl RedisApplier {
    /// Validates the settings (no connection yet).
    pub fn new(def: &RefresherDef, settings: &RedisSettings) -> Result<Self, ApplierError> {
        // The URL is a secret: only the parser's reason is shown, never it.
        if invalog::redact::misplaced_at(settings.url.expose()) {
            return Err(ApplierError::invalid(
                def,
                "url",
                invalog::redact::MISPLACED_AT_FIX,
            ));
        }
        let client = Client::open(settings.url.expose()).map_err(|e| {
            ApplierError::invalid(def, "url", format!("is not a usable Redis URL: {e}"))
        })?;
        let templates = settings
            .key_templates
            .iter()
            .map(|t| Template::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ApplierError::invalid(def, "keys", message))?;
        if let RedisRefreshAll::Patterns(patterns) = &settings.refresh_all {
            if patterns.is_empty() || patterns.iter().any(String::is_empty) {
                return Err(ApplierError::invalid(
                    def,
                    "refresh_all.patterns",
                    "must list at least one non-empty pattern (or use \"flushdb\")",
                ));
            }
        }
        Ok(Self {
            def: def.clone(),
            client,
            templates,
            refresh_all: settings.refresh_all.clone(),
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// Runs `operation` on the connection, opening it when needed.
    async fn with_connection<T, F, Fut>(&self, what: &str, operation: F) -> Result<T, RefreshError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let connection = {
            let mut slot = self.connection.lock().await;
            match slot.as_ref() {
                Some(connection) => connection.clone(),
                None => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(REDIS_TIMEOUT))
                        .set_response_timeout(Some(REDIS_TIMEOUT));
                    let connection = self
                        .client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map_err(|e| self.error("cannot connect", &e))?;
                    slot.insert(connection).clone()
                }
            }
        };
        match operation(connection).await {
            Ok(value) => Ok(value),
            Err(e) => {
                *self.connection.lock().await = None;
                Err(self.error(what, &e))
            }
        }
    }

    fn error(&self, what: &str, error: &RedisError) -> RefreshError {
        RefreshError::msg(format!(
            "redis applier of refresher `{}`: {what}: {error}",
            self.def.name
        ))
    }

    /// The keys `values` render to through the templates of `placeholder`;
    /// `None` when no template takes that placeholder (and there are values).
    fn render(&self, placeholder: Placeholder, values: Vec<String>) -> Option<Vec<String>> {
        if values.is_empty() {
            return Some(Vec::new());
        }
        let templates: Vec<_> = self
            .templates
            .iter()
            .filter(|t| t.placeholder == placeholder)
            .collect();
        if templates.is_empty() {
            return None;
        }
        Some(
            templates
                .iter()
                .flat_map(|t| values.iter().map(|v| t.render(v)))
                .collect(),
        )
    }

    /// UNLINKs `keys` in one pipeline.
    async fn unlink(&self, keys: &[String]) -> RefreshResult {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for chunk in keys.chunks(KEYS_PER_COMMAND) {
            pipe.cmd("UNLINK");
            for key in chunk {
                pipe.arg(key);
            }
            pipe.ignore();
        }
        self.with_connection("UNLINK failed", |mut connection| async move {
            pipe.query_async::<()>(&mut connection).await
        })
        .await
    }

    /// Deletes every key matching `pattern`, one SCAN page at a time.
    async fn unlink_matching(&self, pattern: &str) -> Result<u64, RefreshError> {
        let mut cursor = 0u64;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .with_connection("SCAN failed", |mut connection| async move {
                    ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(KEYS_PER_COMMAND)
                        .query_async(&mut connection)
                        .await
                })
                .await?;
            if !keys.is_empty() {
                deleted += self
                    .with_connection("UNLINK failed", |mut connection| async move {
                        ::redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async::<u64>(&mut connection)
                            .await
                    })
                    .await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl Refresher for RedisApplier {
    async fn refresh_all(&self) -> RefreshResult {
        match &self.refresh_all {
            RedisRefreshAll::Patterns(patterns) => {
                for pattern in patterns {
                    let deleted = self.unlink_matching(pattern).await?;
                    tracing::debug!(refresher = %self.def.name, pattern, deleted, "redis keys unlinked");
                }
                Ok(())
            }
            RedisRefreshAll::FlushDb => {
                self.with_connection("FLUSHDB failed", |mut connection| async move {
                    ::redis::cmd("FLUSHDB")
                        .arg("ASYNC")
                        .query_async::<()>(&mut connection)
                        .await
                })
                .await
            }
        }
    }

    async fn apply(&self, context: BatchContext<'_>) -> RefreshResult {
        self.apply_group(&[context]).await
    }

    fn max_group(&self) -> usize {
        BATCHES_PER_PIPELINE
    }

    /// The keys of every batch go in one pipeline (one round trip); a
    /// refresh-all, if any batch needs one, runs once after it. Deleting is
    /// idempotent and commutes, so this leaves Redis as applying the
    /// batches one by one would.
    async fn apply_group(&self, group: &[BatchContext<'_>]) -> RefreshResult {
        let mut keys = Vec::new();
        let mut needs_refresh_all = None;
        for context in group {
            if !self.keys_of(context.batch, &mut keys) && needs_refresh_all.is_none() {
                needs_refresh_all = Some(context.sequence);
            }
        }
        self.unlink(&keys).await?;
        if let Some(sequence) = needs_refresh_all {
            tracing::debug!(
                refresher = %self.def.name, sequence,
                "batch has instructions no key template renders; running refresh_all"
            );
            self.refresh_all().await?;
        }
        Ok(())
    }
}

impl RedisApplier {
    /// Adds the keys of `batch` to `keys`; false when some instruction has
    /// no key template (then only a refresh-all applies it).
    fn keys_of(&self, batch: &invalog::model::Batch, keys: &mut Vec<String>) -> bool {
        let mut renders = true;
        for instruction in &batch.instructions {
            let rendered = match instruction {
                Instruction::RefreshAll
                | Instruction::RefreshJson(_)
                | Instruction::RefreshPayloads(_) => None,
                Instruction::RefreshIds(ids) | Instruction::RemoveIds(ids) => {
                    self.render(Placeholder::Id, ids.iter().map(i64::to_string).collect())
                }
                Instruction::RefreshUuids(ids) | Instruction::RemoveUuids(ids) => {
                    self.render(Placeholder::Uuid, ids.iter().map(Uuid::to_string).collect())
                }
                Instruction::RefreshKeys(keys) | Instruction::RemoveKeys(keys) => {
                    self.render(Placeholder::Key, keys.clone())
                }
            };
            match rendered {
                Some(rendered) => keys.extend(rendered),
                None => renders = false,
            }
        }
        renders
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_never_appears_in_errors() {
        let def = RefresherDef::new(Uuid::from_u128(1), "content").unwrap();
        let settings = RedisSettings {
            url: invalog::secret::Secret::new("http://user:hunter2@host/0"),
            key_templates: vec!["content:{id}".into()],
            refresh_all: RedisRefreshAll::FlushDb,
        };
        let error = RedisApplier::new(&def, &settings).err().unwrap();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(error.to_string().contains("`url`"), "{error}");
    }
}
