//! The container's extra mounts: `-v HOST:CTR[:OPTS]`, `--mount k=v,...`,
//! `--tmpfs DIR[:OPTS]` and `--shm-size`, parsed and checked here in the
//! daemon (the CLI sends them as typed), then placed in the container's
//! root.
//!
//! Safety: a mount target is resolved inside the container's root with
//! `pathrs` (openat2 `RESOLVE_IN_ROOT` where the kernel has it): a symlink
//! in the image, even `/data -> /etc` or `../../..`, is followed as the
//! container would see it and can never lead to a host path. The target is
//! created there (a directory, or an empty file for a file bind) and the
//! spec gets the resolved, symlink-free path, so the runtime has no symlink
//! left to follow. Targets under `/proc` and `/sys` are refused, before and
//! after resolution.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder};
use tonic::Status;

/// How mount events propagate between the bind's source and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Private,
    Rprivate,
    Shared,
    Rshared,
    Slave,
    Rslave,
}

impl Propagation {
    fn parse(s: &str) -> Option<Propagation> {
        Some(match s {
            "private" => Propagation::Private,
            "rprivate" => Propagation::Rprivate,
            "shared" => Propagation::Shared,
            "rshared" => Propagation::Rshared,
            "slave" => Propagation::Slave,
            "rslave" => Propagation::Rslave,
            _ => return None,
        })
    }

    fn option(self) -> &'static str {
        match self {
            Propagation::Private => "private",
            Propagation::Rprivate => "rprivate",
            Propagation::Shared => "shared",
            Propagation::Rshared => "rshared",
            Propagation::Slave => "slave",
            Propagation::Rslave => "rslave",
        }
    }
}

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A host path; `create`: a missing directory is made (`-v`), otherwise
    /// a missing source is an error (`--mount`).
    Bind {
        source: PathBuf,
        create: bool,
        propagation: Propagation,
    },
    /// A fresh tmpfs.
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
    /// A named volume (made if missing), or a new anonymous one (None);
    /// a volume made now is first filled with the image's files at the
    /// target unless `nocopy`.
    Volume { name: Option<String>, nocopy: bool },
}

/// One mount as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    /// Absolute, clean, in the container's view.
    pub target: String,
    pub readonly: bool,
}

fn bad(msg: String) -> Status {
    Status::invalid_argument(msg)
}

/// A container path: absolute, without `.` or `..`, not `/`, not under
/// /proc or /sys. Returned in its clean form.
fn container_path(flag: &str, p: &str) -> Result<String, Status> {
    if !p.starts_with('/') {
        return Err(bad(format!(
            "{flag}: the container path {p:?} is not absolute: give it as /DIR"
        )));
    }
    let mut clean = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => clean.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad(format!(
                    "{flag}: the container path {p:?} has a '..': give it without"
                )))
            }
        }
    }
    if clean == Path::new("/") {
        return Err(bad(format!(
            "{flag}: cannot mount over the container's root /: choose a directory below it"
        )));
    }
    check_not_kernel(flag, &clean)?;
    Ok(clean.to_string_lossy().into_owned())
}

/// /proc and /sys are the kernel's: a mount there could hide or replace
/// what the masked paths protect.
fn check_not_kernel(flag: &str, p: &Path) -> Result<(), Status> {
    for k in ["/proc", "/sys"] {
        if p.starts_with(k) {
            return Err(bad(format!(
                "{flag}: cannot mount on {} (under {k}, the kernel's): choose another container path",
                p.display()
            )));
        }
    }
    Ok(())
}

