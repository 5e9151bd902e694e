//! Snapshots: layers unpacked once and shared, and container roots made of
//! them (an overlayfs mount, or a copy where overlayfs cannot be used).
//!
//! Layout under the directory the caller gives (berthd:
//! `<root>/images/snapshots`):
//!
//! ```text
//! layers/<key>/fs/           a committed layer, unpacked in overlay form; read-only by use
//! layers/<key>/layer.json    its chain id, diff id, size, inodes
//! containers/<id>/snapshot.json  the container's layers (chain ids) and snapshotter
//! containers/<id>/upper/ work/   overlay: the container's writable layer
//! containers/<id>/rootfs/        overlay: the mount point; copy: the copy
//! tmp-<random>/              half-made layers and containers (removed by cleanup)
//! ```
//!
//! `<key>` is the first 16 hex digits of the chain id (the full id is in
//! `layer.json` and checked), so overlay mount options stay short.
//!
//! Everything is created in a `tmp-` directory, synced, then renamed into
//! place: after a crash there is either a whole layer or a `tmp-` directory.
//!
//! The API is synchronous (berthd runs it on blocking threads) and safe to
//! call concurrently for different containers; a lock orders `prepare`
//! against `remove_layer` so a layer in use is never removed.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::unpack::{self, open_dir, remove_at, resolve_dir, Compression, UnpackError, Whiteouts};

mod idmap;
pub use idmap::{IdShift, MapMethod};

/// Which kind of container roots to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotterKind {
    /// An overlayfs mount: shared read-only layers plus the container's
    /// upper and work directories.
    Overlay,
    /// A real copy of the layers' merged tree.
    Copy,
}

/// `berthd --snapshotter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotterChoice {
    /// overlay if an overlayfs mount works here (probed once), else copy.
    Auto,
    Overlay,
    Copy,
}

impl std::str::FromStr for SnapshotterChoice {
    type Err = SnapshotError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "overlay" | "overlayfs" => Ok(Self::Overlay),
            "copy" => Ok(Self::Copy),
            _ => Err(SnapshotError::BadChoice(s.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("unknown snapshotter {0:?}: use auto, overlay or copy")]
    BadChoice(String),
    #[error("invalid container id {0:?} for a snapshot: use 1-128 letters, digits, '_', '.', '-'")]
    BadId(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("unpacking layer {chain_id}: {source}")]
    Unpack {
        chain_id: Digest,
        source: UnpackError,
    },
    #[error("layer {chain_id} does not match its image: its DiffID is {got}, the image config says {expected}")]
    DiffId {
        chain_id: Digest,
        expected: Digest,
        got: Digest,
    },
    #[error("layer {0} is not unpacked: unpack it before preparing a container on it")]
    NoLayer(Digest),
    #[error("layer directory {dir} holds {found}, not {chain_id} (remove the directory)")]
    KeyClash {
        dir: PathBuf,
        found: Digest,
        chain_id: Digest,
    },
    #[error("layer {chain_id} is used by container {container}: remove the container first")]
    LayerInUse { chain_id: Digest, container: String },
    #[error("container {0} already has a snapshot: remove it first")]
    Exists(String),
    #[error("container {0} has no snapshot")]
    NoSnapshot(String),
    #[error("cannot mount the overlay for {container}: {reason}")]
    Mount { container: String, reason: String },
    #[error("cannot give the root of {container} its owners for the user namespace: {reason}")]
    Idmap { container: String, reason: String },
    #[error("{path} is still mounted; unmount it (umount -l) and retry")]
    StillMounted { path: PathBuf },
    #[error("overlayfs is not usable under {dir}: {reason} (use --snapshotter copy)")]
    NoOverlay { dir: PathBuf, reason: String },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn errno<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> SnapshotError + 'a {
    move |e| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// A committed layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub chain_id: Digest,
    pub diff_id: Digest,
    /// Bytes on disk (allocated blocks; hard links counted once).
    pub size: u64,
    pub inodes: u64,
    /// The unpacked tree (an overlay lower directory).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotMeta {
    /// Bottom layer first.
    chain_ids: Vec<Digest>,
    kind: SnapshotterKind,
    /// For a container in a user namespace: its id shift and how the root
    /// got its owners (see `idmap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idmap: Option<IdMapMeta>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct IdMapMeta {
    shift: IdShift,
    method: MapMethod,
}

/// Disk use of a tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Everything under the snapshots directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub layers: u64,
    pub layer_bytes: u64,
    pub containers: u64,
    /// Containers' own bytes: upper directories (overlay) or copies.
    pub container_bytes: u64,
}

/// What [`Snapshotter::cleanup`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub unmounted: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
}

pub struct Snapshotter {
    dir: PathBuf,
    kind: SnapshotterKind,
    /// Orders prepare (which records the layers it uses) against
    /// remove_layer (which checks those records).
    layers_lock: Mutex<()>,
    /// Makes mount()'s "is it mounted? then mount" one step, so two calls
    /// for one container cannot stack two overlays.
    mount_lock: Mutex<()>,
}

const LAYERS: &str = "layers";
const CONTAINERS: &str = "containers";
const TMP_PREFIX: &str = "tmp-";

