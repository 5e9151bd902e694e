//! The content store: blobs addressed by their sha256 digest.
//!
//! Layout under the directory the caller gives (berthd: `<root>/images`):
//!
//! ```text
//! blobs/sha256/<hex>        verified, immutable content (never written in place)
//! ingest/<hex>/data         the bytes received so far for an expected digest
//! ingest/<hex>/lock         flock(2)ed by whoever is writing that digest
//! ingest/tmp-<unique>/...   content whose digest is learnt at the end (archives)
//! ```
//!
//! A blob appears under `blobs/` only by `rename(2)` from an ingest, after its
//! sha256 and size were checked against what the caller expected and the
//! data was fsynced; the directory is fsynced after the rename. So a reader
//! never sees a partial or unverified blob, and a crash (or a full disk) at
//! any point leaves either the whole blob or no blob.
//!
//! An ingest for an expected digest is resumable: its data stays under
//! `ingest/<hex>/` when the writer dies or drops it without `commit`/`abort`,
//! and the next [`ContentStore::ingest`] of that digest re-hashes the bytes
//! already there and reports [`Ingest::offset`], so a download continues
//! with an HTTP `Range: bytes=<offset>-` request. The partial data is only
//! trusted once the whole blob hashes to the expected digest; a wrong prefix
//! shows up as a digest mismatch at commit, which discards it.
//!
//! Two writers of the same digest (threads or processes) exclude each other
//! with an in-process set and an exclusive `flock` on `ingest/<hex>/lock`;
//! the second gets [`StoreError::InProgress`] ([`ContentStore::ingest`]) or
//! waits for a bounded time ([`ContentStore::ingest_wait`]).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::digest::{Digest, Hasher};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no space left on the device while writing {what} under {path}: free some space (berth image prune) and retry")]
    NoSpace { what: String, path: PathBuf },
    #[error("content of {expected} does not match its digest: got {actual}; nothing was stored")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size of {digest} does not match: expected {expected} bytes, got {actual}; nothing was stored")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is {size} bytes, more than the {limit} bytes allowed for it")]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("blob {0} is not in the content store")]
    NotFound(Digest),
    #[error("blob {0} is being written by another ingest; retry when it is done")]
    InProgress(Digest),
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn io_err(op: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn is_enospc(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOSPC) | Some(Errno::EDQUOT)
    )
}

/// A blob in the store, as [`ContentStore::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// The content store. Cheap to clone; clones share the in-process lock set.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
    active: Arc<Mutex<HashSet<String>>>,
}

