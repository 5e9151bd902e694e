//! Mounts on real containers: -v and --mount bind mounts (read-only ones
//! refuse writes, read-write ones show the container's writes on the host),
//! targets resolved inside the container's root (an image symlink to /etc
//! does not reach the host's /etc), tmpfs and /dev/shm sizes, bad input.

use std::path::{Path, PathBuf};

use berth_e2e::image::{busybox_layer, Compression, Config, Entry, Image, Layer};
use berth_e2e::{settled_mount_leftovers, Daemon, Rt};

fn load(d: &Daemon, img: &Image, tag: &str) {
    let r = d.berth_input(&["load"], &img.oci_archive(tag));
    assert_eq!(r.code, 0, "load failed: {r:?}");
}

fn busybox_image(d: &Daemon) {
    let img = Image::build(&[busybox_layer()], Compression::None, &Config::default());
    load(d, &img, "docker.io/library/bb:1");
}

/// A scratch directory inside the daemon's test root (removed with it).
fn tempdir(d: &Daemon, name: &str) -> PathBuf {
    let p = d.root.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn bind_mounts_read_only_refuse_writes_and_read_write_show_them_on_the_host() {
    for rt in [Rt::Embedded, Rt::Runc] {
        let d = Daemon::start(rt);
        busybox_image(&d);
        let rw = tempdir(&d, "rw");
        let ro = tempdir(&d, "ro");
        std::fs::write(ro.join("seen"), "from the host\n").unwrap();
        // -v creates a missing host directory, as Docker's does.
        let made = d.root.join("made/by/v");
        let script = "echo written > /rw/out && cat /ro/seen && \
             { sh -c 'echo x > /ro/no' 2>&1 || true; } && \
             echo m > /made/m && cat /mnt/seen";
        let r = d.berth(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:/rw", s(&rw)),
            "-v",
            &format!("{}:/ro:ro", s(&ro)),
            "-v",
            &format!("{}:/made:rw,rprivate", s(&made)),
            "--mount",
            &format!("type=bind,src={},dst=/mnt,readonly", s(&ro)),
            "bb:1",
            "sh",
            "-c",
            script,
        ]);
        assert_eq!(r.code, 0, "{rt:?}: {r:?}");
        assert!(r.stdout.starts_with("from the host\n"), "{r:?}");
        assert!(r.stdout.contains("Read-only file system"), "EROFS: {r:?}");
        assert!(r.stdout.ends_with("from the host\n"), "{r:?}");
        assert_eq!(
            std::fs::read_to_string(rw.join("out")).unwrap(),
            "written\n"
        );
        assert_eq!(std::fs::read_to_string(made.join("m")).unwrap(), "m\n");
        assert!(!ro.join("no").exists());
        // A single file can be bound too.
        let r = d.berth(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:/etc/seen.txt:ro", s(&ro.join("seen"))),
            "bb:1",
            "cat",
            "/etc/seen.txt",
        ]);
        assert_eq!(r.stdout, "from the host\n", "{rt:?}: {r:?}");
        assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
        assert_eq!(settled_mount_leftovers(s(&d.root)), Vec::<String>::new());
    }
}

