//! Trees as tar streams: what `berth cp` copies out of a container, what
//! `export` writes, and a new layer from a container's upper directory
//! (`commit`).
//!
//! Safety: the walk starts from a file descriptor the caller resolved
//! (inside the container's root, with `pathrs`) and goes down with `*at`
//! calls that never follow a symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`):
//! a symlink is written as a symlink, whatever it points to, so nothing
//! outside the tree is ever read. Mounts under the start are crossed, as
//! the tree's owner sees them.
//!
//! Memory: one file at a time streams through `io::copy`; the writer
//! decides how much is in flight.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("cannot write the archive: {0}")]
    Write(io::Error),
    #[error("cannot store the layer: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// What a [`Packer`] does besides copying.
#[derive(Debug, Clone, Copy, Default)]
pub struct PackOptions {
    /// The tree is an overlayfs upper directory: its whiteouts (0/0
    /// character devices) become OCI `.wh.NAME` entries and an opaque
    /// directory (`trusted.overlay.opaque=y`) gets a `.wh..wh..opq` entry.
    pub overlay_whiteouts: bool,
}

/// What Docker's `HEAD /containers/{id}/archive` reports of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    /// The last component.
    pub name: String,
    pub size: u64,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// A symlink's target; empty otherwise.
    pub link_target: String,
}

impl PathStat {
    pub fn is_dir(&self) -> bool {
        FileType::from_raw_mode(self.mode) == FileType::Directory
    }
}

/// Describes the object `fd` (an `O_PATH` descriptor is fine; a symlink is
/// described, not followed).
pub fn stat(fd: BorrowedFd<'_>, name: &str) -> io::Result<PathStat> {
    let st = rustix::fs::statat(fd, "", AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)?;
    let link_target = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        let t = rustix::fs::readlinkat(fd, "", Vec::new())?;
        String::from_utf8_lossy(t.as_bytes()).into_owned()
    } else {
        String::new()
    };
    Ok(PathStat {
        name: name.to_string(),
        size: st.st_size as u64,
        mode: st.st_mode,
        mtime: st.st_mtime,
        link_target,
    })
}

