//! A container's files: `cp` (stat, archive out, extract in), `diff`,
//! `export`. These are service-level functions: the gRPC adapter
//! (files_api.rs) calls them, and so can Docker's
//! `/containers/{id}/archive`, `/changes` and `/export`.
//!
//! Safety: every path is resolved inside the container's root with
//! `pathrs` (openat2 `RESOLVE_IN_ROOT`): a symlink in the image, even
//! `/data -> /etc`, is followed as the container would see it and never
//! leads to a host path. Below the resolved path nothing is followed
//! (berth_image::pack and unpack::extract work with `*at` calls).
//!
//! Which root: a running (or paused, or created) container's is
//! `/proc/<pid>/root`, its own mount namespace, so volumes, bind mounts and
//! tmpfs under a path are copied as the container sees them. A stopped
//! container's is its snapshot, mounted again if needed, with its bind
//! mounts and volumes bound in a mount namespace private to one thread: the
//! host sees none of them, and they go when the thread ends, whatever
//! happened.
//!
//! Memory: tar streams go through the caller's reader and writer (bounded
//! chunks); no file is ever held whole.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use berth_core::container::ContainerRecord;
use berth_core::Supervisor;
use berth_image::pack::{self, Change, PackOptions, Packer, PathStat};
use berth_image::unpack::{self, ExtractOptions};

use crate::images::Images;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// No such container, or no such path in it.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The container is not in a state for this (a copy snapshot for diff).
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Failed(String),
}

impl From<berth_core::Error> for FilesError {
    fn from(e: berth_core::Error) -> Self {
        match e {
            berth_core::Error::NotFound(_) => Self::NotFound(e.to_string()),
            berth_core::Error::Ambiguous(_) | berth_core::Error::InvalidArgument(_) => {
                Self::Invalid(e.to_string())
            }
            berth_core::Error::InvalidState(_) => Self::State(e.to_string()),
            _ => Self::Failed(e.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, FilesError>;

pub struct Files {
    sup: Supervisor,
    images: Arc<Images>,
}

/// A bind mount of a stopped container: host source, resolved target.
struct Bind {
    source: PathBuf,
    target: PathBuf,
}

/// Where a container's root is found.
enum RootAt {
    Running(i32),
    Stopped { rootfs: PathBuf, binds: Vec<Bind> },
}

fn name_of(rec: &ContainerRecord) -> &str {
    if rec.name.is_empty() {
        &rec.id
    } else {
        &rec.name
    }
}

/// A path as the container sees it: absolute, `..` kept for pathrs to
/// resolve (inside the root).
fn container_path(path: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(FilesError::Invalid(
            "no path given: name a path in the container, e.g. CONTAINER:/etc/hostname".into(),
        ));
    }
    if path.len() > crate::validate::MAX_PATH || path.contains('\0') {
        return Err(FilesError::Invalid(format!(
            "invalid path in the container: {:?}",
            path.chars().take(80).collect::<String>()
        )));
    }
    Ok(Path::new("/").join(path))
}

/// The last component Docker names an archive's top entry after.
fn base_name(path: &Path) -> String {
    path.components()
        .rev()
        .find_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .unwrap_or_else(|| "/".into())
}

fn io_failed(what: &str, e: impl std::fmt::Display) -> FilesError {
    FilesError::Failed(format!("{what}: {e}"))
}

fn not_found(rec_name: &str, path: &Path) -> FilesError {
    FilesError::NotFound(format!(
        "no such file or directory in container {rec_name}: {}",
        path.display()
    ))
}

/// The resolved object at `path`: `O_PATH`, the last symlink followed
/// only if `follow`.
fn resolve(root: &pathrs::Root, name: &str, path: &Path, follow: bool) -> Result<pathrs::Handle> {
    let h = if follow {
        root.resolve(path)
    } else {
        root.resolve_nofollow(path)
    };
    h.map_err(|e| {
        if matches!(
            e.kind(),
            pathrs::error::ErrorKind::OsError(Some(libc::ENOENT | libc::ENOTDIR))
        ) {
            not_found(name, path)
        } else {
            io_failed(&format!("cannot resolve {} in {name}", path.display()), e)
        }
    })
}

impl Files {
    pub fn new(sup: Supervisor, images: Arc<Images>) -> Self {
        Self { sup, images }
    }

    /// Where `rec`'s root is, its snapshot mounted if it is stopped.
    async fn root_of(&self, rec: &ContainerRecord) -> Result<RootAt> {
        if rec.state.is_live() && rec.pid > 0 {
            return Ok(RootAt::Running(rec.pid));
        }
        if rec.config.source.image().is_some() {
            let (images, id) = (self.images.clone(), rec.id.clone());
            tokio::task::spawn_blocking(move || images.snaps.mount(&id))
                .await
                .map_err(|e| io_failed("mounting the container's root failed", e))?
                .map_err(|e| io_failed("cannot mount the container's root", e))?;
        }
        let rootfs = rec
            .spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| FilesError::State("the container has no root filesystem".into()))?;
        let binds = rec
            .spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| {
                m.typ().as_deref() == Some("bind")
                    || m.options()
                        .iter()
                        .flatten()
                        .any(|o| o == "bind" || o == "rbind")
            })
            .filter_map(|m| {
                Some(Bind {
                    source: m.source().clone()?,
                    target: m.destination().clone(),
                })
            })
            .collect();
        Ok(RootAt::Stopped { rootfs, binds })
    }

    /// Runs `f` with the root of container `key` as the container sees it,
    /// on a blocking thread (its own, for a stopped container).
    async fn with_root<T, F>(&self, key: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&pathrs::Root, &str) -> Result<T> + Send + 'static,
    {
        let rec = self.sup.inspect(key)?;
        let name = name_of(&rec).to_string();
        match self.root_of(&rec).await? {
            RootAt::Running(pid) => tokio::task::spawn_blocking(move || {
                // The magic link leads into the container's mount namespace
                // (pathrs refuses to follow it itself): its root directory.
                let root = std::fs::File::open(format!("/proc/{pid}/root"))
                    .map(|f| pathrs::Root::from_fd(OwnedFd::from(f)))
                    .map_err(|e| io_failed(&format!("cannot open the root of {name}"), e))?;
                f(&root, &name)
            })
            .await
            .map_err(|e| io_failed("the file operation failed", e))?,
            RootAt::Stopped { rootfs, binds } => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::Builder::new()
                    .name("ctr-files".into())
                    .spawn(move || {
                        let res = in_private_namespace(&rootfs, &binds, &name)
                            .and_then(|root| f(&root, &name));
                        let _ = tx.send(res);
                    })
                    .map_err(|e| io_failed("cannot start a thread", e))?;
                rx.await
                    .map_err(|_| FilesError::Failed("the file operation failed".into()))?
            }
        }
    }

