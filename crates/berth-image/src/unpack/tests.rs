//! Unpack tests; they run as root (chown, mknod, trusted.* xattrs).

use super::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use tar::{EntryType, Header};

/// A tar stream written entry by entry, names unchecked (hostile tests).
pub(crate) struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

pub(crate) struct E<'a> {
    pub kind: EntryType,
    pub name: &'a [u8],
    pub link: &'a [u8],
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub data: &'a [u8],
    pub dev: (u32, u32),
    pub pax: Vec<(&'a str, &'a [u8])>,
}

impl Default for E<'_> {
    fn default() -> Self {
        Self {
            kind: EntryType::Regular,
            name: b"",
            link: b"",
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            data: b"",
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
}

impl TarBuilder {
    pub(crate) fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    pub(crate) fn add(&mut self, e: E<'_>) -> &mut Self {
        if !e.pax.is_empty() {
            let mut records = Vec::new();
            for (k, v) in &e.pax {
                let body_len = k.len() + v.len() + 3;
                // The length counts its own digits.
                let mut len = body_len + 1;
                while len != body_len + len.to_string().len() {
                    len = body_len + len.to_string().len();
                }
                records.extend_from_slice(format!("{len} {k}=").as_bytes());
                records.extend_from_slice(v);
                records.push(b'\n');
            }
            let mut h = Header::new_ustar();
            h.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
            h.set_entry_type(EntryType::XHeader);
            h.set_size(records.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            self.b.append(&h, &records[..]).unwrap();
        }
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name);
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link);
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        self.b.append(&h, e.data).unwrap();
        self
    }

    pub(crate) fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.add(E {
            kind: EntryType::Directory,
            name: name.as_bytes(),
            mode,
            ..E::default()
        })
    }

    pub(crate) fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.add(E {
            name: name.as_bytes(),
            mode,
            data,
            ..E::default()
        })
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(E {
            kind: EntryType::Symlink,
            name: name.as_bytes(),
            link: target.as_bytes(),
            mode: 0o777,
            ..E::default()
        })
    }

    pub(crate) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(E {
            kind: EntryType::Link,
            name: name.as_bytes(),
            link: target.as_bytes(),
            ..E::default()
        })
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let mut b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.finish().unwrap();
        b.into_inner().unwrap()
    }
}

fn unpack(tar: &[u8], dest: &Path, w: Whiteouts) -> Result<Unpacked, UnpackError> {
    unpack_layer(tar, Compression::None, dest, w)
}

/// `security.capability` for cap_net_raw+ep (VFS_CAP_REVISION_2).
pub(crate) const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

pub(crate) fn rich_layer() -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("./", 0o755)
        .add(E {
            kind: EntryType::Directory,
            name: b"etc/",
            mode: 0o755,
            mtime: 1_500_000_000,
            ..E::default()
        })
        .add(E {
            name: b"etc/passwd",
            mode: 0o644,
            data: b"root:x:0:0::/root:/bin/sh\n",
            pax: vec![
                ("mtime", b"1500000001.123456789"),
                ("atime", b"1400000000.5"),
            ],
            ..E::default()
        })
        .add(E {
            kind: EntryType::Directory,
            name: b"home/user/",
            mode: 0o2750,
            uid: 1000,
            gid: 1000,
            ..E::default()
        })
        .add(E {
            name: b"home/user/notes",
            mode: 0o600,
            uid: 1000,
            gid: 1001,
            data: b"mine",
            pax: vec![("SCHILY.xattr.user.color", b"blue")],
            ..E::default()
        })
        .dir("tmp", 0o1777)
        .add(E {
            name: b"bin/su",
            mode: 0o4755,
            data: b"\x7fELF pretend",
            ..E::default()
        })
        .add(E {
            name: b"bin/ping",
            mode: 0o755,
            data: b"ping",
            pax: vec![("SCHILY.xattr.security.capability", &CAP_NET_RAW)],
            ..E::default()
        })
        .hardlink("bin/su-again", "/bin/su")
        .add(E {
            kind: EntryType::Symlink,
            name: b"bin/sh",
            link: b"/bin/busybox",
            uid: 7,
            gid: 8,
            mtime: 1_234_567_890,
            ..E::default()
        })
        .add(E {
            kind: EntryType::Char,
            name: b"dev/null",
            mode: 0o666,
            dev: (1, 3),
            ..E::default()
        })
        .add(E {
            kind: EntryType::Block,
            name: b"dev/loop0",
            mode: 0o660,
            gid: 6,
            dev: (7, 0),
            ..E::default()
        })
        .add(E {
            kind: EntryType::Fifo,
            name: b"run/fifo",
            mode: 0o620,
            ..E::default()
        });
    t.finish()
}