impl Snapshotter {
    /// Opens (creating) the snapshots directory `dir`. With
    /// [`SnapshotterChoice::Auto`] an overlay mount is tried once, here.
    pub fn open(dir: &Path, choice: SnapshotterChoice) -> Result<Self, SnapshotError> {
        for sub in [LAYERS, CONTAINERS] {
            fs::create_dir_all(dir.join(sub)).map_err(io_err("creating", &dir.join(sub)))?;
        }
        let dir = dir.canonicalize().map_err(io_err("resolving", dir))?;
        let kind = match choice {
            SnapshotterChoice::Copy => SnapshotterKind::Copy,
            SnapshotterChoice::Overlay => {
                probe_overlay(&dir).map_err(|reason| SnapshotError::NoOverlay {
                    dir: dir.clone(),
                    reason,
                })?;
                SnapshotterKind::Overlay
            }
            SnapshotterChoice::Auto => match probe_overlay(&dir) {
                Ok(()) => SnapshotterKind::Overlay,
                Err(reason) => {
                    tracing::warn!(dir = %dir.display(), %reason,
                        "overlayfs cannot be mounted here: container roots will be copies");
                    SnapshotterKind::Copy
                }
            },
        };
        Ok(Self {
            dir,
            kind,
            layers_lock: Mutex::new(()),
            mount_lock: Mutex::new(()),
        })
    }

    pub fn kind(&self) -> SnapshotterKind {
        self.kind
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(LAYERS).join(&chain_id.hex()[..16])
    }