fn host_path(flag: &str, p: &str) -> Result<PathBuf, Status> {
    if p.is_empty() {
        return Err(bad(format!("{flag}: the host path is empty")));
    }
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(bad(format!(
            "{flag}: the host path {} is relative: give an absolute path (e.g. {})",
            crate::validate::shown(p),
            crate::validate::shown(&format!("$PWD/{p}"))
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(bad(format!(
            "{flag}: the host path {p:?} has a '..': give it without"
        )));
    }
    Ok(path)
}

/// `-v HOST:CTR[:OPTS]`, OPTS comma-separated: ro, rw, and one propagation
/// (rprivate, private, rshared, shared, rslave, slave).
pub fn parse_volume(s: &str) -> Result<Request, Status> {
    let flag = format!("-v {}", crate::validate::shown(s));
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, opts) = match parts.as_slice() {
        [h, c] => (*h, *c, ""),
        [h, c, o] => (*h, *c, *o),
        [c] => {
            return Ok(Request {
                kind: Kind::Volume {
                    name: None,
                    nocopy: false,
                },
                target: container_path(&flag, c)?,
                readonly: false,
            })
        }
        _ => return Err(bad(format!("{flag}: expected HOST:CONTAINER[:OPTIONS]"))),
    };
    let volume = crate::volumes::looks_like_name(host);
    if volume && !crate::volumes::valid_name(host) {
        return Err(bad(format!(
            "{flag}: invalid volume name {host:?}: use 2 to 128 of [a-zA-Z0-9_.-] starting with a letter or digit, or an absolute host path"
        )));
    }
    let source = if volume {
        PathBuf::new()
    } else {
        host_path(&flag, host)?
    };
    let target = container_path(&flag, ctr)?;
    let mut readonly = None;
    let mut propagation = None;
    let mut nocopy = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "rw" if readonly.is_none() => readonly = Some(o == "ro"),
            "nocopy" if volume => nocopy = true,
            _ => match Propagation::parse(o) {
                Some(p) if propagation.is_none() => propagation = Some(p),
                _ => {
                    return Err(bad(format!(
                    "{flag}: invalid or repeated option {o:?}: use ro or rw, and one of rprivate, private, rshared, shared, rslave, slave"
                )))
                }
            },
        }
    }
    if volume {
        if propagation.is_some() {
            return Err(bad(format!(
                "{flag}: a volume takes no propagation option: use ro, rw or nocopy"
            )));
        }
        return Ok(Request {
            kind: Kind::Volume {
                name: Some(host.to_string()),
                nocopy,
            },
            target,
            readonly: readonly.unwrap_or(false),
        });
    }
    Ok(Request {
        kind: Kind::Bind {
            source,
            create: true,
            propagation: propagation.unwrap_or(Propagation::Rprivate),
        },
        target,
        readonly: readonly.unwrap_or(false),
    })
}

fn parse_bool(flag: &str, key: &str, v: Option<&str>) -> Result<bool, Status> {
    match v {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(bad(format!(
            "{flag}: {key}={v} is not a boolean: use true or false"
        ))),
    }
}

fn parse_mode(flag: &str, v: &str) -> Result<u32, Status> {
    u32::from_str_radix(v, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| bad(format!("{flag}: mode {v:?} is not an octal mode like 1777")))
}

fn parse_tmpfs_size(flag: &str, v: &str) -> Result<u64, Status> {
    berth_api::parse_size(v)
        .filter(|s| *s > 0)
        .ok_or_else(|| bad(format!("{flag}: size {v:?} is not a size like 64m")))
}