/// Writes objects and the trees under them as tar entries.
pub struct Packer<W: Write> {
    tar: tar::Builder<W>,
    opts: PackOptions,
    /// (device, inode) → the first name of an object with more than one
    /// link: later names become hard-link entries.
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
}

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn shown(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl<W: Write> Packer<W> {
    pub fn new(out: W, opts: PackOptions) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        Self {
            tar,
            opts,
            links: HashMap::new(),
            entries: 0,
        }
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the object `fd` (an `O_PATH` descriptor is fine; a symlink is
    /// written as one) named `name`, and, for a directory, all under it.
    pub fn add(&mut self, fd: BorrowedFd<'_>, name: &Path) -> Result<(), PackError> {
        let io_err = |op| {
            let path = shown(name);
            move |e: Errno| PackError::Io {
                path,
                op,
                source: e.into(),
            }
        };
        let st = rustix::fs::statat(fd, "", AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("looking at it"))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let dir = rustix::fs::openat(
                    fd,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("opening it"))?;
                self.dir_entry(&st, dir.as_fd(), name)?;
                self.children(dir.as_fd(), name)
            }
            FileType::RegularFile => {
                // An O_PATH descriptor cannot be read: open the very inode
                // again through its magic link.
                let file = rustix::fs::open(
                    format!("/proc/self/fd/{}", fd.as_raw_fd()),
                    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
                    Mode::empty(),
                )
                .map_err(io_err("opening it"))?;
                self.file_entry(&st, file, name)
            }
            FileType::Symlink => {
                let target =
                    rustix::fs::readlinkat(fd, "", Vec::new()).map_err(io_err("reading it"))?;
                self.symlink_entry(&st, &target, name)
            }
            _ => self.special_entry(&st, name),
        }
    }

    /// Writes everything under the directory `dir` (open for reading),
    /// named `prefix/...` (directly their names if `prefix` is empty).
    pub fn children(&mut self, dir: BorrowedFd<'_>, prefix: &Path) -> Result<(), PackError> {
        let io_err = |op, path: &Path| {
            let path = shown(path);
            move |e: Errno| PackError::Io {
                path,
                op,
                source: e.into(),
            }
        };
        let mut names: Vec<OsString> = Vec::new();
        for child in rustix::fs::Dir::read_from(dir).map_err(io_err("listing it", prefix))? {
            let child = child.map_err(io_err("listing it", prefix))?;
            let n = child.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        // Sorted: the same tree always gives the same archive.
        names.sort();
        for n in names {
            let path = prefix.join(&n);
            let st = match rustix::fs::statat(dir, &n, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed since it was listed (a running container).
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(io_err("looking at it", &path)(e)),
            };
            let ft = FileType::from_raw_mode(st.st_mode);
            if self.opts.overlay_whiteouts && ft == FileType::CharacterDevice && st.st_rdev == 0 {
                let mut wh = OsString::from(".wh.");
                wh.push(&n);
                self.marker(&prefix.join(wh))?;
                continue;
            }
            match ft {
                FileType::Directory => {
                    let sub = match rustix::fs::openat(
                        dir,
                        &n,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(fd) => fd,
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(io_err("opening it", &path)(e)),
                    };
                    self.dir_entry(&st, sub.as_fd(), &path)?;
                    if self.opts.overlay_whiteouts && is_opaque(sub.as_fd()) {
                        self.marker(&path.join(".wh..wh..opq"))?;
                    }
                    self.children(sub.as_fd(), &path)?;
                }
                FileType::RegularFile => {
                    let file = match rustix::fs::openat(
                        dir,
                        &n,
                        OFlags::RDONLY
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC
                            | OFlags::NOCTTY
                            | OFlags::NONBLOCK,
                        Mode::empty(),
                    ) {
                        Ok(fd) => fd,
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(io_err("opening it", &path)(e)),
                    };
                    // What was opened is what is described (a swap since
                    // the stat would otherwise mislabel it).
                    let st = rustix::fs::fstat(&file).map_err(io_err("looking at it", &path))?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                        continue;
                    }
                    self.file_entry(&st, file, &path)?;
                }
                FileType::Symlink => {
                    let target = match rustix::fs::readlinkat(dir, &n, Vec::new()) {
                        Ok(t) => t,
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(io_err("reading it", &path)(e)),
                    };
                    self.symlink_entry(&st, &target, &path)?;
                }
                _ => self.special_entry(&st, &path)?,
            }
        }
        Ok(())
    }

    /// Ends the archive and returns the writer.
    pub fn finish(self) -> Result<W, PackError> {
        self.tar.into_inner().map_err(PackError::Write)
    }

    fn header(st: &Stat, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        h.set_size(size);
        h
    }

    /// A hard-link entry if this object was already written under another
    /// name.
    fn linked(&mut self, st: &Stat, name: &Path) -> Result<bool, PackError> {
        if st.st_nlink <= 1 {
            return Ok(false);
        }
        let key = (st.st_dev, st.st_ino);
        if let Some(first) = self.links.get(&key).cloned() {
            let mut h = Self::header(st, tar::EntryType::Link, 0);
            self.tar
                .append_link(&mut h, name, &first)
                .map_err(PackError::Write)?;
            self.entries += 1;
            return Ok(true);
        }
        self.links.insert(key, name.to_path_buf());
        Ok(false)
    }

    fn dir_entry(&mut self, st: &Stat, _dir: BorrowedFd<'_>, name: &Path) -> Result<(), PackError> {
        if name.as_os_str().is_empty() {
            return Ok(());
        }
        let mut h = Self::header(st, tar::EntryType::Directory, 0);
        self.tar
            .append_data(&mut h, name, io::empty())
            .map_err(PackError::Write)?;
        self.entries += 1;
        Ok(())
    }

    fn file_entry(&mut self, st: &Stat, file: OwnedFd, name: &Path) -> Result<(), PackError> {
        if self.linked(st, name)? {
            return Ok(());
        }
        let size = st.st_size as u64;
        let mut h = Self::header(st, tar::EntryType::Regular, size);
        // Exactly `size` bytes whatever the file does meanwhile: more would
        // corrupt the archive, fewer are padded with zeros.
        let reader = Exact {
            inner: std::fs::File::from(file).take(size),
            left: size,
        };
        self.tar
            .append_data(&mut h, name, reader)
            .map_err(|e| PackError::Io {
                path: shown(name),
                op: "reading it",
                source: e,
            })?;
        self.entries += 1;
        Ok(())
    }

    fn symlink_entry(&mut self, st: &Stat, target: &CString, name: &Path) -> Result<(), PackError> {
        let mut h = Self::header(st, tar::EntryType::Symlink, 0);
        self.tar
            .append_link(
                &mut h,
                name,
                Path::new(OsStr::from_bytes(target.as_bytes())),
            )
            .map_err(PackError::Write)?;
        self.entries += 1;
        Ok(())
    }

    fn special_entry(&mut self, st: &Stat, name: &Path) -> Result<(), PackError> {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::CharacterDevice => tar::EntryType::Char,
            FileType::BlockDevice => tar::EntryType::Block,
            FileType::Fifo => tar::EntryType::Fifo,
            // Sockets (and anything else) cannot be archived: tar skips them too.
            _ => return Ok(()),
        };
        if self.linked(st, name)? {
            return Ok(());
        }
        let mut h = Self::header(st, kind, 0);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
            h.set_device_major(major).map_err(PackError::Write)?;
            h.set_device_minor(minor).map_err(PackError::Write)?;
        }
        self.tar
            .append_data(&mut h, name, io::empty())
            .map_err(PackError::Write)?;
        self.entries += 1;
        Ok(())
    }

    /// An empty entry whose name is its meaning (OCI whiteouts).
    fn marker(&mut self, name: &Path) -> Result<(), PackError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0);
        h.set_size(0);
        h.set_mtime(0);
        self.tar
            .append_data(&mut h, name, io::empty())
            .map_err(PackError::Write)?;
        self.entries += 1;
        Ok(())
    }
}

