//! Images end to end: archives made by the test (OCI layout and `docker
//! save`), loaded through the CLI, run as containers whose merged tree is
//! checked entry by entry; defaults from the image config; shared lower
//! layers; rmi, tag, prune; save and load again.

use std::time::Duration;

use berth_e2e::image::{busybox_layer, Compression, Config, Entry, Image, Layer};
use berth_e2e::{mount_leftovers, poll, settled_mount_leftovers, Daemon, Rt};

/// Layers on top of busybox that exercise every kind of entry the
/// snapshotter must keep: modes, owners, a setuid file, a hard link, a
/// symlink, an xattr, a whiteout and an opaque directory.
fn tricky_layers() -> Vec<Layer> {
    vec![
        busybox_layer(),
        Layer::Entries(vec![
            Entry::dir("data"),
            Entry::File {
                path: "data/a".into(),
                data: b"alpha\n".to_vec(),
                mode: 0o640,
                uid: 1000,
                gid: 100,
                xattrs: vec![("user.berth".into(), b"yes".to_vec())],
            },
            Entry::file("data/b", b"beta\n", 0o644),
            Entry::Hardlink {
                path: "data/hl".into(),
                target: "data/a".into(),
            },
            Entry::Symlink {
                path: "data/sl".into(),
                target: "a".into(),
            },
            Entry::file("bin/suid", b"#!/bin/sh\necho suid\n", 0o4755),
            Entry::dir("etc/opq"),
            Entry::file("etc/opq/old", b"old\n", 0o644),
        ]),
        Layer::Entries(vec![
            Entry::Whiteout {
                path: "data/b".into(),
            },
            Entry::Opaque {
                dir: "etc/opq".into(),
            },
            Entry::file("etc/opq/new", b"new\n", 0o600),
        ]),
    ]
}

/// What the container sees of the tricky layers.
const TRICKY_SCRIPT: &str = "ls /data | tr '\\n' ' '; echo; \
     cat /data/a /data/hl /data/sl; \
     stat -c '%a %u %g %h' /data/a; \
     stat -c '%a %u %g' /bin/suid; \
     ls /etc/opq | tr '\\n' ' '; echo; \
     stat -c '%a' /etc/opq/new; \
     [ -e /data/b ] && echo b-still-there || echo b-gone";

const TRICKY_EXPECTED: &str = "a hl sl \n\
alpha\nalpha\nalpha\n\
640 1000 100 2\n\
4755 0 0\n\
new \n\
600\n\
b-gone\n";

fn load(d: &Daemon, archive: &[u8]) -> String {
    let r = d.berth_input(&["load"], archive);
    assert_eq!(r.code, 0, "load failed: {r:?}");
    r.stdout
}

fn each_runtime(f: impl Fn(Rt)) {
    for rt in [Rt::Embedded, Rt::Runc] {
        f(rt);
    }
}

#[test]
fn oci_archive_loads_and_runs_with_the_exact_merged_tree() {
    each_runtime(|rt| {
        let d = Daemon::start(rt);
        let img = Image::build(&tricky_layers(), Compression::Gzip, &Config::default());
        let out = load(&d, &img.oci_archive("docker.io/library/tricky:1"));
        assert!(out.contains("Loaded image: tricky:1"), "{out}");
        let r = d.berth(&["run", "--rm", "tricky:1", "sh", "-c", TRICKY_SCRIPT]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.stdout, TRICKY_EXPECTED, "{rt:?}");
        assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
        assert_eq!(
            settled_mount_leftovers(d.root.to_str().unwrap()),
            Vec::<String>::new()
        );
    });
}

#[test]
fn docker_save_archive_loads_and_runs() {
    let d = Daemon::start(Rt::Embedded);
    let img = Image::build(&tricky_layers(), Compression::None, &Config::default());
    let out = load(&d, &img.docker_archive("saved:2"));
    assert!(out.contains("Loaded image: saved:2"), "{out}");
    let r = d.berth(&["run", "--rm", "saved:2", "sh", "-c", TRICKY_SCRIPT]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, TRICKY_EXPECTED);
    // The xattr survived the unpack (checked in the shared layer on the host).
    let found = find_files(&d.state_dir().join("images"), "a")
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("data")))
        // A removed container's snapshot is renamed `tmp-rm-…` and deleted
        // in the background (docs/images.md): not a layer.
        .filter(|p| {
            !p.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with("tmp-rm-"))
        })
        .filter_map(|p| xattr(&p, "user.berth"))
        .collect::<Vec<_>>();
    assert_eq!(found, vec![b"yes".to_vec()], "the layer's xattr");
}

/// Files named `name` anywhere below `dir` (not following symlinks).
fn find_files(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            out.extend(find_files(&p, name));
        } else if ft.is_file() && e.file_name() == name {
            out.push(p);
        }
    }
    out
}

fn xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and live across the call;
    // the buffer's length is passed with it.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

