//! Cutting and healing the links of a [`Net`]: silent drops (one link, one
//! direction, a whole host, a partition into two sides), links set down,
//! and delay or loss through `tc netem` where the kernel has it.
//!
//! A drop is the rule `ip rule add pref 10 iif v-<peer> blackhole` in the
//! receiving host: packets that arrive on that link are discarded before
//! the `local` table delivers them. Nothing is reported to either side.

use super::Net;

impl Net {
    /// Drops everything between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Drops what `from` sends to `to` (`to` still reaches `from`).
    pub fn cut_one_way(&self, from: &str, to: &str) {
        let (from, to) = (self.index(from), self.index(to));
        if self.drops.lock().unwrap().insert((to, from)) {
            let dev = self.hosts[to].veth_to(&self.hosts[from]);
            self.hosts[to].ip(&["rule", "add", "pref", "10", "iif", &dev, "blackhole"]);
        }
    }

    /// Cuts `host` from every other host.
    pub fn isolate(&self, host: &str) {
        let others: Vec<String> = self.others(&[host]);
        for other in &others {
            self.cut(host, other);
        }
    }

    /// Cuts every link between `side` and the rest: two sides that each
    /// work inside but do not reach the other.
    pub fn partition(&self, side: &[&str]) {
        for other in self.others(side) {
            for host in side {
                self.cut(host, &other);
            }
        }
    }

    /// Removes every drop and brings every link that was set down up.
    pub fn heal(&self) {
        let drops = std::mem::take(&mut *self.drops.lock().unwrap());
        for (at, from) in drops {
            let dev = self.hosts[at].veth_to(&self.hosts[from]);
            self.hosts[at].ip(&["rule", "del", "pref", "10", "iif", &dev, "blackhole"]);
        }
        let down = std::mem::take(&mut *self.down.lock().unwrap());
        for (a, b) in down {
            self.hosts[a].link_up_to(&self.hosts[b]);
            self.hosts[b].link_up_to(&self.hosts[a]);
        }
    }

    /// Sets the link between `a` and `b` down at both ends (local sends fail
    /// at once, unlike a drop); [`heal`](Self::heal) brings it back, after
    /// which the link may drop packets for a moment while the kernel
    /// activates it (TCP retransmits; a test of datagrams must resend).
    pub fn link_down(&self, a: &str, b: &str) {
        let (a, b) = (self.index(a), self.index(b));
        let key = (a.min(b), a.max(b));
        if self.down.lock().unwrap().insert(key) {
            for (x, y) in [(a, b), (b, a)] {
                let dev = self.hosts[x].veth_to(&self.hosts[y]);
                self.hosts[x].ip(&["link", "set", &dev, "down"]);
            }
        }
    }

    /// Adds `tc netem` (e.g. `["delay", "50ms", "loss", "1%"]`) to what `a`
    /// sends to `b`; `Err` when the kernel lacks netem (or the arguments are
    /// wrong), with tc's message.
    pub fn netem(&self, a: &str, b: &str, args: &[&str]) -> Result<(), String> {
        let (ha, hb) = (&self.hosts[self.index(a)], &self.hosts[self.index(b)]);
        let dev = ha.veth_to(hb);
        let mut all = vec!["qdisc", "replace", "dev", &dev, "root", "netem"];
        all.extend_from_slice(args);
        tc(ha.ns(), &all)
    }

    /// Whether `tc netem` works here; tries it on the first link. `Err` has
    /// the reason, for the test output.
    pub fn netem_available(&self) -> Result<(), String> {
        let (a, b) = (self.hosts[0].name(), self.hosts[1].name());
        self.netem(a, b, &["delay", "1ms"])
            .map_err(|e| format!("tc netem unavailable (delay and loss not tested): {e}"))?;
        let dev = self.hosts[0].veth_to(&self.hosts[1]);
        tc(self.hosts[0].ns(), &["qdisc", "del", "dev", &dev, "root"])
    }

    fn others(&self, side: &[&str]) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| h.name().to_owned())
            .filter(|n| !side.contains(&n.as_str()))
            .collect()
    }
}

/// `ip netns exec <ns> tc <args>`.
fn tc(ns: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "tc"])
        .args(args)
        .output()
        .map_err(|e| format!("tc: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
}