/// A layer written to the content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// Of the gzip blob.
    pub digest: crate::digest::Digest,
    /// Of the uncompressed tar.
    pub diff_id: crate::digest::Digest,
    /// Of the gzip blob.
    pub size: u64,
}

/// Writes the overlayfs upper directory `upper` as a gzip layer (OCI
/// whiteouts) into `store`: `commit`'s new layer. Streams: nothing but the
/// compressor's window is held.
pub fn write_layer(
    store: &crate::store::ContentStore,
    upper: &Path,
) -> Result<LayerBlob, PackError> {
    let dir = rustix::fs::open(
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| PackError::Io {
        path: shown(upper),
        op: "opening it",
        source: e.into(),
    })?;
    let ingest = store.writer()?;
    // Level 1: a commit is interactive, and most of a layer's bytes are
    // already compressed or small.
    let gz = flate2::write::GzEncoder::new(ingest, flate2::Compression::fast());
    let tee = DiffTee {
        hasher: crate::digest::Hasher::new(),
        inner: gz,
    };
    let mut p = Packer::new(
        tee,
        PackOptions {
            overlay_whiteouts: true,
        },
    );
    p.children(dir.as_fd(), Path::new(""))?;
    let tee = p.finish()?;
    let diff_id = tee.hasher.finish();
    let ingest = tee.inner.finish().map_err(PackError::Write)?;
    let size = ingest.offset();
    let digest = ingest.commit()?;
    Ok(LayerBlob {
        digest,
        diff_id,
        size,
    })
}

/// Hashes what goes through to `inner` (a layer's DiffID).
struct DiffTee<W> {
    hasher: crate::digest::Hasher,
    inner: W,
}

impl<W: Write> Write for DiffTee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One change a container made to its image's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// 'A' added, 'C' changed, 'D' deleted.
    pub kind: char,
    /// Absolute, as the container sees it.
    pub path: String,
}

