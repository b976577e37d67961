//! Opening the JetStream KV buckets invalog keeps (checkpoints, presence,
//! cold-boot slots): open the bucket if it exists, otherwise create it —
//! and, when the creation fails because another process created it at the
//! same moment (or this user may only read it), open it after all.

use async_nats::jetstream::{self, kv};

/// Opens `config.bucket`, creating it with `config` if missing. The error
/// is the creation's, for the caller to wrap: the bucket neither exists nor
/// can be created.
pub(crate) async fn open_or_create(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(&config.bucket).await {
        return Ok(store);
    }
    let bucket = config.bucket.clone();
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another process may have created it meanwhile.
        Err(e) => js
            .get_key_value(&bucket)
            .await
            .map_err(|_| format!("cannot create it: {e}")),
    }
}