    fn container_dir(&self, id: &str) -> Result<PathBuf, SnapshotError> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id != "."
            && id != ".."
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(SnapshotError::BadId(id.to_string()));
        }
        Ok(self.dir.join(CONTAINERS).join(id))
    }

    /// The committed layer `chain_id`, if unpacked.
    pub fn layer(&self, chain_id: &Digest) -> Result<Option<LayerInfo>, SnapshotError> {
        let dir = self.layer_dir(chain_id);
        let meta = dir.join("layer.json");
        let bytes = match fs::read(&meta) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &meta)(e)),
        };
        let mut info: LayerInfo = serde_json::from_slice(&bytes)
            .map_err(|e| io_err("parsing", &meta)(io::Error::other(e)))?;
        if &info.chain_id != chain_id {
            return Err(SnapshotError::KeyClash {
                dir,
                found: info.chain_id,
                chain_id: chain_id.clone(),
            });
        }
        info.path = dir.join("fs");
        Ok(Some(info))
    }

    /// Every committed layer.
    pub fn layers(&self) -> Result<Vec<LayerInfo>, SnapshotError> {
        let mut out = Vec::new();
        let dir = self.dir.join(LAYERS);
        for e in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let e = e.map_err(io_err("listing", &dir))?;
            let meta = e.path().join("layer.json");
            let Ok(bytes) = fs::read(&meta) else { continue };
            if let Ok(mut info) = serde_json::from_slice::<LayerInfo>(&bytes) {
                info.path = e.path().join("fs");
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.chain_id.cmp(&b.chain_id));
        Ok(out)
    }

    /// Unpacks the layer `chain_id` (whose uncompressed tar must hash to
    /// `diff_id`) from `blob`, unless it is already there. Crash-safe: the
    /// layer appears whole or not at all. Concurrent calls for the same
    /// layer are fine (one wins, the others' work is dropped).
    pub fn unpack_layer<R: Read + Send>(
        &self,
        chain_id: &Digest,
        diff_id: &Digest,
        blob: R,
        compression: Compression,
    ) -> Result<LayerInfo, SnapshotError> {
        if let Some(info) = self.layer(chain_id)? {
            return Ok(info);
        }
        let tmp = TmpDir::new(&self.dir)?;
        let fs_dir = tmp.path.join("fs");
        fs::create_dir(&fs_dir).map_err(io_err("creating", &fs_dir))?;
        fs::set_permissions(&fs_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io_err("setting the mode of", &fs_dir))?;
        let out = unpack::unpack_layer(blob, compression, &fs_dir, Whiteouts::Overlay).map_err(
            |source| SnapshotError::Unpack {
                chain_id: chain_id.clone(),
                source,
            },
        )?;
        if &out.diff_id != diff_id {
            return Err(SnapshotError::DiffId {
                chain_id: chain_id.clone(),
                expected: diff_id.clone(),
                got: out.diff_id,
            });
        }
        let usage = disk_usage(&fs_dir)?;
        let info = LayerInfo {
            chain_id: chain_id.clone(),
            diff_id: diff_id.clone(),
            size: usage.bytes,
            inodes: usage.inodes,
            path: PathBuf::new(),
        };
        let meta = tmp.path.join("layer.json");
        let json = serde_json::to_vec_pretty(&info)
            .map_err(|e| io_err("writing", &meta)(io::Error::other(e)))?;
        fs::write(&meta, json).map_err(io_err("writing", &meta))?;
        // One syncfs for the whole tree: far cheaper than an fsync per file.
        sync_fs(&tmp.path)?;
        let dest = self.layer_dir(chain_id);
        match tmp.commit(&dest) {
            Ok(()) => {}
            // Another unpack of the same layer won the race.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {}
            Err(e) => return Err(io_err("renaming into", &dest)(e)),
        }
        fsync_path(&self.dir.join(LAYERS))?;
        self.layer(chain_id)?
            .ok_or_else(|| SnapshotError::NoLayer(chain_id.clone()))
    }

    /// Removes a committed layer (garbage collection); refused while a
    /// container's snapshot uses it. Removing a missing layer is fine.
    pub fn remove_layer(&self, chain_id: &Digest) -> Result<(), SnapshotError> {
        let _guard = self.layers_lock.lock().unwrap_or_else(|p| p.into_inner());
        for (container, meta) in self.snapshots()? {
            if meta.chain_ids.contains(chain_id) {
                return Err(SnapshotError::LayerInUse {
                    chain_id: chain_id.clone(),
                    container,
                });
            }
        }
        let dir = self.layer_dir(chain_id);
        if self.layer(chain_id)?.is_none() {
            return Ok(());
        }
        // Out of sight atomically, then deleted: a crash leaves a tmp- dir.
        let tmp = self.dir.join(format!("{TMP_PREFIX}rm-{}", random_suffix()));
        fs::rename(&dir, &tmp).map_err(io_err("moving away", &dir))?;
        remove_tree(&tmp)
    }

    /// The container ids with a snapshot, and what they use.
    fn snapshots(&self) -> Result<Vec<(String, SnapshotMeta)>, SnapshotError> {
        let dir = self.dir.join(CONTAINERS);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let e = e.map_err(io_err("listing", &dir))?;
            let meta = e.path().join("snapshot.json");
            let Ok(bytes) = fs::read(&meta) else { continue };
            let meta: SnapshotMeta = serde_json::from_slice(&bytes)
                .map_err(|err| io_err("parsing", &meta)(io::Error::other(err)))?;
            out.push((e.file_name().to_string_lossy().into_owned(), meta));
        }
        Ok(out)
    }

    /// Makes the root of container `id` from `chain_ids` (bottom layer
    /// first, as in the image config; none at all is fine) and returns its
    /// path (mounted, for overlay). Every layer must be unpacked.
    pub fn prepare(&self, id: &str, chain_ids: &[Digest]) -> Result<PathBuf, SnapshotError> {
        self.prepare_mapped(id, chain_ids, None)
            .map(|(root, _)| root)
    }

    /// [`prepare`](Self::prepare) for a container whose ids are `shift`ed
    /// (a user namespace): its files appear with their owners inside,
    /// through idmapped layers where the kernel and file system allow it,
    /// else through a chowned copy. Returns the root and the way used.
    pub fn prepare_mapped(
        &self,
        id: &str,
        chain_ids: &[Digest],
        shift: Option<IdShift>,
    ) -> Result<(PathBuf, Option<MapMethod>), SnapshotError> {
        let dest = self.container_dir(id)?;
        let tmp = TmpDir::new(&self.dir)?;
        let mut meta = SnapshotMeta {
            chain_ids: chain_ids.to_vec(),
            kind: self.kind,
            idmap: shift.map(|shift| IdMapMeta {
                shift,
                method: match self.kind {
                    SnapshotterKind::Overlay => MapMethod::Idmapped,
                    SnapshotterKind::Copy => MapMethod::Chowned,
                },
            }),
        };
        let rootfs = tmp.path.join("rootfs");
        let mut layers = Vec::with_capacity(chain_ids.len());
        for c in chain_ids {
            layers.push(
                self.layer(c)?
                    .ok_or_else(|| SnapshotError::NoLayer(c.clone()))?,
            );
        }
        match self.kind {
            SnapshotterKind::Overlay => {
                for sub in ["upper", "work", "rootfs", "empty"] {
                    let p = tmp.path.join(sub);
                    fs::create_dir(&p).map_err(io_err("creating", &p))?;
                }
            }
            SnapshotterKind::Copy => {
                fs::create_dir(&rootfs).map_err(io_err("creating", &rootfs))?;
                for layer in &layers {
                    copy_layer(&layer.path, &rootfs)?;
                }
                if let Some(shift) = shift {
                    idmap::chown_tree(&rootfs, shift)
                        .map_err(io_err("changing owners under", &rootfs))?;
                }
            }
        }
        if let (Some(shift), SnapshotterKind::Overlay) = (shift, self.kind) {
            // The overlay's root directory is the upper's: owned as the top
            // layer's root is, shifted.
            let top = layers.last().map(|l| l.path.clone());
            let (uid, gid) = match &top {
                Some(p) => {
                    use std::os::unix::fs::MetadataExt;
                    let m = fs::metadata(p).map_err(io_err("reading", p))?;
                    (m.uid(), m.gid())
                }
                None => (0, 0),
            };
            let shifted = |id: u32| {
                if id < shift.size {
                    shift.host + id
                } else {
                    id
                }
            };
            for sub in ["upper", "empty"] {
                let p = tmp.path.join(sub);
                std::os::unix::fs::chown(&p, Some(shifted(uid)), Some(shifted(gid)))
                    .map_err(io_err("changing the owner of", &p))?;
            }
        }
        let meta_path = tmp.path.join("snapshot.json");
        write_meta(&meta_path, &meta)?;
        // Durable before the rename. An overlay's snapshot is four empty
        // directories and the metadata: an fsync of the file and of the
        // directory. A syncfs would also wait for every other dirty file on
        // the file system (a build, another engine's layers and logs), on
        // the path of every create. A copy is a whole tree: one syncfs.
        match self.kind {
            SnapshotterKind::Overlay => {
                fsync_path(&meta_path)?;
                fsync_path(&tmp.path)?;
            }
            SnapshotterKind::Copy => sync_fs(&tmp.path)?,
        }
        {
            let _guard = self.layers_lock.lock().unwrap_or_else(|p| p.into_inner());
            // A layer removed since we looked (GC) must not end up in use.
            for c in chain_ids {
                if self.layer(c)?.is_none() {
                    return Err(SnapshotError::NoLayer(c.clone()));
                }
            }
            match tmp.commit(&dest) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                    return Err(SnapshotError::Exists(id.to_string()))
                }
                Err(e) => return Err(io_err("renaming into", &dest)(e)),
            }
        }
        fsync_path(&self.dir.join(CONTAINERS))?;
        let mounted = match self.mount(id) {
            Err(SnapshotError::Idmap { reason, .. }) if meta.idmap.is_some() => {
                // Refused here: a chowned copy instead, recorded first so a
                // later mount (after a reboot) mounts it plainly.
                tracing::info!(container = id, %reason, "idmapped layers refused: giving the container a chowned copy of its root");
                if let Some(m) = meta.idmap.as_mut() {
                    m.method = MapMethod::Chowned;
                }
                write_meta(&dest.join("snapshot.json"), &meta).and_then(|()| {
                    let root = self.mount(id)?;
                    if let Some(m) = meta.idmap {
                        idmap::chown_tree(&root, m.shift)
                            .map_err(io_err("changing owners under", &root))?;
                    }
                    Ok(root)
                })
            }
            other => other,
        };
        match mounted {
            Ok(root) => Ok((root, meta.idmap.map(|m| m.method))),
            Err(e) => {
                if let Err(rm) = self.remove(id) {
                    tracing::warn!(container = id, error = %rm, "removing a snapshot that failed to mount");
                }
                Err(e)
            }
        }
    }

    /// Mounts the prepared snapshot of `id` again if it is not mounted
    /// (after a reboot the mount is gone, upper and work remain) and
    /// returns its root. Idempotent; a no-op for copies.
    pub fn mount(&self, id: &str) -> Result<PathBuf, SnapshotError> {
        let dir = self.container_dir(id)?;
        let meta_path = dir.join("snapshot.json");
        let bytes = match fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::NoSnapshot(id.to_string()))
            }
            Err(e) => return Err(io_err("reading", &meta_path)(e)),
        };
        let meta: SnapshotMeta = serde_json::from_slice(&bytes)
            .map_err(|e| io_err("parsing", &meta_path)(io::Error::other(e)))?;
        let rootfs = dir.join("rootfs");
        if meta.kind == SnapshotterKind::Copy {
            return Ok(rootfs);
        }
        let _guard = self.mount_lock.lock().unwrap_or_else(|p| p.into_inner());
        if mountpoints()?.iter().any(|m| m == &rootfs) {
            return Ok(rootfs);
        }
        // overlayfs wants the top layer first.
        let mut lowers = Vec::with_capacity(meta.chain_ids.len().max(1));
        for c in meta.chain_ids.iter().rev() {
            lowers.push(
                self.layer(c)?
                    .ok_or_else(|| SnapshotError::NoLayer(c.clone()))?
                    .path,
            );
        }
        let idmapped = meta
            .idmap
            .filter(|m| m.method == MapMethod::Idmapped)
            .map(|m| m.shift);
        let staging = dir.join("idmap");
        if let Some(shift) = idmapped {
            // The lowers through an idmapped clone of `layers/`, detached
            // again once the overlay holds them.
            let refused = |what: &str, e: io::Error| SnapshotError::Idmap {
                container: id.to_string(),
                reason: format!("{what}: {e}"),
            };
            let layers_dir = self.dir.join(LAYERS);
            match fs::create_dir(&staging) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating", &staging)(e)),
            }
            let ns = idmap::userns_fd(shift)
                .map_err(|e| refused("making a user namespace for the id map", e))?;
            if let Err(e) = idmap::attach_idmapped(&layers_dir, &staging, ns.as_fd()) {
                if idmap::refused(e) {
                    return Err(refused("idmapping the layers", e.into()));
                }
                return Err(errno("idmapping", &layers_dir)(e));
            }
            for l in lowers.iter_mut() {
                if let Ok(rel) = l.strip_prefix(&layers_dir) {
                    *l = staging.join(rel);
                }
            }
        }
        if lowers.is_empty() {
            lowers.push(dir.join("empty"));
        }
        let res = mount_overlay(&lowers, &dir.join("upper"), &dir.join("work"), &rootfs);
        if idmapped.is_some() {
            if let Err(e) = rustix::mount::unmount(
                &staging,
                rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
            ) {
                tracing::warn!(path = %staging.display(), error = %e, "cannot detach the idmapped layers");
            }
        }
        res.map_err(|reason| {
            if idmapped.is_some() {
                // Overlayfs may refuse idmapped layers (older kernels).
                SnapshotError::Idmap {
                    container: id.to_string(),
                    reason: format!("overlay on idmapped layers: {reason}"),
                }
            } else {
                SnapshotError::Mount {
                    container: id.to_string(),
                    reason,
                }
            }
        })?;
        Ok(rootfs)
    }

    /// The overlay parts of container `id`'s snapshot: its upper directory
    /// (what the container changed) and its layers' directories, top layer
    /// first. `None` for a copy snapshot (it has no upper directory).
    pub fn overlay_dirs(&self, id: &str) -> Result<Option<(PathBuf, Vec<PathBuf>)>, SnapshotError> {
        let dir = self.container_dir(id)?;
        let meta_path = dir.join("snapshot.json");
        let bytes = match fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::NoSnapshot(id.to_string()))
            }
            Err(e) => return Err(io_err("reading", &meta_path)(e)),
        };
        let meta: SnapshotMeta = serde_json::from_slice(&bytes)
            .map_err(|e| io_err("parsing", &meta_path)(io::Error::other(e)))?;
        if meta.kind == SnapshotterKind::Copy {
            return Ok(None);
        }
        let mut lowers = Vec::with_capacity(meta.chain_ids.len());
        for c in meta.chain_ids.iter().rev() {
            lowers.push(
                self.layer(c)?
                    .ok_or_else(|| SnapshotError::NoLayer(c.clone()))?
                    .path,
            );
        }
        Ok(Some((dir.join("upper"), lowers)))
    }

    /// Unmounts (lazily if busy) and deletes the snapshot of `id`.
    /// Removing a missing snapshot is fine.
    pub fn remove(&self, id: &str) -> Result<(), SnapshotError> {
        match self.take_away(id)? {
            Some(rest) => rest.finish(),
            None => Ok(()),
        }
    }

    /// The first half of [`Snapshotter::remove`]: the snapshot of `id` is
    /// moved out of sight (one rename, still mounted), so from here on no
    /// listing, usage or layer check sees it, and the id is free. What is
    /// left, the unmount and the delete (tens of ms: the overlay's unmount
    /// syncs its upper filesystem), is [`Removal::finish`], which may run
    /// later on any thread. A crash before it leaves a `tmp-` directory
    /// (with its mount, if the host stayed up) that [`Snapshotter::cleanup`]
    /// removes. `None`: there was no snapshot.
    pub fn take_away(&self, id: &str) -> Result<Option<Removal>, SnapshotError> {
        let dir = self.container_dir(id)?;
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(None);
        }
        // The id in the name says whose it was (and where a leftover mount
        // came from); the suffix keeps names unique all the same.
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}rm-{id}-{}", random_suffix()));
        // Renaming the parent of a mount point is allowed (the mount moves
        // with it); only a mount point itself could not be renamed.
        fs::rename(&dir, &tmp).map_err(io_err("moving away", &dir))?;
        Ok(Some(Removal {
            path: tmp,
            containers: self.dir.join(CONTAINERS),
        }))
    }

    /// At daemon start: unmounts every snapshot no `live` container owns,
    /// deletes their directories and every half-made `tmp-` directory.
    pub fn cleanup(&self, live: &HashSet<String>) -> Result<CleanupReport, SnapshotError> {
        let mut report = CleanupReport::default();
        let containers = self.dir.join(CONTAINERS);
        for e in fs::read_dir(&containers).map_err(io_err("listing", &containers))? {
            let e = e.map_err(io_err("listing", &containers))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if live.contains(&name) {
                continue;
            }
            let path = e.path();
            unmount_under(&path, &mut report.unmounted)?;
            remove_tree(&path)?;
            report.removed.push(path);
        }
        // Mounts whose directory is already gone (or was never renamed in).
        unmount_under_filtered(&containers, &mut report.unmounted, |p| {
            p.strip_prefix(&containers)
                .ok()
                .and_then(|rest| rest.iter().next())
                .is_none_or(|id| !live.contains(&*id.to_string_lossy()))
        })?;
        for e in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let e = e.map_err(io_err("listing", &self.dir))?;
            if e.file_name().as_bytes().starts_with(TMP_PREFIX.as_bytes()) {
                let path = e.path();
                unmount_under(&path, &mut report.unmounted)?;
                remove_tree(&path)?;
                report.removed.push(path);
            }
        }
        Ok(report)
    }

    /// What the container's snapshot holds of its own: the upper directory
    /// (overlay) or the whole copy.
    pub fn container_usage(&self, id: &str) -> Result<DiskUsage, SnapshotError> {
        disk_usage(&self.container_layer(id)?)
    }

    /// The directory of what the container's snapshot holds of its own:
    /// the upper directory (overlay) or the whole copy.
    pub fn container_layer(&self, id: &str) -> Result<PathBuf, SnapshotError> {
        let dir = self.container_dir(id)?;
        if dir.join("upper").is_dir() {
            Ok(dir.join("upper"))
        } else if dir.join("rootfs").is_dir() {
            Ok(dir.join("rootfs"))
        } else {
            Err(SnapshotError::NoSnapshot(id.to_string()))
        }
    }

    /// Totals for the whole snapshots directory.
    pub fn usage(&self) -> Result<Usage, SnapshotError> {
        let mut u = Usage::default();
        for l in self.layers()? {
            u.layers += 1;
            u.layer_bytes += l.size;
        }
        for (id, _) in self.snapshots()? {
            u.containers += 1;
            u.container_bytes += self.container_usage(&id).map(|d| d.bytes).unwrap_or(0);
        }
        Ok(u)
    }
}

