//! Snapshot tests: real overlay mounts, as root, each under its own temp
//! dir, unmounted by a guard even when the test fails.

use super::*;
use crate::model::chain_ids;
use crate::unpack::tests::{TarBuilder, CAP_NET_RAW, E};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use tar::EntryType;

/// A snapshots dir; everything mounted under it is detached on drop.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir_in("/var/tmp").unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn open(&self, choice: SnapshotterChoice) -> Snapshotter {
        Snapshotter::open(self.path(), choice).unwrap()
    }
    fn mounts(&self) -> Vec<PathBuf> {
        let base = self.path().canonicalize().unwrap();
        mountpoints()
            .unwrap()
            .into_iter()
            .filter(|m| m.starts_with(&base))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(base) = self.path().canonicalize() {
            let mut done = Vec::new();
            let _ = unmount_under_filtered(&base, &mut done, |_| true);
        }
    }
}

struct Layers {
    tars: Vec<Vec<u8>>,
    chain_ids: Vec<Digest>,
}

fn layers() -> Layers {
    let l1 = TarBuilder::new()
        .add(E {
            kind: EntryType::Directory,
            name: b"etc",
            mode: 0o755,
            pax: vec![("SCHILY.xattr.user.lower", b"1")],
            ..E::default()
        })
        .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n")
        .file("etc/group", 0o644, b"root:x:0:\n")
        .dir("bin", 0o755)
        .file("bin/busybox", 0o755, b"\x7fELF busybox")
        .hardlink("bin/ls", "bin/busybox")
        .symlink("bin/sh", "busybox")
        .file("bin/su", 0o4755, b"\x7fELF su")
        .add(E {
            name: b"bin/ping",
            mode: 0o755,
            data: b"ping",
            pax: vec![("SCHILY.xattr.security.capability", &CAP_NET_RAW)],
            ..E::default()
        })
        .add(E {
            kind: EntryType::Char,
            name: b"dev/null",
            mode: 0o666,
            dev: (1, 3),
            ..E::default()
        })
        .file("gone", 0o644, b"x")
        .file("gonedir/x", 0o644, b"x")
        .file("opq/a", 0o644, b"a")
        .file("opq/sub/b", 0o644, b"b")
        .file("data/old", 0o644, b"old")
        .file("data/keep", 0o644, b"keep")
        .dir("home", 0o755)
        .finish();
    let l2 = TarBuilder::new()
        .file(".wh.gone", 0o644, b"")
        .file(".wh.gonedir", 0o644, b"")
        .dir("opq", 0o750)
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file("opq/new", 0o644, b"new")
        .add(E {
            name: b"etc/passwd",
            mode: 0o600,
            data: b"root:x:0:0::/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n",
            ..E::default()
        })
        .add(E {
            kind: EntryType::Directory,
            name: b"home/u",
            mode: 0o700,
            uid: 1000,
            gid: 1000,
            ..E::default()
        })
        .add(E {
            name: b"home/u/.profile",
            mode: 0o640,
            uid: 1000,
            gid: 1000,
            data: b"PS1=$\n",
            pax: vec![("SCHILY.xattr.user.note", b"hello")],
            ..E::default()
        })
        .finish();
    let l3 = TarBuilder::new()
        .file("data/.wh.old", 0o644, b"")
        .file("data/new", 0o644, b"new")
        .dir("tmp", 0o1777)
        .finish();
    let tars = vec![l1, l2, l3];
    let diff_ids: Vec<Digest> = tars.iter().map(|t| Digest::of(t)).collect();
    Layers {
        chain_ids: chain_ids(&diff_ids),
        tars,
    }
}

fn unpack_all(s: &Snapshotter, l: &Layers) -> Vec<LayerInfo> {
    l.tars
        .iter()
        .zip(&l.chain_ids)
        .map(|(t, c)| {
            s.unpack_layer(c, &Digest::of(t), &t[..], Compression::None)
                .unwrap()
        })
        .collect()
}