/// `--mount type=bind|tmpfs,src=,dst=[,readonly][,bind-propagation=]
/// [,tmpfs-size=][,tmpfs-mode=]`.
pub fn parse_mount(s: &str) -> Result<Request, Status> {
    let flag = format!("--mount {}", crate::validate::shown(s));
    let mut typ = None;
    let mut src = None;
    let mut dst = None;
    let mut readonly = false;
    let mut propagation = None;
    let mut size = None;
    let mut mode = None;
    let mut nocopy = false;
    for field in s.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        fn need<'a>(flag: &str, k: &str, v: Option<&'a str>) -> Result<&'a str, Status> {
            v.ok_or_else(|| bad(format!("{flag}: {k} needs a value: {k}=VALUE")))
        }
        let need = |v| need(&flag, k, v);
        match k {
            "type" => typ = Some(need(v)?.to_string()),
            "source" | "src" => src = Some(need(v)?.to_string()),
            "destination" | "dst" | "target" => dst = Some(need(v)?.to_string()),
            "readonly" | "ro" => readonly = parse_bool(&flag, k, v)?,
            "bind-propagation" => {
                let v = need(v)?;
                propagation = Some(Propagation::parse(v).ok_or_else(|| {
                    bad(format!("{flag}: bind-propagation={v} is not one of rprivate, private, rshared, shared, rslave, slave"))
                })?)
            }
            "tmpfs-size" => size = Some(parse_tmpfs_size(&flag, need(v)?)?),
            "tmpfs-mode" => mode = Some(parse_mode(&flag, need(v)?)?),
            "volume-nocopy" => nocopy = parse_bool(&flag, k, v)?,
            _ => {
                return Err(bad(format!(
                    "{flag}: unknown key {k:?}: use type, source, destination, readonly, bind-propagation, volume-nocopy, tmpfs-size, tmpfs-mode"
                )))
            }
        }
    }
    let Some(dst) = dst else {
        return Err(bad(format!(
            "{flag}: no destination: add dst=/PATH/IN/CONTAINER"
        )));
    };
    let target = container_path(&flag, &dst)?;
    let kind = match typ.as_deref() {
        Some("bind") => {
            if size.is_some() || mode.is_some() {
                return Err(bad(format!(
                    "{flag}: tmpfs-size and tmpfs-mode apply to type=tmpfs only"
                )));
            }
            let Some(src) = src else {
                return Err(bad(format!(
                    "{flag}: a bind mount needs a source: add src=/HOST/PATH"
                )));
            };
            Kind::Bind {
                source: host_path(&flag, &src)?,
                create: false,
                propagation: propagation.unwrap_or(Propagation::Rprivate),
            }
        }
        Some("tmpfs") => {
            if src.is_some() || propagation.is_some() {
                return Err(bad(format!(
                    "{flag}: a tmpfs has no source and no bind-propagation: drop them"
                )));
            }
            Kind::Tmpfs { size, mode }
        }
        Some("volume") | None => {
            if size.is_some() || mode.is_some() || propagation.is_some() {
                return Err(bad(format!(
                    "{flag}: tmpfs-* and bind-propagation do not apply to a volume"
                )));
            }
            if let Some(n) = &src {
                if !crate::volumes::valid_name(n) {
                    return Err(bad(format!(
                        "{flag}: invalid volume name {n:?}: use 2 to 128 of [a-zA-Z0-9_.-] starting with a letter or digit"
                    )));
                }
            }
            Kind::Volume { name: src, nocopy }
        }
        Some(t) => {
            return Err(bad(format!(
                "{flag}: unknown type {t:?}: use bind, volume or tmpfs"
            )))
        }
    };
    Ok(Request {
        kind,
        target,
        readonly,
    })
}

/// `--tmpfs DIR[:OPTS]`, OPTS comma-separated: size=, mode=, ro, rw.
pub fn parse_tmpfs(s: &str) -> Result<Request, Status> {
    let flag = format!("--tmpfs {}", crate::validate::shown(s));
    let (dir, opts) = s.split_once(':').unwrap_or((s, ""));
    let target = container_path(&flag, dir)?;
    let (mut size, mut mode, mut readonly) = (None, None, false);
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => size = Some(parse_tmpfs_size(&flag, v)?),
            Some(("mode", v)) => mode = Some(parse_mode(&flag, v)?),
            None if o == "ro" || o == "rw" => readonly = o == "ro",
            _ => {
                return Err(bad(format!(
                    "{flag}: unknown option {o:?}: use size=SIZE, mode=OCTAL, ro or rw"
                )))
            }
        }
    }
    Ok(Request {
        kind: Kind::Tmpfs { size, mode },
        target,
        readonly,
    })
}