/// The changes recorded in an overlayfs `upper` directory over `lowers`
/// (top layer first), sorted by path: a whiteout is a deletion, an object
/// the layers have a change, anything else an addition (as `docker diff`).
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, PackError> {
    let open = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| PackError::Io {
            path: shown(p),
            op: "opening it",
            source: e.into(),
        })
    };
    let top = open(upper)?;
    let mut layers = Vec::with_capacity(lowers.len());
    for l in lowers {
        layers.push(open(l)?);
    }
    let mut out = Vec::new();
    walk_changes(top.as_fd(), Path::new(""), &layers, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk_changes(
    dir: BorrowedFd<'_>,
    prefix: &Path,
    layers: &[OwnedFd],
    out: &mut Vec<Change>,
) -> Result<(), PackError> {
    let io_err = |op, path: &Path| {
        let path = shown(path);
        move |e: Errno| PackError::Io {
            path,
            op,
            source: e.into(),
        }
    };
    let mut names = Vec::new();
    for child in rustix::fs::Dir::read_from(dir).map_err(io_err("listing it", prefix))? {
        let child = child.map_err(io_err("listing it", prefix))?;
        let n = child.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    for n in names {
        let path = prefix.join(&n);
        let st = match rustix::fs::statat(dir, &n, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(io_err("looking at it", &path)(e)),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        let shown_path = format!("/{}", path.to_string_lossy());
        if ft == FileType::CharacterDevice && st.st_rdev == 0 {
            out.push(Change {
                kind: 'D',
                path: shown_path,
            });
            continue;
        }
        let kind = if in_layers(layers, &path) { 'C' } else { 'A' };
        out.push(Change {
            kind,
            path: shown_path,
        });
        if ft == FileType::Directory {
            let sub = rustix::fs::openat(
                dir,
                &n,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err("opening it", &path))?;
            walk_changes(sub.as_fd(), &path, layers, out)?;
        }
    }
    Ok(())
}

/// Whether the image's layers (top first) have `path`: the first layer
/// that names it decides (a whiteout there means it is gone).
fn in_layers(layers: &[OwnedFd], path: &Path) -> bool {
    for l in layers {
        match rustix::fs::openat2(
            l,
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => {
                return match rustix::fs::fstat(&fd) {
                    Ok(st) => {
                        !(FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
                            && st.st_rdev == 0)
                    }
                    Err(_) => true,
                }
            }
            Err(_) => continue,
        }
    }
    false
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::fgetxattr(dir, OPAQUE_XATTR, &mut buf), Ok(n) if &buf[..n] == b"y")
}

/// Reads exactly `left` bytes: the inner reader's, then zeros.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                buf[..want].fill(0);
                want
            }
            Ok(n) => n,
            Err(e) => return Err(e),
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::{extract, ExtractOptions};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn open_path(p: &Path) -> OwnedFd {
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_keeps_modes_links_and_content() {
        let src = tempfile::tempdir().unwrap();
        let top = src.path().join("top");
        std::fs::create_dir_all(top.join("sub")).unwrap();
        std::fs::write(top.join("sub/a"), b"hello").unwrap();
        std::fs::set_permissions(top.join("sub/a"), std::fs::Permissions::from_mode(0o751))
            .unwrap();
        std::fs::write(top.join(".wh.kept"), b"not a whiteout").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", top.join("link")).unwrap();
        std::fs::hard_link(top.join("sub/a"), top.join("hard")).unwrap();
        let mut p = Packer::new(Vec::new(), PackOptions::default());
        p.add(open_path(&top).as_fd(), Path::new("copy")).unwrap();
        let tar = p.finish().unwrap();

        let dst = tempfile::tempdir().unwrap();
        let dfd = rustix::fs::open(
            dst.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let opts = ExtractOptions {
            owner: None,
            rebase: Some((PathBuf::from("copy"), PathBuf::from("renamed"))),
        };
        extract(&tar[..], dfd, opts).unwrap();
        let out = dst.path().join("renamed");
        assert_eq!(std::fs::read(out.join("sub/a")).unwrap(), b"hello");
        let m = std::fs::metadata(out.join("sub/a")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o751);
        assert_eq!(m.nlink(), 2);
        assert_eq!(
            std::fs::read_link(out.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            std::fs::read(out.join(".wh.kept")).unwrap(),
            b"not a whiteout"
        );
        let st = stat(open_path(&out.join("link")).as_fd(), "link").unwrap();
        assert_eq!(st.link_target, "/etc/passwd");
    }
}