/// A tree, path by path: type, mode, owner, content or target or device,
/// xattrs (but overlayfs's), mtime, and hard-link groups. The root itself
/// is left out (overlayfs shows the upper directory's).
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<String>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let p = rel.join(e.file_name());
            let full = root.join(&p);
            let m = fs::symlink_metadata(&full).unwrap();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("symlink {}", fs::read_link(&full).unwrap().display())
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    inodes
                        .entry(m.ino())
                        .or_default()
                        .push(p.display().to_string());
                }
                format!("file {}", Digest::of(&fs::read(&full).unwrap()).short())
            } else if ft.is_char_device() {
                format!("char {:x}", m.rdev())
            } else if ft.is_block_device() {
                format!("block {:x}", m.rdev())
            } else {
                "other".to_string()
            };
            let mut names = vec![0u8; 4096];
            let n = rustix::fs::llistxattr(&full, &mut names[..]).unwrap_or(0);
            let mut xattrs = Vec::new();
            for k in names[..n].split(|&b| b == 0).filter(|k| !k.is_empty()) {
                let k = String::from_utf8_lossy(k).into_owned();
                if k.starts_with("trusted.overlay.") || k.starts_with("security.selinux") {
                    continue;
                }
                let mut v = vec![0u8; 256];
                let vn = rustix::fs::lgetxattr(&full, k.as_str(), &mut v[..]).unwrap();
                xattrs.push(format!("{k}={:?}", &v[..vn]));
            }
            out.insert(
                p.display().to_string(),
                format!(
                    "{what} {:o} {}:{} mtime={}.{} [{}]",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    m.mtime(),
                    m.mtime_nsec(),
                    xattrs.join(",")
                ),
            );
        }
    }
    for (_, mut group) in inodes {
        group.sort();
        let links = group.join("+");
        for p in &group {
            if let Some(v) = out.get_mut(p) {
                v.push_str(&format!(" links={links}"));
            }
        }
    }
    out
}

fn check_merged(root: &Path) {
    let d = describe(root);
    let names: Vec<&str> = d.keys().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/busybox",
            "bin/ls",
            "bin/ping",
            "bin/sh",
            "bin/su",
            "data",
            "data/keep",
            "data/new",
            "dev",
            "dev/null",
            "etc",
            "etc/group",
            "etc/passwd",
            "home",
            "home/u",
            "home/u/.profile",
            "opq",
            "opq/new",
            "tmp",
        ]
    );
    assert!(d["bin/su"].contains(" 4755 0:0"), "{}", d["bin/su"]);
    assert!(
        d["bin/ls"].contains("links=bin/busybox+bin/ls"),
        "{}",
        d["bin/ls"]
    );
    assert!(d["bin/sh"].starts_with("symlink busybox"));
    assert!(
        d["bin/ping"].contains("security.capability="),
        "{}",
        d["bin/ping"]
    );
    assert!(d["dev/null"].starts_with(&format!("char {:x} 666", rustix::fs::makedev(1, 3))));
    assert!(d["etc/passwd"].contains(" 600 0:0"));
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .contains("u:x:1000"));
    assert!(d["home/u"].contains(" 700 1000:1000"));
    assert!(d["home/u/.profile"].contains("user.note=[104, 101, 108, 108, 111]"));
    assert!(d["opq"].contains(" 750 0:0"));
    assert!(d["tmp"].contains(" 1777 0:0"));
}

/// The `lowerdir` list of the overlay mounted at `target` (top first).
fn lowerdirs(target: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if Path::new(&*unescape_mountinfo(fields[4].as_bytes())) != target {
            continue;
        }
        let sep = fields.iter().position(|f| *f == "-").unwrap();
        let opts = fields[sep + 3];
        let mut out = Vec::new();
        for o in opts.split(',') {
            if let Some(v) = o.strip_prefix("lowerdir=") {
                out.extend(v.split(':').map(PathBuf::from));
            } else if let Some(v) = o.strip_prefix("lowerdir+=") {
                out.push(PathBuf::from(v));
            }
        }
        return out;
    }
    panic!("{} is not mounted", target.display());
}

