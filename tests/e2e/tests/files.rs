//! A container's files on real containers: `cp` both ways (running and
//! stopped, modes, times, symlinks, a 100 MB file, byte for byte), paths
//! that stay inside the container's root (an image symlink /data -> /etc,
//! with and without a volume on it), one-line errors, `diff`, `export`,
//! `commit` then `run`, `--rm` taking its anonymous volumes, and berthd's
//! memory while a 1 GiB file goes through.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_e2e::image::{busybox_layer, Compression, Config, Entry, Image, Layer};
use berth_e2e::{poll_until, settled_mount_leftovers, Daemon, Rt};

fn load(d: &Daemon, img: &Image, tag: &str) {
    let r = d.berth_input(&["load"], &img.oci_archive(tag));
    assert_eq!(r.code, 0, "load failed: {r:?}");
}

fn busybox_image(d: &Daemon) {
    let img = Image::build(&[busybox_layer()], Compression::None, &Config::default());
    load(d, &img, "docker.io/library/bb:1");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Fast pseudo-random bytes (xorshift): incompressible, never sparse.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn set_mtime(p: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    std::fs::File::open(p).unwrap().set_modified(t).unwrap();
}

/// 1,000 files in 10 directories (modes varied, times in the past), 20
/// symlinks (relative, absolute, dangling), an empty directory and a
/// 100 MB file.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let modes = [0o644, 0o600, 0o755, 0o640, 0o700, 0o444];
    for d in 0..10 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..100 {
            let p = dir.join(format!("f{f}"));
            std::fs::write(&p, noise((d * 100 + f) as u64, f * 37)).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(modes[f % modes.len()]))
                .unwrap();
            if modes[f % modes.len()] & 0o400 != 0 {
                set_mtime(&p, 1_600_000_000 + (d * 100 + f) as u64);
            }
        }
        for l in 0..2 {
            std::os::unix::fs::symlink(
                format!("../d{}/f{l}", (d + 1) % 10),
                dir.join(format!("rel{l}")),
            )
            .unwrap();
        }
    }
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut big = std::fs::File::create(root.join("big.bin")).unwrap();
    for i in 0..100 {
        big.write_all(&noise(1000 + i, 1 << 20)).unwrap();
    }
    drop(big);
    for d in 0..10 {
        set_mtime(&root.join(format!("d{d}")), 1_650_000_000 + d);
    }
}

/// Every object below `root`: (kind, mode, size, mtime, symlink target).
fn describe(root: &Path) -> BTreeMap<PathBuf, (char, u32, u64, i64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let m = std::fs::symlink_metadata(root.join(&rel)).unwrap();
            let (kind, target) = if m.file_type().is_symlink() {
                let t = std::fs::read_link(root.join(&rel)).unwrap();
                ('l', t.to_string_lossy().into_owned())
            } else if m.is_dir() {
                stack.push(rel.clone());
                ('d', String::new())
            } else {
                ('f', String::new())
            };
            let size = if kind == 'd' { 0 } else { m.len() };
            out.insert(rel, (kind, m.mode() & 0o7777, size, m.mtime(), target));
        }
    }
    out
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

#[track_caller]
fn assert_same_tree(a: &Path, b: &Path) {
    let (da, db) = (describe(a), describe(b));
    assert_eq!(
        da.len(),
        db.len(),
        "{} vs {}: object counts",
        a.display(),
        b.display()
    );
    for (rel, want) in &da {
        let got = db
            .get(rel)
            .unwrap_or_else(|| panic!("{} is missing from {}", rel.display(), b.display()));
        assert_eq!(got, want, "{}", rel.display());
        if want.0 == 'f' {
            assert!(
                same_bytes(&a.join(rel), &b.join(rel)),
                "{} differs",
                rel.display()
            );
        }
    }
}