#[test]
fn the_image_config_gives_the_defaults_and_flags_override_them() {
    let d = Daemon::start(Rt::Embedded);
    let config = Config {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo \"$GREETING from $(pwd) as $(id -u)\"; exit 3".into()],
        env: vec!["GREETING=hello".into(), "PATH=/bin:/usr/bin".into()],
        workdir: Some("/tmp".into()),
        user: Some("nobody".into()),
        labels: vec![("from".into(), "image".into())],
        stop_signal: Some("SIGUSR1".into()),
        ..Default::default()
    };
    let img = Image::build(&[busybox_layer()], Compression::Gzip, &config);
    load(&d, &img.oci_archive("docker.io/library/cfg:latest"));

    let info = d.berth(&["info"]).ok();
    assert!(info.contains("Images: 1"), "{info}");
    assert!(info.contains("Storage driver: overlay"), "{info}");

    let r = d.berth(&["run", "--rm", "cfg"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stdout, "hello from /tmp as 65534\n");

    // -e, -w and -u override; the command replaces Cmd but keeps the
    // entrypoint.
    let r = d.berth(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hi",
        "-w",
        "/",
        "-u",
        "0",
        "cfg",
        "echo \"$GREETING from $(pwd) as $(id -u)\"",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "hi from / as 0\n");

    // --entrypoint replaces the entrypoint and drops the image's Cmd.
    let r = d.berth(&["run", "--rm", "--entrypoint", "/bin/echo", "cfg", "plain"]);
    assert_eq!(r.ok(), "plain");

    // Labels and the stop signal come from the image; ps and inspect name it.
    let id = d.berth(&["create", "--label", "mine=yes", "cfg"]).ok();
    let v = d.inspect(&id);
    assert_eq!(v["labels"]["from"], "image", "{v}");
    assert_eq!(v["labels"]["mine"], "yes", "{v}");
    assert_eq!(v["config"]["config"]["stop_signal"], 10, "{v}");
    let ps = d.berth(&["ps", "-a", "--format", "json"]).ok();
    let row: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(row["image"], "cfg:latest", "{row}");
    assert!(row["image_id"].as_str().unwrap().starts_with("sha256:"));
    assert!(d.berth(&["ps", "-a"]).ok().contains("cfg:latest"));
    d.berth(&["rm", &id]).ok();
}