#[test]
fn overlay_containers_share_lowers_and_write_to_upper_only() {
    let fx = Fixture::new();
    let s = fx.open(SnapshotterChoice::Overlay);
    assert_eq!(s.kind(), SnapshotterKind::Overlay);
    let l = layers();
    let infos = unpack_all(&s, &l);
    let r1 = s.prepare("c1", &l.chain_ids).unwrap();
    let r2 = s.prepare("c2", &l.chain_ids).unwrap();
    check_merged(&r1);
    assert_eq!(describe(&r1), describe(&r2));

    let want: Vec<PathBuf> = infos.iter().rev().map(|i| i.path.clone()).collect();
    assert_eq!(lowerdirs(&r1), want);
    assert_eq!(lowerdirs(&r2), want);

    fs::write(r1.join("etc/passwd"), b"changed").unwrap();
    fs::write(r1.join("new"), b"new").unwrap();
    fs::remove_file(r1.join("bin/su")).unwrap();
    let upper = s.dir().join("containers/c1/upper");
    assert_eq!(fs::read(upper.join("etc/passwd")).unwrap(), b"changed");
    assert_eq!(fs::read(upper.join("new")).unwrap(), b"new");
    assert!(fs::symlink_metadata(upper.join("bin/su"))
        .unwrap()
        .file_type()
        .is_char_device());
    // The shared layers and the other container see none of it.
    assert!(fs::read_to_string(infos[1].path.join("etc/passwd"))
        .unwrap()
        .contains("u:x:1000"));
    assert!(infos[0].path.join("bin/su").exists());
    assert!(!r2.join("new").exists());
    assert!(r2.join("bin/su").exists());

    let u = s.usage().unwrap();
    assert_eq!((u.layers, u.containers), (3, 2));
    assert!(s.container_usage("c1").unwrap().inodes >= 3);

    s.remove("c1").unwrap();
    assert!(!s.dir().join("containers/c1").exists());
    check_merged(&r2);
    s.remove("c2").unwrap();
    assert!(fx.mounts().is_empty(), "{:?}", fx.mounts());
}

#[test]
fn copy_snapshotter_gives_the_same_tree() {
    let fx = Fixture::new();
    let overlay = fx.open(SnapshotterChoice::Overlay);
    let l = layers();
    unpack_all(&overlay, &l);
    let merged = overlay.prepare("over", &l.chain_ids).unwrap();
    let copy = fx.open(SnapshotterChoice::Copy);
    assert_eq!(copy.kind(), SnapshotterKind::Copy);
    let copied = copy.prepare("copy", &l.chain_ids).unwrap();
    check_merged(&copied);
    assert_eq!(describe(&merged), describe(&copied));
    // A copy is not a mount, and mount() of it is a no-op.
    assert_eq!(fx.mounts(), vec![merged.clone()]);
    assert_eq!(copy.mount("copy").unwrap(), copied);
    copy.remove("copy").unwrap();
    overlay.remove("over").unwrap();
    assert!(fx.mounts().is_empty());
}

#[test]
fn mount_is_idempotent_and_remounts_after_a_reboot() {
    let fx = Fixture::new();
    let s = fx.open(SnapshotterChoice::Overlay);
    let l = layers();
    unpack_all(&s, &l);
    let root = s.prepare("c", &l.chain_ids[..2]).unwrap();
    fs::write(root.join("kept"), b"across reboots").unwrap();
    assert_eq!(s.mount("c").unwrap(), root);
    assert_eq!(fx.mounts().len(), 1);
    // What a reboot does to the mount; upper and work stay.
    rustix::mount::unmount(&root, rustix::mount::UnmountFlags::empty()).unwrap();
    assert!(fx.mounts().is_empty());
    assert_eq!(s.mount("c").unwrap(), root);
    assert_eq!(fs::read(root.join("kept")).unwrap(), b"across reboots");
    assert_eq!(fx.mounts().len(), 1);
    s.remove("c").unwrap();
    assert!(matches!(s.mount("c"), Err(SnapshotError::NoSnapshot(_))));
    assert!(fx.mounts().is_empty());
}

#[test]
fn zero_and_one_layer_images() {
    let fx = Fixture::new();
    let s = fx.open(SnapshotterChoice::Overlay);
    let l = layers();
    unpack_all(&s, &l);
    let empty = s.prepare("zero", &[]).unwrap();
    assert!(describe(&empty).is_empty());
    fs::write(empty.join("f"), b"x").unwrap();
    let one = s.prepare("one", &l.chain_ids[..1]).unwrap();
    assert!(one.join("gone").exists() && one.join("bin/su").exists());
    assert_eq!(lowerdirs(&one).len(), 1);
    let copy = fx.open(SnapshotterChoice::Copy);
    let c0 = copy.prepare("copy-zero", &[]).unwrap();
    assert!(describe(&c0).is_empty());
    for id in ["zero", "one", "copy-zero"] {
        s.remove(id).unwrap();
    }
    assert!(fx.mounts().is_empty());
}