/// A container's snapshot taken out of sight by
/// [`Snapshotter::take_away`], still to be unmounted and deleted.
#[derive(Debug)]
pub struct Removal {
    path: PathBuf,
    containers: PathBuf,
}

impl Removal {
    /// Where the snapshot is now (under the snapshotter's directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmount (lazily if busy) and delete the snapshot.
    pub fn finish(self) -> Result<(), SnapshotError> {
        // The rename durable before the tree goes: a host crash mid-delete
        // leaves a tmp- directory, never a half-deleted snapshot under its
        // container's name.
        fsync_path(&self.containers)?;
        unmount_under(&self.path, &mut Vec::new())?;
        remove_tree(&self.path)
    }
}

/// A `tmp-<random>` directory, removed on drop unless committed.
struct TmpDir {
    path: PathBuf,
    committed: bool,
}

fn random_suffix() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // Uniqueness is all we need.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TmpDir {
    fn new(base: &Path) -> Result<Self, SnapshotError> {
        let path = base.join(format!("{TMP_PREFIX}{}", random_suffix()));
        fs::create_dir(&path).map_err(io_err("creating", &path))?;
        Ok(Self {
            path,
            committed: false,
        })
    }

    fn commit(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = remove_tree(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "removing a half-made snapshot");
            }
        }
    }
}

