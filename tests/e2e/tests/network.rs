//! Networking (docs/networking.md): the default bridge, user networks,
//! published ports, `--network none|host|container:ID`, the per-container
//! /etc/hosts, /etc/hostname and /etc/resolv.conf, and what a crash leaves.
//!
//! Every daemon here runs inside a network namespace the test makes itself
//! (`ip netns add`, berthd started under `nsenter --net`), so nothing
//! touches the host's interfaces; the namespace is deleted in `Drop`, even
//! when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_e2e::*;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace of the test's own, with a veth pair so that
/// "the host's interfaces" are recognisable.
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new() -> TestNetns {
        let name = format!(
            "bnt-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ns = TestNetns { name };
        ns.ip(&["netns", "add", &ns.name]);
        ns.ip(&[
            "-n", &ns.name, "link", "add", "bntveth0", "type", "veth", "peer", "name", "bntveth1",
        ]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip").args(args).status().expect("run ip");
        assert!(st.success(), "ip {args:?} failed");
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// A daemon started inside this namespace (only its network namespace
    /// changes: mounts stay the test's).
    fn daemon(&self, rt: Rt) -> Daemon {
        let net = format!("--net={}", self.path().display());
        let launch: Launch = Arc::new(move |berthd, args| {
            let mut c = Command::new("nsenter");
            c.arg(&net).arg("--").arg(berthd).args(args);
            c
        });
        Daemon::start_launched(rt, &[], launch)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Interface names as the container's /proc/net/dev lists them.
fn interfaces(dev: &str) -> Vec<String> {
    let mut v: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .collect();
    v.sort();
    v
}

/// What berthd keeps of its containers' networks, and nsfs mounts under
/// its root: both empty once every container is gone.
fn net_leftovers(d: &Daemon) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(d.state_dir().join("netns"))
        .map(|r| {
            r.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let root = d.state_dir().join("netns").display().to_string();
    left.extend(mount_leftovers(&root));
    left.extend(attachments(d));
    left.extend(leases(d));
    left
}

/// The kept CNI attachments (`<root>/net/attachments/<id>/<net>.json`).
fn attachments(d: &Daemon) -> Vec<String> {
    let dir = d.state_dir().join("net/attachments");
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn bridge_is_the_default_and_is_released(rt: Rt) {
    // berthd in a network namespace the harness made for this test.
    let d = Daemon::start(rt);
    let (links_before, rules_before) = (links(&d), rules(&d));
    let a = d.run(&["-d"], &["sleep", "100"]).ok();
    let b = d
        .run(&["-d", "--network", "bridge"], &["sleep", "100"])
        .ok();
    let (ia, ib) = (addr_of(&d, &a), addr_of(&d, &b));
    assert!(
        ia.starts_with("10.87.") && ib.starts_with("10.87."),
        "{ia} {ib}"
    );
    assert_ne!(ia, ib);
    // They reach each other, and the gateway on the (test's) host side.
    d.berth(&["exec", &a, "ping", "-c1", "-W5", &ib]).ok();
    d.berth(&["exec", &b, "ping", "-c1", "-W5", "10.87.0.1"])
        .ok();
    let r = d.netns().exec(&["busybox", "ping", "-c1", "-W5", &ia]);
    assert_eq!(r.code, 0, "{r:?}");
    // /etc/hosts names the container's address.
    let hosts = d.berth(&["exec", &a, "cat", "/etc/hosts"]).ok();
    assert!(hosts.contains(&format!("{ia}\t")), "{hosts}");
    assert_eq!(leases(&d).len(), 2, "{:?}", leases(&d));
    // An exit releases the address at once; a restart gets one again.
    d.berth(&["stop", "-t", "0", &a]).ok();
    assert_eq!(leases(&d).len(), 1, "{:?}", leases(&d));
    d.berth(&["start", &a]).ok();
    addr_of(&d, &a);
    // A failed start releases it too.
    let r = d.run(&["--rm"], &["/nonexistent"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(leases(&d).len(), 2, "{:?}", leases(&d));
    for id in [&a, &b] {
        d.berth(&["rm", "-f", id]).ok();
    }
    poll("no network leftovers", Duration::from_secs(10), || {
        net_leftovers(&d).is_empty().then_some(())
    });
    // No veth, no bridge, no chain or rule is left once the last
    // container is gone (the bridge and the base chains shortly after:
    // berthd keeps them for a second for the next container).
    poll(
        "no bridge, veth or rule of berth's",
        Duration::from_secs(10),
        || (links(&d) == links_before && rules(&d) == rules_before).then_some(()),
    );
}

/// The links of the daemon's namespace, by name (`ip -o link`).
fn links(d: &Daemon) -> Vec<String> {
    let out = d.netns().exec(&["ip", "-o", "link"]).ok();
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

/// The daemon's namespace's iptables chains and rules (`iptables-save`,
/// IPv4 and IPv6), without the counters and comments that change from one
/// save to the next. The empty tables and built-in chains that iptables
/// makes on first use are not berth's and not listed.
fn rules(d: &Daemon) -> Vec<String> {
    let builtin = ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"];
    let mut v = Vec::new();
    for save in ["iptables-save", "ip6tables-save"] {
        let out = d.netns().exec(&[save]).ok();
        for l in out.lines() {
            let chain = l
                .strip_prefix(':')
                .and_then(|c| c.split_whitespace().next())
                .filter(|c| !builtin.contains(c));
            if let Some(c) = chain {
                v.push(format!("{save}: chain {c}"));
            } else if l.starts_with("-A") {
                v.push(format!("{save}: {l}"));
            }
        }
    }
    v
}

fn none_has_only_loopback_up(rt: Rt) {
    let ns = TestNetns::new();
    let d = ns.daemon(rt);
    let r = d.run(
        &["--rm", "--network", "none"],
        &[
            "/bin/sh",
            "-c",
            "cat /proc/net/dev; cat /sys/class/net/lo/flags",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let (dev, flags) = r.stdout.trim_end().rsplit_once('\n').expect("two outputs");
    assert_eq!(interfaces(dev), ["lo"], "{r:?}");
    // IFF_UP | IFF_LOOPBACK
    assert_eq!(flags.trim(), "0x9", "loopback is not up: {r:?}");
    // No flag: the default bridge network.
    let r = d.run(&["--rm"], &["cat", "/proc/net/dev"]);
    assert_eq!(interfaces(&r.stdout), ["eth0", "lo"], "{r:?}");
    poll("no network leftovers", Duration::from_secs(10), || {
        net_leftovers(&d).is_empty().then_some(())
    });
}

fn host_shares_the_daemons_namespace(rt: Rt) {
    let ns = TestNetns::new();
    let d = ns.daemon(rt);
    let r = d.run(&["--rm", "--network", "host"], &["cat", "/proc/net/dev"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        interfaces(&r.stdout),
        ["bntveth0", "bntveth1", "lo"],
        "{r:?}"
    );
}

fn container_mode_joins_the_other(rt: Rt) {
    let ns = TestNetns::new();
    let d = ns.daemon(rt);
    let a = d.run(&["-d", "--name", "a"], &["sleep", "100"]).ok();
    let theirs = d.berth(&["exec", &a, "readlink", "/proc/self/ns/net"]).ok();
    let r = d.run(
        &["--rm", "--network", "container:a"],
        &["readlink", "/proc/self/ns/net"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), theirs);
    // A stopped container has no namespace to join.
    d.berth(&["stop", "-t", "0", &a]).ok();
    let r = d.run(&["--network", "container:a"], &["true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    assert!(r.stderr.contains("not running"), "{r:?}");
    // It keeps its namespace across a restart, and loses it on rm.
    d.berth(&["start", &a]).ok();
    let again = d.berth(&["exec", &a, "readlink", "/proc/self/ns/net"]).ok();
    assert_eq!(again, theirs, "a restart keeps the container's namespace");
    d.berth(&["rm", "-f", &a]).ok();
    poll("no network leftovers", Duration::from_secs(10), || {
        net_leftovers(&d).is_empty().then_some(())
    });
}

fn etc_files_follow_the_flags(rt: Rt) {
    let ns = TestNetns::new();
    let d = ns.daemon(rt);
    let r = d.run(
        &[
            "--rm",
            "--hostname",
            "web",
            "--dns",
            "192.0.2.53",
            "--dns-search",
            "example.test",
            "--dns-option",
            "ndots:2",
            "--add-host",
            "db:192.0.2.10",
        ],
        &[
            "/bin/sh",
            "-c",
            "cat /etc/hostname; echo --; cat /etc/resolv.conf; echo --; cat /etc/hosts",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let parts: Vec<&str> = r.stdout.split("--\n").collect();
    assert_eq!(parts[0], "web\n", "{r:?}");
    assert_eq!(
        parts[1], "nameserver 192.0.2.53\nsearch example.test\noptions ndots:2\n",
        "{r:?}"
    );
    assert!(parts[2].contains("127.0.0.1\tlocalhost\n"), "{r:?}");
    assert!(parts[2].contains("192.0.2.10\tdb\n"), "{r:?}");
    assert!(parts[2].contains("\tweb\n"), "{r:?}");
    // The host's resolv.conf without loopback nameservers.
    let r = d.run(&["--rm"], &["cat", "/etc/resolv.conf"]);
    assert_eq!(r.code, 0, "{r:?}");
    for line in r.stdout.lines() {
        assert!(
            !line.starts_with("nameserver 127.") && line != "nameserver ::1",
            "{r:?}"
        );
    }
}

fn bad_network_input_is_refused(rt: Rt) {
    let ns = TestNetns::new();
    let d = ns.daemon(rt);
    for (flags, needle) in [
        (&["--network", "bogus"][..], "bogus"),
        (&["--network", "container:nosuch"][..], "nosuch"),
        (&["--dns", "not-an-ip"][..], "not-an-ip"),
        (&["--add-host", "justaname"][..], "justaname"),
        (&["--add-host", "db:nope"][..], "db:nope"),
        (&["--dns-search", "a b"][..], "a b"),
    ] {
        let r = d.run(flags, &["true"]);
        assert_eq!(r.code, 125, "{flags:?}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{flags:?}: {r:?}");
        assert!(r.stderr.contains(needle), "{flags:?}: {r:?}");
    }
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
    assert!(net_leftovers(&d).is_empty(), "{:?}", net_leftovers(&d));
}

fn restore_removes_what_no_container_owns(rt: Rt) {
    let ns = TestNetns::new();
    let mut d = ns.daemon(rt);
    let a = d.run(&["-d"], &["sleep", "100"]).ok();
    // What a daemon killed in the middle of a create leaves: settings of a
    // container the store never recorded.
    let stray = d.state_dir().join("netns").join(format!("{:064}", 7));
    std::fs::write(format!("{}.json", stray.display()), b"{}").expect("stray file");
    d.restart();
    poll("the stray settings to go", Duration::from_secs(10), || {
        (!Path::new(&format!("{}.json", stray.display())).exists()).then_some(())
    });
    // The live container keeps its namespace.
    assert!(d.state_dir().join("netns").join(&a).exists());
    assert_eq!(d.state_of(&a), "running");
    d.berth(&["rm", "-f", &a]).ok();
    poll("no network leftovers", Duration::from_secs(10), || {
        net_leftovers(&d).is_empty().then_some(())
    });
}

/// A `none` container's namespace is its runtime's: nothing is bound for
/// it in berthd's mount namespace (which every create copies), until
/// another container joins it or it is connected to a network; from then
/// on it is kept as berthd's own, across restarts.
fn none_is_the_runtimes_until_it_is_joined(rt: Rt) {
    let ns = TestNetns::new();
    let d = ns.daemon(rt);
    let netns = d.state_dir().join("netns");
    let a = d
        .run(
            &["-d", "--name", "a", "--network", "none"],
            &["sleep", "100"],
        )
        .ok();
    let bound = |id: &str| !mount_leftovers(&netns.join(id).display().to_string()).is_empty();
    assert!(!bound(&a), "a none container's namespace is bound");
    assert!(!netns.join(&a).exists());
    let flags = d
        .berth(&["exec", &a, "cat", "/sys/class/net/lo/flags"])
        .ok();
    assert_eq!(flags.trim(), "0x9", "loopback is not up");
    // A restart makes a new one (nothing held the old; the kernel may give
    // it the old one's number, so that is not compared).
    d.berth(&["restart", "-t", "0", &a]).ok();
    let second = d.berth(&["exec", &a, "readlink", "/proc/self/ns/net"]).ok();
    assert!(!bound(&a));
    // A joiner shares it, and pins it: it is bound now, and kept across
    // the first one's restart.
    let r = d.run(
        &["--rm", "--network", "container:a"],
        &["readlink", "/proc/self/ns/net"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), second);
    assert!(bound(&a), "the joined namespace is not bound");
    d.berth(&["restart", "-t", "0", &a]).ok();
    let third = d.berth(&["exec", &a, "readlink", "/proc/self/ns/net"]).ok();
    assert_eq!(third, second, "a pinned namespace is kept across a restart");
    // A running none container connected to a network gets its address in
    // the namespace it has.
    let b = d.run(&["-d", "--network", "none"], &["sleep", "100"]).ok();
    let before = d.berth(&["exec", &b, "readlink", "/proc/self/ns/net"]).ok();
    d.berth(&["network", "connect", "bridge", &b]).ok();
    let addrs = d.berth(&["exec", &b, "ip", "-o", "-4", "addr"]).ok();
    assert!(
        addrs.contains("eth0") && addrs.contains("10.87."),
        "{addrs}"
    );
    let after = d.berth(&["exec", &b, "readlink", "/proc/self/ns/net"]).ok();
    assert_eq!(before, after);
    assert!(bound(&b));
    d.berth(&["rm", "-f", &a, &b]).ok();
    poll("no network leftovers", Duration::from_secs(10), || {
        net_leftovers(&d).is_empty().then_some(())
    });
}

both_runtimes!(
    bridge_is_the_default_and_is_released,
    none_is_the_runtimes_until_it_is_joined,
    none_has_only_loopback_up,
    host_shares_the_daemons_namespace,
    container_mode_joins_the_other,
    etc_files_follow_the_flags,
    bad_network_input_is_refused,
    restore_removes_what_no_container_owns,
);

/// berth0 and the bridges of user networks (named berth…), and veths.
fn berth_links(d: &Daemon) -> Vec<String> {
    let out = d.netns().exec(&["ip", "-o", "link"]).ok();
    out.lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| n.starts_with("berth") || n.starts_with("veth"))
        .collect()
}

fn user_networks_connect_and_refuse_bad_input(rt: Rt) {
    let d = Daemon::start(rt);
    let before_links = berth_links(&d);
    let id = d
        .berth(&[
            "network",
            "create",
            "--subnet",
            "10.99.7.0/24",
            "--label",
            "a=b",
            "front",
        ])
        .ok();
    assert_eq!(id.len(), 64, "{id}");
    // A second network gets a /24 of the pool that overlaps nothing.
    d.berth(&["network", "create", "back"]).ok();
    let ls = d.berth(&["network", "ls", "-q"]).ok();
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        ["bridge", "back", "front"],
        "{ls}"
    );
    let json = d.berth(&["network", "ls", "--format", "json"]).ok();
    let back: serde_json::Value = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .find(|v| v["Name"] == "back")
        .expect("back listed");
    let back_subnet = back["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(back_subnet.starts_with("10.89."), "{back}");

    // Two containers on it reach each other by address; a fixed --ip and
    // aliases are kept.
    let a = d
        .run(
            &[
                "-d",
                "--name",
                "a",
                "--network",
                "front",
                "--ip",
                "10.99.7.50",
                "--network-alias",
                "web",
            ],
            &["sleep", "100"],
        )
        .ok();
    let b = d
        .run(
            &["-d", "--name", "b", "--network", "front"],
            &["sleep", "100"],
        )
        .ok();
    assert_eq!(addr_of(&d, &a), "10.99.7.50");
    let ib = addr_of(&d, &b);
    assert!(ib.starts_with("10.99.7."), "{ib}");
    d.berth(&["exec", &a, "ping", "-c1", "-W5", &ib]).ok();
    d.berth(&["exec", &b, "ping", "-c1", "-W5", "10.99.7.50"])
        .ok();
    let ins = d.berth(&["network", "inspect", "front"]).ok();
    let v: serde_json::Value = serde_json::from_str(&ins).expect("inspect json");
    let eps = &v[0]["Containers"];
    assert_eq!(eps[&a]["IPv4Address"], "10.99.7.50/24", "{ins}");
    assert!(eps[&a]["Aliases"].to_string().contains("web"), "{ins}");
    assert_eq!(v[0]["Labels"]["a"], "b", "{ins}");

    // connect puts a running container on a second network at once.
    d.berth(&["network", "connect", "--alias", "api", "back", "b"])
        .ok();
    let links = d.berth(&["exec", &b, "cat", "/proc/net/dev"]).ok();
    assert!(links.contains("eth1:"), "{links}");
    d.berth(&["network", "disconnect", "back", "b"]).ok();
    let links = d.berth(&["exec", &b, "cat", "/proc/net/dev"]).ok();
    assert!(!links.contains("eth1:"), "{links}");

    // Bad input: one line each, nothing made.
    for (args, needle) in [
        (
            &["network", "create", "--subnet", "10.99.7.128/25", "x1"][..],
            "overlaps",
        ),
        (&["network", "create", "--subnet", "nope", "x2"][..], "nope"),
        (&["network", "create", "front"][..], "already exists"),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.98.0.0/24",
                "--gateway",
                "10.97.0.1",
                "x3",
            ][..],
            "10.97.0.1",
        ),
        (&["network", "rm", "front"][..], "has containers"),
        (&["network", "rm", "bridge"][..], "cannot be removed"),
        (&["network", "inspect", "nosuch"][..], "nosuch"),
    ] {
        let r = d.berth(args);
        assert_ne!(r.code, 0, "{args:?}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {r:?}");
        assert!(r.stderr.contains(needle), "{args:?}: {r:?}");
    }
    let ps_before = d.berth(&["ps", "-aq"]).ok();
    for (flags, needle) in [
        (&["--network", "front", "--ip", "10.99.8.5"][..], "outside"),
        (&["--network", "front", "--ip", "10.99.7.50"][..], "taken"),
        (&["--network", "nosuchnet"][..], "nosuchnet"),
        (&["--ip", "10.87.0.9"][..], "user networks"),
        (
            &["--network", "none", "--network-alias", "x"][..],
            "need a network",
        ),
        (
            &["--network", "front", "--mac-address", "zz"][..],
            "mac-address",
        ),
    ] {
        let r = d.run(flags, &["true"]);
        assert_eq!(r.code, 125, "{flags:?}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{flags:?}: {r:?}");
        assert!(r.stderr.contains(needle), "{flags:?}: {r:?}");
    }
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), ps_before);
    let nets = d.berth(&["network", "ls", "-q"]).ok();
    assert_eq!(nets.lines().count(), 3, "{nets}");

    // A fixed MAC.
    let m = d
        .run(
            &[
                "--rm",
                "--network",
                "back",
                "--mac-address",
                "02:42:0a:59:00:99",
            ],
            &["cat", "/sys/class/net/eth0/address"],
        )
        .ok();
    assert_eq!(m, "02:42:0a:59:00:99");

    // The state survives a restart of berthd.
    let mut d = d;
    d.restart();
    let ls = d.berth(&["network", "ls", "-q"]).ok();
    assert_eq!(ls.lines().count(), 3, "{ls}");

    // rm of the containers, then of the networks (prune takes the
    // unused one): nothing of berth's is left.
    for id in [&a, &b] {
        d.berth(&["rm", "-f", id]).ok();
    }
    d.berth(&["network", "rm", "front"]).ok();
    let pruned = d.berth(&["network", "prune", "-f"]).ok();
    assert!(pruned.contains("back"), "{pruned}");
    assert_eq!(d.berth(&["network", "ls", "-q"]).ok(), "bridge");
    poll("no network leftovers", Duration::from_secs(10), || {
        net_leftovers(&d).is_empty().then_some(())
    });
    let after: Vec<String> = berth_links(&d)
        .into_iter()
        .filter(|l| !before_links.contains(l) && l != "berth0")
        .collect();
    assert!(after.is_empty(), "links left: {after:?}");
}

/// Everything of berth's in the test's namespace: its links, its rules,
/// its leases and attachments (empty once every container and user
/// network is gone).
fn berth_traces(d: &Daemon) -> Vec<String> {
    let mut v = berth_links(d);
    let rules = d.netns().exec(&["iptables-save"]).ok();
    v.extend(
        rules
            .lines()
            .filter(|l| l.contains("CNI") || l.contains("berth"))
            .map(String::from),
    );
    v.extend(net_leftovers(d));
    v
}

fn published_ports_answer_and_clash(rt: Rt) {
    let d = Daemon::start(rt);
    let serve =
        "mkdir -p /www && echo hello-from-berth > /www/index.html && exec httpd -f -p 80 -h /www";
    let a = d
        .run(
            &["-d", "-p", "8080:80", "-p", "127.0.0.1::81/udp"],
            &["/bin/sh", "-c", serve],
        )
        .ok();
    // berth port and ps show the mappings.
    let ports = d.berth(&["port", &a]).ok();
    assert!(ports.contains("80/tcp -> 0.0.0.0:8080"), "{ports}");
    assert!(ports.contains("81/udp -> 127.0.0.1:"), "{ports}");
    assert_eq!(d.berth(&["port", &a, "80"]).ok(), "0.0.0.0:8080");
    let ps = d.berth(&["ps", "--format", "{{.Ports}}"]).ok();
    assert!(ps.contains("0.0.0.0:8080->80/tcp"), "{ps}");
    let ins = d.inspect(&a);
    assert_eq!(
        ins["network_settings"]["Ports"][0]["HostPort"], 8080,
        "{ins}"
    );
    assert!(
        ins["network_settings"]["Networks"]["bridge"]["IPAddress"]
            .as_str()
            .is_some_and(|s| s.starts_with("10.87.")),
        "{ins}"
    );
    // The port answers from the test's "host": on 127.0.0.1 (the hairpin)
    // and on the host's own address on the bridge.
    for host in ["127.0.0.1", "10.87.0.1"] {
        // busybox nc, not wget (busybox-static's wget segfaults here).
        let get =
            format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {host} 8080");
        let body = poll(
            "the published port to answer",
            Duration::from_secs(15),
            || {
                let r = d.netns().exec(&["sh", "-c", &get]);
                (r.code == 0 && r.stdout.contains("hello-from-berth")).then_some(r.stdout)
            },
        );
        assert!(body.contains("200 OK"), "{host}: {body}");
    }
    // A host port already published: one line, nothing created.
    let before = d.berth(&["ps", "-aq"]).ok();
    let r = d.run(&["-p", "8080:90"], &["true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    assert!(r.stderr.contains("already published"), "{r:?}");
    for bad in ["x:80", "80/sctp", "8000-8001:80"] {
        let r = d.run(&["-p", bad], &["true"]);
        assert_eq!(r.code, 125, "{bad}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{bad}: {r:?}");
    }
    let r = d.run(&["--network", "none", "-p", "80"], &["true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), before);
    // Creates at once, each asking for a free host port: each gets its
    // own (the choice and the plan are kept under one lock).
    let rootfs = rootfs();
    let made: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let (d, rootfs) = (&d, &rootfs);
                s.spawn(move || {
                    let out = d
                        .cmd(&["create", "-p", "80", "--rootfs"])
                        .arg(rootfs)
                        .arg("true")
                        .output()
                        .expect("run berth create");
                    assert!(out.status.success(), "{out:?}");
                    String::from_utf8_lossy(&out.stdout).trim().to_string()
                })
            })
            .collect();
        runs.into_iter()
            .map(|h| h.join().expect("a create thread"))
            .collect()
    });
    let mut host_ports: Vec<String> = made
        .iter()
        .map(|id| d.berth(&["port", id, "80"]).ok())
        .collect();
    host_ports.sort();
    host_ports.dedup();
    assert_eq!(host_ports.len(), made.len(), "{host_ports:?}");
    for id in &made {
        d.berth(&["rm", id]).ok();
    }
    // rm takes the rules with it; nothing of berth's stays.
    d.berth(&["rm", "-f", &a]).ok();
    poll("nothing of berth's left", Duration::from_secs(15), || {
        berth_traces(&d).is_empty().then_some(())
    });
}

fn publish_all_and_ranges(rt: Rt) {
    use berth_e2e::image::{busybox_layer, Compression, Config, Image};
    let d = Daemon::start(rt);
    let config = Config {
        exposed_ports: vec!["80/tcp".into(), "53/udp".into()],
        ..Default::default()
    };
    let img = Image::build(&[busybox_layer()], Compression::Gzip, &config);
    let r = d.berth_input(&["load"], &img.oci_archive("docker.io/library/exposed:1"));
    assert_eq!(r.code, 0, "load failed: {r:?}");
    // -P: every ExposedPorts entry on a free host port.
    let a = d
        .berth(&["run", "-d", "-P", "exposed:1", "sleep", "100"])
        .ok();
    let ports = d.berth(&["port", &a]).ok();
    assert!(ports.contains("80/tcp -> 0.0.0.0:"), "{ports}");
    assert!(ports.contains("53/udp -> 0.0.0.0:"), "{ports}");
    // Ranges map one to one; an IP and /udp.
    let b = d
        .run(
            &["-d", "-p", "8100-8101:90-91", "-p", "127.0.0.1:8200:92/udp"],
            &["sleep", "100"],
        )
        .ok();
    let ports = d.berth(&["port", &b]).ok();
    for want in [
        "90/tcp -> 0.0.0.0:8100",
        "91/tcp -> 0.0.0.0:8101",
        "92/udp -> 127.0.0.1:8200",
    ] {
        assert!(ports.contains(want), "{want}: {ports}");
    }
    let ps = d.berth(&["ps", "--format", "{{.Ports}}"]).ok();
    assert!(ps.contains("0.0.0.0:8101->91/tcp"), "{ps}");
    for id in [&a, &b] {
        d.berth(&["rm", "-f", id]).ok();
    }
    poll("nothing of berth's left", Duration::from_secs(15), || {
        berth_traces(&d).is_empty().then_some(())
    });
}

fn killed_daemon_mid_create_leaves_nothing(rt: Rt) {
    let mut d = Daemon::start(rt);
    let (links_before, rules_before) = (links(&d), rules(&d));
    d.berth(&["network", "create", "--subnet", "10.99.9.0/24", "crashnet"])
        .ok();
    let keep = d
        .run(
            &["-d", "--network", "crashnet", "-p", "9090:80"],
            &["sleep", "100"],
        )
        .ok();
    // A create in flight when berthd is SIGKILLed: as soon as its
    // attachment record is there (the ADD is running or done).
    let mut child = d
        .cmd(&[
            "run",
            "-d",
            "--network",
            "crashnet",
            "-p",
            "9091:80",
            "--rootfs",
        ])
        .arg(rootfs())
        .args(["sleep", "100"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn berth run");
    let dir = d.state_dir().join("net/attachments");
    poll(
        "an attachment of the second container",
        Duration::from_secs(20),
        || {
            let n = std::fs::read_dir(&dir).map(|r| r.count()).unwrap_or(0);
            (n >= 2).then_some(())
        },
    );
    d.kill9();
    let _ = child.wait();
    d.restart();
    // The container that ran keeps its network.
    assert_eq!(d.state_of(&keep), "running");
    addr_of(&d, &keep);
    for id in d.berth(&["ps", "-aq"]).ok().split_whitespace() {
        d.berth(&["rm", "-f", id]).ok();
    }
    d.berth(&["network", "rm", "crashnet"]).ok();
    poll("nothing of berth's left", Duration::from_secs(15), || {
        (berth_traces(&d).is_empty() && links(&d) == links_before && rules(&d) == rules_before)
            .then_some(())
    });
}

// The rest do not depend on the runtime: the embedded one only.
#[test]
fn user_networks() {
    user_networks_connect_and_refuse_bad_input(Rt::Embedded)
}

#[test]
fn published_ports() {
    published_ports_answer_and_clash(Rt::Embedded)
}

#[test]
fn publish_all() {
    publish_all_and_ranges(Rt::Embedded)
}

#[test]
fn crash_mid_create() {
    killed_daemon_mid_create_leaves_nothing(Rt::Embedded)
}