#[test]
fn layers_in_use_are_not_removed() {
    let fx = Fixture::new();
    let s = fx.open(SnapshotterChoice::Overlay);
    let l = layers();
    let infos = unpack_all(&s, &l);
    s.prepare("c", &l.chain_ids[..2]).unwrap();
    let e = s.remove_layer(&l.chain_ids[1]).unwrap_err();
    assert!(matches!(e, SnapshotError::LayerInUse { .. }), "{e}");
    assert!(e.to_string().contains("used by container c"), "{e}");
    // The top layer is not used by c.
    s.remove_layer(&l.chain_ids[2]).unwrap();
    assert!(!infos[2].path.exists());
    assert!(s.layer(&l.chain_ids[2]).unwrap().is_none());
    s.remove("c").unwrap();
    s.remove_layer(&l.chain_ids[1]).unwrap();
    s.remove_layer(&l.chain_ids[0]).unwrap();
    assert!(s.layers().unwrap().is_empty());
    // Missing layers: preparing on one is refused.
    let e = s.prepare("d", &l.chain_ids[..1]).unwrap_err();
    assert!(matches!(e, SnapshotError::NoLayer(_)), "{e}");
    assert!(!s.dir().join("containers/d").exists());
}

#[test]
fn failed_unpacks_leave_nothing() {
    let fx = Fixture::new();
    let s = fx.open(SnapshotterChoice::Overlay);
    let l = layers();
    let c = &l.chain_ids[0];
    let wrong = Digest::of(b"another layer");
    let e = s
        .unpack_layer(c, &wrong, &l.tars[0][..], Compression::None)
        .unwrap_err();
    assert!(matches!(e, SnapshotError::DiffId { .. }), "{e}");
    let cut = &l.tars[0][..l.tars[0].len() / 2];
    let e = s
        .unpack_layer(c, &Digest::of(&l.tars[0]), cut, Compression::None)
        .unwrap_err();
    assert!(
        matches!(
            e,
            SnapshotError::Unpack { .. } | SnapshotError::DiffId { .. }
        ),
        "{e}"
    );
    assert!(s.layer(c).unwrap().is_none());
    let names: Vec<_> = fs::read_dir(s.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().starts_with("tmp-")),
        "{names:?}"
    );
    assert_eq!(fs::read_dir(s.dir().join("layers")).unwrap().count(), 0);
}

#[test]
fn cleanup_after_a_crash_leaves_nothing_mounted() {
    let fx = Fixture::new();
    let l = layers();
    {
        let s = fx.open(SnapshotterChoice::Overlay);
        unpack_all(&s, &l);
        s.prepare("dead", &l.chain_ids).unwrap();
        s.prepare("alive", &l.chain_ids).unwrap();
        // A half-made container: a tmp- dir with an overlay mounted in it.
        let tmp = s.dir().join("tmp-crashed");
        for sub in ["upper", "work", "rootfs"] {
            fs::create_dir_all(tmp.join(sub)).unwrap();
        }
        let lower = s.layer(&l.chain_ids[0]).unwrap().unwrap().path;
        mount_overlay(
            &[lower],
            &tmp.join("upper"),
            &tmp.join("work"),
            &tmp.join("rootfs"),
        )
        .unwrap();
        fs::create_dir_all(s.dir().join("tmp-half-layer/fs/usr")).unwrap();
        // The daemon dies here: no remove, no unmount.
    }
    assert_eq!(fx.mounts().len(), 3);
    let s = fx.open(SnapshotterChoice::Auto);
    let live: HashSet<String> = ["alive".to_string()].into();
    let report = s.cleanup(&live).unwrap();
    assert_eq!(report.unmounted.len(), 2, "{report:?}");
    let base = fx.path().canonicalize().unwrap();
    assert_eq!(fx.mounts(), vec![base.join("containers/alive/rootfs")]);
    let mut left: Vec<String> = fs::read_dir(s.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["containers", "layers"]);
    assert!(!s.dir().join("containers/dead").exists());
    check_merged(&s.dir().join("containers/alive/rootfs"));
    // The layers stay (GC decides about them).
    assert_eq!(s.layers().unwrap().len(), 3);
    s.cleanup(&HashSet::new()).unwrap();
    assert!(fx.mounts().is_empty());
    assert_eq!(fs::read_dir(s.dir().join("containers")).unwrap().count(), 0);
}

