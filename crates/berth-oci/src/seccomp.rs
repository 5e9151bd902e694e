//! The container's seccomp filter, compiled once per profile rather than once
//! per container (the embedded backend only).
//!
//! Why: libcontainer's init builds the filter with libseccomp for every
//! container, and with the default profile's ~350 rules on x86_64 + x86 that
//! is ~4.7 ms of CPU on every start. The BPF program depends only on the
//! profile (and the libseccomp version and the architecture), so the create
//! helper compiles it once, from the same rules libcontainer would add (laid
//! out as a binary tree, which the kernel loads in half the time:
//! [`compile`]), exports it to `<runtime root>/.seccomp/<key>.bpf`, and
//! every later container with the same profile pays one file read.
//!
//! How the filter reaches the container: libcontainer is handed a spec
//! without `linux.seccomp` ([`berth_core::embedded`]), and a wrapping
//! [`Executor`] loads the cached program in the init after libcontainer has
//! set the final uid/gid and capabilities, just before the init waits for
//! `start` (where libcontainer would load its own). Loading a filter
//! without `no_new_privs` needs `CAP_SYS_ADMIN`, so that spec's process is
//! also lent `CAP_SYS_ADMIN` (and `CAP_SETPCAP`, to drop from the bounding
//! set) when the container lacks them; the executor drops exactly those
//! again: from the bounding set before the filter is loaded, from the
//! effective and permitted sets (`capset`) after it.
//!
//! Who writes that spec: berthd, as the bundle's `config.json`, with the
//! record of the filter in an annotation and the profile kept once under
//! the runtime root; the create helper (a cold, freshly forked process)
//! then reads the record and the cached program and nothing else. A bundle
//! that comes with a `linux.seccomp` (any other writer) gets a sub-bundle,
//! `<bundle>/embedded/config.json`, from the helper ([`prepare`]).
//!
//! `berth exec` gets the same executor with the container's cached program
//! (named by the record in libcontainer's bundle), which libcontainer 0.7
//! alone does not do: its exec'd processes run without the container's
//! filter.
//!
//! Profiles this does not handle keep libcontainer's own path
//! ([`embedded::handles`]: notify rules and listeners), as do bundles with
//! hooks (a hook reads the bundle from the state, and must see the real one).

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use berth_core::embedded::{self, Lent, CACHE_DIR, SUB_BUNDLE};

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, Process, Spec,
};
use sha2::{Digest, Sha256};

use crate::sys;

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;
/// One `struct sock_filter`.
const INSN_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("seccomp: {what}: {source}")]
    Libseccomp {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("seccomp: {0}")]
    Invalid(String),
}

fn scmp(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> FilterError {
    move |source| FilterError::Libseccomp {
        what: what.into(),
        source,
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FilterError + '_ {
    move |source| FilterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// An OCI action as libcontainer 0.7 maps it: `errnoRet` defaults to EPERM,
/// `SCMP_ACT_KILL` kills the thread, `SCMP_ACT_TRACE` takes the errno as
/// its message.
fn action(a: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction, FilterError> {
    let errno = errno_ret.map_or(libc::EPERM, |e| e as i32);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno)
                .map_err(|_| FilterError::Invalid(format!("trace errno {errno} out of range")))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
    })
}

/// A comparison as libcontainer 0.7 builds it; for `SCMP_CMP_MASKED_EQ` it
/// passes `valueTwo` as libseccomp's mask and `value` as the datum.
fn compare(index: u32, op: LinuxSeccompOperator, value: u64, two: Option<u64>) -> ScmpArgCompare {
    let op = match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(two.unwrap_or(0)),
    };
    ScmpArgCompare::new(index, op, value)
}