/// Deletes `path` and everything under it without following symlinks or
/// crossing into anything still mounted (that would delete a layer's or
/// the host's files): refused then.
fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    if let Some(m) = mountpoints()?.into_iter().find(|m| m.starts_with(path)) {
        return Err(SnapshotError::StillMounted { path: m });
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let dir = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno("opening", parent))?;
    remove_at(dir.as_fd(), name).map_err(errno("removing", path))
}

fn sync_fs(path: &Path) -> Result<(), SnapshotError> {
    let f = fs::File::open(path).map_err(io_err("opening", path))?;
    rustix::fs::syncfs(&f).map_err(errno("syncing", path))
}

/// fsync of a file or a directory (its entries).
fn fsync_path(path: &Path) -> Result<(), SnapshotError> {
    let f = fs::File::open(path).map_err(io_err("opening", path))?;
    f.sync_all().map_err(io_err("syncing", path))
}

/// Mount points, from /proc/self/mountinfo.
pub(crate) fn mountpoints() -> Result<Vec<PathBuf>, SnapshotError> {
    let p = Path::new("/proc/self/mountinfo");
    let text = fs::read(p).map_err(io_err("reading", p))?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    OsString::from(OsStr::from_bytes(&out))
}

fn unmount_under(dir: &Path, done: &mut Vec<PathBuf>) -> Result<(), SnapshotError> {
    unmount_under_filtered(dir, done, |_| true)
}