/// A removal's first half (`take_away`) makes the snapshot invisible at
/// once, still mounted: its layers are no longer in use and its id is
/// free; `finish` unmounts and deletes it, and a crash before `finish`
/// leaves a `tmp-` dir (with its mount) that `cleanup` removes.
#[test]
fn a_snapshot_taken_away_is_gone_from_every_view_before_it_is_deleted() {
    let fx = Fixture::new();
    let s = fx.open(SnapshotterChoice::Overlay);
    let l = layers();
    unpack_all(&s, &l);
    for id in ["a", "b"] {
        s.prepare(id, &l.chain_ids).unwrap();
    }
    let a = s.take_away("a").unwrap().expect("a has a snapshot");
    assert!(a.path().starts_with(s.dir()));
    assert!(a
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("tmp-rm-a-"));
    // Still mounted, under its new name, and no longer a container's.
    let base = fx.path().canonicalize().unwrap();
    assert!(fx
        .mounts()
        .iter()
        .any(|m| m.starts_with(base.join(a.path().file_name().unwrap()))));
    assert!(!s.dir().join("containers/a").exists());
    assert_eq!(s.usage().unwrap().containers, 1);
    assert!(s.take_away("a").unwrap().is_none());
    // The id is free at once: a new snapshot of the same id is fine.
    s.prepare("a", &l.chain_ids[..1]).unwrap();
    s.remove("a").unwrap();
    a.finish().unwrap();
    assert!(!fx
        .mounts()
        .iter()
        .any(|m| !m.starts_with(base.join("containers/b"))));
    // The daemon dies between the halves: the next start's cleanup
    // unmounts and deletes the leftover.
    let b = s.take_away("b").unwrap().expect("b has a snapshot");
    let left = b.path().to_path_buf();
    drop(b);
    assert!(left.exists());
    let s = fx.open(SnapshotterChoice::Auto);
    s.cleanup(&HashSet::new()).unwrap();
    assert!(fx.mounts().is_empty(), "{:?}", fx.mounts());
    assert!(!left.exists());
    assert_eq!(fs::read_dir(s.dir().join("containers")).unwrap().count(), 0);
    // The layers stay, free to remove.
    for c in &l.chain_ids {
        s.remove_layer(c).unwrap();
    }
}

#[test]
fn prepare_refuses_bad_ids_and_duplicates() {
    let fx = Fixture::new();
    let s = fx.open(SnapshotterChoice::Auto);
    for bad in ["", "..", "a/b", "../x", "x y"] {
        assert!(
            matches!(s.prepare(bad, &[]), Err(SnapshotError::BadId(_))),
            "{bad:?}"
        );
    }
    s.prepare("c", &[]).unwrap();
    assert!(matches!(s.prepare("c", &[]), Err(SnapshotError::Exists(_))));
    s.remove("c").unwrap();
    s.remove("c").unwrap();
    assert!(fx.mounts().is_empty());
    assert_eq!(
        "copy".parse::<SnapshotterChoice>().unwrap(),
        SnapshotterChoice::Copy
    );
    assert!("zfs".parse::<SnapshotterChoice>().is_err());
}

#[test]
fn concurrent_prepares_and_unpacks() {
    let fx = Fixture::new();
    let s = fx.open(SnapshotterChoice::Overlay);
    let l = layers();
    std::thread::scope(|scope| {
        for i in 0..4 {
            let (s, l) = (&s, &l);
            scope.spawn(move || {
                unpack_all(s, l);
                let root = s.prepare(&format!("c{i}"), &l.chain_ids).unwrap();
                check_merged(&root);
                s.remove(&format!("c{i}")).unwrap();
            });
        }
    });
    assert_eq!(s.layers().unwrap().len(), 3);
    assert!(fx.mounts().is_empty());
}

#[test]
fn mountinfo_unescapes() {
    assert_eq!(
        unescape_mountinfo(b"/a\\040b\\134c"),
        OsString::from("/a b\\c")
    );
    assert_eq!(unescape_mountinfo(b"/x\\04"), OsString::from("/x\\04"));
}

#[test]
fn a_busy_snapshot_is_detached_and_removed() {
    fn shared<T: Send + Sync>() {}
    shared::<Snapshotter>();
    let fx = Fixture::new();
    let s = fx.open(SnapshotterChoice::Overlay);
    let l = layers();
    unpack_all(&s, &l);
    let root = s.prepare("busy", &l.chain_ids).unwrap();
    // A process with its cwd in the root makes umount(2) say EBUSY.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .current_dir(&root)
        .spawn()
        .unwrap();
    let removed = s.remove("busy");
    child.kill().unwrap();
    child.wait().unwrap();
    removed.unwrap();
    assert!(fx.mounts().is_empty());
    assert!(!s.dir().join("containers/busy").exists());
}