/// Every mount the request asks for, checked: no two on one target.
pub fn requests(
    r: &berth_api::v1::CreateRequest,
    image_volumes: &[String],
) -> Result<Vec<Request>, Status> {
    let mut out = Vec::new();
    for v in &r.binds {
        out.push(parse_volume(v)?);
    }
    for m in &r.mounts {
        out.push(parse_mount(m)?);
    }
    for t in &r.tmpfs {
        out.push(parse_tmpfs(t)?);
    }
    let mut seen = std::collections::HashSet::new();
    for m in &out {
        if !seen.insert(m.target.clone()) {
            return Err(bad(format!(
                "two mounts on {}: give each container path once",
                m.target
            )));
        }
    }
    // The image's `Volumes` become anonymous volumes, unless the user
    // mounted something there.
    for v in image_volumes {
        let Ok(target) = container_path("the image's Volumes", v) else {
            tracing::warn!(volume = %v, "image volume path skipped");
            continue;
        };
        if seen.insert(target.clone()) {
            out.push(Request {
                kind: Kind::Volume {
                    name: None,
                    nocopy: false,
                },
                target,
                readonly: false,
            });
        }
    }
    // Parents first: a mount on /a after one on /a/b would hide it.
    out.sort_by_key(|m| Path::new(&m.target).components().count());
    Ok(out)
}

/// `--shm-size`: bytes, at least 4 KiB.
pub fn shm_size(r: &berth_api::v1::CreateRequest) -> Result<Option<u64>, Status> {
    match r.shm_size {
        None => Ok(None),
        Some(s) if s >= 4096 => Ok(Some(s as u64)),
        Some(s) => Err(bad(format!(
            "--shm-size {s}: too small: give at least 4k (the default is 64m)"
        ))),
    }
}

fn status_io(what: String, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{what}: {e}"))
}

/// The host path an open handle refers to (the kernel's view of its fd).
fn fd_path(fd: &impl AsFd) -> std::io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Make `target` (a directory, or a file if `file`) inside `rootfs`,
/// resolving every symlink on the way as the container would; return the
/// container path it resolved to (no symlinks left).
fn place(rootfs: &Path, target: &str, file: bool) -> Result<String, Status> {
    let what = format!("cannot make the mount point {target} in the container");
    let root_real = rootfs
        .canonicalize()
        .map_err(|e| status_io(what.clone(), e))?;
    let root = pathrs::Root::open(&root_real).map_err(|e| status_io(what.clone(), e))?;
    use std::os::unix::fs::PermissionsExt;
    let dir_perm = std::fs::Permissions::from_mode(0o755);
    let handle = if file {
        match root.resolve(target) {
            Ok(h) => h,
            Err(_) => {
                let parent = Path::new(target).parent().unwrap_or(Path::new("/"));
                root.mkdir_all(parent, &dir_perm)
                    .map_err(|e| status_io(what.clone(), e))?;
                let perm = std::fs::Permissions::from_mode(0o644);
                // Exclusive creation: a racing entry is then resolved again.
                let _ = root.create(target, &pathrs::InodeType::File(perm));
                root.resolve(target)
                    .map_err(|e| status_io(what.clone(), e))?
            }
        }
    } else {
        root.mkdir_all(target, &dir_perm)
            .map_err(|e| status_io(what.clone(), e))?
    };
    let real = fd_path(&handle).map_err(|e| status_io(what.clone(), e))?;
    let inside = real.strip_prefix(&root_real).map_err(|_| {
        Status::internal(format!(
            "the mount point {target} resolved to {} outside the container's root",
            real.display()
        ))
    })?;
    let resolved = Path::new("/").join(inside);
    // A symlink may have led to /proc or /sys.
    check_not_kernel(&format!("mount on {target}"), &resolved)?;
    let meta = std::fs::metadata(&real).map_err(|e| status_io(what.clone(), e))?;
    if meta.is_dir() == file {
        return Err(bad(format!(
            "cannot mount a {} on {target}: it is a {} in the container",
            if file { "file" } else { "directory" },
            if meta.is_dir() { "directory" } else { "file" }
        )));
    }
    Ok(resolved.to_string_lossy().into_owned())
}

/// The OCI mounts of `reqs`, their targets made in `rootfs` (and missing
/// `-v` host directories made on the host, missing volumes made in
/// `vols`). On an error, the volumes made here are removed again.
pub fn resolve(
    rootfs: &Path,
    reqs: &[Request],
    vols: &crate::volumes::Volumes,
) -> Result<Vec<Mount>, Status> {
    let mut made = Vec::new();
    let res = resolve_all(rootfs, reqs, vols, &mut made);
    if res.is_err() {
        for n in made {
            let _ = vols.remove(&n, None);
        }
    }
    res
}