/// Unmounts everything mounted at or under `dir` that `keep` selects,
/// deepest first; a busy mount is detached lazily (with a log line).
fn unmount_under_filtered(
    dir: &Path,
    done: &mut Vec<PathBuf>,
    select: impl Fn(&Path) -> bool,
) -> Result<(), SnapshotError> {
    let mut mounts: Vec<PathBuf> = mountpoints()?
        .into_iter()
        .filter(|m| m.starts_with(dir) && select(m))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    for m in mounts {
        // A path stacked several times needs as many unmounts.
        loop {
            match rustix::mount::unmount(&m, rustix::mount::UnmountFlags::NOFOLLOW) {
                Ok(()) => {}
                Err(Errno::BUSY) => {
                    tracing::warn!(path = %m.display(), "snapshot busy: detaching it lazily");
                    rustix::mount::unmount(
                        &m,
                        rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
                    )
                    .map_err(errno("detaching", &m))?;
                }
                Err(Errno::INVAL) | Err(Errno::NOENT) => break,
                Err(e) => return Err(errno("unmounting", &m)(e)),
            }
            done.push(m.clone());
            if !mountpoints()?.contains(&m) {
                break;
            }
        }
    }
    Ok(())
}

/// Writes `snapshot.json` whole or not at all (a temporary file renamed).
fn write_meta(path: &Path, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
    let json = serde_json::to_vec_pretty(meta)
        .map_err(|e| io_err("writing", path)(io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, json).map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming into", path))
}

/// Mounts an overlay of `lowers` (top first) at `target`. The new mount
/// API takes each lower as its own `lowerdir+` option (Linux 6.8+), so the
/// page-size limit of mount(2)'s option string does not bound the number
/// of layers; older kernels get mount(2) with the joined list.
fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), String> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags,
        FsOpenFlags, MountAttrFlags, MoveMountFlags,
    };
    let new_api = || -> Result<(), (bool, String)> {
        let fsfd = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(|e| (true, format!("fsopen: {e}")))?;
        let explain = |what: String, e: Errno| format!("{what}: {e}{}", fs_log(&fsfd));
        fsconfig_set_string(&fsfd, "source", "berth")
            .map_err(|e| (true, explain("source".into(), e)))?;
        for (i, l) in lowers.iter().enumerate() {
            if let Err(e) = fsconfig_set_string(&fsfd, "lowerdir+", l) {
                // An old kernel without lowerdir+: try mount(2).
                return Err((
                    i == 0 && e == Errno::INVAL,
                    explain(format!("lowerdir+ {}", l.display()), e),
                ));
            }
        }
        fsconfig_set_string(&fsfd, "upperdir", upper)
            .map_err(|e| (false, explain(format!("upperdir {}", upper.display()), e)))?;
        fsconfig_set_string(&fsfd, "workdir", work)
            .map_err(|e| (false, explain(format!("workdir {}", work.display()), e)))?;
        // index=on would tie the shared lowers to one upper (and refuse the
        // next mount); off is the default on most kernels, say it anyway.
        let _ = fsconfig_set_string(&fsfd, "index", "off");
        fsconfig_create(&fsfd).map_err(|e| (false, explain("creating the overlay".into(), e)))?;
        let mnt = fsmount(
            &fsfd,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::empty(),
        )
        .map_err(|e| (false, explain("fsmount".into(), e)))?;
        move_mount(
            mnt.as_fd(),
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| (false, format!("attaching at {}: {e}", target.display())))
    };
    match new_api() {
        Ok(()) => Ok(()),
        Err((false, reason)) => Err(reason),
        Err((true, reason)) => {
            tracing::debug!(%reason, "new mount API unusable for overlay: trying mount(2)");
            let lowerdir: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
            let data = format!(
                "lowerdir={},upperdir={},workdir={},index=off",
                lowerdir.join(":"),
                upper.display(),
                work.display()
            );
            if data.len() >= 4096 {
                return Err(format!(
                    "{} layers make mount options of {} bytes, over this kernel's page-size limit",
                    lowers.len(),
                    data.len()
                ));
            }
            let data = CString::new(data).map_err(|e| e.to_string())?;
            rustix::mount::mount(
                "berth",
                target,
                "overlay",
                rustix::mount::MountFlags::empty(),
                Some(data.as_c_str()),
            )
            .map_err(|e| format!("mount: {e}"))
        }
    }
}

/// The messages the kernel left on a filesystem context ("e overlay: ...").
fn fs_log(fsfd: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    for _ in 0..8 {
        match rustix::io::read(fsfd, &mut buf) {
            Ok(n) if n > 0 => {
                out.push_str(" (");
                out.push_str(String::from_utf8_lossy(&buf[..n]).trim());
                out.push(')');
            }
            _ => break,
        }
    }
    out
}

