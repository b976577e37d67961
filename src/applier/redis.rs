//! The `redis` applier: deletes keys of a node-local Redis. Each id, uuid or
//! string key of a batch is rendered through the refresher's key templates
//! (`content:{id}`, `product:{uuid}`, `page:{key}`) and the keys are deleted
//! with UNLINK, one pipeline per batch. Refresh-all deletes every key that
//! matches configured patterns (SCAN + UNLINK, never KEYS) or flushes the
//! URL's database. Instructions no template can render (JSON, payloads, or
//! ids of a kind without a template) fall back to the refresh-all, the safe
//! choice: nothing is skipped.

use std::future::Future;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError, RedisResult};
use async_trait::async_trait;

use super::{ApplierError, RedisRefreshAll, RedisSettings};
use crate::model::{Instruction, RefresherDef};
use crate::refresher::{BatchContext, RefreshError, RefreshResult, Refresher};

/// Longest wait to connect, and for one reply.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Keys per UNLINK command, and the COUNT hint of each SCAN.
const KEYS_PER_COMMAND: usize = 1000;

/// Which values a template takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    /// `{id}`: integer ids.
    Id,
    /// `{uuid}`: UUIDs, lowercase with hyphens.
    Uuid,
    /// `{key}`: string keys.
    Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Value,
}

/// A parsed key template: literals and one kind of placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    placeholder: Placeholder,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `content:{id}`; `{{` and `}}` are literal braces.
    fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut placeholder = None;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!(
                            "template `{text}` has a lone `{{` (write `{{{{` for a brace)"
                        ));
                    }
                    let found = match name.as_str() {
                        "id" => Placeholder::Id,
                        "uuid" => Placeholder::Uuid,
                        "key" => Placeholder::Key,
                        _ => {
                            return Err(format!(
                                "template `{text}` has an unknown placeholder `{{{name}` \
                                 (use {{id}}, {{uuid}} or {{key}}; write {{{{ and }}}} for braces)"
                            ))
                        }
                    };
                    if placeholder.is_some_and(|p| p != found) {
                        return Err(format!(
                            "template `{text}` mixes placeholders; use one of {{id}}, {{uuid}}, {{key}}"
                        ));
                    }
                    placeholder = Some(found);
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                    parts.push(Part::Value);
                }
                '}' => {
                    return Err(format!(
                        "template `{text}` has a lone `}}` (write `}}}}` for a brace)"
                    ))
                }
                c => literal.push(c),
            }
        }
        parts.push(Part::Literal(literal));
        parts.retain(|p| *p != Part::Literal(String::new()));
        let placeholder = placeholder.ok_or_else(|| {
            format!("template `{text}` has no placeholder; use {{id}}, {{uuid}} or {{key}}")
        })?;
        Ok(Template { placeholder, parts })
    }

    fn render(&self, value: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(text) => text.as_str(),
                Part::Value => value,
            })
            .collect()
    }
}

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
    /// `None` when no template takes that placeholder.
    fn render(
        &self,
        placeholder: Placeholder,
        values: impl Iterator<Item = String> + Clone,
    ) -> Option<Vec<String>> {
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
                .flat_map(|t| values.clone().map(|v| t.render(&v)))
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
        let mut keys = Vec::new();
        let mut needs_refresh_all = false;
        for instruction in &context.batch.instructions {
            let rendered = match instruction {
                Instruction::RefreshAll
                | Instruction::RefreshJson(_)
                | Instruction::RefreshPayloads(_) => None,
                Instruction::RefreshIds(ids) | Instruction::RemoveIds(ids) if ids.is_empty() => {
                    Some(Vec::new())
                }
                Instruction::RefreshIds(ids) | Instruction::RemoveIds(ids) => {
                    self.render(Placeholder::Id, ids.iter().map(i64::to_string))
                }
                Instruction::RefreshUuids(ids) | Instruction::RemoveUuids(ids)
                    if ids.is_empty() =>
                {
                    Some(Vec::new())
                }
                Instruction::RefreshUuids(ids) | Instruction::RemoveUuids(ids) => {
                    self.render(Placeholder::Uuid, ids.iter().map(uuid::Uuid::to_string))
                }
                Instruction::RefreshKeys(list) | Instruction::RemoveKeys(list)
                    if list.is_empty() =>
                {
                    Some(Vec::new())
                }
                Instruction::RefreshKeys(list) | Instruction::RemoveKeys(list) => {
                    self.render(Placeholder::Key, list.iter().cloned())
                }
            };
            match rendered {
                Some(rendered) => keys.extend(rendered),
                None => needs_refresh_all = true,
            }
        }
        self.unlink(&keys).await?;
        if needs_refresh_all {
            tracing::debug!(
                refresher = %self.def.name, sequence = context.sequence,
                "batch has instructions no key template renders; running refresh_all"
            );
            self.refresh_all().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_their_placeholder() {
        let t = Template::parse("content:{id}").unwrap();
        assert_eq!(t.placeholder, Placeholder::Id);
        assert_eq!(t.render("42"), "content:42");
        let t = Template::parse("{{tenant}}:page:{key}:{key}").unwrap();
        assert_eq!(t.placeholder, Placeholder::Key);
        assert_eq!(t.render("/en/"), "{tenant}:page:/en/:/en/");
        assert_eq!(
            Template::parse("p:{uuid}").unwrap().placeholder,
            Placeholder::Uuid
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["content", "content:{name}", "{id}:{key}", "a}b", "a{id"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_url_never_appears_in_errors() {
        let def = RefresherDef::new(uuid::Uuid::from_u128(1), "content").unwrap();
        let settings = RedisSettings {
            url: crate::secret::Secret::new("http://user:hunter2@host/0"),
            key_templates: vec!["content:{id}".into()],
            refresh_all: RedisRefreshAll::FlushDb,
        };
        let error = RedisApplier::new(&def, &settings).err().unwrap();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(error.to_string().contains("`url`"), "{error}");
    }
}