/// A unique suffix for temporary ingests within this process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    /// Open (creating if needed) the store under `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = dir.into();
        for sub in ["blobs/sha256", "ingest"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|e| io_err("create directory", &p, e))?;
        }
        Ok(Self {
            root,
            active: Arc::default(),
        })
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    fn ingest_root(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Where the blob `d` is (or would be). Digests are validated hex, so the
    /// path is always inside the store.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// The size of a stored blob.
    pub fn size(&self, d: &Digest) -> Result<u64> {
        let p = self.blob_path(d);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound(d.clone())),
            Err(e) => Err(io_err("stat", &p, e)),
        }
    }

    /// Open a stored blob for reading (its content was verified when it was
    /// written; blobs are never modified afterwards).
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound(d.clone())
            } else {
                io_err("open", &p, e)
            }
        })
    }

    /// Read a small blob (a manifest, a config) whole, refusing anything over
    /// `limit` bytes, and check its digest again: these documents are the
    /// roots every other check hangs from, and re-hashing them is cheap.
    pub fn read_all(&self, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        let mut f = self.open_blob(d)?;
        let p = self.blob_path(d);
        let size = f.metadata().map_err(|e| io_err("stat", &p, e))?.len();
        if size > limit {
            return Err(StoreError::TooLarge {
                digest: d.clone(),
                size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&mut f)
            .take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| io_err("read", &p, e))?;
        let actual = Digest::of(&buf);
        if &actual != d {
            return Err(StoreError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    /// Store generated content (a manifest or config made here) and return
    /// its digest. Idempotent.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if self.has(&d) {
            return Ok(d);
        }
        let size = bytes.len() as u64;
        let mut ing = match self.ingest_wait(&d, Some(size), Duration::from_secs(30))? {
            Some(i) => i,
            None => return Ok(d),
        };
        if ing.offset() != 0 {
            // Leftovers of an earlier, interrupted put: we have the whole
            // content in hand, start over.
            ing.truncate()?;
        }
        if let Err(e) = ing.write_all(bytes) {
            let path = ing.data_path.clone();
            ing.abort()?;
            return Err(if is_enospc(&e) {
                StoreError::NoSpace {
                    what: d.to_string(),
                    path,
                }
            } else {
                io_err("write", &path, e)
            });
        }
        ing.commit()?;
        Ok(d)
    }

    /// Start (or resume) writing the blob `expected`.
    ///
    /// `Ok(None)`: the blob is already in the store, nothing to write.
    /// Otherwise the returned [`Ingest`] holds the exclusive lock for that
    /// digest; write from [`Ingest::offset`] on, then [`Ingest::commit`].
    /// Another writer of the same digest: [`StoreError::InProgress`].
    pub fn ingest(&self, expected: &Digest, expected_size: Option<u64>) -> Result<Option<Ingest>> {
        self.ingest_inner(expected, expected_size, None)
    }

    /// As [`ContentStore::ingest`], but wait up to `timeout` for another
    /// writer of the same digest to finish (usually it commits the blob and
    /// this returns `Ok(None)`).
    pub fn ingest_wait(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
        timeout: Duration,
    ) -> Result<Option<Ingest>> {
        self.ingest_inner(expected, expected_size, Some(Instant::now() + timeout))
    }

    fn ingest_inner(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<Option<Ingest>> {
        let key = expected.hex().to_string();
        loop {
            if self.has(expected) {
                return Ok(None);
            }
            match self.try_lock_ingest(&key)? {
                Some((guard, lock)) => {
                    // The lock is ours: a concurrent writer may have committed
                    // just before we got it.
                    if self.has(expected) {
                        return Ok(None);
                    }
                    let ing =
                        Ingest::open(self, guard, lock, Some(expected.clone()), expected_size)?;
                    return Ok(Some(ing));
                }
                None => match deadline {
                    Some(d) if Instant::now() < d => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => return Err(StoreError::InProgress(expected.clone())),
                },
            }
        }
    }

    /// Start writing content whose digest is only known at the end (an
    /// archive entry). Not resumable: its data goes when it is dropped.
    pub fn writer(&self) -> Result<Ingest> {
        let key = format!(
            "tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        match self.try_lock_ingest(&key)? {
            Some((guard, lock)) => Ingest::open(self, guard, lock, None, None),
            // Only a stale directory from a dead process with our pid could
            // hold this name, and it would not be locked; be safe anyway.
            None => Err(io_err(
                "lock",
                &self.ingest_root().join(&key),
                io::Error::from(io::ErrorKind::WouldBlock),
            )),
        }
    }

    /// Take the in-process slot and the flock for the ingest `key`, or
    /// `None` if someone else holds either.
    fn try_lock_ingest(&self, key: &str) -> Result<Option<(ActiveGuard, Flock<File>)>> {
        let guard = match ActiveGuard::take(&self.active, key) {
            Some(g) => g,
            None => return Ok(None),
        };
        let dir = self.ingest_root().join(key);
        let lock_path = dir.join("lock");
        loop {
            fs::create_dir_all(&dir).map_err(|e| map_nospace(e, "create directory", &dir))?;
            let f = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
            {
                Ok(f) => f,
                // The holder committed and removed the directory between our
                // mkdir and open: start again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(map_nospace(e, "open", &lock_path)),
            };
            let lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => return Err(io_err("flock", &lock_path, io::Error::from(e))),
            };
            // The file we locked must still be the one at the path: a holder
            // that finished removes the directory, and a lock on an unlinked
            // file excludes nobody.
            let ours = lock.metadata().map_err(|e| io_err("stat", &lock_path, e))?;
            match fs::metadata(&lock_path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {
                    return Ok(Some((guard, lock)))
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat", &lock_path, e)),
            }
        }
    }

    /// Remove a blob. Removing an absent blob is not an error.
    pub fn delete(&self, d: &Digest) -> Result<()> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Ok(()) => sync_dir(&self.blobs_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &p, e)),
        }
    }

    /// Every blob in the store. Files whose names are not digests (none
    /// should exist) are skipped.
    pub fn list(&self) -> Result<Vec<BlobInfo>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for ent in fs::read_dir(&dir).map_err(|e| io_err("read directory", &dir, e))? {
            let ent = ent.map_err(|e| io_err("read directory", &dir, e))?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(digest) = Digest::from_hex(&name) else {
                continue;
            };
            let size = match ent.metadata() {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat", &ent.path(), e)),
            };
            out.push(BlobInfo { digest, size });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Remove ingests nobody holds whose data was last written more than
    /// `older_than` ago (an abandoned pull). Returns how many were removed.
    /// `Duration::ZERO` removes every unlocked ingest; berthd should keep
    /// recent ones at start-up (e.g. a day), as they are what an
    /// interrupted pull resumes from.
    pub fn cleanup_ingests(&self, older_than: Duration) -> Result<usize> {
        let root = self.ingest_root();
        let now = SystemTime::now();
        let mut removed = 0;
        for ent in fs::read_dir(&root).map_err(|e| io_err("read directory", &root, e))? {
            let ent = ent.map_err(|e| io_err("read directory", &root, e))?;
            let Some(key) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some((_guard, _lock)) = self.try_lock_ingest(&key)? else {
                continue;
            };
            let dir = root.join(&key);
            let data = dir.join("data");
            let modified = fs::metadata(&data)
                .or_else(|_| fs::metadata(&dir))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
            if age >= older_than {
                fs::remove_dir_all(&dir).map_err(|e| io_err("remove", &dir, e))?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&root)?;
        }
        Ok(removed)
    }
}