    /// Docker's `HEAD /containers/{id}/archive`.
    pub async fn stat(&self, key: &str, path: &str, follow: bool) -> Result<PathStat> {
        let path = container_path(path)?;
        self.with_root(key, move |root, name| {
            let h = resolve(root, name, &path, follow)?;
            pack::stat(h.as_fd(), &base_name(&path))
                .map_err(|e| io_failed(&format!("cannot stat {}", path.display()), e))
        })
        .await
    }

    /// Docker's `GET /containers/{id}/archive`: `path` as a tar stream into
    /// `out`, its top entry named after its last component. Returns the
    /// entries written.
    pub async fn archive<W: Write + Send + 'static>(
        &self,
        key: &str,
        path: &str,
        follow: bool,
        out: W,
    ) -> Result<u64> {
        let path = container_path(path)?;
        self.with_root(key, move |root, name| {
            let h = resolve(root, name, &path, follow)?;
            let mut p = Packer::new(out, PackOptions::default());
            let top = base_name(&path);
            let res = if top == "/" {
                // The whole root: its children, as `docker cp CTR:/ DIR`.
                let dir = h
                    .reopen(
                        pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_DIRECTORY,
                    )
                    .map_err(|e| io_failed("cannot open the root", e))?;
                p.children(dir.as_fd(), Path::new(""))
            } else {
                p.add(h.as_fd(), Path::new(&top))
            };
            res.map_err(|e| io_failed(&format!("cannot copy {} from {name}", path.display()), e))?;
            let n = p.entries();
            p.finish()
                .map_err(|e| io_failed("cannot send the archive", e))?;
            Ok(n)
        })
        .await
    }

    /// Docker's `PUT /containers/{id}/archive`: the tar stream `input`
    /// written into the directory `path` (it must exist). Without
    /// `copy_uid_gid` everything is owned by 0:0 (the container's root),
    /// as Docker does. Returns the entries written.
    pub async fn extract<R: Read + Send + 'static>(
        &self,
        key: &str,
        path: &str,
        input: R,
        copy_uid_gid: bool,
    ) -> Result<u64> {
        let path = container_path(path)?;
        let rec = self.sup.inspect(key)?;
        if rec.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) && rec.state.is_live()
        {
            return Err(FilesError::State(format!(
                "container {} has a read-only root filesystem: cannot copy into it",
                name_of(&rec)
            )));
        }
        self.with_root(key, move |root, name| {
            let h = resolve(root, name, &path, true)?;
            let st = pack::stat(h.as_fd(), "")
                .map_err(|e| io_failed(&format!("cannot stat {}", path.display()), e))?;
            if !st.is_dir() {
                return Err(FilesError::Invalid(format!(
                    "{} in container {name} is not a directory: copy into a directory",
                    path.display()
                )));
            }
            let dir: OwnedFd = h
                .reopen(pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_DIRECTORY)
                .map_err(|e| io_failed(&format!("cannot open {}", path.display()), e))?
                .into();
            let opts = ExtractOptions {
                owner: (!copy_uid_gid).then_some((0, 0)),
                rebase: None,
            };
            unpack::extract(input, dir, opts).map_err(|e| {
                io_failed(&format!("cannot copy into {} of {name}", path.display()), e)
            })
        })
        .await
    }

    /// Docker's `/containers/{id}/changes`: what the container changed in
    /// its image's files, from its upper layer.
    pub async fn diff(&self, key: &str) -> Result<Vec<Change>> {
        let rec = self.sup.inspect(key)?;
        if rec.config.source.image().is_none() {
            return Err(FilesError::State(format!(
                "container {} was not made from an image: it has no layer of changes",
                name_of(&rec)
            )));
        }
        let (images, id, name) = (
            self.images.clone(),
            rec.id.clone(),
            name_of(&rec).to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let (upper, lowers) = images
                .snaps
                .overlay_dirs(&id)
                .map_err(|e| io_failed("cannot read the container's snapshot", e))?
                .ok_or_else(|| {
                    FilesError::State(format!(
                        "container {name} is a full copy (--snapshotter copy): it has no layer of changes to show"
                    ))
                })?;
            pack::changes(&upper, &lowers).map_err(|e| io_failed("cannot read the changes", e))
        })
        .await
        .map_err(|e| io_failed("diff failed", e))?
    }

    /// Docker's `/containers/{id}/export`: the container's tree (its image
    /// and its changes, no volume or bind mount) as a tar stream.
    pub async fn export<W: Write + Send + 'static>(&self, key: &str, out: W) -> Result<u64> {
        let rec = self.sup.inspect(key)?;
        let rootfs = match self.root_of(&rec).await? {
            // The snapshot's mount in berthd's namespace: the container's
            // own mounts are not in it.
            RootAt::Running(_) | RootAt::Stopped { .. } => rec
                .spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .ok_or_else(|| FilesError::State("the container has no root filesystem".into()))?,
        };
        if rec.config.source.image().is_some() {
            let (images, id) = (self.images.clone(), rec.id.clone());
            tokio::task::spawn_blocking(move || images.snaps.mount(&id))
                .await
                .map_err(|e| io_failed("mounting the container's root failed", e))?
                .map_err(|e| io_failed("cannot mount the container's root", e))?;
        }
        tokio::task::spawn_blocking(move || {
            let dir = std::fs::File::open(&rootfs)
                .map_err(|e| io_failed(&format!("cannot open {}", rootfs.display()), e))?;
            let mut p = Packer::new(out, PackOptions::default());
            p.children(dir.as_fd(), Path::new(""))
                .map_err(|e| io_failed("cannot export", e))?;
            let n = p.entries();
            p.finish()
                .map_err(|e| io_failed("cannot send the archive", e))?;
            Ok(n)
        })
        .await
        .map_err(|e| io_failed("export failed", e))?
    }
}

