//! Applying one layer (a tar stream, maybe compressed) to a directory.
//!
//! The layer's DiffID (the sha256 of the uncompressed tar stream, all of it,
//! end-of-archive padding included) is computed while unpacking; the caller
//! compares it with the image config's `rootfs.diff_ids`.
//!
//! Decompression and hashing run on a helper thread that hands 256 KiB chunks
//! to the writing thread, so the two overlap.
//!
//! Safety: every path operation is relative to a file descriptor of the
//! destination directory. Parent directories are resolved with `openat2`
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: a symlink met on the way
//! (even `/etc` or `../../..`) is resolved as if the destination were `/`,
//! so it can never lead outside. The last component is only ever touched
//! through its parent's descriptor with calls that do not follow symlinks
//! (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `O_EXCL` creation, `lsetxattr`).
//! Entries with a `..` component are refused; absolute names and absolute
//! hard-link targets are re-rooted in the destination. Symlinks are data:
//! written as they are, whatever they point to.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, SyncSender};

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use crate::digest::{Digest, Hasher};

/// How a layer blob is compressed: the model's (from the media type, or
/// sniffed from the first bytes of a `docker save` layer).
pub use crate::model::Compression;

/// What `.wh.` entries become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// The destination is an overlayfs layer directory: `.wh.NAME` becomes a
    /// 0/0 character device `NAME`, `.wh..wh..opq` the xattr
    /// `trusted.overlay.opaque=y` on its directory.
    Overlay,
    /// The destination already holds the lower layers (merged): `.wh.NAME`
    /// removes `NAME`, `.wh..wh..opq` removes every child of its directory
    /// this layer did not write.
    Apply,
    /// Not a layer (`berth cp`): `.wh.` names are ordinary files.
    Keep,
}

/// How [`extract`] writes a tar stream that is not a layer.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Every object gets this owner (uid, gid) instead of the archive's.
    pub owner: Option<(u32, u32)>,
    /// Entries under the first path are written under the second instead
    /// (an empty second path: directly in the destination). Hard-link
    /// targets are renamed the same way.
    pub rebase: Option<(PathBuf, PathBuf)>,
}

/// The result of a successful unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Bytes read from the blob.
    pub compressed_size: u64,
    /// Bytes of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Tar entries applied (whiteouts included).
    pub entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot open the layer destination {path}: {source}")]
    Destination { path: PathBuf, source: io::Error },
    #[error("cannot read the layer blob ({compression:?}): {source}")]
    Read {
        compression: Compression,
        source: io::Error,
    },
    #[error("malformed layer tar: {0}")]
    Tar(io::Error),
    #[error("layer entry {path:?} refused: {reason}")]
    Unsafe { path: String, reason: &'static str },
    #[error("layer entry {path:?} is truncated: {got} of {expected} bytes")]
    Truncated {
        path: String,
        got: u64,
        expected: u64,
    },
    #[error("layer entry {path:?}: {op}: {source}")]
    Entry {
        path: String,
        op: &'static str,
        source: io::Error,
    },
}

/// Chunks handed from the decompressing thread to the writer: big enough
/// that channel hand-offs cost nothing, small enough that an unpack holds
/// about 3 MiB (several run at once).
const CHUNK: usize = 256 << 10;
/// Files at least this big have their write-back started as soon as they
/// are written: with gigabytes of RAM the kernel would otherwise start only
/// at the final syncfs, and unpack and disk would take turns instead of
/// overlapping. (Most of a layer's bytes are in its big files.)
const WRITEBACK_MIN: u64 = 64 << 10;
/// Chunks in flight (bounded, so a slow disk throttles decompression).
const IN_FLIGHT: usize = 8;