/// Tries an overlay mount of an empty lower under `dir`.
fn probe_overlay(dir: &Path) -> Result<(), String> {
    let tmp = TmpDir::new(dir).map_err(|e| e.to_string())?;
    let mut paths = Vec::new();
    for sub in ["lower", "upper", "work", "merged"] {
        let p = tmp.path.join(sub);
        fs::create_dir(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        paths.push(p);
    }
    mount_overlay(&paths[..1], &paths[1], &paths[2], &paths[3])?;
    rustix::mount::unmount(&paths[3], rustix::mount::UnmountFlags::DETACH)
        .map_err(|e| format!("unmounting the probe: {e}"))?;
    Ok(())
}

/// Allocated bytes and inodes of a tree (hard links counted once).
fn disk_usage(path: &Path) -> Result<DiskUsage, SnapshotError> {
    fn walk(
        dir: BorrowedFd<'_>,
        path: &Path,
        seen: &mut HashSet<u64>,
        u: &mut DiskUsage,
    ) -> Result<(), SnapshotError> {
        let fd = open_dir(dir, OsStr::new(".")).map_err(errno("opening", path))?;
        for e in rustix::fs::Dir::read_from(&fd).map_err(errno("listing", path))? {
            let e = e.map_err(errno("listing", path))?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsStr::from_bytes(name);
            let st = rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(errno("looking at", &path.join(name)))?;
            if st.st_nlink > 1 && !seen.insert(st.st_ino) {
                continue;
            }
            u.inodes += 1;
            u.bytes += st.st_blocks as u64 * 512;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let sub = open_dir(fd.as_fd(), name).map_err(errno("opening", &path.join(name)))?;
                walk(sub.as_fd(), &path.join(name), seen, u)?;
            }
        }
        Ok(())
    }
    let root = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno("opening", path))?;
    let mut u = DiskUsage::default();
    walk(root.as_fd(), path, &mut HashSet::new(), &mut u)?;
    Ok(u)
}

/// Copies the overlay-form layer tree `src` onto the merged tree `dest`,
/// applying its whiteouts (0/0 character devices remove, opaque
/// directories clear what is below them) and keeping owners, modes,
/// times, xattrs, hard links (within the layer) and device nodes.
fn copy_layer(src: &Path, dest: &Path) -> Result<(), SnapshotError> {
    let open = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno("opening", p))
    };
    let mut c = Copier {
        src_root: src.to_path_buf(),
        dest_root: open(dest)?,
        links: HashMap::new(),
        buf: Vec::new(),
        xnames: Vec::new(),
        xvalue: Vec::new(),
    };
    let s = open(src)?;
    let d = open(dest)?;
    // The layer root's own metadata applies to the container's `/`.
    c.copy_meta(s.as_fd(), None, d.as_fd(), None, FileType::Directory)
        .map_err(errno("copying the metadata of", src))?;
    c.copy_dir(s.as_fd(), d.as_fd(), Path::new(""))?;
    let st = rustix::fs::fstat(&s).map_err(errno("looking at", src))?;
    rustix::fs::futimens(&d, &times_of(&st)).map_err(errno("setting the times of", dest))?;
    Ok(())
}

struct Copier {
    src_root: PathBuf,
    dest_root: OwnedFd,
    /// (device, inode) in the layer → the first copy's path in dest.
    links: HashMap<(u64, u64), PathBuf>,
    buf: Vec<u8>,
    /// xattr name list and value buffers, reused from file to file.
    xnames: Vec<u8>,
    xvalue: Vec<u8>,
}

fn times_of(st: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> OsString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    OsString::from(OsStr::from_bytes(&p))
}

