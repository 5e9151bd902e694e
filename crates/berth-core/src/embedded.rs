//! The bundle the embedded runtime is given when berth loads a container's
//! seccomp filter itself (`berth-oci`'s seccomp module explains why it does).
//!
//! libcontainer gets a spec without `linux.seccomp`, with `CAP_SYS_ADMIN`
//! and `CAP_SETPCAP` lent to the process where it lacks them (loading a
//! filter without `no_new_privs` needs the first, dropping from the bounding
//! set the second), and the root as an absolute path. The spec's
//! [`ANNOTATION`] holds a [`Record`]: which profile the filter is built from
//! (by digest), how to load it and what was lent, so the executor in the
//! init knows what to drop again. The profile itself is kept once per
//! digest under the runtime root ([`save_profile`]), where the backend
//! compiles it the first time and keeps the program beside it.
//!
//! Who writes it: berthd, as the bundle's `config.json` itself, since it
//! holds the spec already in a warm process and writes `config.json`
//! anyway. The backend's create helper is a freshly forked process whose
//! every touched code and heap page is a fault: there, reading the whole
//! spec and writing a second bundle measured ~0.5 ms, and each extra file
//! or directory on ext4 costs ~0.03-0.07 ms wherever it is made. A bundle
//! that comes with a `linux.seccomp` instead (any other writer) gets a
//! sub-bundle from the backend, `<bundle>/embedded/config.json`, made with
//! the same [`prepare`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use oci_spec::runtime::{
    Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, Process, Spec,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The sub-bundle's directory name, inside a bundle the backend prepares.
pub const SUB_BUNDLE: &str = "embedded";
/// The spec annotation holding the [`Record`] (JSON).
pub const ANNOTATION: &str = "org.berth.embedded.seccomp";
/// Where profiles (`<digest>.json`) and the backend's compiled programs are
/// kept, inside the runtime root (container ids never start with a dot, so
/// it cannot collide with one).
pub const CACHE_DIR: &str = ".seccomp";

// The seccomp(2) filter flags libseccomp passes for the profile's flags.
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;

/// What the spec records about the filter it was stripped of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`profile_digest`] of the container's profile: names the profile
    /// under the runtime root and, with the libseccomp version, the
    /// compiled program.
    pub profile: String,
    /// seccomp(2) flags to load it with.
    pub flags: u32,
    /// The capabilities lent to the init only to load the filter (an
    /// exec'd process computes its own).
    pub lent: Lent,
}

/// The capabilities a process is lent only to load the filter, and from
/// which of its sets they are dropped again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lent {
    pub bounding: Vec<Capability>,
    pub effective: Vec<Capability>,
    pub permitted: Vec<Capability>,
}

impl Lent {
    /// Every capability lent, once each.
    pub fn all(&self) -> Vec<Capability> {
        let mut v: Vec<Capability> = Vec::new();
        for c in self
            .bounding
            .iter()
            .chain(&self.effective)
            .chain(&self.permitted)
        {
            if !v.contains(c) {
                v.push(*c);
            }
        }
        v
    }
}

/// Whether the embedded backend builds and loads `seccomp` itself. Left to
/// libcontainer: a `SCMP_ACT_NOTIFY` rule or a `listenerPath` (the notify fd
/// must go to the listener, which libcontainer does) and the
/// `WaitKillableRecv` flag (a listener flag).
pub fn handles(seccomp: &LinuxSeccomp) -> bool {
    let notify = seccomp.default_action() == LinuxSeccompAction::ScmpActNotify
        || seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
    let listener_flag = seccomp
        .flags()
        .iter()
        .flatten()
        .any(|f| *f == LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv);
    !notify && !listener_flag && seccomp.listener_path().is_none()
}

/// The seccomp(2) flags that libseccomp's load would pass for the profile.
pub fn load_flags(seccomp: &LinuxSeccomp) -> u32 {
    seccomp.flags().iter().flatten().fold(0, |acc, f| {
        acc | match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            // Not handled by the backend (see `handles`).
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        }
    })
}

/// How many profiles' digests [`profile_digest`] remembers.
const DIGESTS_KEPT: usize = 8;