/// Unpacks the layer `blob` (compressed as `compression`) into `dest`, an
/// existing directory, and returns its DiffID and sizes.
///
/// On error `dest` may hold part of the layer: unpack into a fresh
/// directory and remove it on failure (the snapshotter does).
pub fn unpack_layer<R: Read + Send>(
    blob: R,
    compression: Compression,
    dest: &Path,
    whiteouts: Whiteouts,
) -> Result<Unpacked, UnpackError> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Destination {
        path: dest.to_path_buf(),
        source: e.into(),
    })?;

    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
        let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
        let feeder = std::thread::Builder::new()
            .name("layer-decompress".into())
            .spawn_scoped(scope, move || feed(blob, compression, tx, recycle_rx))
            .map_err(|e| UnpackError::Read {
                compression,
                source: e,
            })?;

        let reader = ChunkReader {
            rx,
            recycle: recycle_tx,
            chunk: Vec::new(),
            pos: 0,
        };
        let mut unpacker = Unpacker::new(root, whiteouts);
        let mut archive = tar::Archive::new(reader);
        let applied = unpacker.run(&mut archive);
        // Drain what follows the end-of-archive blocks: it is part of the
        // DiffID; dropping the reader ends the feeder early on error.
        let mut reader = archive.into_inner();
        let drained = match &applied {
            Ok(_) => io::copy(&mut reader, &mut io::sink()).map(|_| ()),
            Err(_) => Ok(()),
        };
        drop(reader);
        let fed = feeder
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the decompressing thread panicked")));
        // A failure to read or decompress is the root cause of whatever the
        // tar reader then saw.
        let fed = fed.map_err(|source| UnpackError::Read {
            compression,
            source,
        })?;
        let entries = applied?;
        drained.map_err(UnpackError::Tar)?;
        let Some(fed) = fed else {
            return Err(UnpackError::Tar(io::Error::other(
                "the layer stream ended early",
            )));
        };
        Ok(Unpacked {
            diff_id: fed.diff_id,
            compressed_size: fed.compressed,
            uncompressed_size: fed.uncompressed,
            entries,
        })
    })
}

/// Writes the tar stream `reader` (not compressed) into the directory
/// `dest` (opened for reading) with the safety rules of a layer unpack:
/// nothing is ever written outside `dest`, whatever the archive's names,
/// links or the symlinks already in `dest`. Returns the entries written.
///
/// Runs on the calling thread and holds one 256 KiB buffer: a big file
/// streams through.
pub fn extract<R: Read>(
    reader: R,
    dest: OwnedFd,
    opts: ExtractOptions,
) -> Result<u64, UnpackError> {
    let mut unpacker = Unpacker::new(dest, Whiteouts::Keep);
    unpacker.owner = opts.owner;
    unpacker.rebase = opts.rebase;
    let mut archive = tar::Archive::new(reader);
    unpacker.run(&mut archive)
}

struct Fed {
    diff_id: Digest,
    compressed: u64,
    uncompressed: u64,
}

/// Counts the bytes read from the blob.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The decompressing thread: reads the blob to its end, hashes the
/// uncompressed stream and sends it on in chunks. `Ok(None)`: the writer
/// hung up (it failed).
fn feed<R: Read>(
    blob: R,
    compression: Compression,
    tx: SyncSender<io::Result<Vec<u8>>>,
    recycle: Receiver<Vec<u8>>,
) -> io::Result<Option<Fed>> {
    let count = Rc::new(Cell::new(0));
    let counting = BufReader::with_capacity(
        CHUNK,
        Counting {
            inner: blob,
            count: count.clone(),
        },
    );
    let mut stream: Box<dyn Read> = match compression {
        Compression::None => Box::new(counting),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(counting)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(counting)?),
    };
    let mut hasher = Hasher::new();
    loop {
        let mut buf = recycle.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        let result = loop {
            if filled == buf.len() {
                break Ok(());
            }
            match stream.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            // Tell the writer why its stream stops, then report it.
            let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        hasher.update(&buf);
        if tx.send(Ok(buf)).is_err() {
            return Ok(None);
        }
    }
    drop(tx);
    let uncompressed = hasher.len();
    Ok(Some(Fed {
        diff_id: hasher.finish(),
        compressed: count.get(),
        uncompressed,
    }))
}