impl Copier {
    fn copy_dir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &Path,
    ) -> Result<(), SnapshotError> {
        let spath = self.src_root.join(rel);
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(src).map_err(errno("listing", &spath))? {
            let e = e.map_err(errno("listing", &spath))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        for name in names {
            let sp = spath.join(&name);
            let err = |op| errno(op, &sp);
            let st = rustix::fs::statat(src, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(err("looking at"))?;
            let ft = FileType::from_raw_mode(st.st_mode);
            let child_rel = rel.join(&name);
            match ft {
                FileType::CharacterDevice if st.st_rdev == 0 => {
                    remove_at(dst, &name).map_err(err("applying the whiteout"))?;
                }
                FileType::Directory => {
                    let s = open_dir(src, &name).map_err(err("opening"))?;
                    let opaque = {
                        let mut v = [0u8; 4];
                        matches!(rustix::fs::fgetxattr(&s, "trusted.overlay.opaque", &mut v), Ok(1) if v[0] == b'y')
                    };
                    let existing = rustix::fs::statat(dst, &name, AtFlags::SYMLINK_NOFOLLOW)
                        .ok()
                        .map(|st| FileType::from_raw_mode(st.st_mode));
                    if existing != Some(FileType::Directory) || opaque {
                        remove_at(dst, &name).map_err(err("replacing"))?;
                        rustix::fs::mkdirat(dst, &name, Mode::from_raw_mode(0o700))
                            .map_err(err("creating"))?;
                    }
                    let d = open_dir(dst, &name).map_err(err("opening the copy of"))?;
                    self.copy_meta(s.as_fd(), None, d.as_fd(), None, ft)
                        .map_err(err("copying the metadata of"))?;
                    self.copy_dir(s.as_fd(), d.as_fd(), &child_rel)?;
                    rustix::fs::futimens(&d, &times_of(&st))
                        .map_err(err("setting the times of"))?;
                }
                FileType::RegularFile => {
                    remove_at(dst, &name).map_err(err("replacing"))?;
                    let key = (st.st_dev, st.st_ino);
                    if st.st_nlink > 1 {
                        if let Some(first) = self.links.get(&key) {
                            let (Some(fp), Some(fname)) = (first.parent(), first.file_name())
                            else {
                                continue;
                            };
                            let fdir = resolve_dir(&self.dest_root, fp).map_err(err("linking"))?;
                            rustix::fs::linkat(&fdir, fname, dst, &name, AtFlags::empty())
                                .map_err(err("linking"))?;
                            continue;
                        }
                        self.links.insert(key, child_rel.clone());
                    }
                    let s = rustix::fs::openat(
                        src,
                        &name,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(err("opening"))?;
                    let d = rustix::fs::openat(
                        dst,
                        &name,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                    .map_err(err("creating the copy of"))?;
                    self.copy_data(&s, &d, st.st_size as u64)
                        .map_err(err("copying"))?;
                    self.copy_meta(s.as_fd(), None, d.as_fd(), None, ft)
                        .map_err(err("copying the metadata of"))?;
                    rustix::fs::futimens(&d, &times_of(&st))
                        .map_err(err("setting the times of"))?;
                }
                _ => {
                    remove_at(dst, &name).map_err(err("replacing"))?;
                    if ft == FileType::Symlink {
                        let target = rustix::fs::readlinkat(src, &name, Vec::new())
                            .map_err(err("reading"))?;
                        rustix::fs::symlinkat(target.as_c_str(), dst, &name)
                            .map_err(err("creating the copy of"))?;
                    } else {
                        rustix::fs::mknodat(dst, &name, ft, Mode::from_raw_mode(0o600), st.st_rdev)
                            .map_err(err("creating the copy of"))?;
                    }
                    self.copy_meta(src, Some(&name), dst, Some(&name), ft)
                        .map_err(err("copying the metadata of"))?;
                    rustix::fs::utimensat(dst, &name, &times_of(&st), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(err("setting the times of"))?;
                }
            }
        }
        Ok(())
    }

    fn copy_data(&mut self, src: &OwnedFd, dst: &OwnedFd, size: u64) -> rustix::io::Result<()> {
        let mut left = size;
        // copy_file_range: in-kernel, and a reflink where the fs can.
        while left > 0 {
            match rustix::fs::copy_file_range(src, None, dst, None, left.min(1 << 30) as usize) {
                Ok(0) => break,
                Ok(n) => left -= n as u64,
                Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    self.buf.resize(1 << 20, 0);
                    loop {
                        let n = rustix::io::read(src, &mut self.buf)?;
                        if n == 0 {
                            break;
                        }
                        let mut w = 0;
                        while w < n {
                            w += rustix::io::write(dst, &self.buf[w..n])?;
                        }
                    }
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Owner, mode and xattrs (but overlayfs's own) from src to dst: on the
    /// descriptors, or for symlinks and nodes on `name` in them.
    fn copy_meta(
        &mut self,
        src: BorrowedFd<'_>,
        sname: Option<&OsStr>,
        dst: BorrowedFd<'_>,
        dname: Option<&OsStr>,
        ft: FileType,
    ) -> rustix::io::Result<()> {
        let st = match sname {
            None => rustix::fs::fstat(src)?,
            Some(n) => rustix::fs::statat(src, n, AtFlags::SYMLINK_NOFOLLOW)?,
        };
        let uid = Some(Uid::from_raw(st.st_uid));
        let gid = Some(Gid::from_raw(st.st_gid));
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        match dname {
            None => {
                rustix::fs::fchown(dst, uid, gid)?;
                rustix::fs::fchmod(dst, mode)?;
            }
            Some(n) => {
                rustix::fs::chownat(dst, n, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
                if ft != FileType::Symlink {
                    // Just made by mknodat in a directory only we write.
                    rustix::fs::chmodat(dst, n, mode, AtFlags::empty())?;
                }
            }
        }
        let mut names = std::mem::take(&mut self.xnames);
        let r = self.copy_xattrs(src, sname, dst, dname, ft, &mut names);
        self.xnames = names;
        r
    }

    fn copy_xattrs(
        &mut self,
        src: BorrowedFd<'_>,
        sname: Option<&OsStr>,
        dst: BorrowedFd<'_>,
        dname: Option<&OsStr>,
        ft: FileType,
        names: &mut Vec<u8>,
    ) -> rustix::io::Result<()> {
        let list = |fd: BorrowedFd<'_>, name: Option<&OsStr>, buf: &mut Vec<u8>| loop {
            if buf.is_empty() {
                buf.resize(4096, 0);
            }
            let r = match name {
                None => rustix::fs::flistxattr(fd, &mut buf[..]),
                Some(n) => rustix::fs::llistxattr(proc_path(fd, n), &mut buf[..]),
            };
            match r {
                Ok(len) => return Ok(len),
                Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
                Err(Errno::NOTSUP) => return Ok(0),
                Err(e) => return Err(e),
            }
        };
        // Not copied, and left alone on the copy: overlayfs's own, and the
        // host's security labels.
        let skip =
            |k: &[u8]| k.starts_with(b"trusted.overlay.") || k.starts_with(b"security.selinux");
        let len = list(src, sname, names)?;
        let keys: Vec<Vec<u8>> = names[..len]
            .split(|&b| b == 0)
            .filter(|k| !k.is_empty() && !skip(k))
            .map(<[u8]>::to_vec)
            .collect();
        if ft == FileType::Directory && dname.is_none() {
            // A directory merged over a lower one shows only the upper's
            // xattrs in overlayfs: drop the lower's that the upper lacks.
            let mut old = Vec::new();
            let n = list(dst, None, &mut old)?;
            for k in old[..n]
                .split(|&b| b == 0)
                .filter(|k| !k.is_empty() && !skip(k))
            {
                if !keys.iter().any(|x| x == k) {
                    match rustix::fs::fremovexattr(dst, OsStr::from_bytes(k)) {
                        Ok(()) | Err(Errno::NODATA) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        if self.xvalue.is_empty() {
            self.xvalue.resize(65536, 0);
        }
        for key in &keys {
            let key = OsStr::from_bytes(key);
            let n = match sname {
                None => rustix::fs::fgetxattr(src, key, &mut self.xvalue[..]),
                Some(n) => rustix::fs::lgetxattr(proc_path(src, n), key, &mut self.xvalue[..]),
            };
            let n = match n {
                Ok(n) => n,
                Err(Errno::NODATA) => continue,
                Err(e) => return Err(e),
            };
            let value = &self.xvalue[..n];
            match dname {
                None => rustix::fs::fsetxattr(dst, key, value, XattrFlags::empty())?,
                Some(d) => {
                    rustix::fs::lsetxattr(proc_path(dst, d), key, value, XattrFlags::empty())?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