/// What `commit` is asked for (Docker's `POST /commit` has the same).
pub struct CommitOptions {
    pub container: String,
    /// IMAGE[:TAG]; empty: untagged.
    pub reference: String,
    pub message: String,
    pub author: String,
    /// Dockerfile instructions (`-c`).
    pub changes: Vec<String>,
    /// Freeze a running container while its layer is written.
    pub pause: bool,
}

impl Files {
    /// An error if `key` names no container.
    pub fn check(&self, key: &str) -> Result<()> {
        self.sup.inspect(key).map(|_| ()).map_err(FilesError::from)
    }

    /// Docker's `POST /commit`: a new image from the container's changes;
    /// returns its id. Bad input is refused before anything is written.
    pub async fn commit(&self, o: CommitOptions) -> Result<String> {
        let rec = self.sup.inspect(&o.container)?;
        let name = name_of(&rec).to_string();
        let Some(img) = rec.config.source.image() else {
            return Err(FilesError::State(format!(
                "container {name} was not made from an image: commit needs one"
            )));
        };
        let mut names = Vec::new();
        if !o.reference.is_empty() {
            let r = berth_image::reference::Reference::parse(&o.reference).map_err(|e| {
                FilesError::Invalid(format!("invalid image name {:?}: {e}", o.reference))
            })?;
            if r.digest().is_some() {
                return Err(FilesError::Invalid(format!(
                    "cannot commit to a digest ({}): give IMAGE[:TAG]",
                    o.reference
                )));
            }
            names.push(r);
        }
        let changes = o
            .changes
            .iter()
            .map(|c| crate::commit::parse_change(c))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(FilesError::Invalid)?;
        let spec = crate::images::CommitSpec {
            container: rec.id.clone(),
            base: img.id.clone(),
            names,
            created_by: rec.command().join(" "),
            author: o.author,
            message: o.message,
            changes,
        };
        let pause = o.pause && rec.state == berth_core::container::State::Running;
        if pause {
            self.sup.pause(&rec.id).await?;
        }
        let images = self.images.clone();
        let res = tokio::task::spawn_blocking(move || images.commit(&spec))
            .await
            .map_err(|e| io_failed("commit failed", e));
        if pause {
            if let Err(e) = self.sup.resume(&rec.id).await {
                tracing::warn!(container = %rec.id, error = %e, "cannot unpause after commit");
            }
        }
        res?.map_err(|e| match e {
            crate::images::ImageError::Invalid(m) => FilesError::Invalid(m),
            crate::images::ImageError::NotFound(m) => FilesError::NotFound(m),
            e => FilesError::Failed(e.to_string()),
        })
    }
}