/// The writer's side of the channel, as a `Read` for the tar parser.
struct ChunkReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    recycle: mpsc::Sender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let old = std::mem::replace(&mut self.chunk, next);
                    self.pos = 0;
                    if old.capacity() > 0 {
                        let _ = self.recycle.send(old);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Metadata of one entry, read before its data.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    times: Timestamps,
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct Unpacker {
    root: Rc<OwnedFd>,
    whiteouts: Whiteouts,
    /// The last parent directory resolved (entries come grouped by
    /// directory); dropped whenever anything is removed.
    cache: Option<(PathBuf, Rc<OwnedFd>)>,
    /// Directories whose times are set at the end, once their children are
    /// written.
    dirs: Vec<(PathBuf, Timestamps)>,
    /// Apply form: what this layer wrote, and its opaque directories.
    written: HashSet<PathBuf>,
    opaque: Vec<PathBuf>,
    buf: Vec<u8>,
    /// [`ExtractOptions`].
    owner: Option<(u32, u32)>,
    rebase: Option<(PathBuf, PathBuf)>,
}

const OPAQUE: &[u8] = b".wh..wh..opq";
const WH_PREFIX: &[u8] = b".wh.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn name_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl Unpacker {
    fn new(root: OwnedFd, whiteouts: Whiteouts) -> Self {
        Self {
            root: Rc::new(root),
            whiteouts,
            cache: None,
            dirs: Vec::new(),
            written: HashSet::new(),
            opaque: Vec::new(),
            buf: vec![0; CHUNK],
            owner: None,
            rebase: None,
        }
    }

    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<u64, UnpackError> {
        let mut count = 0;
        for entry in archive.entries().map_err(UnpackError::Tar)? {
            let mut entry = entry.map_err(UnpackError::Tar)?;
            self.entry(&mut entry)?;
            count += 1;
        }
        if self.whiteouts == Whiteouts::Apply {
            for dir in std::mem::take(&mut self.opaque) {
                self.apply_opaque(&dir)?;
            }
        }
        self.finish_dirs()?;
        Ok(count)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        use tar::EntryType as T;
        match kind {
            T::Regular
            | T::Continuous
            | T::GNUSparse
            | T::Directory
            | T::Symlink
            | T::Link
            | T::Char
            | T::Block
            | T::Fifo => {}
            // Global headers and other metadata-only entries: nothing to write.
            _ => {
                tracing::debug!(path = %shown, ?kind, "layer entry of an ignored type");
                return Ok(());
            }
        }
        let path = clean(&raw).ok_or_else(|| UnpackError::Unsafe {
            path: shown.clone(),
            reason: "a \"..\" component could point outside the layer",
        })?;
        let path = self.rebased(path);
        let meta = read_meta(entry).map_err(|source| UnpackError::Entry {
            path: shown.clone(),
            op: "reading its PAX headers",
            source,
        })?;
        let err = |op: &'static str| {
            let shown = shown.clone();
            move |e: Errno| UnpackError::Entry {
                path: shown,
                op,
                source: e.into(),
            }
        };

        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            // The layer's root directory itself.
            if kind == T::Directory {
                let root = self.root.clone();
                self.set_meta(root.as_fd(), None, FileType::Directory, &meta)
                    .map_err(err("setting the root's metadata"))?;
                self.dirs.push((PathBuf::new(), meta.times));
                return Ok(());
            }
            return Err(UnpackError::Unsafe {
                path: shown,
                reason: "only a directory can be the layer's root",
            });
        };
        let name_bytes = name.as_bytes();

        if name_bytes.starts_with(WH_PREFIX) && self.whiteouts != Whiteouts::Keep {
            let dir = self.dir(parent).map_err(err("creating its directory"))?;
            if name_bytes == OPAQUE {
                match self.whiteouts {
                    Whiteouts::Overlay => {
                        let fd = open_dir(dir.as_fd(), OsStr::new("."))
                            .map_err(err("opening its directory"))?;
                        rustix::fs::fsetxattr(&fd, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                            .map_err(err("marking the directory opaque"))?;
                    }
                    Whiteouts::Apply => self.opaque.push(parent.to_path_buf()),
                    Whiteouts::Keep => {}
                }
                return Ok(());
            }
            let target = OsStr::from_bytes(&name_bytes[WH_PREFIX.len()..]);
            if target.is_empty() || target.as_bytes().starts_with(WH_PREFIX) {
                // Other `.wh..wh.` names are aufs bookkeeping: meaningless here.
                return Ok(());
            }
            if target == "." || target == ".." {
                // `.wh..` and `.wh...` would white out the directory itself
                // or its parent: with whiteouts applied, removing `..`
                // would empty the directory above the layer's root.
                return Err(UnpackError::Unsafe {
                    path: shown,
                    reason: "a whiteout of '.' or '..' names no entry",
                });
            }
            match self.whiteouts {
                Whiteouts::Overlay => {
                    self.create(dir.as_fd(), target, |d, n| {
                        rustix::fs::mknodat(d, n, FileType::CharacterDevice, Mode::empty(), 0)
                    })
                    .map_err(err("creating the whiteout"))?;
                }
                Whiteouts::Apply => {
                    self.remove(dir.as_fd(), target)
                        .map_err(err("removing what it whites out"))?;
                }
                Whiteouts::Keep => {}
            }
            return Ok(());
        }

        let dir = self.dir(parent).map_err(err("creating its directory"))?;
        let dir = dir.as_fd();
        match kind {
            T::Directory => {
                match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(err("looking at what is there"))?;
                        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                            self.remove(dir, name).map_err(err("replacing it"))?;
                            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                                .map_err(err("creating it"))?;
                        }
                    }
                    Err(e) => return Err(err("creating it")(e)),
                }
                let fd = open_dir(dir, name).map_err(err("opening it"))?;
                self.set_meta(fd.as_fd(), None, FileType::Directory, &meta)
                    .map_err(err("setting its metadata"))?;
                self.dirs.push((path.clone(), meta.times));
                // Its children most likely come next.
                self.cache = Some((path.clone(), Rc::new(fd)));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let file = self
                    .create(dir, name, |d, n| {
                        rustix::fs::openat(
                            d,
                            n,
                            OFlags::WRONLY
                                | OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_raw_mode(0o600),
                        )
                    })
                    .map_err(err("creating it"))?;
                let mut file = std::fs::File::from(file);
                let expected = entry.size();
                let mut got = 0u64;
                loop {
                    let n = match entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(UnpackError::Tar(e)),
                    };
                    file.write_all(&self.buf[..n])
                        .map_err(|source| UnpackError::Entry {
                            path: shown.clone(),
                            op: "writing it",
                            source,
                        })?;
                    got += n as u64;
                }
                // Sparse entries expand to more than their archived size.
                if got < expected || (kind != T::GNUSparse && got != expected) {
                    return Err(UnpackError::Truncated {
                        path: shown,
                        got,
                        expected,
                    });
                }
                self.set_meta(file.as_fd(), None, FileType::RegularFile, &meta)
                    .map_err(err("setting its metadata"))?;
                rustix::fs::futimens(&file, &meta.times).map_err(err("setting its times"))?;
                if got >= WRITEBACK_MIN {
                    start_writeback(&file);
                }
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::Unsafe {
                        path: shown.clone(),
                        reason: "a symlink without a target",
                    })?
                    .into_owned();
                self.create(dir, name, |d, n| {
                    rustix::fs::symlinkat(OsStr::from_bytes(&target), d, n)
                })
                .map_err(err("creating it"))?;
                self.set_meta(dir, Some(name), FileType::Symlink, &meta)
                    .map_err(err("setting its metadata"))?;
                rustix::fs::utimensat(dir, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(err("setting its times"))?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::Unsafe {
                        path: shown.clone(),
                        reason: "a hard link without a target",
                    })?
                    .into_owned();
                let target = clean(&target).ok_or_else(|| UnpackError::Unsafe {
                    path: shown.clone(),
                    reason: "a hard link whose target has a \"..\" component",
                })?;
                let target = self.rebased(target);
                let (Some(tparent), Some(tname)) = (target.parent(), target.file_name()) else {
                    return Err(UnpackError::Unsafe {
                        path: shown,
                        reason: "a hard link to the layer's root",
                    });
                };
                if target == path {
                    return Ok(());
                }
                // Resolved in the layer, like any parent: a target "outside"
                // (`/etc/shadow`) names the layer's own `etc/shadow`.
                let tdir = resolve_dir(&self.root, tparent).map_err(err("finding its target"))?;
                self.create(dir, name, |d, n| {
                    rustix::fs::linkat(&tdir, tname, d, n, AtFlags::empty())
                })
                .map_err(err("linking it"))?;
            }
            T::Char | T::Block | T::Fifo => {
                let (ft, dev) = match kind {
                    T::Char | T::Block => {
                        let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                        let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == T::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                    _ => (FileType::Fifo, 0),
                };
                self.create(dir, name, |d, n| {
                    rustix::fs::mknodat(d, n, ft, Mode::from_raw_mode(0o600), dev)
                })
                .map_err(err("creating it"))?;
                self.set_meta(dir, Some(name), ft, &meta)
                    .map_err(err("setting its metadata"))?;
                rustix::fs::utimensat(dir, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(err("setting its times"))?;
            }
            _ => {}
        }
        if self.whiteouts == Whiteouts::Apply {
            self.written.insert(path);
        }
        Ok(())
    }

    /// `path` with [`ExtractOptions::rebase`] applied.
    fn rebased(&self, path: PathBuf) -> PathBuf {
        match &self.rebase {
            Some((from, to)) => match path.strip_prefix(from) {
                Ok(rest) => to.join(rest),
                Err(_) => path,
            },
            None => path,
        }
    }

    /// Creates `name` in `dir` with `make`; if something is already there
    /// (an earlier entry, a lower layer), removes it first: never writes
    /// through it (it may be a symlink, or a hard link shared with others).
    fn create<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        make: impl Fn(BorrowedFd<'_>, &OsStr) -> rustix::io::Result<T>,
    ) -> rustix::io::Result<T> {
        match make(dir, name) {
            Err(Errno::EXIST) => {
                self.remove(dir, name)?;
                make(dir, name)
            }
            other => other,
        }
    }

    /// Removes `name` (a whole tree if a directory) from `dir`.
    fn remove(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
        self.cache = None;
        remove_at(dir, name)
    }

    /// The directory `path` (relative to the root), created (0755, owned by
    /// us, as tar does) if missing.
    fn dir(&mut self, path: &Path) -> rustix::io::Result<Rc<OwnedFd>> {
        if path.as_os_str().is_empty() {
            return Ok(self.root.clone());
        }
        if let Some((cached, fd)) = &self.cache {
            if cached == path {
                return Ok(fd.clone());
            }
        }
        let fd = Rc::new(self.make_dir(path)?);
        self.cache = Some((path.to_path_buf(), fd.clone()));
        Ok(fd)
    }

    fn make_dir(&mut self, path: &Path) -> rustix::io::Result<OwnedFd> {
        match resolve_dir(&self.root, path) {
            Err(Errno::NOENT) => {}
            other => return other,
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Errno::NOENT);
        };
        let parent_fd = if parent.as_os_str().is_empty() {
            rustix::io::dup(&*self.root)?
        } else {
            self.make_dir(parent)?
        };
        match rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => {
                if self.whiteouts == Whiteouts::Apply {
                    self.written.insert(path.to_path_buf());
                }
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        // No symlink is followed here: if `name` is one (to a directory that
        // does not exist in the layer), this fails.
        rustix::fs::openat(
            &parent_fd,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    /// Owner, mode and xattrs of a new object: on `fd` itself, or, for
    /// symlinks and device nodes, on `name` in the directory `fd`.
    fn set_meta(
        &self,
        fd: BorrowedFd<'_>,
        name: Option<&OsStr>,
        ft: FileType,
        meta: &Meta,
    ) -> rustix::io::Result<()> {
        let (uid, gid) = self.owner.unwrap_or((meta.uid, meta.gid));
        let uid = Some(Uid::from_raw(uid));
        let gid = Some(Gid::from_raw(gid));
        let mode = Mode::from_raw_mode(meta.mode & 0o7777);
        // chown first: it clears setuid/setgid bits and security.capability.
        match name {
            None => {
                rustix::fs::fchown(fd, uid, gid)?;
                rustix::fs::fchmod(fd, mode)?;
            }
            Some(name) => {
                rustix::fs::chownat(fd, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
                if ft != FileType::Symlink {
                    // `name` was just created by mknodat in a directory only
                    // we write to: it is not a symlink (and Linux has no
                    // lchmod before fchmodat2).
                    rustix::fs::chmodat(fd, name, mode, AtFlags::empty())?;
                }
            }
        }
        for (key, value) in &meta.xattrs {
            let set = match name {
                None => rustix::fs::fsetxattr(fd, key, value, XattrFlags::empty()),
                Some(name) => {
                    // lsetxattr on the directory's descriptor path: the
                    // magic link leads to the directory we hold, and the
                    // last component is not followed.
                    let mut p = format!("/proc/self/fd/{}/", fd.as_raw_fd()).into_bytes();
                    p.extend_from_slice(name.as_bytes());
                    rustix::fs::lsetxattr(OsStr::from_bytes(&p), key, value, XattrFlags::empty())
                }
            };
            match set {
                Ok(()) => {}
                // A filesystem without this xattr namespace (or user.* on a
                // symlink): the file matters more than the attribute, as in
                // Docker and containerd.
                Err(Errno::NOTSUP) => {
                    tracing::warn!(xattr = ?key, "xattr not supported by the layer's filesystem: skipped");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Apply form: removes from `dir` every child this layer did not write,
    /// and from the written directories, theirs.
    fn apply_opaque(&mut self, dir: &Path) -> Result<(), UnpackError> {
        let err = |op: &'static str| {
            let path = name_str(dir);
            move |e: Errno| UnpackError::Entry {
                path,
                op,
                source: e.into(),
            }
        };
        let fd = match resolve_dir(&self.root, dir) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(err("opening the opaque directory")(e)),
        };
        let fd = open_dir(fd.as_fd(), OsStr::new(".")).map_err(err("opening it"))?;
        let mut children = Vec::new();
        for child in rustix::fs::Dir::read_from(&fd).map_err(err("listing it"))? {
            let child = child.map_err(err("listing it"))?;
            let name = OsStr::from_bytes(child.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            children.push((name.to_os_string(), child.file_type()));
        }
        for (name, ft) in children {
            let path = dir.join(&name);
            if !self.written.contains(&path) {
                self.remove(fd.as_fd(), &name)
                    .map_err(err("removing what it hides"))?;
            } else if ft == FileType::Directory {
                self.apply_opaque(&path)?;
            }
        }
        Ok(())
    }

    /// Sets directory times, children first.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        for (path, times) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let err = |e: Errno| UnpackError::Entry {
                path: name_str(&path),
                op: "setting its times",
                source: e.into(),
            };
            match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => {
                    let dir = match resolve_dir(&self.root, parent) {
                        Ok(dir) => dir,
                        // Removed since (by a whiteout, a later entry).
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(err(e)),
                    };
                    match rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(e) => return Err(err(e)),
                    }
                }
                _ => rustix::fs::futimens(&*self.root, &times).map_err(err)?,
            }
        }
        Ok(())
    }
}