/// sha256 (hex) of the profile's serialized form: the same profile always
/// gives the same digest, any change another. The last few are remembered
/// (comparing a profile is a twentieth of serializing and hashing it, and
/// nearly every container has the same one).
pub fn profile_digest(seccomp: &LinuxSeccomp) -> Result<String, serde_json::Error> {
    static KEPT: Mutex<Vec<(LinuxSeccomp, String)>> = Mutex::new(Vec::new());
    // A poisoned lock still holds whole entries (each is pushed whole).
    let lock = || KEPT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, d)) = lock().iter().find(|(p, _)| p == seccomp) {
        return Ok(d.clone());
    }
    let json = serde_json::to_vec(seccomp)?;
    let digest = hex(&Sha256::digest(&json));
    let mut kept = lock();
    if kept.len() >= DIGESTS_KEPT {
        kept.remove(0);
    }
    kept.push((seccomp.clone(), digest.clone()));
    Ok(digest)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lend `process` what loading a filter without no_new_privs takes:
/// `CAP_SYS_ADMIN` (and `CAP_SETPCAP`, to drop from the bounding set) in its
/// bounding, effective and permitted sets, where it lacks them; returns what
/// was lent. Nothing with `noNewPrivileges` (the load needs no capability
/// then) or without a capabilities section (libcontainer then leaves the
/// process all it has).
pub fn lend_load_caps(process: &mut Process) -> Lent {
    let mut lent = Lent::default();
    if process.no_new_privileges() == Some(true) {
        return lent;
    }
    let Some(mut caps) = process.capabilities().clone() else {
        return lent;
    };
    let needed = [Capability::SysAdmin, Capability::Setpcap];
    // libcontainer empties the bounding set when the spec has none; the
    // effective and permitted sets are left alone then (they keep all).
    let mut bounding = caps.bounding().clone().unwrap_or_default();
    for c in needed {
        if bounding.insert(c) {
            lent.bounding.push(c);
        }
    }
    caps.set_bounding(Some(bounding));
    if let Some(mut set) = caps.effective().clone() {
        for c in needed {
            if set.insert(c) {
                lent.effective.push(c);
            }
        }
        caps.set_effective(Some(set));
    }
    if let Some(mut set) = caps.permitted().clone() {
        for c in needed {
            if set.insert(c) {
                lent.permitted.push(c);
            }
        }
        caps.set_permitted(Some(set));
    }
    process.set_capabilities(Some(caps));
    lent
}

/// A spec ready for libcontainer, and what it was stripped of.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The spec without `linux.seccomp`, with the lent capabilities, an
    /// absolute root and the record in [`ANNOTATION`].
    pub spec: Spec,
    pub record: Record,
    /// The profile taken out (for [`save_profile`]).
    pub seccomp: LinuxSeccomp,
}

/// The spec libcontainer is given for `spec`, the spec of the bundle at
/// `bundle`; `None` when the embedded backend leaves the spec to
/// libcontainer as it is: no seccomp, a profile it does not handle, no
/// process (libcontainer refuses that spec itself), or hooks (a hook reads
/// the bundle from the state, and must see the real one).
pub fn prepare(spec: &Spec, bundle: &Path) -> Option<Prepared> {
    let seccomp = spec.linux().as_ref()?.seccomp().as_ref()?;
    if !handles(seccomp) || spec.hooks().is_some() {
        return None;
    }
    let profile = profile_digest(seccomp).ok()?;
    let seccomp = seccomp.clone();
    let mut process = spec.process().clone()?;
    let mut out = spec.clone();
    if let Some(linux) = out.linux_mut() {
        linux.set_seccomp(None);
    }
    let lent = lend_load_caps(&mut process);
    out.set_process(Some(process));
    // The root as the real bundle resolves it (a no-op when absolute).
    if let Some(r) = out.root_mut() {
        let abs = bundle.join(r.path());
        r.set_path(abs);
    }
    let record = Record {
        profile,
        flags: load_flags(&seccomp),
        lent,
    };
    let mut annotations = out.annotations().clone().unwrap_or_default();
    annotations.insert(ANNOTATION.into(), serde_json::to_string(&record).ok()?);
    out.set_annotations(Some(annotations));
    Some(Prepared {
        spec: out,
        record,
        seccomp,
    })
}

/// What a `config.json` says about its filter, read without decoding the
/// rest of the spec (the backend's helper must not pay for a whole parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    /// The [`Record`] berth put in it (none, or not one this version reads).
    pub record: Option<Record>,
    /// It has a `linux.seccomp` of its own.
    pub seccomp: bool,
}