/// sha256 of every file below /etc (path and content), as `sha256sum` sees
/// them: a change anywhere shows.
fn etc_checksum() -> String {
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "find /etc -xdev -type f -readable 2>/dev/null | sort | xargs -d '\\n' sha256sum 2>/dev/null | sha256sum",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_symlink_in_the_image_is_followed_inside_the_root_never_to_the_host() {
    let d = Daemon::start(Rt::Embedded);
    let layers = vec![
        busybox_layer(),
        Layer::Entries(vec![
            Entry::Symlink {
                path: "data".into(),
                target: "/etc".into(),
            },
            Entry::Symlink {
                path: "up".into(),
                target: "../../../../../../etc".into(),
            },
        ]),
    ];
    let img = Image::build(&layers, Compression::None, &Config::default());
    load(&d, &img, "docker.io/library/evil:1");
    let dir = tempdir(&d, "vol");
    std::fs::write(dir.join("passwd"), "not the host's\n").unwrap();
    let before = etc_checksum();
    let host_passwd = std::fs::read("/etc/passwd").unwrap();
    for target in ["/data", "/up", "/data/sub"] {
        let r = d.berth(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:{target}", s(&dir)),
            "evil:1",
            "sh",
            "-c",
            "cat /etc/passwd; echo hi > /etc/written || true",
        ]);
        assert_eq!(r.code, 0, "{target}: {r:?}");
        if target != "/data/sub" {
            // The mount landed on the container's /etc.
            assert_eq!(r.stdout, "not the host's\n", "{target}");
        }
    }
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), host_passwd);
    assert!(!Path::new("/etc/written").exists());
    assert!(!Path::new("/etc/sub").exists());
    assert_eq!(etc_checksum(), before, "the host's /etc changed");
    // A symlink to /proc in the image is refused (never a mount on /proc).
    let layers = vec![
        busybox_layer(),
        Layer::Entries(vec![Entry::Symlink {
            path: "p".into(),
            target: "/proc/sys".into(),
        }]),
    ];
    let img = Image::build(&layers, Compression::None, &Config::default());
    load(&d, &img, "docker.io/library/procish:1");
    let r = d.berth(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/p", s(&dir)),
        "procish:1",
        "true",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("/p"), "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
    assert_eq!(settled_mount_leftovers(s(&d.root)), Vec::<String>::new());
}

#[test]
fn tmpfs_and_shm_size() {
    let d = Daemon::start(Rt::Embedded);
    busybox_image(&d);
    let r = d.berth(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch:size=1m,mode=1770",
        "--mount",
        "type=tmpfs,dst=/other,tmpfs-size=2m",
        "--shm-size",
        "8m",
        "bb:1",
        "sh",
        "-c",
        "stat -c %a /scratch; df -k /scratch /other /dev/shm | tail -n 3 | awk '{print $2}'; \
         grep ' /scratch ' /proc/mounts | grep -c noexec",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "1770\n1024\n2048\n8192\n1\n", "{r:?}");
}

#[test]
fn bad_mounts_are_one_line_errors_and_create_nothing() {
    let d = Daemon::start(Rt::Embedded);
    busybox_image(&d);
    let missing = d.root.join("missing");
    for (args, want) in [
        (vec!["-v", "relative/dir:/x"], "relative"),
        (vec!["-v", "/tmp:/proc/x"], "/proc"),
        (vec!["-v", "/tmp:/sys"], "/sys"),
        (vec!["-v", "/tmp:x"], "not absolute"),
        (vec!["-v", "/tmp:/x:rx"], "invalid"),
        (
            vec!["--mount", &format!("type=bind,src={},dst=/x", s(&missing))],
            "does not exist",
        ),
        (vec!["--mount", "type=bind,dst=/x"], "source"),
        (vec!["--tmpfs", "/t:size=lots"], "size"),
        (vec!["-v", "/tmp:/x", "--tmpfs", "/x"], "two mounts"),
        (vec!["--shm-size", "1"], "shm-size"),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend(args.iter().copied());
        a.extend(["bb:1", "true"]);
        let r = d.berth(&a);
        assert_ne!(r.code, 0, "{args:?}: {r:?}");
        assert!(r.stderr.contains(want), "{args:?}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {r:?}");
    }
    let missing_msg = d.berth(&[
        "run",
        "--mount",
        &format!("type=bind,src={},dst=/x", s(&missing)),
        "bb:1",
        "true",
    ]);
    assert!(missing_msg.stderr.contains(s(&missing)), "{missing_msg:?}");
    assert!(!missing.exists());
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
    assert_eq!(settled_mount_leftovers(s(&d.root)), Vec::<String>::new());
}