#[test]
fn keeps_owners_modes_times_xattrs_links_and_devices() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tar = rich_layer();
    let out = unpack(&tar, root, Whiteouts::Overlay).unwrap();
    assert_eq!(out.diff_id, Digest::of(&tar));
    assert_eq!(out.uncompressed_size, tar.len() as u64);
    assert_eq!(out.compressed_size, tar.len() as u64);

    let m = fs::symlink_metadata(root.join("etc/passwd")).unwrap();
    assert_eq!(m.mtime(), 1_500_000_001);
    assert_eq!(m.mtime_nsec(), 123_456_789);
    assert_eq!((m.atime(), m.atime_nsec()), (1_400_000_000, 500_000_000));
    assert_eq!(
        fs::read(root.join("etc/passwd")).unwrap(),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    // A directory's time is set after its children are written.
    assert_eq!(
        fs::metadata(root.join("etc")).unwrap().mtime(),
        1_500_000_000
    );

    let m = fs::metadata(root.join("home/user")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o2750, 1000, 1000));
    let m = fs::metadata(root.join("home/user/notes")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 1000, 1001));
    let mut v = vec![0u8; 16];
    let n = rustix::fs::lgetxattr(root.join("home/user/notes"), "user.color", &mut v).unwrap();
    assert_eq!(&v[..n], b"blue");
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );

    let su = fs::metadata(root.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    let again = fs::metadata(root.join("bin/su-again")).unwrap();
    assert_eq!((su.ino(), su.nlink()), (again.ino(), 2));
    let mut v = vec![0u8; 64];
    let n = rustix::fs::lgetxattr(root.join("bin/ping"), "security.capability", &mut v).unwrap();
    assert_eq!(&v[..n], &CAP_NET_RAW);

    let sh = fs::symlink_metadata(root.join("bin/sh")).unwrap();
    assert!(sh.file_type().is_symlink());
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!((sh.uid(), sh.gid(), sh.mtime()), (7, 8, 1_234_567_890));

    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (null.rdev(), null.mode() & 0o7777),
        (rustix::fs::makedev(1, 3), 0o666)
    );
    let lo = fs::symlink_metadata(root.join("dev/loop0")).unwrap();
    assert!(lo.file_type().is_block_device());
    assert_eq!((lo.rdev(), lo.gid()), (rustix::fs::makedev(7, 0), 6));
    let fifo = fs::symlink_metadata(root.join("run/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);
}

#[test]
fn gzip_and_zstd_give_the_same_diff_id() {
    let tar = rich_layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (blob, c) in [(&gz, Compression::Gzip), (&zst, Compression::Zstd)] {
        let dir = tempfile::tempdir().unwrap();
        let out = unpack_layer(&blob[..], c, dir.path(), Whiteouts::Overlay).unwrap();
        assert_eq!(out.diff_id, Digest::of(&tar), "{c:?}");
        assert_eq!(out.compressed_size, blob.len() as u64);
        assert_eq!(out.uncompressed_size, tar.len() as u64);
        assert_eq!(
            fs::read(dir.path().join("home/user/notes")).unwrap(),
            b"mine"
        );
        assert_eq!(Compression::detect(blob), c);
    }
}

#[test]
fn corrupt_compression_is_a_read_error() {
    let tar = rich_layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let mut gz = gz.finish().unwrap();
    let n = gz.len();
    gz[n - 6] ^= 0xff; // the CRC
    let dir = tempfile::tempdir().unwrap();
    let e = unpack_layer(&gz[..], Compression::Gzip, dir.path(), Whiteouts::Overlay).unwrap_err();
    assert!(matches!(e, UnpackError::Read { .. }), "{e}");
}

#[test]
fn overlay_whiteouts_become_devices_and_opaque_xattrs() {
    let dir = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .file(".wh.gone", 0o644, b"")
        .dir("d", 0o755)
        .file("d/.wh..wh..opq", 0o644, b"")
        .file("d/new", 0o644, b"n")
        .file("e/.wh.old", 0o644, b"")
        .finish();
    unpack(&tar, dir.path(), Whiteouts::Overlay).unwrap();
    let wh = fs::symlink_metadata(dir.path().join("gone")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!((wh.rdev(), wh.uid(), wh.gid()), (0, 0, 0));
    assert!(fs::symlink_metadata(dir.path().join("e/old"))
        .unwrap()
        .file_type()
        .is_char_device());
    let mut v = [0u8; 4];
    let n = rustix::fs::lgetxattr(dir.path().join("d"), "trusted.overlay.opaque", &mut v).unwrap();
    assert_eq!(&v[..n], b"y");
    assert!(!dir.path().join(".wh.gone").exists());
    assert!(!dir.path().join("d/.wh..wh..opq").exists());
}

#[test]
fn apply_whiteouts_remove_lower_content() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let lower = TarBuilder::new()
        .file("gone", 0o644, b"x")
        .file("gone-dir/a/b", 0o644, b"x")
        .file("d/old", 0o644, b"x")
        .file("d/sub/old", 0o644, b"x")
        .file("d/kept-but-rewritten", 0o644, b"old")
        .file("other/stays", 0o644, b"x")
        .finish();
    unpack(&lower, root, Whiteouts::Apply).unwrap();
    // The opaque marker comes after siblings this layer wrote.
    let upper = TarBuilder::new()
        .file(".wh.gone", 0o644, b"")
        .file(".wh.gone-dir", 0o644, b"")
        .dir("d", 0o755)
        .file("d/kept-but-rewritten", 0o644, b"new")
        .dir("d/sub", 0o755)
        .file("d/sub/new", 0o644, b"new")
        .file("d/.wh..wh..opq", 0o644, b"")
        .finish();
    unpack(&upper, root, Whiteouts::Apply).unwrap();
    assert!(!root.join("gone").exists());
    assert!(!root.join("gone-dir").exists());
    let mut names: Vec<_> = walk(root).into_iter().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "d",
            "d/kept-but-rewritten",
            "d/sub",
            "d/sub/new",
            "other",
            "other/stays"
        ]
    );
    assert_eq!(fs::read(root.join("d/kept-but-rewritten")).unwrap(), b"new");
}

