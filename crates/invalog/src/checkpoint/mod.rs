//! Stored sequences ("checkpoints"): the last sequence a node applied, and
//! which incarnation of the stream it belongs to. Two stores: a local file,
//! written atomically (temp file, fsync, rename, fsync of the directory), and
//! a JetStream KV bucket keyed by node id, written with compare-and-set so
//! two processes configured with the same node id are caught.
//!
//! A store only ever receives sequences that were applied (see `node`), so
//! the stored sequence is never ahead of what was applied.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;

use crate::model::NodeId;

mod stored;

pub use stored::{decode_checkpoint, encode_checkpoint, CheckpointDecodeError};

/// A node's stored position in one incarnation of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The stream's name.
    pub stream: String,
    /// The stream's creation time: a stream deleted and created again has
    /// another one, and its sequences restart at 1.
    pub stream_created: SystemTime,
    /// The last sequence applied.
    pub sequence: u64,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// File IO failed.
    #[error("checkpoint file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The stored bytes are not a checkpoint.
    #[error("checkpoint in {place}: {source}; delete it to make the node start as new (it will follow its `new_node` policy)")]
    Corrupt {
        /// Where it is stored.
        place: String,
        /// What is wrong.
        source: CheckpointDecodeError,
    },
    /// The KV bucket could not be used.
    #[error("checkpoint bucket `{bucket}`: {message}")]
    Kv {
        /// The bucket.
        bucket: String,
        /// What failed.
        message: String,
    },
    /// Another process wrote this node's checkpoint since it was read.
    #[error("checkpoint of node `{node}` in bucket `{bucket}` was written by another process; is the node id `{node}` configured on two nodes?")]
    Conflict {
        /// The bucket.
        bucket: String,
        /// The node id.
        node: NodeId,
    },
}

/// Where a node keeps its checkpoint.
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// Reads the checkpoint; `None` for a node that never stored one.
    async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Stores the checkpoint durably.
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
    /// Where it is stored, for logs and errors.
    fn describe(&self) -> String;
}

/// A checkpoint in a local file.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (its directory is created on first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl CheckpointStore for FileStore {
    async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        decode_checkpoint(&bytes)
            .map(Some)
            .map_err(|source| CheckpointError::Corrupt {
                place: self.describe(),
                source,
            })
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let bytes = encode_checkpoint(checkpoint);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .expect("checkpoint writer panicked")
            .map_err(|source| CheckpointError::Io {
                path: self.path.clone(),
                source,
            })
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// A checkpoint in a JetStream KV bucket, under the node id.
pub struct KvStore {
    store: kv::Store,
    bucket: String,
    node: NodeId,
    /// Revision last read or written; `Some(0)` = known absent.
    revision: Mutex<Option<u64>>,
    /// Values sent since the last confirmed write whose answer never came
    /// (timeout, reconnect): one of them may be stored all the same.
    unconfirmed: Mutex<Vec<bytes::Bytes>>,
}

/// How many unanswered writes [`KvStore`] remembers.
const UNCONFIRMED_KEPT: usize = 8;

