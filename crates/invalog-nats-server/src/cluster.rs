//! A local JetStream cluster: [`NatsCluster`], a few [`NatsServer`]s routed
//! to each other.
//!
//! Client and cluster ports are picked up front (bound together, then
//! released) because every node's `--routes` must name the others before any
//! of them starts. Should another process take a picked port first, the node
//! exits and the whole cluster is started again on fresh ports.

use std::path::Path;
use std::time::Duration;

use super::probe::{free_ports, wait_for_jetstream};
use super::{find_binary_blocking, flag, EmbeddedError, NatsServer};

/// A JetStream cluster of local `nats-server` processes named `node0`,
/// `node1`, … with cluster name `invalog-test`, all on loopback ports.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes on free loopback ports, each routed to all the
    /// others, and waits until every node accepts connections. Call
    /// [`wait_for_jetstream`](Self::wait_for_jetstream) before using JetStream.
    /// The binary comes from [`find_binary`](super::find_binary), as for
    /// [`NatsServer::start`].
    pub async fn start(size: usize) -> Result<Self, EmbeddedError> {
        if size == 0 {
            return Err(EmbeddedError::EmptyCluster);
        }
        let binary = find_binary_blocking().await?;
        // A picked port can be taken by someone else before the node binds
        // it; that node then exits, and a fresh set of ports is tried.
        let mut attempt = 1;
        loop {
            match Self::try_start(&binary, size).await {
                Err(EmbeddedError::Exited { .. }) if attempt < 3 => attempt += 1,
                result => return result,
            }
        }
    }

    async fn try_start(binary: &Path, size: usize) -> Result<Self, EmbeddedError> {
        let ports = free_ports(2 * size)?;
        let (client_ports, cluster_ports) = ports.split_at(size);
        let route = |port: &u16| format!("nats://127.0.0.1:{port}");
        let mut nodes = Vec::with_capacity(size);
        for (i, (client, cluster)) in client_ports.iter().zip(cluster_ports).enumerate() {
            let routes: Vec<_> = cluster_ports
                .iter()
                .filter(|p| *p != cluster)
                .map(route)
                .collect();
            let mut extra = [
                flag("--cluster_name", "invalog-test"),
                flag("--cluster", route(cluster)),
            ]
            .concat();
            if !routes.is_empty() {
                extra.extend(flag("--routes", routes.join(",")));
            }
            let (binary, name) = (binary.to_path_buf(), format!("node{i}"));
            nodes.push(NatsServer::prepare(binary, name, Some(*client), extra)?);
        }
        for node in &mut nodes {
            node.launch().await?;
        }
        Ok(Self { nodes })
    }

    /// Number of nodes.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Client URLs of all nodes, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Node `index`, to kill, restart or freeze it in place.
    ///
    /// # Panics
    /// If `index >= self.size()`.
    pub fn node(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// All nodes, read-only.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Waits until the cluster has a JetStream meta leader: the account info
    /// request succeeds and a tiny R1 memory stream can be created and deleted.
    pub async fn wait_for_jetstream(&self, timeout: Duration) -> Result<(), EmbeddedError> {
        wait_for_jetstream(&self.urls(), timeout).await
    }
}