#[test]
fn cp_round_trips_a_tree_into_and_out_of_running_and_stopped_containers() {
    for rt in [Rt::Embedded, Rt::Runc] {
        let d = Daemon::start(rt);
        busybox_image(&d);
        let src = d.root.join("src");
        make_tree(&src);
        assert_eq!(describe(&src).values().filter(|v| v.0 == 'f').count(), 1001);
        d.berth(&["run", "-d", "--name", "c", "bb:1", "sleep", "100000"])
            .ok();

        // Running: in (a missing DEST is created with SRC's content), out.
        d.berth(&["cp", s(&src), "c:/copied"]).ok();
        let out = d.root.join("out-running");
        d.berth(&["cp", "c:/copied", s(&out)]).ok();
        assert_same_tree(&src, &out);
        std::fs::remove_dir_all(&out).unwrap();
        // The container sees the same bytes.
        let inside = d.berth(&["exec", "c", "sha256sum", "/copied/big.bin"]).ok();
        let host = std::process::Command::new("sha256sum")
            .arg(src.join("big.bin"))
            .output()
            .unwrap();
        let host = String::from_utf8_lossy(&host.stdout);
        assert_eq!(
            inside.split_whitespace().next(),
            host.split_whitespace().next()
        );
        // Into an existing directory: SRC goes in under its name; SRC/. its
        // content.
        d.berth(&["exec", "c", "mkdir", "/into"]).ok();
        d.berth(&["cp", s(&src.join("d1")), "c:/into"]).ok();
        d.berth(&["cp", &format!("{}/.", s(&src.join("d2"))), "c:/into"])
            .ok();
        let ls = d
            .berth(&[
                "exec",
                "c",
                "sh",
                "-c",
                "ls /into | head -n 3; ls /into/d1 | wc -l",
            ])
            .ok();
        assert_eq!(ls, "d1\nf0\nf1\n102", "{rt:?}");

        // Stopped: the same both ways, and what was copied while it ran.
        d.berth(&["stop", "-t", "1", "c"]).ok();
        d.berth(&["cp", s(&src), "c:/stopped"]).ok();
        for (path, name) in [("c:/stopped", "out-stopped"), ("c:/copied", "out-copied")] {
            let out = d.root.join(name);
            d.berth(&["cp", path, s(&out)]).ok();
            assert_same_tree(&src, &out);
            std::fs::remove_dir_all(&out).unwrap();
        }
        // A file out to a file name, and -a keeping owners in.
        let one = d.root.join("one");
        d.berth(&["cp", "c:/stopped/d3/f5", s(&one)]).ok();
        assert!(same_bytes(&one, &src.join("d3/f5")));
        std::os::unix::fs::chown(&one, Some(1234), Some(5678)).unwrap();
        d.berth(&["cp", "-a", s(&one), "c:/owned"]).ok();
        d.berth(&["cp", s(&one), "c:/rooted"]).ok();
        d.berth(&["start", "c"]).ok();
        let ids = d
            .berth(&["exec", "c", "stat", "-c", "%u:%g", "/owned", "/rooted"])
            .ok();
        assert_eq!(ids, "1234:5678\n0:0", "{rt:?}");
        d.berth(&["rm", "-f", "c"]).ok();
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

fn mountpoint(d: &Daemon, vol: &str) -> PathBuf {
    let v: serde_json::Value =
        serde_json::from_str(&d.berth(&["volume", "inspect", vol]).ok()).unwrap();
    PathBuf::from(v[0]["Mountpoint"].as_str().unwrap())
}

#[test]
fn cp_through_an_image_symlink_to_etc_stays_inside_the_container() {
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
    let payload = d.root.join("payload-file");
    std::fs::write(&payload, "payload\n").unwrap();
    let before = etc_checksum();

    // A volume on /data lands on the container's /etc: cp goes into it,
    // running and stopped.
    d.berth(&[
        "run",
        "-d",
        "--name",
        "v",
        "-v",
        "vol:/data",
        "evil:1",
        "sleep",
        "100000",
    ])
    .ok();
    let mp = mountpoint(&d, "vol");
    d.berth(&["cp", s(&payload), "v:/data/"]).ok();
    assert_eq!(
        std::fs::read_to_string(mp.join("payload-file")).unwrap(),
        "payload\n"
    );
    d.berth(&["stop", "-t", "1", "v"]).ok();
    d.berth(&["cp", s(&payload), "v:/up/again"]).ok();
    assert_eq!(
        std::fs::read_to_string(mp.join("again")).unwrap(),
        "payload\n"
    );
    // Out of the stopped container, through the symlink and the volume.
    let back = d.root.join("back");
    d.berth(&["cp", "v:/data/again", s(&back)]).ok();
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "payload\n");
    d.berth(&["rm", "v"]).ok();

    // No volume: the container's own /etc.
    d.berth(&["run", "-d", "--name", "w", "evil:1", "sleep", "100000"])
        .ok();
    d.berth(&["cp", s(&payload), "w:/data"]).ok();
    d.berth(&["cp", s(&payload), "w:/../../../../up/dots"]).ok();
    let r = d
        .berth(&["exec", "w", "cat", "/etc/payload-file", "/etc/dots"])
        .ok();
    assert_eq!(r, "payload\npayload");
    d.berth(&["rm", "-f", "w"]).ok();

    assert!(!Path::new("/etc/payload-file").exists());
    assert!(!Path::new("/etc/again").exists());
    assert!(!Path::new("/etc/dots").exists());
    assert_eq!(etc_checksum(), before, "the host's /etc changed");
    assert_eq!(settled_mount_leftovers(s(&d.root)), Vec::<String>::new());
}

#[test]
fn cp_errors_are_one_line() {
    let d = Daemon::start(Rt::Embedded);
    busybox_image(&d);
    d.berth(&["run", "-d", "--name", "c", "bb:1", "sleep", "100000"])
        .ok();
    let file = d.root.join("f");
    std::fs::write(&file, "x").unwrap();
    let dir = d.root.join("dir");
    std::fs::create_dir(&dir).unwrap();
    let missing_host = d.root.join("no/such/dir/x");
    for (args, want) in [
        (vec!["cp", s(&file), "c:/no/such/dir/f"], "/no/such/dir"),
        (vec!["cp", s(&file), "c:/nodir/"], "/nodir/"),
        (vec!["cp", s(&dir), "c:/etc/passwd"], "onto the file"),
        (
            vec!["cp", "c:/nothing/here", s(&d.root.join("o"))],
            "/nothing/here",
        ),
        (
            vec!["cp", "c:/etc/passwd", s(&missing_host)],
            "does not exist",
        ),
        (vec!["cp", s(&file), "nosuch:/tmp"], "nosuch"),
        (vec!["cp", s(&file), s(&dir)], "CONTAINER:PATH"),
        (vec!["cp", s(&d.root.join("absent")), "c:/tmp"], "absent"),
    ] {
        let r = d.berth(&args);
        assert_ne!(r.code, 0, "{args:?}: {r:?}");
        assert!(r.stderr.contains(want), "{args:?}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {r:?}");
    }
    assert!(!d.root.join("no").exists());
    let r = d.berth(&["exec", "c", "ls", "/no", "/nodir"]);
    assert_ne!(r.code, 0, "nothing was made: {r:?}");
}

#[test]
fn diff_export_and_commit_then_run() {
    let d = Daemon::start(Rt::Embedded);
    let layers = vec![
        busybox_layer(),
        Layer::Entries(vec![
            Entry::file("gone.txt", b"bye\n", 0o644),
            Entry::file("changed.txt", b"one\n", 0o644),
        ]),
    ];
    let img = Image::build(&layers, Compression::None, &Config::default());
    load(&d, &img, "docker.io/library/base:1");
    d.berth(&[
        "run",
        "--name",
        "m",
        "base:1",
        "sh",
        "-c",
        "echo new > /added.txt; echo two >> /changed.txt; rm /gone.txt",
    ])
    .ok();
    let diff = d.berth(&["diff", "m"]).ok();
    for want in ["A /added.txt", "C /changed.txt", "D /gone.txt"] {
        assert!(diff.lines().any(|l| l == want), "{want} in:\n{diff}");
    }

    // export: the merged tree.
    let tarball = d.root.join("m.tar");
    d.berth(&["export", "-o", s(&tarball), "m"]).ok();
    let mut names = Vec::new();
    let mut a = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if p == "changed.txt" {
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            assert_eq!(body, "one\ntwo\n");
        }
        names.push(p);
    }
    assert!(names.iter().any(|n| n == "added.txt"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "bin/sh" || n == "bin/busybox"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "gone.txt"), "{names:?}");

    // commit, then run the new image at once.
    let id = d
        .berth(&[
            "commit",
            "-m",
            "my change",
            "-a",
            "Ann <ann@example.com>",
            "-c",
            r#"CMD ["cat", "/added.txt"]"#,
            "m",
            "committed:1",
        ])
        .ok();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(d.berth(&["run", "--rm", "committed:1"]).ok(), "new");
    assert_eq!(
        d.berth(&["run", "--rm", "committed:1", "cat", "/changed.txt"])
            .ok(),
        "one\ntwo"
    );
    let r = d.berth(&["run", "--rm", "committed:1", "ls", "/gone.txt"]);
    assert_ne!(r.code, 0, "the deletion is in the layer: {r:?}");
    let h = d.berth(&["history", "committed:1"]).ok();
    assert!(h.contains("my change"), "{h}");

    // A running container is paused for its commit and runs on after it.
    d.berth(&[
        "run",
        "-d",
        "--name",
        "r",
        "base:1",
        "sh",
        "-c",
        "echo live > /live; exec sleep 100000",
    ])
    .ok();
    assert!(poll_until(Duration::from_secs(10), || d
        .berth(&["exec", "r", "cat", "/live"])
        .code
        == 0));
    d.berth(&["commit", "r", "live:1"]).ok();
    assert_eq!(d.state_of("r"), "running");
    assert_eq!(
        d.berth(&["run", "--rm", "live:1", "cat", "/live"]).ok(),
        "live"
    );

    // Bad input: one line, no image made.
    let before = d.berth(&["images", "-q"]).ok();
    for (args, want) in [
        (vec!["commit", "m", "Bad:Name:x"], "Bad:Name:x"),
        (vec!["commit", "-c", "RUN ls", "m", "x:1"], "RUN"),
        (vec!["commit", "nosuch", "x:1"], "nosuch"),
    ] {
        let r = d.berth(&args);
        assert_ne!(r.code, 0, "{args:?}: {r:?}");
        assert!(r.stderr.contains(want), "{args:?}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {r:?}");
    }
    assert_eq!(d.berth(&["images", "-q"]).ok(), before);
}