impl KvStore {
    /// Opens (creating if needed) `bucket` with `replicas` replicas.
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
        node: NodeId,
    ) -> Result<Self, CheckpointError> {
        let kv_err = |message: String| CheckpointError::Kv {
            bucket: bucket.to_owned(),
            message,
        };
        let config = kv::Config {
            bucket: bucket.to_owned(),
            description: "invalog: stored sequence of each node".into(),
            history: 1,
            num_replicas: replicas,
            ..Default::default()
        };
        let store = crate::bucket::open_or_create(js, config)
            .await
            .map_err(kv_err)?;
        Ok(Self {
            store,
            bucket: bucket.to_owned(),
            node,
            revision: Mutex::new(None),
            unconfirmed: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl CheckpointStore for KvStore {
    async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let live = self.live_entry().await?;
        *self.revision.lock().unwrap() = Some(live.as_ref().map_or(0, |e| e.revision));
        let Some(entry) = live else { return Ok(None) };
        decode_checkpoint(&entry.value)
            .map(Some)
            .map_err(|source| CheckpointError::Corrupt {
                place: self.describe(),
                source,
            })
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let value = bytes::Bytes::from(encode_checkpoint(checkpoint));
        match self.write(value.clone()).await {
            Err(WriteError::Conflict) if self.adopt_own_write().await? => {
                // An earlier write whose answer was lost is stored: write
                // again on top of it.
                self.write(value).await
            }
            other => other,
        }
        .map_err(|e| match e {
            WriteError::Conflict => CheckpointError::Conflict {
                bucket: self.bucket.clone(),
                node: self.node.clone(),
            },
            WriteError::Other(message) => CheckpointError::Kv {
                bucket: self.bucket.clone(),
                message: format!("cannot write key `{}`: {message}", self.node),
            },
        })
    }

    fn describe(&self) -> String {
        format!("KV bucket {} key {}", self.bucket, self.node)
    }
}

/// How a compare-and-set write failed.
enum WriteError {
    /// The key's revision is not the one last known.
    Conflict,
    /// Anything else (timeout, no server, permissions).
    Other(String),
}

impl KvStore {
    /// The node's key as stored now, unless absent or deleted.
    async fn live_entry(&self) -> Result<Option<kv::Entry>, CheckpointError> {
        let entry =
            self.store
                .entry(self.node.as_str())
                .await
                .map_err(|e| CheckpointError::Kv {
                    bucket: self.bucket.clone(),
                    message: format!("cannot read key `{}`: {e}", self.node),
                })?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put))
    }

    /// One compare-and-set write of `value` against the revision last known;
    /// a write whose answer does not come is remembered as unconfirmed.
    async fn write(&self, value: bytes::Bytes) -> Result<(), WriteError> {
        let known = *self.revision.lock().unwrap();
        let key = self.node.as_str();
        let result = match known {
            Some(0) => self.store.create(key, value.clone()).await.map_err(|e| {
                (
                    e.kind() == kv::CreateErrorKind::AlreadyExists,
                    e.to_string(),
                )
            }),
            Some(revision) => self
                .store
                .update(key, value.clone(), revision)
                .await
                .map_err(|e| {
                    (
                        e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            None => self
                .store
                .put(key, value.clone())
                .await
                .map_err(|e| (false, e.to_string())),
        };
        match result {
            Ok(revision) => {
                *self.revision.lock().unwrap() = Some(revision);
                self.unconfirmed.lock().unwrap().clear();
                Ok(())
            }
            Err((true, _)) => Err(WriteError::Conflict),
            Err((false, message)) => {
                let mut unconfirmed = self.unconfirmed.lock().unwrap();
                if unconfirmed.len() == UNCONFIRMED_KEPT {
                    unconfirmed.remove(0);
                }
                unconfirmed.push(value);
                Err(WriteError::Other(message))
            }
        }
    }

    /// After a conflict: if the stored value is one of this store's own
    /// unconfirmed writes (its answer was lost, the write was not), takes
    /// its revision as known and says so. Anything else was written by
    /// another process: false.
    async fn adopt_own_write(&self) -> Result<bool, CheckpointError> {
        if self.unconfirmed.lock().unwrap().is_empty() {
            return Ok(false);
        }
        let Some(entry) = self.live_entry().await? else {
            return Ok(false);
        };
        let mut unconfirmed = self.unconfirmed.lock().unwrap();
        if !unconfirmed.contains(&entry.value) {
            return Ok(false);
        }
        unconfirmed.clear();
        *self.revision.lock().unwrap() = Some(entry.revision);
        tracing::info!(node = %self.node, bucket = %self.bucket, revision = entry.revision, "an earlier checkpoint write whose answer was lost is stored; going on from it");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_round_trips_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("sub/node.json"));
        assert_eq!(store.load().await.unwrap(), None);
        let checkpoint = Checkpoint {
            stream: "INVALOG".into(),
            stream_created: SystemTime::UNIX_EPOCH
                + std::time::Duration::from_millis(1_700_000_000_123),
            sequence: 42,
        };
        store.save(&checkpoint).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(checkpoint));
        std::fs::write(store.path(), b"{not json").unwrap();
        let err = store.load().await.unwrap_err();
        assert!(err.to_string().contains("delete it"), "{err}");
    }
}