fn map_nospace(e: io::Error, op: &'static str, path: &Path) -> StoreError {
    if is_enospc(&e) {
        StoreError::NoSpace {
            what: "an ingest".into(),
            path: path.to_path_buf(),
        }
    } else {
        io_err(op, path, e)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err("fsync", dir, e))
}

/// This process's claim on an ingest key; released on drop.
#[derive(Debug)]
struct ActiveGuard {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl ActiveGuard {
    fn take(set: &Arc<Mutex<HashSet<String>>>, key: &str) -> Option<Self> {
        // A poisoned set still holds valid keys: a panic elsewhere does not
        // make it wrong.
        let mut s = set.lock().unwrap_or_else(|p| p.into_inner());
        if !s.insert(key.to_string()) {
            return None;
        }
        Some(Self {
            set: Arc::clone(set),
            key: key.to_string(),
        })
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut s = self.set.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(&self.key);
    }
}

/// An open ingest: holds the exclusive lock on its digest until it is
/// committed, aborted or dropped. Dropping an ingest of an expected digest
/// keeps its data for a later resume; dropping a [`ContentStore::writer`]
/// removes it.
pub struct Ingest {
    blobs_dir: PathBuf,
    dir: PathBuf,
    data_path: PathBuf,
    file: File,
    hasher: Hasher,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    resumed_from: u64,
    done: bool,
    // Field order matters: the flock is released before the in-process slot,
    // so nobody in this process can take the slot and find the file locked.
    _lock: Flock<File>,
    _guard: ActiveGuard,
}

impl Ingest {
    fn open(
        store: &ContentStore,
        guard: ActiveGuard,
        lock: Flock<File>,
        expected: Option<Digest>,
        expected_size: Option<u64>,
    ) -> Result<Self> {
        let dir = store.ingest_root().join(&guard.key);
        let data_path = dir.join("data");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(expected.is_none())
            .open(&data_path)
            .map_err(|e| map_nospace(e, "open", &data_path))?;
        let mut hasher = Hasher::new();
        // Re-hash what an earlier writer left, so the digest at commit covers
        // every byte of the blob.
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| io_err("read", &data_path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let mut ing = Self {
            blobs_dir: store.blobs_dir(),
            dir,
            data_path,
            file,
            hasher,
            expected,
            expected_size,
            resumed_from: 0,
            done: false,
            _lock: lock,
            _guard: guard,
        };
        if matches!(expected_size, Some(s) if ing.hasher.len() > s) {
            // More bytes than the blob can have: the leftovers are not a
            // prefix of it.
            ing.truncate()?;
        }
        ing.resumed_from = ing.hasher.len();
        if ing.resumed_from > 0 {
            tracing::debug!(digest = ?ing.expected, offset = ing.resumed_from, "resuming ingest");
        }
        Ok(ing)
    }

    /// Where the next byte goes: the number of bytes already held (and
    /// hashed). A download resumes with `Range: bytes=<offset>-`.
    pub fn offset(&self) -> u64 {
        self.hasher.len()
    }

    /// How many bytes were already there when this ingest was opened.
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// The digest of the bytes held so far.
    pub fn digest_so_far(&self) -> Digest {
        self.hasher.clone().finish()
    }

    pub fn expected(&self) -> Option<&Digest> {
        self.expected.as_ref()
    }

    /// Drop the bytes held so far (e.g. the server ignored a Range request
    /// and sends the whole blob again).
    pub fn truncate(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|e| io_err("truncate", &self.data_path, e))?;
        self.hasher = Hasher::new();
        Ok(())
    }