#[test]
fn bad_image_input_is_a_clear_error_and_creates_nothing() {
    let d = Daemon::start(Rt::Embedded);
    // A corrupt archive (a layer's bytes changed) stores nothing.
    let img = Image::build(&[busybox_layer()], Compression::Gzip, &Config::default());
    let mut bad = img.oci_archive("docker.io/library/corrupt:1");
    let n = bad.len();
    for b in &mut bad[n / 2..n / 2 + 64] {
        *b ^= 0xff;
    }
    let r = d.berth_input(&["load"], &bad);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr.contains("sha256:"),
        "the error names the digest: {r:?}"
    );
    assert_eq!(d.berth(&["images", "-aq"]).ok(), "");
    let blobs = d.state_dir().join("images/blobs/sha256");
    assert_eq!(std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0), 0);

    let r = d.berth(&["run", "--rm", "--pull", "never", "nosuch:1", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("No such image: nosuch:1"), "{r:?}");
    let r = d.berth(&["run", "--rm", "Bad:Name", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("invalid reference format"), "{r:?}");
    // An image with no command and none given.
    load(&d, &img.oci_archive("docker.io/library/nocmd:1"));
    let r = d.berth(&["run", "--rm", "nocmd:1"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("no command specified"), "{r:?}");
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
    assert_eq!(
        settled_mount_leftovers(d.root.to_str().unwrap()),
        Vec::<String>::new()
    );
}

#[test]
fn two_containers_share_the_lower_layers_and_prune_empties_the_store() {
    let d = Daemon::start(Rt::Embedded);
    let img = Image::build(&tricky_layers(), Compression::Gzip, &Config::default());
    load(&d, &img.oci_archive("docker.io/library/shared:1"));
    let a = d.berth(&["run", "-d", "shared:1", "sleep", "1000"]).ok();
    let b = d.berth(&["run", "-d", "shared:1", "sleep", "1000"]).ok();
    let root = d.state_dir();
    let overlays: Vec<String> = mount_leftovers(root.to_str().unwrap())
        .into_iter()
        .filter(|l| l.contains(" overlay "))
        .collect();
    assert_eq!(overlays.len(), 2, "{overlays:#?}");
    // lowerdir=a:b:c, or one lowerdir+= per layer (the new mount API).
    let lower = |l: &str| {
        l.split(',')
            .filter_map(|o| {
                o.strip_prefix("lowerdir=")
                    .or_else(|| o.strip_prefix("lowerdir+="))
            })
            .collect::<Vec<_>>()
            .join(":")
    };
    assert!(!lower(&overlays[0]).is_empty(), "{overlays:#?}");
    assert_eq!(lower(&overlays[0]), lower(&overlays[1]), "{overlays:#?}");

    // rmi of an image in use is refused; -f untags and keeps the content.
    let r = d.berth(&["rmi", "shared:1"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("used by a container"), "{r:?}");

    // A write in one container is not seen by the other.
    d.berth(&["exec", &a, "sh", "-c", "echo mine > /data/a"])
        .ok();
    assert_eq!(d.berth(&["exec", &b, "cat", "/data/a"]).ok(), "alpha");

    // rm of one leaves the other running.
    d.berth(&["rm", "-f", &a]).ok();
    assert_eq!(d.state_of(&b), "running");
    assert_eq!(d.berth(&["exec", &b, "cat", "/data/sl"]).ok(), "alpha");
    d.berth(&["rm", "-f", &b]).ok();

    let r = d.berth(&["image", "prune", "-a", "-f"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(d.berth(&["images", "-aq"]).ok(), "");
    let blobs = root.join("images/blobs/sha256");
    let left: Vec<_> = std::fs::read_dir(&blobs)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "blobs left: {left:?}");
    assert_eq!(
        settled_mount_leftovers(root.to_str().unwrap()),
        Vec::<String>::new()
    );
}

#[test]
fn tag_rmi_history_save_and_load_again() {
    let d = Daemon::start(Rt::Embedded);
    let img = Image::build(
        &[busybox_layer()],
        Compression::Gzip,
        &Config {
            cmd: vec!["echo".into(), "round trip".into()],
            ..Default::default()
        },
    );
    load(&d, &img.oci_archive("docker.io/library/orig:1"));
    d.berth(&["tag", "orig:1", "127.0.0.1:5000/copy:2"]).ok();
    let table = d.berth(&["images"]).ok();
    assert!(
        table.contains("orig") && table.contains("127.0.0.1:5000/copy"),
        "{table}"
    );
    let ids = d.berth(&["images", "-q"]).ok();
    assert_eq!(ids.lines().count(), 1, "one image, two names: {ids}");
    let hist = d.berth(&["history", "--format", "json", "orig:1"]).ok();
    assert!(hist.contains("berth e2e test layer"), "{hist}");

    let dir = tempdir(&d, "save");
    let file = dir.join("saved.tar");
    d.berth(&["save", "-o", file.to_str().unwrap(), "orig:1"])
        .ok();
    let untag = d.berth(&["rmi", "orig:1", "127.0.0.1:5000/copy:2"]).ok();
    assert!(untag.contains("Untagged: orig:1"), "{untag}");
    assert!(untag.contains("Deleted: sha256:"), "{untag}");
    assert_eq!(d.berth(&["images", "-aq"]).ok(), "");
    let r = d.berth(&["load", "-i", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(d.berth(&["run", "--rm", "orig:1"]).ok(), "round trip");
    // skopeo reads what save writes (when it is installed).
    if std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok()
    {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", &format!("oci-archive:{}", file.display())])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn an_image_container_survives_a_daemon_kill_and_its_root_is_released() {
    let mut d = Daemon::start(Rt::Embedded);
    let img = Image::build(&[busybox_layer()], Compression::Gzip, &Config::default());
    load(&d, &img.oci_archive("docker.io/library/live:1"));
    let id = d.berth(&["run", "-d", "live:1", "sleep", "1000"]).ok();
    d.restart();
    assert_eq!(d.state_of(&id), "running");
    assert_eq!(d.berth(&["exec", &id, "echo", "alive"]).ok(), "alive");
    d.berth(&["rm", "-f", &id]).ok();
    poll("the root to be unmounted", Duration::from_secs(10), || {
        mount_leftovers(&id).is_empty().then_some(())
    });
}

#[test]
fn the_image_healthcheck_runs_and_its_exposed_ports_are_recorded() {
    let d = Daemon::start(Rt::Embedded);
    let config = Config {
        healthcheck: Some(serde_json::json!({
            "Test": ["CMD-SHELL", "test -e /tmp/ok"],
            "Interval": 200_000_000u64,
            "Retries": 1,
        })),
        exposed_ports: vec!["8080/tcp".into(), "53/udp".into()],
        ..Default::default()
    };
    let img = Image::build(&[busybox_layer()], Compression::Gzip, &config);
    load(&d, &img.oci_archive("docker.io/library/checked:1"));
    let id = d
        .berth(&[
            "run",
            "-d",
            "checked:1",
            "sh",
            "-c",
            "touch /tmp/ok; exec sleep 100",
        ])
        .ok();
    poll("healthy", Duration::from_secs(15), || {
        (d.inspect(&id)["health"]["status"] == "healthy").then_some(())
    });
    let v = d.inspect(&id);
    let ports = &v["config"]["config"]["exposed_ports"];
    assert_eq!(ports, &serde_json::json!(["53/udp", "8080/tcp"]), "{v}");
    // --no-healthcheck drops the image's check.
    let quiet = d
        .berth(&["run", "-d", "--no-healthcheck", "checked:1", "sleep", "100"])
        .ok();
    assert!(
        d.inspect(&quiet)["health"]["status"].is_null() || d.inspect(&quiet)["health"].is_null()
    );
    d.berth(&["rm", "-f", &id, &quiet]).ok();
}

/// A scratch directory inside the daemon's test root (removed with it).
fn tempdir(d: &Daemon, name: &str) -> std::path::PathBuf {
    let p = d.root.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}
