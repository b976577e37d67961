//! The harness itself: a cut drops both ways, a one-way cut one way, an
//! isolated host reaches nobody, a link set down carries nothing, a heal
//! restores everything, and a namespace left by a dead process of this
//! harness is removed while other names are left alone.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use super::{ip, Net};

/// Whether datagrams from `from` reach `to`: when `want`, one sent every
/// 100 ms for 3 s must arrive (a link brought up again may drop packets
/// for a moment while the kernel activates it; a busy machine delays);
/// otherwise one sent must not arrive within 400 ms.
fn reaches(net: &Net, from: &str, to: &str, want: bool) -> bool {
    let (from, to) = (net.host(from), net.host(to));
    let receiver = to.in_ns(|| UdpSocket::bind((to.addr(), 0)).unwrap());
    let wait = Duration::from_millis(if want { 100 } else { 400 });
    receiver.set_read_timeout(Some(wait)).unwrap();
    let target = receiver.local_addr().unwrap();
    let sender = from.in_ns(|| UdpSocket::bind((from.addr(), 0)).unwrap());
    let start = Instant::now();
    loop {
        // A link set down fails the send at once (no route): not reached.
        if sender.send_to(b"x", target).is_ok() && receiver.recv(&mut [0; 8]).is_ok() {
            return true;
        }
        if !want || start.elapsed() > Duration::from_secs(3) {
            return false;
        }
    }
}

/// Asserts which ordered pairs reach each other.
fn expect(net: &Net, when: &str, pairs: &[(&str, &str, bool)]) {
    for (from, to, want) in pairs {
        assert_eq!(
            reaches(net, from, to, *want),
            *want,
            "{when}: {from} -> {to}"
        );
    }
}

#[test]
fn cuts_drop_what_they_name_and_a_heal_restores_all() {
    let net = match Net::new(&["h0", "h1", "h2"]) {
        Ok(net) => net,
        Err(why) => return eprintln!("netns::selftest: SKIPPED: {why}"),
    };
    let all = |want| {
        vec![
            ("h0", "h1", want),
            ("h1", "h0", want),
            ("h0", "h2", true),
            ("h2", "h1", true),
        ]
    };
    expect(&net, "at start", &all(true));
    net.cut_one_way("h0", "h1");
    expect(
        &net,
        "h0 -> h1 cut",
        &[("h0", "h1", false), ("h1", "h0", true), ("h0", "h2", true)],
    );
    net.heal();
    expect(&net, "healed", &all(true));
    net.cut("h0", "h1");
    expect(&net, "h0 - h1 cut", &all(false));
    net.heal();
    net.isolate("h2");
    expect(
        &net,
        "h2 isolated",
        &[("h0", "h2", false), ("h2", "h1", false), ("h0", "h1", true)],
    );
    net.heal();
    net.link_down("h0", "h1");
    expect(&net, "h0 - h1 down", &all(false));
    net.heal();
    expect(&net, "healed", &all(true));
}

#[test]
fn leftovers_of_dead_runs_are_removed_and_nothing_else() {
    // Above the largest pid Linux hands out (2^22), so never alive.
    let dead = format!("ivl{}x0-old", 1 << 23);
    let other = format!("ivlkeep{}", std::process::id());
    if ip(&["netns", "add", &dead]).is_err() {
        return eprintln!("netns::selftest: SKIPPED: cannot create namespaces");
    }
    ip(&["netns", "add", &other]).unwrap();
    let net = Net::new(&["h0", "h1"]).unwrap();
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let _ = ip(&["netns", "del", &other]);
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!names.contains(&dead.as_str()), "{dead} removed: {list}");
    assert!(names.contains(&other.as_str()), "{other} kept: {list}");
    assert!(names.contains(&net.host("h1").ns()), "{list}");
    let ours = net.host("h1").ns().to_owned();
    drop(net);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&ours),
        "deleted on drop"
    );
}
