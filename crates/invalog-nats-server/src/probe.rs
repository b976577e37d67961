//! Where and whether local servers listen: free loopback ports to hand out,
//! the ports file a server writes once it listens, and a JetStream readiness
//! probe that works for a single server and a cluster alike.

use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

use super::{io_err, unique_suffix, EmbeddedError};

/// Extracts the client port from a ports file (`{"nats":["nats://127.0.0.1:4222"]}`).
pub(super) fn parse_ports_file(contents: &str) -> Result<u16, EmbeddedError> {
    #[derive(serde::Deserialize)]
    struct Ports {
        nats: Vec<String>,
    }
    let bad = EmbeddedError::PortsFile;
    let ports: Ports = serde_json::from_str(contents).map_err(|e| bad(e.to_string()))?;
    let url = ports
        .nats
        .first()
        .ok_or_else(|| bad("empty `nats` list".into()))?;
    url.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| bad(format!("no port in `{url}`")))
}

/// Reads the client port from `<dir>/<exe>_<pid>.ports`, if that file exists and is complete.
pub(super) fn read_ports_file(dir: &Path, pid: u32) -> Result<Option<u16>, EmbeddedError> {
    let suffix = format!("_{pid}.ports");
    for entry in std::fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))? {
        let Ok(entry) = entry else { continue };
        if entry.file_name().to_string_lossy().ends_with(&suffix) {
            // A partly written file fails to parse; the caller polls again.
            let contents = std::fs::read_to_string(entry.path()).unwrap_or_default();
            return Ok(parse_ports_file(&contents).ok());
        }
    }
    Ok(None)
}

/// Distinct free loopback ports: all are bound at once, then released.
pub(super) fn free_ports(count: usize) -> Result<Vec<u16>, EmbeddedError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_err("binding a free loopback port"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<_>>()
        .map_err(io_err("reading a bound port"))
}

/// Polls until JetStream answers through any of `urls` (see [`probe_jetstream`]).
pub(super) async fn wait_for_jetstream(
    urls: &[String],
    timeout: Duration,
) -> Result<(), EmbeddedError> {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no attempt finished");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(EmbeddedError::JetStreamNotReady {
                timeout,
                last_error,
            });
        }
        match tokio::time::timeout(remaining, probe_jetstream(urls)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "probe timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Account info, then create and delete a tiny R1 memory stream: this needs
/// a JetStream meta leader.
async fn probe_jetstream(urls: &[String]) -> Result<(), async_nats::Error> {
    let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
    let mut js = jetstream::new(options.connect(urls).await?);
    // Without a meta leader nobody answers; retry soon rather than after 5 s.
    js.set_timeout(Duration::from_secs(1));
    js.query_account().await?;
    let name = format!("invalog_probe_{}", unique_suffix().replace('-', "_"));
    js.create_stream(stream::Config {
        name: name.clone(),
        storage: stream::StorageType::Memory,
        num_replicas: 1,
        ..Default::default()
    })
    .await?;
    js.delete_stream(&name).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    #[test]
    fn parses_ports_file() {
        assert_eq!(
            parse_ports_file(r#"{"nats":["nats://127.0.0.1:4222"]}"#).unwrap(),
            4222
        );
        let full = r#"{"nats":["nats://127.0.0.1:35001","nats://[::1]:35001"],"cluster":["nats://127.0.0.1:6222"]}"#;
        assert_eq!(parse_ports_file(full).unwrap(), 35001);
    }

    #[test]
    fn rejects_bad_ports_files() {
        for bad in [
            "",
            "{\"nats\":[",
            "{}",
            r#"{"nats":[]}"#,
            r#"{"nats":["nats://127.0.0.1"]}"#,
        ] {
            assert!(
                matches!(parse_ports_file(bad), Err(EmbeddedError::PortsFile(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn finds_ports_file_by_pid() {
        let dir = TempDir::new().unwrap();
        std::fs::write(
            dir.path().join("nats-server_42.ports"),
            r#"{"nats":["nats://127.0.0.1:4333"]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("nats-server_7.ports"), "{\"nats\":[").unwrap();
        assert_eq!(read_ports_file(dir.path(), 42).unwrap(), Some(4333));
        assert_eq!(read_ports_file(dir.path(), 4).unwrap(), None);
        assert_eq!(
            read_ports_file(dir.path(), 7).unwrap(),
            None,
            "partial file"
        );
    }
}
