//! Named and anonymous volumes: directories under `<root>/volumes/<name>/`
//! holding `_data` (what containers mount) and `volume.json` (the record).
//!
//! Durability: a volume is made in `.new-<name>` (record written and
//! synced) and renamed into place in one step, so after a crash either the
//! whole volume exists or a `.new-*` leftover does, which `open` removes.
//! Removal renames to `.del-*` first, for the same reason.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_core::event::{EventType, ObjectKind};
use serde::{Deserialize, Serialize};

use crate::objevents::Recorder;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid volume name {0:?}: use 2 to 128 of [a-zA-Z0-9_.-], starting with a letter or digit")]
    BadName(String),
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("volume {0} is in use by container {1}: remove the container first")]
    InUse(String, String),
    #[error("volume store: {0}: {1}")]
    Io(String, std::io::Error),
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> VolumeError {
    let what = what.to_string();
    move |e| VolumeError::Io(what, e)
}

/// A volume's durable record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRecord {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: String,
    /// Made for one container (`-v /dir`, an image's `Volumes`): removed
    /// with it by `rm -v` and `--rm`.
    #[serde(default)]
    pub anonymous: bool,
}

pub struct Volumes {
    dir: PathBuf,
    lock: Mutex<()>,
    /// Every create and destroy, whoever asked (`volume create`, a `-v`
    /// of a new name, an anonymous volume, `rm -v`, `--rm`, prune).
    pub events: Recorder,
}