#[test]
fn named_volumes_keep_data_across_containers_and_a_daemon_kill() {
    let mut d = Daemon::start(Rt::Embedded);
    let layers = vec![
        busybox_layer(),
        Layer::Entries(vec![
            Entry::dir("srv"),
            Entry::File {
                path: "srv/seed".into(),
                data: b"from the image\n".to_vec(),
                mode: 0o640,
                uid: 1000,
                gid: 100,
                xattrs: Vec::new(),
            },
        ]),
    ];
    let img = Image::build(&layers, Compression::None, &Config::default());
    load(&d, &img, "docker.io/library/seeded:1");
    // A new volume over an image directory starts with its files.
    let r = d.berth(&[
        "run",
        "--name",
        "w",
        "-v",
        "data:/srv",
        "seeded:1",
        "sh",
        "-c",
        "stat -c '%a %u %g' /srv/seed; cat /srv/seed; echo kept > /srv/new",
    ]);
    assert_eq!(r.stdout, "640 1000 100\nfrom the image\n", "{r:?}");
    // In use (by a stopped container): refused.
    let r = d.berth(&["volume", "rm", "data"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("in use"), "{r:?}");
    d.berth(&["rm", "w"]).ok();
    let r = d.berth(&["run", "--rm", "-v", "data:/x", "seeded:1", "cat", "/x/new"]);
    assert_eq!(r.stdout, "kept\n", "{r:?}");
    d.kill9();
    d.restart();
    let r = d.berth(&["run", "--rm", "-v", "data:/x", "seeded:1", "cat", "/x/new"]);
    assert_eq!(r.stdout, "kept\n", "{r:?}");
    assert_eq!(d.berth(&["volume", "ls", "-q"]).ok(), "data");
    // rm -v removes the anonymous volume and nothing else.
    let id = d
        .berth(&["create", "-v", "/anon", "-v", "data:/d", "seeded:1", "true"])
        .ok();
    let names = d.berth(&["volume", "ls", "-q"]).ok();
    assert_eq!(names.lines().count(), 2, "{names}");
    d.berth(&["rm", "-v", &id]).ok();
    assert_eq!(d.berth(&["volume", "ls", "-q"]).ok(), "data");
    d.berth(&["volume", "rm", "data"]).ok();
    assert_eq!(d.berth(&["volume", "ls", "-q"]).ok(), "");
}

/// The volume events of `d`'s log, as `type name` (JSON `id`).
fn volume_events(d: &Daemon) -> Vec<String> {
    d.events_json(&["--filter", "type=volume"])
        .iter()
        .filter(|e| e["type"] != "missed")
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap_or(""),
                e["id"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn implicit_volume_creates_and_removals_are_events() {
    let d = Daemon::start(Rt::Embedded);
    busybox_image(&d);
    // A -v of a new name makes the volume.
    d.berth(&["run", "--name", "uses", "-v", "implied:/x", "bb:1", "true"])
        .ok();
    // --rm: the anonymous volume goes with the container (asynchronously,
    // after the container's delete).
    d.berth(&["run", "--rm", "-v", "/anon", "bb:1", "true"])
        .ok();
    let evs = berth_e2e::poll(
        "the anonymous volume's removal",
        std::time::Duration::from_secs(20),
        || {
            let evs = volume_events(&d);
            (evs.len() >= 3).then_some(evs)
        },
    );
    assert_eq!(evs[0], "create implied", "{evs:?}");
    let anon = evs[1]
        .strip_prefix("create ")
        .expect("the anonymous create");
    assert_eq!(evs[2], format!("delete {anon}"), "{evs:?}");
    // prune removes the named one once nothing uses it.
    d.berth(&["rm", "uses"]).ok();
    d.berth(&["volume", "prune", "-f"]).ok();
    let evs = volume_events(&d);
    assert_eq!(evs.len(), 4, "{evs:?}");
    assert_eq!(evs[3], "delete implied", "{evs:?}");
    // Container events are still there, and not among these.
    let all = d.events_json(&["--filter", "type=container"]);
    assert!(all.iter().all(|e| e.get("object").is_none()), "{all:?}");
    assert!(all.iter().any(|e| e["type"] == "create"), "{all:?}");
}