/// On the calling thread (which must be one of its own, and end after):
/// a private mount namespace where `rootfs` has the container's bind mounts
/// and volumes; returns the root to resolve in.
fn in_private_namespace(rootfs: &Path, binds: &[Bind], name: &str) -> Result<pathrs::Root> {
    use nix::mount::{mount, MsFlags};
    let failed = |what: &str, e: nix::Error| io_failed(&format!("{what} for {name}"), e);
    // CLONE_NEWNS unshares this thread's filesystem context too: the rest
    // of berthd keeps the host's mounts.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| failed("cannot make a mount namespace", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| failed("cannot make the mounts private", e))?;
    let root = pathrs::Root::open(rootfs)
        .map_err(|e| io_failed(&format!("cannot open the root of {name}"), e))?;
    for b in binds {
        // The target was resolved and made when the container was created;
        // one that is gone (removed since) is skipped, as an empty mount
        // point would be all the container saw there.
        let Ok(h) = root.resolve(&b.target) else {
            tracing::debug!(target = %b.target.display(), "mount point gone: not bound");
            continue;
        };
        let target = format!("/proc/self/fd/{}", h.as_fd().as_raw_fd());
        if let Err(e) = mount(
            Some(&b.source),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            tracing::warn!(source = %b.source.display(), target = %b.target.display(), error = %e, "cannot bind a mount of a stopped container");
        }
    }
    Ok(root)
}