/// Make (if new) and fill the volume of a request; its `_data` path.
fn volume(
    rootfs: &Path,
    dest: &str,
    name: Option<&str>,
    nocopy: bool,
    vols: &crate::volumes::Volumes,
    made: &mut Vec<String>,
) -> Result<PathBuf, Status> {
    let (rec, new) = vols
        .create(name, Default::default(), name.is_none())
        .map_err(crate::volumes_api::volume_status)?;
    if new {
        made.push(rec.name.clone());
    }
    let data = vols.data(&rec.name);
    if new && !nocopy {
        // `dest` is the resolved, symlink-free path of a directory inside
        // the root: what the image has there fills the new volume.
        let from = rootfs
            .canonicalize()
            .map_err(|e| status_io("cannot read the container's root".into(), e))?
            .join(dest.trim_start_matches('/'));
        let fill = || -> std::io::Result<()> {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let meta = std::fs::symlink_metadata(&from)?;
            crate::volumes::copy_up(&from, &data)?;
            std::os::unix::fs::lchown(&data, Some(meta.uid()), Some(meta.gid()))?;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        };
        fill().map_err(|e| {
            Status::internal(format!(
                "cannot fill volume {} with the image's {dest}: {e}",
                rec.name
            ))
        })?;
    }
    Ok(data)
}

fn resolve_all(
    rootfs: &Path,
    reqs: &[Request],
    vols: &crate::volumes::Volumes,
    made: &mut Vec<String>,
) -> Result<Vec<Mount>, Status> {
    let mut out = Vec::new();
    for r in reqs {
        let m = match &r.kind {
            Kind::Bind {
                source,
                create,
                propagation,
            } => {
                let meta = match std::fs::metadata(source) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && *create => {
                        std::fs::create_dir_all(source).map_err(|e| {
                            status_io(format!("cannot create {}", source.display()), e)
                        })?;
                        std::fs::metadata(source).map_err(|e| {
                            status_io(format!("cannot read {}", source.display()), e)
                        })?
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(bad(format!(
                            "bind source path does not exist: {} (create it first, or use -v, which creates it)",
                            source.display()
                        )))
                    }
                    Err(e) => {
                        return Err(status_io(format!("cannot read {}", source.display()), e))
                    }
                };
                let dest = place(rootfs, &r.target, !meta.is_dir())?;
                let mut opts = vec!["rbind".to_string(), propagation.option().to_string()];
                if r.readonly {
                    opts.push("ro".into());
                }
                build(&dest, "bind", &source.to_string_lossy(), opts)?
            }
            Kind::Tmpfs { size, mode } => {
                let dest = place(rootfs, &r.target, false)?;
                let mut opts: Vec<String> = ["nosuid", "nodev", "noexec"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if let Some(s) = size {
                    opts.push(format!("size={s}"));
                }
                if let Some(m) = mode {
                    opts.push(format!("mode={m:o}"));
                }
                if r.readonly {
                    opts.push("ro".into());
                }
                build(&dest, "tmpfs", "tmpfs", opts)?
            }
            Kind::Volume { name, nocopy } => {
                let dest = place(rootfs, &r.target, false)?;
                let data = volume(rootfs, &dest, name.as_deref(), *nocopy, vols, made)?;
                let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
                if r.readonly {
                    opts.push("ro".into());
                }
                build(&dest, "bind", &data.to_string_lossy(), opts)?
            }
        };
        out.push(m);
    }
    Ok(out)
}

fn build(dest: &str, typ: &str, source: &str, options: Vec<String>) -> Result<Mount, Status> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options)
        .build()
        .map_err(|e| Status::internal(format!("cannot describe the mount on {dest}: {e}")))
}