/// Build the filter libcontainer 0.7 would build for `seccomp`, in the same
/// order of libseccomp calls, so that the program is the same one.
pub(crate) fn build(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext, FilterError> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(scmp("new filter"))?;
    for flag in seccomp.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        }
        .map_err(scmp(format!("flag {flag:?}")))?;
    }
    for a in seccomp.architectures().iter().flatten() {
        ctx.add_arch(arch(*a))
            .map_err(scmp(format!("architecture {a:?}")))?;
    }
    // Never let libseccomp set no_new_privs: the spec decides that.
    ctx.set_ctl_nnp(false).map_err(scmp("nnp attribute"))?;
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        // libseccomp refuses a rule whose action is the default one; such a
        // rule changes nothing.
        if act == default {
            continue;
        }
        for name in rule.names() {
            // A name this libseccomp does not know is a syscall the kernel
            // cannot have either: skipped, as libcontainer does.
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let Some(args) = rule.args() else {
                ctx.add_rule(act, nr)
                    .map_err(scmp(format!("rule for {name}")))?;
                continue;
            };
            let cmps: Vec<ScmpArgCompare> = args
                .iter()
                .map(|a| compare(a.index() as u32, a.op(), a.value(), a.value_two()))
                .collect();
            let mut seen = HashSet::new();
            let repeated = args.iter().any(|a| !seen.insert(a.index()));
            if repeated {
                // libseccomp compares an argument once per rule: a rule per
                // comparison, as runc and libcontainer do.
                for c in &cmps {
                    ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                        .map_err(scmp(format!("rule for {name}")))?;
                }
            } else {
                ctx.add_rule_conditional(act, nr, &cmps)
                    .map_err(scmp(format!("rule for {name}")))?;
            }
        }
    }
    Ok(ctx)
}

/// libseccomp's optimization level for the programs berth loads: 2 lays the
/// syscall numbers out as a binary tree instead of one long list.
const OPTIMIZE: u32 = 2;