/// Docker's rule for volume names.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=128).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `-v` takes a volume name where the first part has no '/'.
pub fn looks_like_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.starts_with('.')
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Volumes {
    /// The store under `dir`; leftovers of a crash (half-made or
    /// half-removed volumes) are removed.
    pub fn open(dir: &Path) -> Result<Volumes, VolumeError> {
        std::fs::create_dir_all(dir).map_err(io(dir.display()))?;
        for e in std::fs::read_dir(dir).map_err(io(dir.display()))?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".new-") || n.starts_with(".del-") {
                let p = dir.join(&n);
                tracing::info!(path = %p.display(), "removing a volume left half-made or half-removed");
                let _ = std::fs::remove_dir_all(&p);
            }
        }
        Ok(Volumes {
            dir: dir.to_path_buf(),
            lock: Mutex::new(()),
            events: Recorder::default(),
        })
    }

    /// What containers mount.
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// The volume name of a mount source, if it is a volume's `_data`.
    pub fn name_of(&self, source: &Path) -> Option<String> {
        let rest = source.strip_prefix(&self.dir).ok()?;
        let mut c = rest.components();
        let name = c.next()?.as_os_str().to_str()?.to_string();
        (c.next()?.as_os_str() == "_data" && c.next().is_none() && valid_name(&name))
            .then_some(name)
    }

    fn read(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::BadName(name.into()));
        }
        let p = self.dir.join(name).join("volume.json");
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.into()))
            }
            Err(e) => return Err(VolumeError::Io(p.display().to_string(), e)),
        };
        serde_json::from_slice(&data).map_err(|e| {
            VolumeError::Io(
                p.display().to_string(),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    pub fn get(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.read(name)
    }

    /// Make the volume `name` (a random one if None); an existing one is
    /// returned as it is (Docker's `volume create` of an existing name).
    /// The bool says whether it was made now.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<(VolumeRecord, bool), VolumeError> {
        let name = match name {
            Some(n) => n.to_string(),
            None => berth_core::id::generate_id().map_err(|e| {
                VolumeError::Io("a volume name".into(), std::io::Error::other(e.to_string()))
            })?,
        };
        if !valid_name(&name) {
            return Err(VolumeError::BadName(name));
        }
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match self.read(&name) {
            Ok(r) => return Ok((r, false)),
            Err(VolumeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let rec = VolumeRecord {
            name: name.clone(),
            labels,
            created: now(),
            anonymous,
        };
        let tmp = self.dir.join(format!(".new-{name}"));
        let _ = std::fs::remove_dir_all(&tmp);
        let made = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(tmp.join("_data"))?;
            let mut f = std::fs::File::create(tmp.join("volume.json"))?;
            f.write_all(&serde_json::to_vec_pretty(&rec).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(&name))?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(VolumeError::Io(format!("creating volume {name}"), e));
        }
        self.record(EventType::Create, &name);
        Ok((rec, true))
    }

    pub fn list(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)
            .map_err(io(self.dir.display()))?
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if !valid_name(&n) {
                continue;
            }
            match self.read(&n) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(volume = %n, error = %e, "unreadable volume skipped"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Remove `name` and its data; `in_use` names a container using it
    /// (then nothing is removed).
    pub fn remove(&self, name: &str, in_use: Option<&str>) -> Result<(), VolumeError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.read(name)?;
        if let Some(c) = in_use {
            return Err(VolumeError::InUse(name.into(), c.into()));
        }
        let gone = self.dir.join(format!(".del-{name}"));
        let _ = std::fs::remove_dir_all(&gone);
        std::fs::rename(self.dir.join(name), &gone).map_err(io(format!("removing {name}")))?;
        // The volume is gone from the store once renamed away: the
        // delete of its data below failing leaves only garbage.
        self.record(EventType::Delete, name);
        std::fs::remove_dir_all(&gone).map_err(io(format!("removing {name}")))
    }

    fn record(&self, kind: EventType, name: &str) {
        self.events
            .record(ObjectKind::Volume, kind, name, name, &[("driver", "local")]);
    }
}

/// Fill a new volume's `data` with what the image has at `from` (a
/// directory inside the container's root, already resolved there): files,
/// directories and symlinks with their owners, modes and times, as Docker
/// does. Symlinks are copied as links, never followed; other kinds
/// (devices, sockets) are skipped.
pub fn copy_up(from: &Path, data: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let src = e.path();
        let dst = data.join(e.file_name());
        let meta = std::fs::symlink_metadata(&src)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_up(&src, &dst)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
        if !ft.is_symlink() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        let times = [
            nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec()),
            nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        ];
        nix::sys::stat::utimensat(
            None,
            &dst,
            &times[0],
            &times[1],
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_and_removals_are_recorded_once() {
        let dir = std::env::temp_dir().join(format!("berth-vols-ev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let v = Volumes::open(&dir).unwrap();
        let bus =
            berth_core::EventBus::new(std::sync::Arc::new(berth_core::store::MemStore::default()))
                .unwrap();
        v.events.attach(bus.clone());
        v.create(Some("data"), BTreeMap::new(), false).unwrap();
        // An existing name is not made again: no second create.
        v.create(Some("data"), BTreeMap::new(), false).unwrap();
        assert!(v.remove("data", Some("c1")).is_err());
        v.remove("data", None).unwrap();
        let mut sub = bus.subscribe(0);
        let mut got = Vec::new();
        while let Some(ev) = sub.try_next() {
            got.push((ev.object, ev.kind, ev.container, ev.attributes));
        }
        let local = BTreeMap::from([("driver".to_string(), "local".to_string())]);
        assert_eq!(
            got,
            vec![
                (
                    ObjectKind::Volume,
                    EventType::Create,
                    "data".into(),
                    local.clone()
                ),
                (ObjectKind::Volume, EventType::Delete, "data".into(), local),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn volumes_are_made_listed_and_removed_and_leftovers_cleaned() {
        let dir = std::env::temp_dir().join(format!("berth-vols-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let v = Volumes::open(&dir).unwrap();
        let (a, made) = v.create(Some("data"), BTreeMap::new(), false).unwrap();
        assert!(made);
        assert!(v.data("data").is_dir());
        let (again, made) = v.create(Some("data"), BTreeMap::new(), false).unwrap();
        assert!(!made);
        assert_eq!(a, again);
        let (anon, _) = v.create(None, BTreeMap::new(), true).unwrap();
        assert_eq!(v.list().unwrap().len(), 2);
        assert_eq!(v.name_of(&v.data(&anon.name)), Some(anon.name.clone()));
        assert_eq!(v.name_of(Path::new("/etc")), None);
        assert!(matches!(
            v.remove("data", Some("c1")),
            Err(VolumeError::InUse(..))
        ));
        v.remove("data", None).unwrap();
        assert!(matches!(v.get("data"), Err(VolumeError::NotFound(_))));
        assert!(matches!(
            v.create(Some("../x"), BTreeMap::new(), false),
            Err(VolumeError::BadName(_))
        ));
        std::fs::create_dir_all(dir.join(".new-half/_data")).unwrap();
        let v = Volumes::open(&dir).unwrap();
        assert!(!dir.join(".new-half").exists());
        assert_eq!(v.list().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