#[test]
fn apply_replaces_rather_than_writes_through_hard_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let lower = TarBuilder::new()
        .file("a", 0o644, b"shared")
        .hardlink("b", "a")
        .finish();
    unpack(&lower, root, Whiteouts::Apply).unwrap();
    let upper = TarBuilder::new().file("a", 0o644, b"changed").finish();
    unpack(&upper, root, Whiteouts::Apply).unwrap();
    assert_eq!(fs::read(root.join("a")).unwrap(), b"changed");
    assert_eq!(fs::read(root.join("b")).unwrap(), b"shared");
}

pub(crate) fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let p = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

/// A directory outside the layer that must stay as it is.
struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("secret"), b"secret").unwrap();
        Self { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn assert_untouched(&self) {
        assert_eq!(walk(self.path()), ["secret"]);
        let m = fs::symlink_metadata(self.path().join("secret")).unwrap();
        assert_eq!(m.nlink(), 1);
        assert_eq!(fs::read(self.path().join("secret")).unwrap(), b"secret");
        assert_eq!(m.permissions().mode() & 0o7777, 0o644);
    }
}

#[test]
fn hostile_dotdot_entry_is_refused() {
    let s = Sentinel::new();
    // The layer is a sibling of the sentinel: `../<sentinel>/x`.
    let parent = s.path().parent().unwrap();
    let layer = tempfile::tempdir_in(parent).unwrap();
    let sname = s.path().file_name().unwrap().to_str().unwrap();
    for name in [format!("../{sname}/x"), format!("a/../../{sname}/secret")] {
        let tar = TarBuilder::new().file(&name, 0o644, b"evil").finish();
        let e = unpack(&tar, layer.path(), Whiteouts::Overlay).unwrap_err();
        assert!(matches!(e, UnpackError::Unsafe { .. }), "{e}");
        assert!(e.to_string().contains(".."), "{e}");
    }
    s.assert_untouched();
}