    /// Verify and publish the blob. On a digest or size mismatch the data
    /// is discarded and nothing is stored.
    pub fn commit(mut self) -> Result<Digest> {
        let len = self.hasher.len();
        if let Err(e) = self.file.flush().and_then(|()| self.file.sync_all()) {
            return Err(if is_enospc(&e) {
                StoreError::NoSpace {
                    what: self.what(),
                    path: self.data_path.clone(),
                }
            } else {
                io_err("fsync", &self.data_path, e)
            });
        }
        let actual = self.hasher.clone().finish();
        if let Some(exp) = &self.expected {
            if let Some(size) = self.expected_size {
                if size != len {
                    let err = StoreError::SizeMismatch {
                        digest: exp.clone(),
                        expected: size,
                        actual: len,
                    };
                    self.remove_dir()?;
                    return Err(err);
                }
            }
            if exp != &actual {
                let err = StoreError::DigestMismatch {
                    expected: exp.clone(),
                    actual,
                };
                self.remove_dir()?;
                return Err(err);
            }
        }
        let target = self.blobs_dir.join(actual.hex());
        fs::rename(&self.data_path, &target).map_err(|e| io_err("rename", &target, e))?;
        sync_dir(&self.blobs_dir)?;
        self.remove_dir()?;
        tracing::debug!(digest = %actual, size = len, "blob committed");
        Ok(actual)
    }

    /// Give up and remove the partial data.
    pub fn abort(mut self) -> Result<()> {
        self.remove_dir()
    }