/// Add `extra` to the spec's mounts: a default mount on the same target
/// (e.g. /dev/shm) gives way, as in Docker; `shm_size` resizes /dev/shm.
pub fn apply(
    spec: &mut oci_spec::runtime::Spec,
    extra: Vec<Mount>,
    shm_size: Option<u64>,
) -> Result<(), Status> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| !extra.iter().any(|e| e.destination() == m.destination()));
    if let Some(size) = shm_size {
        for m in mounts.iter_mut() {
            if m.destination() == Path::new("/dev/shm") && m.typ().as_deref() == Some("tmpfs") {
                let mut opts: Vec<String> = m
                    .options()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| !o.starts_with("size="))
                    .collect();
                opts.push(format!("size={size}"));
                m.set_options(Some(opts));
            }
        }
    }
    mounts.extend(extra);
    spec.set_mounts(Some(mounts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flags_parse() {
        let r = parse_volume("/h:/c:ro,rshared").unwrap();
        assert_eq!(r.target, "/c");
        assert!(r.readonly);
        assert_eq!(
            r.kind,
            Kind::Bind {
                source: "/h".into(),
                create: true,
                propagation: Propagation::Rshared
            }
        );
        let r = parse_volume("/h/:/c/./d/").unwrap();
        assert_eq!(r.target, "/c/d");
        assert!(!r.readonly);
    }

    #[test]
    fn bad_volume_flags_are_one_line_errors() {
        for (s, want) in [
            ("./h:/c", "relative"),
            ("h/x:/c", "relative"),
            ("/h:c", "not absolute"),
            ("/h:/", "root"),
            ("/h:/proc/x", "/proc"),
            ("/h:/sys", "/sys"),
            ("/h:/c/../d", ".."),
            ("/h:/c:ro,rw", "repeated"),
            ("/h:/c:bogus", "invalid"),
            ("/h:/c:ro:x", "expected"),
        ] {
            let e = parse_volume(s).unwrap_err();
            assert!(e.message().contains(want), "{s}: {}", e.message());
            assert!(!e.message().contains('\n'));
        }
    }

    #[test]
    fn mount_flags_parse() {
        let r = parse_mount("type=bind,src=/h,dst=/c,readonly,bind-propagation=rslave").unwrap();
        assert!(r.readonly);
        assert_eq!(
            r.kind,
            Kind::Bind {
                source: "/h".into(),
                create: false,
                propagation: Propagation::Rslave
            }
        );
        let r = parse_mount("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap();
        assert_eq!(
            r.kind,
            Kind::Tmpfs {
                size: Some(1 << 20),
                mode: Some(0o1770)
            }
        );
        for (s, want) in [
            ("type=bind,dst=/c", "needs a source"),
            ("type=bind,src=/h", "no destination"),
            ("type=bind,src=/h,dst=/c,readonly=maybe", "boolean"),
            ("type=nfs,dst=/c", "unknown type"),
            ("type=bind,src=/h,dst=/c,color=red", "unknown key"),
            ("type=tmpfs,dst=/c,tmpfs-mode=99", "octal"),
        ] {
            let e = parse_mount(s).unwrap_err();
            assert!(e.message().contains(want), "{s}: {}", e.message());
        }
    }

    #[test]
    fn tmpfs_flags_parse() {
        let r = parse_tmpfs("/run:size=64k,mode=700").unwrap();
        assert_eq!(
            r.kind,
            Kind::Tmpfs {
                size: Some(65536),
                mode: Some(0o700)
            }
        );
        assert!(parse_tmpfs("/run:exec=1").is_err());
        assert!(parse_tmpfs("run").is_err());
    }

    #[test]
    fn targets_resolve_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("berth-mounts-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("data")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
        assert_eq!(place(&root, "/data", false).unwrap(), "/etc");
        assert_eq!(place(&root, "/up/new/x", false).unwrap(), "/new/x");
        assert!(root.join("new/x").is_dir());
        assert_eq!(place(&root, "/data/f", true).unwrap(), "/etc/f");
        assert!(root.join("etc/f").is_file());
        std::os::unix::fs::symlink("/proc/self", root.join("p")).unwrap();
        assert!(place(&root, "/p", false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
