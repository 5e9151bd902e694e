//! Networking (docs/networking.md): `--network none|host|container:ID` and
//! the per-container /etc/hosts, /etc/hostname and /etc/resolv.conf.
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
    left
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
    // No flag: the same.
    let r = d.run(&["--rm"], &["cat", "/proc/net/dev"]);
    assert_eq!(interfaces(&r.stdout), ["lo"], "{r:?}");
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

both_runtimes!(
    none_has_only_loopback_up,
    host_shares_the_daemons_namespace,
    container_mode_joins_the_other,
    etc_files_follow_the_flags,
    bad_network_input_is_refused,
    restore_removes_what_no_container_owns,
);