#[test]
fn rm_flag_removes_anonymous_volumes_and_keeps_named_ones() {
    let d = Daemon::start(Rt::Embedded);
    busybox_image(&d);
    d.berth(&[
        "run", "--rm", "-v", "/anon", "-v", "keep:/k", "bb:1", "true",
    ])
    .ok();
    assert!(
        poll_until(Duration::from_secs(10), || d
            .berth(&["volume", "ls", "-q"])
            .ok()
            == "keep"),
        "{:?}",
        d.berth(&["volume", "ls", "-q"])
    );
    d.berth(&["run", "-d", "--rm", "-v", "/anon2", "bb:1", "sleep", "0.2"])
        .ok();
    assert!(poll_until(Duration::from_secs(10), || {
        d.berth(&["ps", "-aq"]).ok().is_empty() && d.berth(&["volume", "ls", "-q"]).ok() == "keep"
    }));
    // Without --rm, rm keeps them (rm -v takes them).
    let id = d.berth(&["create", "-v", "/anon3", "bb:1", "true"]).ok();
    d.berth(&["rm", &id]).ok();
    assert_eq!(d.berth(&["volume", "ls", "-q"]).ok().lines().count(), 2);
}

/// VmHWM (peak) and VmRSS of a process, in KiB.
fn memory_kib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn cp_of_a_1gib_file_keeps_berthd_rss_growth_under_32mib() {
    let d = Daemon::start(Rt::Embedded);
    busybox_image(&d);
    d.berth(&["run", "-d", "--name", "c", "bb:1", "sleep", "100000"])
        .ok();
    // Warm up: the first copy's one-time allocations are not the stream's.
    let small = d.root.join("small");
    std::fs::write(&small, noise(7, 4 << 20)).unwrap();
    d.berth(&["cp", s(&small), "c:/small"]).ok();
    d.berth(&["cp", "c:/small", s(&d.root.join("small-out"))])
        .ok();
    let pid = d.pid();
    let (hwm_before, rss_before) = memory_kib(pid);

    // In the test's root (same disk), real blocks (no holes), removed with
    // the root whatever happens.
    let big = d.root.join("big");
    let mut f = std::fs::File::create(&big).unwrap();
    let block = noise(11, 1 << 20);
    for _ in 0..1024 {
        f.write_all(&block).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    assert!(
        std::fs::metadata(&big).unwrap().blocks() * 512 >= 1 << 30,
        "not sparse"
    );
    d.berth(&["cp", s(&big), "c:/big"]).ok();
    let (hwm_in, _) = memory_kib(pid);
    let out = d.root.join("big-out");
    d.berth(&["cp", "c:/big", s(&out)]).ok();
    let (hwm_after, rss_after) = memory_kib(pid);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 1 << 30);
    assert!(same_bytes(&big, &out));
    std::fs::remove_file(&big).unwrap();
    std::fs::remove_file(&out).unwrap();
    d.berth(&["rm", "-f", "c"]).ok();
    eprintln!(
        "berthd VmHWM {hwm_before} -> {hwm_in} (in) -> {hwm_after} KiB (out); VmRSS {rss_before} -> {rss_after} KiB"
    );
    let growth = hwm_after.saturating_sub(hwm_before);
    assert!(
        growth < 32 * 1024,
        "berthd's peak RSS grew by {growth} KiB copying 1 GiB in and out"
    );
}