    fn remove_dir(&mut self) -> Result<()> {
        self.done = true;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &self.dir, e)),
        }
    }

    fn what(&self) -> String {
        match &self.expected {
            Some(d) => d.to_string(),
            None => "a blob".into(),
        }
    }
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("dir", &self.dir)
            .field("expected", &self.expected)
            .field("expected_size", &self.expected_size)
            .field("offset", &self.hasher.len())
            .finish()
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(size) = self.expected_size {
            // Refuse to store more than the descriptor promised: an endless
            // response must not fill the disk.
            if self.hasher.len() + buf.len() as u64 > size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is larger than its expected {size} bytes", self.what()),
                ));
            }
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.done && self.expected.is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path().join("images")).unwrap();
        (t, s)
    }

    #[test]
    fn put_read_list_delete() {
        let (_t, s) = store();
        let d = s.put(b"{\"a\":1}").unwrap();
        assert_eq!(d, Digest::of(b"{\"a\":1}"));
        assert!(s.has(&d));
        assert_eq!(s.read_all(&d, 100).unwrap(), b"{\"a\":1}");
        assert!(matches!(
            s.read_all(&d, 3),
            Err(StoreError::TooLarge { size: 7, .. })
        ));
        assert_eq!(s.put(b"{\"a\":1}").unwrap(), d);
        assert_eq!(
            s.list().unwrap(),
            vec![BlobInfo {
                digest: d.clone(),
                size: 7
            }]
        );
        s.delete(&d).unwrap();
        assert!(!s.has(&d));
        s.delete(&d).unwrap();
        assert!(matches!(s.open_blob(&d), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn mismatch_stores_nothing() {
        let (_t, s) = store();
        let want = Digest::of(b"good");
        let mut i = s.ingest(&want, Some(4)).unwrap().unwrap();
        i.write_all(b"evil").unwrap();
        let e = i.commit().unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }));
        assert!(e.to_string().contains(&want.to_string()), "{e}");
        assert!(!s.has(&want));
        assert!(s.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(s.ingest_root()).unwrap().count(), 0);

        let mut i = s.ingest(&want, Some(5)).unwrap().unwrap();
        i.write_all(b"good").unwrap();
        assert!(matches!(
            i.commit(),
            Err(StoreError::SizeMismatch {
                expected: 5,
                actual: 4,
                ..
            })
        ));
        let mut i = s.ingest(&want, Some(3)).unwrap().unwrap();
        assert!(i.write_all(b"good").is_err());
        i.abort().unwrap();
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn resume_after_drop_rehashes() {
        let (_t, s) = store();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(&content);
        let mut i = s.ingest(&d, Some(content.len() as u64)).unwrap().unwrap();
        assert_eq!(i.offset(), 0);
        i.write_all(&content[..70_000]).unwrap();
        drop(i); // as if the process died
        let mut i = s.ingest(&d, Some(content.len() as u64)).unwrap().unwrap();
        assert_eq!(i.offset(), 70_000);
        assert_eq!(i.resumed_from(), 70_000);
        i.write_all(&content[70_000..]).unwrap();
        assert_eq!(i.commit().unwrap(), d);
        assert_eq!(fs::read(s.blob_path(&d)).unwrap(), content);
        assert!(s.ingest(&d, None).unwrap().is_none());
    }

    #[test]
    fn corrupt_partial_data_is_caught_at_commit() {
        let (_t, s) = store();
        let d = Digest::of(b"hello world");
        let mut i = s.ingest(&d, Some(11)).unwrap().unwrap();
        i.write_all(b"HELLO").unwrap();
        drop(i);
        let mut i = s.ingest(&d, Some(11)).unwrap().unwrap();
        assert_eq!(i.offset(), 5);
        i.write_all(b" world").unwrap();
        assert!(matches!(i.commit(), Err(StoreError::DigestMismatch { .. })));
        // Start over: no leftovers.
        let i = s.ingest(&d, Some(11)).unwrap().unwrap();
        assert_eq!(i.offset(), 0);
    }

    #[test]
    fn oversized_leftovers_are_discarded() {
        let (_t, s) = store();
        let d = Digest::of(b"abc");
        let mut i = s.ingest(&d, None).unwrap().unwrap();
        i.write_all(b"abcdef").unwrap();
        drop(i);
        let mut i = s.ingest(&d, Some(3)).unwrap().unwrap();
        assert_eq!(i.offset(), 0);
        i.write_all(b"abc").unwrap();
        i.commit().unwrap();
    }

    #[test]
    fn second_writer_is_excluded_in_process() {
        let (_t, s) = store();
        let d = Digest::of(b"x");
        let i = s.ingest(&d, Some(1)).unwrap().unwrap();
        assert!(matches!(
            s.ingest(&d, Some(1)),
            Err(StoreError::InProgress(_))
        ));
        let s2 = s.clone();
        let d2 = d.clone();
        let waiter =
            std::thread::spawn(move || s2.ingest_wait(&d2, Some(1), Duration::from_secs(20)));
        let mut i = i;
        i.write_all(b"x").unwrap();
        i.commit().unwrap();
        // The waiter sees the committed blob.
        assert!(waiter.join().unwrap().unwrap().is_none());
    }

    #[test]
    fn flock_excludes_other_open_file_descriptions() {
        // A second ContentStore (its own in-process set) stands in for
        // another process: flock(2) locks conflict between open file
        // descriptions, in one process or two.
        let (t, s) = store();
        let other = ContentStore::open(t.path().join("images")).unwrap();
        let d = Digest::of(b"y");
        let mut i = s.ingest(&d, Some(1)).unwrap().unwrap();
        assert!(matches!(
            other.ingest(&d, Some(1)),
            Err(StoreError::InProgress(_))
        ));
        assert_eq!(other.cleanup_ingests(Duration::ZERO).unwrap(), 0);
        i.write_all(b"y").unwrap();
        i.commit().unwrap();
        assert!(other.ingest(&d, Some(1)).unwrap().is_none());
    }

    #[test]
    fn writer_learns_digest_and_cleans_up_on_drop() {
        let (_t, s) = store();
        let mut w = s.writer().unwrap();
        w.write_all(b"anything").unwrap();
        let d = w.commit().unwrap();
        assert_eq!(d, Digest::of(b"anything"));
        let mut w = s.writer().unwrap();
        w.write_all(b"dropped").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(s.ingest_root()).unwrap().count(), 0);
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn cleanup_removes_abandoned_ingests() {
        let (_t, s) = store();
        let d = Digest::of(b"abandoned");
        let mut i = s.ingest(&d, None).unwrap().unwrap();
        i.write_all(b"aban").unwrap();
        drop(i);
        assert_eq!(s.cleanup_ingests(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(s.cleanup_ingests(Duration::ZERO).unwrap(), 1);
        assert_eq!(s.ingest(&d, None).unwrap().unwrap().offset(), 0);
    }

    fn poll(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The other process of the two tests below: holds an ingest of
    /// "shared blob" with 6 bytes written, until told to finish it (or, in
    /// the `die` mode, until killed). Does nothing when run on its own.
    #[test]
    fn child_ingest_holder() {
        let Ok(dir) = std::env::var("BERTH_STORE_TEST_CHILD") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let s = ContentStore::open(dir.join("images")).unwrap();
        let d = Digest::of(b"shared blob");
        let mut i = s.ingest(&d, Some(11)).unwrap().unwrap();
        i.write_all(b"shared").unwrap();
        fs::write(dir.join("holding"), b"").unwrap();
        poll("the parent's go", || dir.join("go").exists());
        i.write_all(b" blob").unwrap();
        i.commit().unwrap();
    }

    /// The child process, killed by the guard when the test ends.
    struct Child(std::process::Child);

    impl Child {
        fn spawn(dir: &Path) -> Self {
            let c = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store::tests::child_ingest_holder",
                    "--test-threads=1",
                ])
                .env("BERTH_STORE_TEST_CHILD", dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            poll("the child's ingest", || dir.join("holding").exists());
            Self(c)
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn two_processes_exclude_each_other() {
        let t = tempfile::tempdir().unwrap();
        let mut child = Child::spawn(t.path());
        let s = ContentStore::open(t.path().join("images")).unwrap();
        let d = Digest::of(b"shared blob");
        assert!(matches!(
            s.ingest(&d, Some(11)),
            Err(StoreError::InProgress(_))
        ));
        assert_eq!(s.cleanup_ingests(Duration::ZERO).unwrap(), 0);
        fs::write(t.path().join("go"), b"").unwrap();
        // Wait (bounded) for the child's commit, then find the blob.
        assert!(s
            .ingest_wait(&d, Some(11), Duration::from_secs(30))
            .unwrap()
            .is_none());
        assert_eq!(fs::read(s.blob_path(&d)).unwrap(), b"shared blob");
        assert!(child.0.wait().unwrap().success());
    }

    #[test]
    fn resumes_after_the_writer_is_killed() {
        let t = tempfile::tempdir().unwrap();
        let mut child = Child::spawn(t.path());
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let s = ContentStore::open(t.path().join("images")).unwrap();
        let d = Digest::of(b"shared blob");
        let mut i = s.ingest(&d, Some(11)).unwrap().unwrap();
        assert_eq!(i.offset(), 6);
        i.write_all(b" blob").unwrap();
        assert_eq!(i.commit().unwrap(), d);
    }

    /// A full disk: a tiny tmpfs. Needs root (mount); skipped otherwise.
    #[test]
    fn disk_full_fails_cleanly() {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        let t = tempfile::tempdir().unwrap();
        let mnt = t.path().join("small");
        fs::create_dir(&mnt).unwrap();
        if mount(
            Some("tmpfs"),
            &mnt,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=256k"),
        )
        .is_err()
        {
            eprintln!("skipping: cannot mount a tmpfs here");
            return;
        }
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = umount2(&self.0, MntFlags::MNT_DETACH);
            }
        }
        let _u = Unmount(mnt.clone());
        let s = ContentStore::open(&mnt).unwrap();
        let small = s.put(b"small").unwrap();
        let big = vec![7u8; 1 << 20];
        let e = s.put(&big).unwrap_err();
        assert!(matches!(e, StoreError::NoSpace { .. }), "{e}");
        // Consistent: the small blob is intact, the big one absent, no ingest left.
        assert_eq!(s.read_all(&small, 10).unwrap(), b"small");
        assert!(!s.has(&Digest::of(&big)));
        assert_eq!(fs::read_dir(s.ingest_root()).unwrap().count(), 0);
        // And a streaming ingest reports the error on write.
        let mut i = s
            .ingest(&Digest::of(&big), Some(big.len() as u64))
            .unwrap()
            .unwrap();
        let err = i.write_all(&big).unwrap_err();
        assert!(is_enospc(&err), "{err}");
        i.abort().unwrap();
        assert_eq!(s.list().unwrap().len(), 1);
    }
}