#[test]
fn hostile_whiteouts_of_dot_and_dotdot_are_refused() {
    // Found by tests/random_input.rs: with whiteouts applied, `.wh...`
    // removed `..`, the layer root's parent, with all it held.
    let s = Sentinel::new();
    let layer = tempfile::tempdir_in(s.path()).unwrap();
    for name in [".wh..", ".wh...", "a/.wh..."] {
        for w in [Whiteouts::Apply, Whiteouts::Overlay] {
            let tar = TarBuilder::new().file(name, 0o644, b"").finish();
            let e = unpack(&tar, layer.path(), w).unwrap_err();
            assert!(matches!(e, UnpackError::Unsafe { .. }), "{name} {w:?}: {e}");
        }
    }
    fs::remove_dir_all(layer.path()).unwrap();
    s.assert_untouched();
}

#[test]
fn hostile_absolute_names_are_re_rooted() {
    let s = Sentinel::new();
    let layer = tempfile::tempdir().unwrap();
    let abs = format!("{}/x", s.path().display());
    let tar = TarBuilder::new().file(&abs, 0o644, b"evil").finish();
    unpack(&tar, layer.path(), Whiteouts::Overlay).unwrap();
    assert_eq!(fs::read(layer.path().join(&abs[1..])).unwrap(), b"evil");
    s.assert_untouched();
}

#[test]
fn hostile_symlink_escapes_are_never_followed() {
    let s = Sentinel::new();
    let sp = s.path().to_str().unwrap();
    let secret = format!("{sp}/secret");
    let cases: Vec<Vec<u8>> = vec![
        // An absolute symlink to the sentinel, then a file "through" it.
        TarBuilder::new()
            .symlink("esc", sp)
            .file("esc/x", 0o644, b"evil")
            .finish(),
        // A relative one climbing out.
        TarBuilder::new()
            .symlink("up", "../../../../../../../../..")
            .file(&format!("up{sp}/x"), 0o644, b"evil")
            .finish(),
        // The parent-directory trick, with a directory entry.
        TarBuilder::new()
            .symlink("a", sp)
            .dir("a/sub", 0o777)
            .file("a/sub/x", 0o644, b"evil")
            .finish(),
        // A symlink to the secret, then a file of the same name: replaced.
        TarBuilder::new()
            .symlink("f", &secret)
            .file("f", 0o644, b"evil")
            .finish(),
        // Metadata "through" a symlink: a directory entry over it.
        TarBuilder::new().symlink("d", sp).dir("d", 0o777).finish(),
        // A hard link to a symlink: links the symlink, not the secret.
        TarBuilder::new()
            .symlink("l", &secret)
            .hardlink("l2", "l")
            .finish(),
    ];
    for (i, tar) in cases.iter().enumerate() {
        let layer = tempfile::tempdir().unwrap();
        // Confined or refused: both are fine, writing outside is not.
        let r = unpack(tar, layer.path(), Whiteouts::Overlay);
        s.assert_untouched();
        eprintln!("case {i}: {:?}", r.map(|_| ()).map_err(|e| e.to_string()));
    }
    // The symlinks themselves are data and stay as written.
    let layer = tempfile::tempdir().unwrap();
    unpack(&cases[0], layer.path(), Whiteouts::Overlay).ok();
    assert_eq!(
        fs::read_link(layer.path().join("esc")).unwrap(),
        Path::new(sp)
    );
    let layer = tempfile::tempdir().unwrap();
    unpack(&cases[3], layer.path(), Whiteouts::Overlay).unwrap();
    assert_eq!(fs::read(layer.path().join("f")).unwrap(), b"evil");
    assert!(fs::symlink_metadata(layer.path().join("f"))
        .unwrap()
        .is_file());
}