/// [`Peek`] into a `config.json`; `None` when it is not a JSON object.
pub fn peek(config_json: &[u8]) -> Option<Peek> {
    #[derive(Deserialize)]
    struct Config {
        annotations: Option<HashMap<String, String>>,
        linux: Option<Linux>,
    }
    #[derive(Deserialize)]
    struct Linux {
        seccomp: Option<serde::de::IgnoredAny>,
    }
    let config: Config = serde_json::from_slice(config_json).ok()?;
    Some(Peek {
        record: config
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
            .and_then(|r| serde_json::from_str(r).ok()),
        seccomp: config.linux.is_some_and(|l| l.seccomp.is_some()),
    })
}

/// The [`Record`] in a `config.json` ([`peek`]).
pub fn record_of(config_json: &[u8]) -> Option<Record> {
    peek(config_json)?.record
}

/// Where the profile with `digest` is kept under the runtime root `root`.
pub fn profile_path(root: &Path, digest: &str) -> PathBuf {
    root.join(CACHE_DIR).join(format!("{digest}.json"))
}

/// Keep `seccomp` (whose digest is `digest`) under the runtime root, once:
/// written whole (tmp, fsync, rename) when it is not there yet, so that
/// every container naming it can have its filter compiled, after a crash
/// too. A stat when it is there.
pub fn save_profile(root: &Path, digest: &str, seccomp: &LinuxSeccomp) -> io::Result<()> {
    let path = profile_path(root, digest);
    if path.exists() {
        return Ok(());
    }
    let dir = root.join(CACHE_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let json = serde_json::to_vec(seccomp).map_err(io::Error::other)?;
    // Unique per call: berthd saves from several creates at once, and a
    // shim's helper may save beside it. Both renames then put the same bytes
    // at `path`; whichever lands last is as good as the first.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{digest}.{}.{n}.tmp", std::process::id()));
    let written = (|| {
        let mut f = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The profile with `digest` kept under the runtime root, checked against
/// its digest (a damaged or substituted file is an error, never a filter).
pub fn load_profile(root: &Path, digest: &str) -> io::Result<LinuxSeccomp> {
    let path = profile_path(root, digest);
    let text = std::fs::read(&path)?;
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let seccomp: LinuxSeccomp =
        serde_json::from_slice(&text).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let json = serde_json::to_vec(&seccomp).map_err(io::Error::other)?;
    if hex(&Sha256::digest(&json)) != digest {
        return Err(bad(format!(
            "{}: the profile does not match its digest",
            path.display()
        )));
    }
    Ok(seccomp)
}

/// Write `value` to a new file at `path`. An old file (a container created
/// again from its bundle) is unlinked first rather than truncated: ext4
/// flushes a file that is truncated and rewritten (`auto_da_alloc`), which
/// measured ~8 ms against ~0.2 ms for a new file.
pub fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let json = serde_json::to_vec(value).map_err(io::Error::other)?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCapabilitiesBuilder, ProcessBuilder};
    use std::collections::HashSet;

    fn docker_caps() -> HashSet<Capability> {
        crate::spec::DEFAULT_CAPABILITIES.into_iter().collect()
    }

    #[test]
    fn load_caps_are_lent_where_missing_only() {
        let caps = LinuxCapabilitiesBuilder::default()
            .bounding(docker_caps())
            .effective(docker_caps())
            .permitted(docker_caps())
            .build()
            .unwrap();
        let mut p = ProcessBuilder::default()
            .no_new_privileges(false)
            .capabilities(caps)
            .build()
            .unwrap();
        let lent = lend_load_caps(&mut p);
        let sa = vec![Capability::SysAdmin];
        assert_eq!(
            lent,
            Lent {
                bounding: sa.clone(),
                effective: sa.clone(),
                permitted: sa.clone()
            }
        );
        let c = p.capabilities().clone().unwrap();
        assert!(c
            .effective()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin));
        // Twice: nothing more to lend (what `--cap-add SYS_ADMIN` looks like).
        assert_eq!(lend_load_caps(&mut p), Lent::default());

        let none = LinuxCapabilitiesBuilder::default()
            .bounding(HashSet::new())
            .effective(HashSet::new())
            .permitted(HashSet::new())
            .build()
            .unwrap();
        let mut p = ProcessBuilder::default()
            .no_new_privileges(false)
            .capabilities(none)
            .build()
            .unwrap();
        assert_eq!(
            lend_load_caps(&mut p).all(),
            [Capability::SysAdmin, Capability::Setpcap]
        );

        let mut nnp = ProcessBuilder::default()
            .no_new_privileges(true)
            .build()
            .unwrap();
        assert_eq!(lend_load_caps(&mut nnp), Lent::default());
    }

    fn with_profile(seccomp: Option<LinuxSeccomp>) -> Spec {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_seccomp(seccomp);
        spec.set_linux(Some(linux));
        spec
    }

    fn profile() -> LinuxSeccomp {
        crate::seccomp::default_profile()
            .to_oci(&docker_caps(), &crate::seccomp::Host::current())
            .unwrap()
    }

    #[test]
    fn the_spec_has_no_profile_an_absolute_root_and_the_record() {
        let spec = with_profile(Some(profile()));
        let dir = Path::new("/bundle");
        let p = prepare(&spec, dir).unwrap();
        assert!(p.spec.linux().as_ref().unwrap().seccomp().is_none());
        assert_eq!(p.spec.root().as_ref().unwrap().path(), &dir.join("rootfs"));
        assert_eq!(p.record.profile, profile_digest(&p.seccomp).unwrap());
        assert_eq!(
            &p.seccomp,
            spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap()
        );
        let json = serde_json::to_vec(&p.spec).unwrap();
        assert_eq!(record_of(&json), Some(p.record.clone()));
        let plain = peek(&serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!((plain.record, plain.seccomp), (None, true));
        let none = peek(&serde_json::to_vec(&with_profile(None)).unwrap()).unwrap();
        assert_eq!((none.record, none.seccomp), (None, false));
        assert_eq!(record_of(b"{not json"), None);
    }

    #[test]
    fn a_profile_is_kept_once_and_checked_against_its_digest() {
        let root = std::env::temp_dir().join(format!("berth-core-prof-{}", std::process::id()));
        let seccomp = profile();
        let digest = profile_digest(&seccomp).unwrap();
        save_profile(&root, &digest, &seccomp).unwrap();
        save_profile(&root, &digest, &seccomp).unwrap();
        assert_eq!(load_profile(&root, &digest).unwrap(), seccomp);
        // Another profile under this digest's name is refused.
        let mut other = seccomp.clone();
        other.set_default_errno_ret(Some(13));
        std::fs::write(
            profile_path(&root, &digest),
            serde_json::to_vec(&other).unwrap(),
        )
        .unwrap();
        assert!(load_profile(&root, &digest).is_err());
        assert!(load_profile(&root, "0000").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn first_saves_at_once_in_one_process_do_not_collide() {
        // berthd's parallel creates all save the same new profile at once.
        let tmp = berth_testkit::TempDir::new("berth-core-race");
        let seccomp = profile();
        let digest = profile_digest(&seccomp).unwrap();
        for n in 0..20 {
            let root = tmp.path().join(n.to_string());
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| save_profile(&root, &digest, &seccomp)))
                    .collect();
                for w in workers {
                    w.join().unwrap().unwrap();
                }
            });
            assert_eq!(load_profile(&root, &digest).unwrap(), seccomp);
            let names: Vec<_> = std::fs::read_dir(root.join(CACHE_DIR))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
        }
    }

    #[test]
    fn specs_the_backend_leaves_to_libcontainer_get_no_sub_bundle() {
        let dir = Path::new("/nonexistent");
        assert!(prepare(&with_profile(None), dir).is_none());
        let mut hooks = with_profile(Some(profile()));
        hooks.set_hooks(Some(Default::default()));
        assert!(prepare(&hooks, dir).is_none());
        let mut listener = profile();
        listener.set_listener_path(Some("/run/listener.sock".into()));
        assert!(!handles(&listener));
        assert!(prepare(&with_profile(Some(listener)), dir).is_none());
    }

    #[test]
    fn a_changed_profile_has_another_digest() {
        let a = profile();
        let mut b = a.clone();
        b.set_default_errno_ret(Some(13));
        assert_eq!(profile_digest(&a).unwrap(), profile_digest(&a).unwrap());
        assert_ne!(profile_digest(&a).unwrap(), profile_digest(&b).unwrap());
    }
}
