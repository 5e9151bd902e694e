//! User namespaces (`--userns=auto`, docs/security.md): the container's root
//! is a high host uid; image files keep their owners inside (idmapped
//! layers, or a chowned copy with the copy snapshotter); a volume written by
//! the container's root belongs to that host uid; ranges are disjoint, come
//! back after rm and survive a SIGKILL of berthd.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use berth_e2e::image::{busybox_layer, Compression, Config, Entry, Image, Layer};
use berth_e2e::{poll, Daemon, Rt};

/// busybox plus `/srv/owned`, owned by 1000:1000, and `/srv/setuid`, a
/// set-uid file of root's (chown must not lose the bit).
fn load_image(d: &Daemon) {
    let layers = vec![
        busybox_layer(),
        Layer::Entries(vec![
            Entry::dir("srv"),
            Entry::File {
                path: "srv/owned".into(),
                data: b"mine\n".to_vec(),
                mode: 0o640,
                uid: 1000,
                gid: 1000,
                xattrs: Vec::new(),
            },
            Entry::File {
                path: "srv/setuid".into(),
                data: b"x".to_vec(),
                mode: 0o4755,
                uid: 0,
                gid: 0,
                xattrs: Vec::new(),
            },
        ]),
    ];
    let img = Image::build(&layers, Compression::None, &Config::default());
    let r = d.berth_input(&["load"], &img.oci_archive("docker.io/library/owned:1"));
    assert_eq!(r.code, 0, "load failed: {r:?}");
}

/// The host range of a container's user namespace from its spec.
fn range_of(d: &Daemon, id: &str) -> (u64, u64) {
    let v = d.inspect(id);
    let m = &v["config"]["spec"]["linux"]["uidMappings"][0];
    let host = m["hostID"]
        .as_u64()
        .unwrap_or_else(|| panic!("no uid mapping: {v}"));
    (host, host + m["size"].as_u64().unwrap())
}

