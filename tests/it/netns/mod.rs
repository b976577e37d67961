//! Test hosts in Linux network namespaces: [`Net`] builds one namespace per
//! named host, links every pair of hosts with its own veth pair, and cuts
//! and heals those links while real processes (nats-server, the agent, a
//! publisher) run inside.
//!
//! Topology, and why: a full mesh. Each host has one address, `10.231.0.<i+1>`
//! on its loopback device, and one veth per peer, named `v-<peer>`, with a
//! single /32 route to that peer through it. Because every host pair has a
//! link of its own, cutting one link affects exactly one pair (a bridge would
//! need per-port filters the kernel here lacks, see below); because each host
//! has one address, every process names a server the same way, and nats-server
//! advertises nothing misleading. All addresses live inside the namespaces, so
//! concurrent runs never clash; only the namespace names are global, and they
//! carry the prefix `ivl<pid>x<n>-`.
//!
//! Faults ([`faults`]): a cut drops what arrives on a veth, silently (no
//! ICMP, no carrier loss), with a policy-routing rule `iif v-<peer> blackhole`
//! placed before the `local` table: that is how a partition looks to TCP
//! (retransmissions, then timeouts). One direction is the same rule on one
//! side only. `ip link set down` is offered too (the side that went down sees
//! errors at once). This machine's kernel has neither `sch_netem` nor tc
//! classifiers/actions nor netfilter, so tc and iptables cannot cut; delay and
//! loss need netem, which [`Net::netem_available`] detects and tests report.
//!
//! Processes in a host run under `ip netns exec`; sockets of the test process
//! itself are opened in a host by a thread that first joined the namespace
//! (`setns`): [`Host::run`] runs a whole Tokio runtime there (a publisher),
//! [`Host::http_get`] reaches a process's loopback HTTP port (an agent's
//! `/readyz`), [`Host::listen`] binds a listener there (a webhook receiver).
//!
//! Cleanup: dropping [`Net`] kills what still runs in its namespaces and
//! deletes them; creating one first deletes namespaces left by earlier runs
//! that crashed — only names of this harness's own pattern whose pid is dead.

mod faults;
mod host;
mod nats;
mod selftest;

pub use host::Host;
pub use nats::NsCluster;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Start of every namespace name this harness creates.
const PREFIX: &str = "ivl";

/// A set of hosts (namespaces) linked pairwise; deleted on drop.
pub struct Net {
    hosts: Vec<Host>,
    /// Active drops: (host that drops, peer whose packets it drops).
    drops: Mutex<BTreeSet<(usize, usize)>>,
    /// Links set down: (lower index, higher index).
    down: Mutex<BTreeSet<(usize, usize)>>,
}

impl Net {
    /// Creates one namespace per name (names of at most 13 characters) and
    /// the full mesh; `Err` carries the reason to skip (not root, no `ip`,
    /// namespaces refused). Removes leftovers of crashed earlier runs first.
    pub fn new(names: &[&str]) -> Result<Net, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(out) if out.status.success() => {}
            _ => return Err("the `ip` command (iproute2) is missing".into()),
        }
        remove_leftovers();
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "{PREFIX}{}x{}-",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::SeqCst)
        );
        let mut net = Net {
            hosts: Vec::new(),
            drops: Mutex::default(),
            down: Mutex::default(),
        };
        for (i, name) in names.iter().enumerate() {
            assert!(
                name.len() <= 13,
                "host name {name} too long for a veth name"
            );
            let host = Host::new(i, name, &format!("{prefix}{name}"));
            if let Err(e) = ip(&["netns", "add", host.ns()]) {
                if i == 0 {
                    return Err(format!("`ip netns add` refused: {e}"));
                }
                panic!("ip netns add {}: {e}", host.ns());
            }
            net.hosts.push(host);
            net.hosts[i].configure();
        }
        for a in 0..names.len() {
            for b in a + 1..names.len() {
                net.link(a, b);
            }
        }
        Ok(net)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        let i = self.index(name);
        &self.hosts[i]
    }

    fn index(&self, name: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h.name() == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    fn link(&self, a: usize, b: usize) {
        let (ha, hb) = (&self.hosts[a], &self.hosts[b]);
        ip(&[
            "link",
            "add",
            &ha.veth_to(hb),
            "netns",
            ha.ns(),
            "type",
            "veth",
            "peer",
            "name",
            &hb.veth_to(ha),
            "netns",
            hb.ns(),
        ])
        .unwrap();
        ha.link_up_to(hb);
        hb.link_up_to(ha);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in &self.hosts {
            delete_namespace(host.ns());
        }
    }
}

/// Runs `ip <args>`; `Err` with its stderr when it fails.
pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Kills every process still in namespace `ns`, then deletes it.
fn delete_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

/// The pid in a namespace name of this harness (`ivl<pid>x<n>-<host>`).
fn owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('x')?;
    let (run, _) = rest.split_once('-')?;
    if run.is_empty() || !run.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Deletes namespaces of this harness's pattern whose process is gone.
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = owner_pid(ns) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("netns: removing {ns}, left by the crashed run {pid}");
        delete_namespace(ns);
    }
}

#[test]
fn only_names_of_the_harness_pattern_have_an_owner() {
    assert_eq!(owner_pid("ivl123x0-s0"), Some(123));
    assert_eq!(owner_pid("ivl123x45-agent"), Some(123));
    for other in ["ivl123-s0", "ivlx0-s0", "ivl12x-s0", "cni-1234", "ivl1x2"] {
        assert_eq!(owner_pid(other), None, "{other}");
    }
}