/// The program berth loads for `seccomp`: [`build`]'s rules, laid out as a
/// binary tree of syscall numbers (libseccomp's `SCMP_FLTATR_CTL_OPTIMIZE`
/// level 2, libseccomp 2.5 and later).
///
/// Why: the kernel runs a new filter once for every syscall number when it
/// is loaded, to build its cache of syscalls that are always allowed; a
/// list of ~350 numbers costs that walk ~350 comparisons each, a tree ~9.
/// With berth's default profile the load went from 0.62 to 0.28 ms and the
/// fork + exec of a filtered `/bin/true` from 0.77 to 0.39 ms more than an
/// unfiltered one (`bench/seccomp-floor.py`). Every syscall the cache does
/// not cover (those with argument rules, such as `clone` and `socket`) is
/// decided in as few steps. The rules are the same: a test runs both
/// layouts over every syscall number, architecture and the profile's
/// argument values, and they decide alike. A libseccomp that refuses the
/// level keeps the list (same program as libcontainer's).
fn compile(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext, FilterError> {
    let mut ctx = build(seccomp)?;
    if let Err(e) = ctx.set_ctl_optimize(OPTIMIZE) {
        tracing::debug!(error = %e, "libseccomp has no binary tree layout; the list it is");
    }
    Ok(ctx)
}

/// The cache key of a profile: sha256 of its digest
/// ([`embedded::profile_digest`]), the libseccomp version, the layout and the
/// architecture (all the program depends on).
fn key(profile: &str) -> Result<String, FilterError> {
    let v = ScmpVersion::current().map_err(scmp("libseccomp version"))?;
    let mut h = Sha256::new();
    h.update(profile);
    h.update(format!(
        "\0libseccomp {}.{}.{}\0{}\0optimize {OPTIMIZE}",
        v.major,
        v.minor,
        v.micro,
        std::env::consts::ARCH
    ));
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The cache file of the program for the profile with digest `profile`.
fn cache_file(root: &Path, profile: &str) -> Result<PathBuf, FilterError> {
    Ok(root.join(CACHE_DIR).join(format!("{}.bpf", key(profile)?)))
}

/// A program as the kernel takes it: whole instructions, not empty, within
/// the kernel's limit (a damaged cache file is rebuilt, never loaded).
fn plausible(bpf: &[u8]) -> bool {
    !bpf.is_empty() && bpf.len().is_multiple_of(INSN_BYTES) && bpf.len() / INSN_BYTES <= MAX_INSNS
}

/// The cached program at `path`; `None` when it is not there or damaged.
fn read_cached(path: &Path) -> Result<Option<Vec<u8>>, FilterError> {
    match std::fs::read(path) {
        Ok(bpf) if plausible(&bpf) => Ok(Some(bpf)),
        Ok(_) => {
            tracing::warn!(path = %path.display(), "damaged seccomp cache file, rebuilding");
            Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// The compiled program for `seccomp`: from the cache under `root`, or built,
/// exported and cached (tmp file + rename, so a reader never sees half a
/// program). Returns the cache file and the program.
pub(crate) fn cached(
    root: &Path,
    seccomp: &LinuxSeccomp,
) -> Result<(PathBuf, Vec<u8>), FilterError> {
    let digest = embedded::profile_digest(seccomp)
        .map_err(|e| FilterError::Invalid(format!("serialize the profile: {e}")))?;
    let path = cache_file(root, &digest)?;
    if let Some(bpf) = read_cached(&path)? {
        return Ok((path, bpf));
    }
    let ctx = compile(seccomp)?;
    let dir = root.join(CACHE_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_at(&dir))?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let written = (|| {
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_at(&tmp))?;
        ctx.export_bpf(&file).map_err(scmp("export"))?;
        file.sync_all().map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_at(&path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    let bpf = std::fs::read(&path).map_err(io_at(&path))?;
    if !plausible(&bpf) {
        return Err(FilterError::Invalid(format!(
            "{}: libseccomp exported {} bytes",
            path.display(),
            bpf.len()
        )));
    }
    Ok((path, bpf))
}

/// The capability crate's name for one [`embedded::lend_load_caps`] lends
/// (only these two are ever lent).
fn to_caps(c: Capability) -> Result<caps::Capability, String> {
    match c {
        Capability::SysAdmin => Ok(caps::Capability::CAP_SYS_ADMIN),
        Capability::Setpcap => Ok(caps::Capability::CAP_SETPCAP),
        other => Err(format!("{other} is not a capability berth lends")),
    }
}

/// The workload executor: libcontainer's default one, with the cached filter
/// loaded (and the lent capabilities dropped) once libcontainer has set up
/// the process, before it waits for `start`.
#[derive(Clone)]
pub(crate) struct FilterExecutor {
    bpf: Vec<u8>,
    flags: u32,
    lent: Lent,
}

impl FilterExecutor {
    pub(crate) fn new(bpf: Vec<u8>, flags: u32, lent: Lent) -> Self {
        Self { bpf, flags, lent }
    }

    /// Runs in the container's init (or exec'd process), single-threaded,
    /// with its final uid/gid and capabilities (plus the lent ones).
    fn install(&self) -> Result<(), String> {
        // The bounding set limits what a process can gain, not what it has:
        // drop from it first (CAP_SETPCAP is still effective), so that only
        // capset runs under the filter. CAP_SETPCAP itself goes last.
        let mut bounding = self.lent.bounding.clone();
        bounding.sort_by_key(|c| *c == Capability::Setpcap);
        for c in &bounding {
            caps::drop(None, caps::CapSet::Bounding, to_caps(*c)?)
                .map_err(|e| format!("drop {c} from the bounding set: {e}"))?;
        }
        sys::seccomp_set_mode_filter(self.flags, &self.bpf)
            .map_err(|e| format!("seccomp: load the filter: {e}"))?;
        // Effective before permitted: the kernel wants E within P.
        for (set, list) in [
            (caps::CapSet::Effective, &self.lent.effective),
            (caps::CapSet::Permitted, &self.lent.permitted),
        ] {
            if list.is_empty() {
                continue;
            }
            let mut now = caps::read(None, set).map_err(|e| format!("read {set:?}: {e}"))?;
            for c in list {
                now.remove(&to_caps(*c)?);
            }
            caps::set(None, set, &now).map_err(|e| {
                format!(
                    "drop {:?} from {set:?} (does the seccomp profile refuse capset?): {e}",
                    self.lent.all()
                )
            })?;
        }
        Ok(())
    }
}

impl Executor for FilterExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }

    fn setup_envs(
        &self,
        envs: std::collections::HashMap<String, String>,
    ) -> Result<(), ExecutorSetEnvsError> {
        DefaultExecutor {}.setup_envs(envs)?;
        self.install().map_err(ExecutorSetEnvsError::Other)
    }
}

/// What `create` hands libcontainer instead of the bundle.
pub(crate) struct Prepared {
    /// The bundle libcontainer is given: the bundle itself when berthd
    /// prepared its spec, else the sub-bundle made here.
    pub bundle: PathBuf,
    pub executor: FilterExecutor,
}

/// The compiled program of the profile a record names: from the cache, or
/// compiled from the profile kept under `root`.
fn program(root: &Path, record: &embedded::Record) -> Result<Vec<u8>, FilterError> {
    if let Some(bpf) = read_cached(&cache_file(root, &record.profile)?)? {
        return Ok(bpf);
    }
    let path = embedded::profile_path(root, &record.profile);
    let seccomp = embedded::load_profile(root, &record.profile).map_err(io_at(&path))?;
    Ok(cached(root, &seccomp)?.1)
}

/// For a bundle whose filter this module loads: the bundle libcontainer is
/// given and the executor with the compiled program. A spec berthd prepared
/// (its record in the annotation) is used as it is: reading the record and
/// the cached program is all this does. A spec with a profile gets a
/// sub-bundle, made here. `None` leaves the container to libcontainer as it
/// is (no seccomp, a profile it must handle, or a bundle it cannot read:
/// libcontainer reports that itself).
pub(crate) fn prepare(root: &Path, bundle: &Path) -> Result<Option<Prepared>, FilterError> {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return Ok(None);
    };
    match embedded::peek(&text) {
        Some(embedded::Peek {
            record: Some(record),
            ..
        }) => {
            let bpf = program(root, &record)?;
            return Ok(Some(Prepared {
                bundle: bundle.to_path_buf(),
                executor: FilterExecutor::new(bpf, record.flags, record.lent),
            }));
        }
        // No filter at all (unconfined, privileged): nothing to parse.
        Some(embedded::Peek { seccomp: false, .. }) => return Ok(None),
        _ => {}
    }
    let Ok(spec) = serde_json::from_slice::<Spec>(&text) else {
        return Ok(None);
    };
    let Some(prepared) = embedded::prepare(&spec, bundle) else {
        return Ok(None);
    };
    let (_, bpf) = cached(root, &prepared.seccomp)?;
    // Kept like berthd's, so that an exec can compile it again too.
    let kept = embedded::profile_path(root, &prepared.record.profile);
    embedded::save_profile(root, &prepared.record.profile, &prepared.seccomp)
        .map_err(io_at(&kept))?;
    let sub = bundle.join(SUB_BUNDLE);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&sub)
        .map_err(io_at(&sub))?;
    let config = sub.join("config.json");
    embedded::write_json(&config, &prepared.spec).map_err(io_at(&config))?;
    Ok(Some(Prepared {
        bundle: sub,
        executor: FilterExecutor::new(bpf, prepared.record.flags, prepared.record.lent),
    }))
}

/// For `exec` in the container whose libcontainer bundle is `bundle`: the
/// executor that loads the container's filter (kept under `root`) into
/// `process`, whose capabilities are lent what loading it needs. `None` when
/// the container's spec has no record (no seccomp, or libcontainer's own
/// path).
pub(crate) fn for_exec(
    root: &Path,
    bundle: &Path,
    process: &mut Process,
) -> Result<Option<FilterExecutor>, FilterError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(io_at(&path))?;
    let Some(record) = embedded::record_of(&text) else {
        return Ok(None);
    };
    // Never run the process without its filter: a program that cannot be
    // had is an error, not a reason to go without.
    let bpf = program(root, &record)?;
    let lent = embedded::lend_load_caps(process);
    Ok(Some(FilterExecutor::new(bpf, record.flags, lent)))
}

/// Remove the sub-bundle a container's delete leaves (only one [`prepare`]
/// made: named so, its spec carrying the record), and the directory if that
/// leaves it empty. A bundle berthd prepared is berthd's to remove.
pub(crate) fn remove_sub_bundle(bundle: &Path) {
    if bundle.file_name() != Some(std::ffi::OsStr::new(SUB_BUNDLE)) {
        return;
    }
    let config = bundle.join("config.json");
    let ours = std::fs::read(&config).is_ok_and(|t| embedded::record_of(&t).is_some());
    if ours {
        let _ = std::fs::remove_file(&config);
        let _ = std::fs::remove_dir(bundle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

    fn docker_caps() -> HashSet<Capability> {
        berth_core::spec::DEFAULT_CAPABILITIES.into_iter().collect()
    }

    /// berth's default profile as a default container gets it, and small
    /// profiles that exercise every branch of the translation.
    fn profiles() -> Vec<(&'static str, LinuxSeccomp)> {
        let host = berth_core::seccomp::Host::current();
        let default = berth_core::seccomp::default_profile()
            .to_oci(&docker_caps(), &host)
            .unwrap();
        let mut host_nox32 = host.clone();
        host_nox32.x32_abi = false;
        let default_nox32 = berth_core::seccomp::default_profile()
            .to_oci(&docker_caps(), &host_nox32)
            .unwrap();
        let arg = |i: usize, op, v: u64, two: Option<u64>| {
            let mut b = LinuxSeccompArgBuilder::default().index(i).op(op).value(v);
            if let Some(t) = two {
                b = b.value_two(t);
            }
            b.build().unwrap()
        };
        let small = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .default_errno_ret(38u32)
            .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86])
            .flags(vec![LinuxSeccompFilterFlag::SeccompFilterFlagLog])
            .syscalls(vec![
                LinuxSyscallBuilder::default()
                    .names(vec!["read".into(), "write".into(), "no_such_call".into()])
                    .action(LinuxSeccompAction::ScmpActAllow)
                    .build()
                    .unwrap(),
                // Same action as the default: skipped.
                LinuxSyscallBuilder::default()
                    .names(vec!["getpid".into()])
                    .action(LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(38u32)
                    .build()
                    .unwrap(),
                LinuxSyscallBuilder::default()
                    .names(vec!["socket".into()])
                    .action(LinuxSeccompAction::ScmpActAllow)
                    .args(vec![
                        arg(0, LinuxSeccompOperator::ScmpCmpEq, 1, None),
                        arg(1, LinuxSeccompOperator::ScmpCmpNe, 3, None),
                    ])
                    .build()
                    .unwrap(),
                // Two comparisons of one argument: two rules.
                LinuxSyscallBuilder::default()
                    .names(vec!["personality".into()])
                    .action(LinuxSeccompAction::ScmpActAllow)
                    .args(vec![
                        arg(0, LinuxSeccompOperator::ScmpCmpGe, 8, None),
                        arg(0, LinuxSeccompOperator::ScmpCmpLt, 0x20008, None),
                    ])
                    .build()
                    .unwrap(),
                LinuxSyscallBuilder::default()
                    .names(vec!["clone".into()])
                    .action(LinuxSeccompAction::ScmpActTrap)
                    .args(vec![arg(
                        0,
                        LinuxSeccompOperator::ScmpCmpMaskedEq,
                        0x7e02_0000,
                        Some(0),
                    )])
                    .build()
                    .unwrap(),
                LinuxSyscallBuilder::default()
                    .names(vec!["mkdir".into()])
                    .action(LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(13u32)
                    .build()
                    .unwrap(),
                LinuxSyscallBuilder::default()
                    .names(vec!["ptrace".into()])
                    .action(LinuxSeccompAction::ScmpActKillProcess)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        vec![
            ("default", default),
            ("default without x32", default_nox32),
            ("small", small),
        ]
    }

    /// Fork a child that stops itself under the filter `load` installs, and
    /// read that filter back from the kernel (PTRACE_SECCOMP_GET_FILTER).
    fn loaded_by(load: impl FnOnce() -> bool) -> Vec<u8> {
        match sys::fork().unwrap() {
            sys::Forked::Child => {
                // Only async-signal-safe-ish work that cannot unwind here:
                // traceme, the load, then stop for the parent to look.
                let ok = sys::trace_me().is_ok()
                    && nix::sys::prctl::set_no_new_privs().is_ok()
                    && load();
                if ok {
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
                }
                sys::exit_now(if ok { 0 } else { 1 })
            }
            sys::Forked::Parent(pid) => {
                let status = nix::sys::wait::waitpid(pid, None).unwrap();
                let got = match status {
                    nix::sys::wait::WaitStatus::Stopped(_, _) => sys::seccomp_filter_of(pid),
                    other => Err(io::Error::other(format!("child: {other:?}"))),
                };
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
                got.unwrap()
            }
        }
    }

    /// The program `ctx` exports.
    fn exported(ctx: &ScmpFilterContext, tmp: &Path) -> Vec<u8> {
        let file = File::create(tmp).unwrap();
        ctx.export_bpf(&file).unwrap();
        drop(file);
        let bpf = std::fs::read(tmp).unwrap();
        std::fs::remove_file(tmp).unwrap();
        bpf
    }

    /// berth's rules are libcontainer's: [`build`]'s list is, byte for byte,
    /// the program libcontainer loads; and the kernel holds exactly the
    /// cached program (the tree) after berth's load.
    #[test]
    fn the_rules_are_libcontainers_and_the_kernel_holds_the_cached_program() {
        let root = std::env::temp_dir().join(format!("berth-oci-seccomp-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        for (name, profile) in profiles() {
            assert!(embedded::handles(&profile), "{name}");
            let (path, bpf) = cached(&root, &profile).unwrap();
            assert!(path.starts_with(root.join(CACHE_DIR)), "{name}");
            // The second time it is the cache's.
            assert_eq!(
                cached(&root, &profile).unwrap(),
                (path.clone(), bpf.clone())
            );
            let tree = exported(&compile(&profile).unwrap(), &root.join("tree"));
            assert!(tree == bpf, "{name}: the cache holds the tree");

            let list = exported(&build(&profile).unwrap(), &root.join("list"));
            let theirs = loaded_by(|| libcontainer::seccomp::initialize_seccomp(&profile).is_ok());
            let ours_list = loaded_by(|| {
                sys::seccomp_set_mode_filter(embedded::load_flags(&profile), &list).is_ok()
            });
            assert!(
                theirs == ours_list,
                "{name}: libcontainer's program differs from berth's rules"
            );
            let ours = loaded_by(|| {
                sys::seccomp_set_mode_filter(embedded::load_flags(&profile), &bpf).is_ok()
            });
            assert_eq!(ours.len(), bpf.len(), "{name}");
            assert!(ours == bpf, "{name}: the kernel holds what berth exported");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A classic BPF machine as seccomp runs one: `data` is the 64-byte
    /// `struct seccomp_data` (nr, arch, instruction pointer, six args).
    fn run_bpf(prog: &[u8], data: &[u8; 64]) -> u32 {
        let insn = |pc: usize| {
            let b = &prog[pc * INSN_BYTES..(pc + 1) * INSN_BYTES];
            (
                u16::from_ne_bytes([b[0], b[1]]),
                b[2] as usize,
                b[3] as usize,
                u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            )
        };
        let word = |k: u32| {
            let k = k as usize;
            u32::from_ne_bytes(data[k..k + 4].try_into().unwrap())
        };
        let (mut a, mut x, mut mem, mut pc) = (0u32, 0u32, [0u32; 16], 0usize);
        loop {
            let (code, jt, jf, k) = insn(pc);
            pc += 1;
            let src = if code & 0x08 != 0 { x } else { k };
            match code & 0x07 {
                // BPF_LD: W|ABS, IMM, MEM, LEN
                0x00 => match code & 0xe0 {
                    0x20 => a = word(k),
                    0x00 => a = k,
                    0x60 => a = mem[k as usize],
                    0x80 => a = 64,
                    m => panic!("ld mode {m:#x}"),
                },
                0x01 => match code & 0xe0 {
                    0x00 => x = k,
                    0x60 => x = mem[k as usize],
                    0x80 => x = 64,
                    m => panic!("ldx mode {m:#x}"),
                },
                0x02 => mem[k as usize] = a,
                0x03 => mem[k as usize] = x,
                0x04 => {
                    a = match code & 0xf0 {
                        0x00 => a.wrapping_add(src),
                        0x10 => a.wrapping_sub(src),
                        0x20 => a.wrapping_mul(src),
                        0x30 => a / src,
                        0x40 => a | src,
                        0x50 => a & src,
                        0x60 => a.wrapping_shl(src),
                        0x70 => a.wrapping_shr(src),
                        0x80 => a.wrapping_neg(),
                        0x90 => a % src,
                        0xa0 => a ^ src,
                        op => panic!("alu op {op:#x}"),
                    }
                }
                0x05 => {
                    let taken = match code & 0xf0 {
                        0x00 => {
                            pc += k as usize;
                            continue;
                        }
                        0x10 => a == src,
                        0x20 => a > src,
                        0x30 => a >= src,
                        0x40 => a & src != 0,
                        op => panic!("jmp op {op:#x}"),
                    };
                    pc += if taken { jt } else { jf };
                }
                0x06 => return if code & 0x18 == 0x10 { a } else { k },
                _ => {
                    if code & 0xf8 == 0x80 {
                        a = x; // TXA
                    } else {
                        x = a; // TAX
                    }
                }
            }
        }
    }

    /// The tree and the list decide alike: every syscall number (native and
    /// x32) of every architecture the profile names and one it does not,
    /// with no arguments, with all of them set, and with each argument set
    /// in turn to each value (and its neighbours) the profile compares.
    #[test]
    fn the_tree_decides_as_the_list_does() {
        let root =
            std::env::temp_dir().join(format!("berth-oci-seccomp-tree-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        const ARCHES: [u32; 3] = [0xc000_003e, 0x4000_0003, 0xc000_00b7];
        for (name, profile) in profiles() {
            let list = exported(&build(&profile).unwrap(), &root.join("list"));
            let tree = exported(&compile(&profile).unwrap(), &root.join("tree"));
            assert_ne!(list, tree, "{name}: the tree is another layout");
            let mut values: Vec<u64> = vec![0, 1, u64::MAX, 0xffff_ffff, 0x1_0000_0000];
            for rule in profile.syscalls().iter().flatten() {
                for a in rule.args().iter().flatten() {
                    for v in [Some(a.value()), a.value_two()].into_iter().flatten() {
                        values.extend([v, v.wrapping_add(1), v.wrapping_sub(1), !v]);
                    }
                }
            }
            values.sort_unstable();
            values.dedup();
            let mut vectors: Vec<[u64; 6]> = values.iter().map(|v| [*v; 6]).collect();
            for i in 0..6 {
                for v in &values {
                    let mut args = [0u64; 6];
                    args[i] = *v;
                    vectors.push(args);
                }
            }
            let mut checked = 0u64;
            let mut actions = std::collections::BTreeSet::new();
            for arch in ARCHES {
                for nr in (0u32..520).chain((0x4000_0000..0x4000_0220).chain([u32::MAX])) {
                    for args in &vectors {
                        let mut data = [0u8; 64];
                        data[0..4].copy_from_slice(&nr.to_ne_bytes());
                        data[4..8].copy_from_slice(&arch.to_ne_bytes());
                        for (i, v) in args.iter().enumerate() {
                            data[16 + i * 8..24 + i * 8].copy_from_slice(&v.to_ne_bytes());
                        }
                        let (l, t) = (run_bpf(&list, &data), run_bpf(&tree, &data));
                        assert_eq!(
                            l, t,
                            "{name}: arch {arch:#x} nr {nr:#x} args {args:x?}: list {l:#x}, tree {t:#x}"
                        );
                        actions.insert(l);
                        checked += 1;
                    }
                }
            }
            assert!(checked > 100_000, "{name}: {checked} inputs");
            // Allow, the default errno and, in "small", errno 13, trap and
            // kill: the inputs reach every kind of decision.
            let want = if name == "small" { 5 } else { 2 };
            assert!(actions.len() >= want, "{name}: only {actions:x?} decided");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_changed_profile_is_another_file_and_a_damaged_file_is_rebuilt() {
        let root =
            std::env::temp_dir().join(format!("berth-oci-seccomp-key-{}", std::process::id()));
        let mut profiles = profiles().into_iter().map(|(_, p)| p);
        let a = profiles.next().unwrap();
        let mut b = a.clone();
        b.set_default_errno_ret(Some(13));
        let (pa, bpf) = cached(&root, &a).unwrap();
        let (pb, _) = cached(&root, &b).unwrap();
        assert_ne!(pa, pb);
        std::fs::write(&pa, b"torn").unwrap();
        assert_eq!(cached(&root, &a).unwrap(), (pa, bpf));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// What a container whose profile is cached pays in the create helper,
    /// outside the container's cgroup: the cache lookup alone, and all of
    /// `prepare` (read the spec, key, read the program, write the
    /// sub-bundle) for a spec with berth's default profile:
    /// `cargo test --release -p berth-oci cache_hit_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cache_hit_cost() {
        let root =
            std::env::temp_dir().join(format!("berth-oci-seccomp-cost-{}", std::process::id()));
        let profile = profiles().remove(1).1;
        let median = |f: &mut dyn FnMut()| {
            let mut times: Vec<std::time::Duration> = (0..200)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed()
                })
                .collect();
            times.sort();
            (times[100], times[180])
        };
        cached(&root, &profile).unwrap();
        let (m, p90) = median(&mut || {
            cached(&root, &profile).unwrap();
        });
        println!("cache lookup: median {m:?}, p90 {p90:?}");

        let bundle = root.join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_seccomp(Some(profile));
        spec.set_linux(Some(linux));
        spec.save(bundle.join("config.json")).unwrap();
        let (m, p90) = median(&mut || {
            assert!(prepare(&root, &bundle).unwrap().is_some());
        });
        println!("prepare, a plain bundle (makes the sub-bundle): median {m:?}, p90 {p90:?}");
        let (m, p90) = median(&mut || {
            Spec::load(bundle.join("config.json")).unwrap();
        });
        println!("  of which reading the spec: median {m:?}, p90 {p90:?}");
        let sub = bundle.join(SUB_BUNDLE).join("config.json");
        let (m, p90) = median(&mut || {
            embedded::write_json(&sub, &spec).unwrap();
        });
        println!("  writing the sub-bundle's spec (fresh file): median {m:?}, p90 {p90:?}");
        let prepared = embedded::prepare(&spec, &bundle).unwrap();
        embedded::write_json(&bundle.join("config.json"), &prepared.spec).unwrap();
        let (m, p90) = median(&mut || {
            assert!(prepare(&root, &bundle).unwrap().is_some());
        });
        println!("prepare, a bundle berthd prepared: median {m:?}, p90 {p90:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Both ways a bundle comes: prepared by berthd (used as it is) and
    /// plain, with a profile (a sub-bundle is made, and removed by delete);
    /// a bundle without a filter is libcontainer's as it is.
    #[test]
    fn a_prepared_bundle_is_used_as_it_is_and_a_plain_one_gets_a_sub_bundle() {
        let root =
            std::env::temp_dir().join(format!("berth-oci-seccomp-ways-{}", std::process::id()));
        struct Gone(PathBuf);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _gone = Gone(root.clone());
        let bundle = root.join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let profile = profiles().remove(2).1;
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_seccomp(Some(profile.clone()));
        spec.set_linux(Some(linux));
        let (_, program) = cached(&root, &profile).unwrap();

        // Plain: the sub-bundle, with the record; the profile kept.
        spec.save(bundle.join("config.json")).unwrap();
        let p = prepare(&root, &bundle).unwrap().unwrap();
        assert_eq!(p.bundle, bundle.join(SUB_BUNDLE));
        assert_eq!(p.executor.bpf, program);
        let text = std::fs::read(p.bundle.join("config.json")).unwrap();
        let record = embedded::record_of(&text).unwrap();
        assert_eq!(
            embedded::load_profile(&root, &record.profile).unwrap(),
            profile
        );
        let mut process = spec.process().clone().unwrap();
        let exec = for_exec(&root, &p.bundle, &mut process).unwrap().unwrap();
        assert_eq!(exec.bpf, program);
        remove_sub_bundle(&p.bundle);
        assert!(!p.bundle.exists());

        // Prepared by berthd, and its program not cached: compiled from the
        // profile kept under the root.
        let prepared = embedded::prepare(&spec, &bundle).unwrap();
        embedded::write_json(&bundle.join("config.json"), &prepared.spec).unwrap();
        for f in std::fs::read_dir(root.join(CACHE_DIR)).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "bpf") {
                std::fs::remove_file(f).unwrap();
            }
        }
        let p = prepare(&root, &bundle).unwrap().unwrap();
        assert_eq!(p.bundle, bundle);
        assert_eq!(p.executor.bpf, program);
        assert_eq!(p.executor.lent, prepared.record.lent);
        remove_sub_bundle(&p.bundle);
        assert!(bundle.join("config.json").exists());

        // No filter: libcontainer's, as it is.
        let mut none = spec.clone();
        none.linux_mut().as_mut().unwrap().set_seccomp(None);
        embedded::write_json(&bundle.join("config.json"), &none).unwrap();
        assert!(prepare(&root, &bundle).unwrap().is_none());
        let mut process = none.process().clone().unwrap();
        assert!(for_exec(&root, &bundle, &mut process).unwrap().is_none());
    }

    #[test]
    fn notify_profiles_stay_with_libcontainer() {
        let notify = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![LinuxSyscallBuilder::default()
                .names(vec!["mkdir".into()])
                .action(LinuxSeccompAction::ScmpActNotify)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        assert!(!embedded::handles(&notify));
        let mut listener = profiles().remove(2).1;
        listener.set_listener_path(Some("/run/listener.sock".into()));
        assert!(!embedded::handles(&listener));
    }
}