fn annotation(d: &Daemon, id: &str) -> String {
    d.inspect(id)["config"]["spec"]["annotations"]["berth.userns.rootfs"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

const SCRIPT: &str = "cat /proc/self/uid_map; cat /proc/self/gid_map; \
    stat -c '%u:%g' / /bin /bin/sh /srv/owned; stat -c '%a' /srv/setuid; id -u; \
    cat /srv/owned; echo new > /srv/new; stat -c '%u:%g' /srv/new; \
    echo root > /data/f; \
    cat /etc/hosts > /dev/null && ls /sys/kernel > /dev/null && \
    ls /proc/1/status > /dev/null && echo x > /dev/null && \
    echo y > /dev/shm/y && echo z > /tmp/z && echo io ok; \
    { sh -c 'echo 1 > /proc/sys/kernel/ns_last_pid' 2>/dev/null && echo sys writable; } || true; \
    { touch /sys/kernel/x 2>/dev/null && echo sysfs writable; } || true; \
    echo sys: $(ls /sys/class/net); \
    echo proc: $(tail -n +3 /proc/net/dev | cut -d: -f1)";

fn check_inside(d: &Daemon, name: &str, expect_method: &str) {
    let r = d.berth(&[
        "run",
        "--name",
        name,
        "--userns=auto",
        "-v",
        &format!("{name}-vol:/data"),
        "owned:1",
        "sh",
        "-c",
        SCRIPT,
    ]);
    assert_eq!(r.code, 0, "{r:?}\n{}", d.daemon_log());
    let lines: Vec<&str> = r.stdout.lines().collect();
    let (host, end) = range_of(d, name);
    assert!(host >= 100_000_000, "not a high range: {host}");
    assert_eq!(end - host, 65536);
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(map, ["0", &host.to_string(), "65536"], "{r:?}");
    let gmap: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(gmap, map, "{r:?}");
    // Image files keep their owners (and set-uid bits) inside.
    assert_eq!(
        &lines[2..9],
        ["0:0", "0:0", "0:0", "1000:1000", "4755", "0", "mine"],
        "{r:?}"
    );
    // What root writes in the root is root's inside.
    assert_eq!(lines[9], "0:0", "{r:?}");
    assert_eq!(lines[10], "io ok", "{r:?}");
    assert_eq!(
        lines.len(),
        13,
        "/proc/sys and /sys must stay read-only: {r:?}"
    );
    // /sys is a sysfs of the container's own network namespace: it shows
    // the devices the container has, not the host's.
    let devices = |line: &str, tag: &str| -> std::collections::BTreeSet<String> {
        let l = line.strip_prefix(tag).unwrap_or_else(|| panic!("{r:?}"));
        l.split_whitespace().map(str::to_string).collect()
    };
    let (sys, proc) = (devices(lines[11], "sys:"), devices(lines[12], "proc:"));
    assert!(sys.contains("lo"), "{r:?}");
    assert_eq!(sys, proc, "/sys/class/net is not the container's: {r:?}");
    assert_eq!(annotation(d, name), expect_method);
    // On the host, the volume file belongs to the range's root.
    let f = d
        .state_dir()
        .join("volumes")
        .join(format!("{name}-vol"))
        .join("_data/f");
    let meta = std::fs::metadata(&f).unwrap();
    assert_eq!((u64::from(meta.uid()), u64::from(meta.gid())), (host, host));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "root\n");
    d.berth(&["rm", name]).ok();
    d.berth(&["volume", "rm", &format!("{name}-vol")]).ok();
}

fn auto_maps_root_to_a_high_uid_and_files_keep_their_owners(rt: Rt) {
    let d = Daemon::start(rt);
    load_image(&d);
    check_inside(&d, "idm", "idmapped");
    // exec joins the container's user namespace, then its network
    // namespace, which that user namespace owns.
    let id = d
        .berth(&["run", "-d", "--userns=auto", "owned:1", "sleep", "300"])
        .ok();
    let r = d.berth(&["exec", &id, "sh", "-c", "id -u; cat /srv/owned"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", d.daemon_log());
    assert_eq!(r.stdout, "0\nmine\n", "{r:?}");
    // The filter and Docker's capabilities hold in the user namespace too,
    // for the init and an exec'd process (the embedded runtime loads the
    // filter itself there, with a capability it drops again).
    for pid in ["self", "1"] {
        let r = d.berth(&[
            "exec",
            &id,
            "grep",
            "-E",
            "^(Seccomp|CapEff):",
            &format!("/proc/{pid}/status"),
        ]);
        assert_eq!(
            r.stdout, "CapEff:\t00000000a80425fb\nSeccomp:\t2\n",
            "{pid}: {r:?}"
        );
    }
    // berthd made both namespaces; rm leaves neither file behind (their
    // unmount runs off the rm path, on a thread of its own: poll).
    let netns = d.state_dir().join("netns");
    assert!(netns.join(format!("{id}.user")).exists());
    d.berth(&["rm", "-f", &id]).ok();
    for f in [id.clone(), format!("{id}.user"), format!("{id}.json")] {
        poll(
            &format!("{f} to be removed"),
            Duration::from_secs(10),
            || (!netns.join(&f).exists()).then_some(()),
        );
    }
    // The default stays the host's namespace.
    let r = d.berth(&["run", "--rm", "owned:1", "cat", "/proc/self/uid_map"]);
    let map: Vec<&str> = r.stdout.split_whitespace().collect();
    assert_eq!(map, ["0", "0", "4294967295"], "{r:?}");
}

fn the_copy_snapshotter_gives_a_chowned_copy(rt: Rt) {
    let d = Daemon::start_with(rt, &["--snapshotter", "copy"]);
    load_image(&d);
    check_inside(&d, "cpy", "chowned");
}

fn ranges_are_disjoint_come_back_after_rm_and_survive_a_daemon_kill(rt: Rt) {
    let mut d = Daemon::start_configured(rt, "userns = \"auto\"\n", &[]);
    load_image(&d);
    let a = d.berth(&["run", "-d", "owned:1", "sleep", "300"]).ok();
    let b = d
        .berth(&[
            "run",
            "-d",
            "--userns=auto:size=1000",
            "owned:1",
            "sleep",
            "300",
        ])
        .ok();
    let (ra, rb) = (range_of(&d, &a), range_of(&d, &b));
    assert_eq!(ra.1 - ra.0, 65536);
    assert_eq!(rb.1 - rb.0, 1000);
    assert!(ra.1 <= rb.0 || rb.1 <= ra.0, "{ra:?} {rb:?} overlap");
    // The kernel agrees: the running init's map is the recorded one.
    let pid = d.inspect(&b)["pid"].as_i64().unwrap();
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", &rb.0.to_string(), "1000"]
    );
    // --userns=host overrides the daemon's default.
    let h = d
        .berth(&["create", "--userns=host", "owned:1", "true"])
        .ok();
    let spec = &d.inspect(&h)["config"]["spec"];
    assert!(spec["linux"]["uidMappings"].is_null(), "{spec}");
    // rm gives the range back: the next container gets it.
    d.berth(&["rm", "-f", &a]).ok();
    let c = d.berth(&["create", "owned:1", "true"]).ok();
    assert_eq!(range_of(&d, &c), ra);
    // After a SIGKILL, the restored records hold their ranges: a new one
    // overlaps neither.
    d.kill9();
    d.restart();
    assert_eq!(range_of(&d, &b), rb);
    assert_eq!(range_of(&d, &c), ra);
    let e = d.berth(&["run", "-d", "owned:1", "sleep", "300"]).ok();
    let re = range_of(&d, &e);
    for other in [ra, rb] {
        assert!(
            re.1 <= other.0 || other.1 <= re.0,
            "{re:?} overlaps {other:?}"
        );
    }
    // A restored container's namespaces are still its own: exec joins them.
    // (Its range of 1000 ids does not map /srv/owned's owner, 1000: that
    // file is nobody's inside; root's are still root's.)
    let r = d.berth(&[
        "exec",
        &b,
        "sh",
        "-c",
        "cat /srv/setuid; stat -c %U /srv/owned",
    ]);
    assert_eq!(r.code, 0, "{r:?}\n{}", d.daemon_log());
    assert_eq!(r.stdout, "xnobody\n", "{r:?}");
    for id in [&b, &c, &e, &h] {
        d.berth(&["rm", "-f", id]).ok();
    }
}

fn what_cannot_run_in_a_user_namespace_is_a_clear_error(rt: Rt) {
    let d = Daemon::start(rt);
    load_image(&d);
    let other = d.berth(&["run", "-d", "owned:1", "sleep", "300"]).ok();
    let join = format!("container:{other}");
    if rt == Rt::Embedded {
        // libcontainer enters the new user namespace before it joins the
        // other container's network namespace: the kernel would refuse it.
        let r = d.berth(&[
            "create",
            "--userns=auto",
            "--network",
            &join,
            "owned:1",
            "true",
        ]);
        assert_ne!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("--runtime runc"), "{r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    }
    if rt == Rt::Runc {
        // runc may: X's network namespace belongs to another user
        // namespace, so /sys is the host's, read-only (no sysfs mount).
        let r = d.berth(&[
            "run",
            "--rm",
            "--userns=auto",
            "--network",
            &join,
            "owned:1",
            "sh",
            "-c",
            "ls /sys/kernel >/dev/null && echo sys ok; touch /sys/kernel/x 2>/dev/null || echo ro",
        ]);
        assert_eq!(r.code, 0, "{r:?}\n{}", d.daemon_log());
        assert_eq!(r.stdout, "sys ok\nro\n", "{r:?}");
    }
    let rootfs = berth_e2e::rootfs();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--userns=auto", "--privileged", "owned:1", "true"],
            "--userns=host",
        ),
        (
            vec!["--userns=auto", "--network", "host", "owned:1", "true"],
            "--userns=host",
        ),
        (
            vec![
                "--userns=auto",
                "--rootfs",
                rootfs.to_str().unwrap(),
                "true",
            ],
            "needs an image",
        ),
        (
            vec!["--userns=private", "owned:1", "true"],
            "use host, auto",
        ),
        (vec!["--userns=auto:size=0", "owned:1", "true"], "size"),
        (
            vec!["--userns=auto:size=100", "-u", "1000", "owned:1", "true"],
            "outside",
        ),
    ];
    for (args, want) in cases {
        let mut full = vec!["create"];
        full.extend(&args);
        let r = d.berth(&full);
        assert_ne!(r.code, 0, "{args:?}: {r:?}");
        assert!(r.stderr.contains(want), "{args:?}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {r:?}");
    }
    assert_eq!(
        d.berth(&["ps", "-aq", "--no-trunc"]).ok().trim(),
        other,
        "a refused create left a container"
    );
    d.berth(&["rm", "-f", &other]).ok();
}

berth_e2e::both_runtimes!(
    auto_maps_root_to_a_high_uid_and_files_keep_their_owners,
    the_copy_snapshotter_gives_a_chowned_copy,
    ranges_are_disjoint_come_back_after_rm_and_survive_a_daemon_kill,
    what_cannot_run_in_a_user_namespace_is_a_clear_error
);