/// Starts writing `file`'s dirty pages back now, without waiting for them:
/// the disk works while later entries are unpacked, and the final syncfs
/// has less left to do.
fn start_writeback(file: &std::fs::File) {
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // open for the duration of the call (borrowed from `file`).
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r != 0 {
        // Only a hint: syncfs later does the real work.
        tracing::trace!(error = %io::Error::last_os_error(), "sync_file_range");
    }
}

/// Opens the directory `path` inside `root`, symlinks resolved as if `root`
/// were `/`.
pub(crate) fn resolve_dir(root: &OwnedFd, path: &Path) -> rustix::io::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            root,
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            // The kernel asks for a retry when a rename raced the lookup.
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// Opens the directory `name` in `dir` for reading, not following symlinks.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Removes `name` from `dir`, recursively if it is a directory, never
/// following symlinks. A missing `name` is not an error.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => {
            let sub = open_dir(dir, name)?;
            let mut names = Vec::new();
            for child in rustix::fs::Dir::read_from(&sub)? {
                let child = child?;
                let n = child.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(OsStr::from_bytes(n).to_os_string());
                }
            }
            for n in names {
                remove_at(sub.as_fd(), &n)?;
            }
            match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// An entry name made relative: leading `/` and `.` components dropped.
/// `None` if it has a `..` component.
fn clean(raw: &[u8]) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            part => out.push(OsStr::from_bytes(part)),
        }
    }
    Some(out)
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let header = entry.header();
    // An empty numeric field reads as 0, as in GNU tar and Go's archive/tar
    // (some image builders leave them empty).
    let old = header.as_old();
    let numeric = |field: &[u8], value: io::Result<u64>| {
        if field.iter().all(|&b| b == 0 || b == b' ') {
            Ok(0)
        } else {
            value
        }
    };
    let uid = numeric(&old.uid, header.uid())?;
    let gid = numeric(&old.gid, header.gid())?;
    let uid = u32::try_from(uid).map_err(|_| io::Error::other("uid out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| io::Error::other("gid out of range"))?;
    let mode = u32::try_from(numeric(&old.mode, header.mode().map(u64::from))?)
        .map_err(|_| io::Error::other("mode out of range"))?;
    let mtime_secs = i64::try_from(numeric(&old.mtime, header.mtime())?).unwrap_or(i64::MAX);
    let mut mtime = Timespec {
        tv_sec: mtime_secs,
        tv_nsec: 0,
    };
    let mut atime = header
        .as_gnu()
        .and_then(|g| g.atime().ok())
        .filter(|&a| a != 0)
        .map(|a| Timespec {
            tv_sec: i64::try_from(a).unwrap_or(i64::MAX),
            tv_nsec: 0,
        });
    let mut xattrs = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            match key {
                "mtime" => {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        mtime = t;
                    }
                }
                "atime" => atime = parse_pax_time(ext.value_bytes()).or(atime),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        // overlayfs's own xattrs would change how the kernel
                        // reads the layer (redirects, metacopy): not data.
                        if name.starts_with("trusted.overlay.") || name.is_empty() {
                            continue;
                        }
                        let name = CString::new(name)
                            .map_err(|_| io::Error::other("an xattr name with a NUL"))?;
                        xattrs.push((name, ext.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    Ok(Meta {
        uid,
        gid,
        mode,
        times: Timestamps {
            last_access: atime.unwrap_or(mtime),
            last_modification: mtime,
        },
        xattrs,
    })
}

/// A PAX time, `[-]seconds[.fraction]`.
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(value).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: i64 = 0;
    let mut digits = 0;
    for c in frac.chars().take(9) {
        nsec = nsec * 10 + i64::from(c.to_digit(10)?);
        digits += 1;
    }
    for _ in digits..9 {
        nsec *= 10;
    }
    Some(if neg {
        if nsec == 0 {
            Timespec {
                tv_sec: -secs,
                tv_nsec: 0,
            }
        } else {
            Timespec {
                tv_sec: -secs - 1,
                tv_nsec: 1_000_000_000 - nsec,
            }
        }
    } else {
        Timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        }
    })
}

#[cfg(test)]
pub(crate) mod tests;