#[test]
fn hostile_hard_links_stay_inside() {
    let s = Sentinel::new();
    let secret = format!("{}/secret", s.path().display());
    let shadow_links = fs::symlink_metadata("/etc/shadow").map(|m| m.nlink()).ok();
    for target in [secret.as_str(), "/etc/shadow", "etc/shadow"] {
        let layer = tempfile::tempdir().unwrap();
        let tar = TarBuilder::new().hardlink("stolen", target).finish();
        let e = unpack(&tar, layer.path(), Whiteouts::Overlay).unwrap_err();
        assert!(matches!(e, UnpackError::Entry { .. }), "{e}");
        assert!(!layer.path().join("stolen").exists());
    }
    // A target that exists in the layer under the absolute name: re-rooted.
    let layer = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .file("etc/shadow", 0o600, b"layer's own")
        .hardlink("stolen", "/etc/shadow")
        .finish();
    unpack(&tar, layer.path(), Whiteouts::Overlay).unwrap();
    assert_eq!(
        fs::read(layer.path().join("stolen")).unwrap(),
        b"layer's own"
    );
    s.assert_untouched();
    assert_eq!(
        fs::symlink_metadata("/etc/shadow").map(|m| m.nlink()).ok(),
        shadow_links
    );
}

#[test]
fn truncated_and_lying_tars_are_errors() {
    let tar = TarBuilder::new()
        .file("big", 0o644, &[7u8; 5000])
        .file("after", 0o644, b"x")
        .finish();
    // Cut in the middle of "big"'s data.
    let dir = tempfile::tempdir().unwrap();
    let e = unpack(&tar[..512 + 3000], dir.path(), Whiteouts::Overlay).unwrap_err();
    assert!(matches!(e, UnpackError::Truncated { .. }), "{e}");
    // Cut in a header.
    let dir = tempfile::tempdir().unwrap();
    let e = unpack(&tar[..512 + 5120 + 100], dir.path(), Whiteouts::Overlay).unwrap_err();
    assert!(matches!(e, UnpackError::Tar(_)), "{e}");

    // A PAX size larger than the data that follows.
    let lying = TarBuilder::new()
        .add(E {
            name: b"liar",
            data: b"short",
            pax: vec![("size", b"100000")],
            ..E::default()
        })
        .finish();
    let dir = tempfile::tempdir().unwrap();
    let e = unpack(&lying, dir.path(), Whiteouts::Overlay).unwrap_err();
    assert!(
        matches!(e, UnpackError::Truncated { .. } | UnpackError::Tar(_)),
        "{e}"
    );
    // And a smaller one: what follows is not a header.
    let lying = TarBuilder::new()
        .add(E {
            name: b"liar",
            data: &[b'A'; 2000],
            pax: vec![("size", b"10")],
            ..E::default()
        })
        .finish();
    let dir = tempfile::tempdir().unwrap();
    let e = unpack(&lying, dir.path(), Whiteouts::Overlay).unwrap_err();
    assert!(matches!(e, UnpackError::Tar(_)), "{e}");
}

#[test]
fn later_entries_replace_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .file("x", 0o644, b"first")
        .file("x", 0o600, b"second")
        .dir("y", 0o755)
        .file("y/child", 0o644, b"c")
        .symlink("y", "x")
        .finish();
    unpack(&tar, dir.path(), Whiteouts::Overlay).unwrap();
    assert_eq!(fs::read(dir.path().join("x")).unwrap(), b"second");
    assert_eq!(fs::read_link(dir.path().join("y")).unwrap(), Path::new("x"));
}

#[test]
fn pax_times_parse() {
    let t = parse_pax_time(b"12.5").unwrap();
    assert_eq!((t.tv_sec, t.tv_nsec), (12, 500_000_000));
    let t = parse_pax_time(b"-1.25").unwrap();
    assert_eq!((t.tv_sec, t.tv_nsec), (-2, 750_000_000));
    assert!(parse_pax_time(b"x").is_none());
    assert_eq!(clean(b"/./a//b/"), Some(PathBuf::from("a/b")));
    assert_eq!(clean(b"a/../b"), None);
}
