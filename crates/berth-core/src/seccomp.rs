//! Seccomp profiles in Docker's format, translated into the OCI spec's
//! `linux.seccomp` for one container.
//!
//! A profile (Docker's `profiles/seccomp` JSON format) is a default action
//! plus syscall rules; a rule may carry conditions that are resolved here,
//! once, for the container being created, so that the runtime (libcontainer
//! or runc) receives a plain OCI filter:
//!
//! * `includes.arches` / `excludes.arches`: the host's architecture, by
//!   Docker's names (`amd64`, `arm64`, `x86`, `arm`, ...);
//! * `includes.caps` / `excludes.caps`: capabilities in the container's
//!   *bounding* set (all must be there for `includes`; any one present
//!   removes the rule for `excludes`), as Docker does;
//! * `includes.minKernel` / `excludes.minKernel`: the host kernel version.
//!
//! `archMap` picks the host's entry: its architecture and sub-architectures
//! become the filter's `architectures`. berth's default profile
//! ([`default_profile`], the data file `seccomp/default.json`) has the
//! semantics of Docker's default; `docs/security.md` explains it.

use std::collections::HashSet;
use std::sync::OnceLock;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSyscall,
};
use serde::Deserialize;

mod order;

/// berth's default profile, as shipped (Docker's format).
pub const DEFAULT_PROFILE_JSON: &str = include_str!("seccomp/default.json");

/// Largest profile accepted: Docker's default is about 20 KB; anything far
/// bigger is a mistake or an attack on the daemon's memory.
pub const MAX_PROFILE_BYTES: usize = 1 << 20;
/// Most rules, names per profile, and argument conditions per rule.
const MAX_RULES: usize = 4096;
const MAX_NAMES: usize = 16384;
const MAX_ARGS: usize = 6;

/// Why a profile was refused. Messages are one line and say what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    #[error("seccomp profile is not valid JSON in Docker's format: {0}")]
    Parse(String),
    #[error("seccomp profile is {0} bytes: the limit is 1 MiB")]
    TooBig(usize),
    #[error("seccomp profile is invalid: {0}")]
    Invalid(String),
}

/// A profile in Docker's format (the fields berth understands; others, such
/// as `comment`, are ignored as Docker ignores them).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// Explicit architectures; exclusive with `arch_map`.
    #[serde(default)]
    pub architectures: Option<Vec<Arch>>,
    #[serde(default)]
    pub arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    pub flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    pub syscalls: Option<Vec<Rule>>,
}

/// One `archMap` entry: a native architecture and the ones it also runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Option<Vec<Arch>>,
}

/// One syscall rule, possibly conditional.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The old single-name form; exclusive with `names`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub names: Option<Vec<String>>,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    pub includes: Option<Filter>,
    #[serde(default)]
    pub excludes: Option<Filter>,
}

/// The conditions of a rule.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// What a profile's conditions are resolved against: the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Docker's name for the architecture (`amd64`, `arm64`, ...).
    pub arch: String,
    /// Kernel version (major, minor).
    pub kernel: (u32, u32),
    /// The kernel runs x32 syscalls. When it does not, the x32
    /// sub-architecture is left out of the filter: no such syscall can run
    /// anyway (it would be killed by the filter's bad-arch action instead
    /// of failing with ENOSYS), and with libseccomp 2.5 it is most of the
    /// filter's build time (about 20 of 24 ms here).
    pub x32_abi: bool,
}

impl Host {
    /// This machine: the architecture berth was built for and the running
    /// kernel's release (`/proc/sys/kernel/osrelease`; `(0, 0)` if it
    /// cannot be read, so `minKernel` rules are left out rather than
    /// wrongly included).
    pub fn current() -> Host {
        static HOST: OnceLock<Host> = OnceLock::new();
        HOST.get_or_init(|| {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            Host {
                arch: docker_arch(std::env::consts::ARCH).to_string(),
                kernel: parse_kernel(release.trim()).unwrap_or((0, 0)),
                // Unknown here (no syscall probe in this crate): keep
                // filtering x32; berthd probes and clears it.
                x32_abi: true,
            }
        })
        .clone()
    }
}

/// Rust's `target_arch` names → Docker's (Go's) names used in profiles.
fn docker_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The seccomp architecture of a Docker architecture name, for `archMap`.
fn native_scmp_arch(arch: &str) -> Option<Arch> {
    Some(match arch {
        "amd64" => Arch::ScmpArchX86_64,
        "x86" => Arch::ScmpArchX86,
        "arm64" => Arch::ScmpArchAarch64,
        "arm" => Arch::ScmpArchArm,
        "ppc64le" => Arch::ScmpArchPpc64le,
        "s390x" => Arch::ScmpArchS390x,
        "riscv64" => Arch::ScmpArchRiscv64,
        "loong64" => Arch::ScmpArchLoongarch64,
        _ => return None,
    })
}

/// `"4.8"`, `"5.10.0-21-amd64"` → (major, minor).
fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| {
        let digits: String = m.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })?;
    Some((major, minor))
}

/// The profile's name for a capability (`CAP_SYS_ADMIN`).
pub fn cap_name(c: Capability) -> String {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::String(s)) => s,
        // Capability serializes as a string; anything else is impossible.
        _ => format!("CAP_{}", c.to_string().to_uppercase()),
    }
}

impl Profile {
    /// Parses and checks a profile (size, shape, conflicting fields).
    pub fn parse(json: &str) -> Result<Profile, SeccompError> {
        if json.len() > MAX_PROFILE_BYTES {
            return Err(SeccompError::TooBig(json.len()));
        }
        let p: Profile = serde_json::from_str(json).map_err(|e| {
            // serde quotes the offending text: keep the message one short line.
            let m: String = e
                .to_string()
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(200)
                .collect();
            SeccompError::Parse(m)
        })?;
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), SeccompError> {
        let invalid = |m: String| Err(SeccompError::Invalid(m));
        if self.architectures.as_ref().is_some_and(|a| !a.is_empty())
            && self.arch_map.as_ref().is_some_and(|a| !a.is_empty())
        {
            return invalid(
                "both \"architectures\" and \"archMap\" are given: use one of them".into(),
            );
        }
        if self.default_action == LinuxSeccompAction::ScmpActNotify {
            return invalid("SCMP_ACT_NOTIFY cannot be the default action".into());
        }
        let rules = self.syscalls.as_deref().unwrap_or_default();
        if rules.len() > MAX_RULES {
            return invalid(format!(
                "{} syscall rules: at most {MAX_RULES}",
                rules.len()
            ));
        }
        let mut names = 0usize;
        for (i, r) in rules.iter().enumerate() {
            if r.name.is_some() && r.names.as_ref().is_some_and(|n| !n.is_empty()) {
                return invalid(format!(
                    "syscall rule {i} has both \"name\" and \"names\": use one"
                ));
            }
            if r.action == LinuxSeccompAction::ScmpActNotify {
                return invalid(format!(
                    "syscall rule {i} uses SCMP_ACT_NOTIFY, which berth does not support"
                ));
            }
            let rule_names = r.all_names();
            names += rule_names.len();
            if let Some(bad) = rule_names.iter().find(|n| !valid_syscall_name(n)) {
                return invalid(format!(
                    "syscall rule {i} names {bad:?}: a syscall name is letters, digits and '_'"
                ));
            }
            let args = r.args.as_deref().unwrap_or_default();
            if args.len() > MAX_ARGS {
                return invalid(format!(
                    "syscall rule {i} has {} argument conditions: at most {MAX_ARGS}",
                    args.len()
                ));
            }
            if let Some(a) = args.iter().find(|a| a.index() >= MAX_ARGS) {
                return invalid(format!(
                    "syscall rule {i} tests argument {}: syscalls have arguments 0 to 5",
                    a.index()
                ));
            }
            for f in [&r.includes, &r.excludes].into_iter().flatten() {
                if let Some(k) = &f.min_kernel {
                    if parse_kernel(k).is_none() {
                        return invalid(format!(
                            "syscall rule {i} has minKernel {k:?}: use a version like \"4.8\""
                        ));
                    }
                }
            }
        }
        if names > MAX_NAMES {
            return invalid(format!("{names} syscall names: at most {MAX_NAMES}"));
        }
        Ok(())
    }

    /// The OCI filter for a container whose bounding set is `bounding`, on
    /// `host`. `None` when the profile disables seccomp (Docker's rule: no
    /// default action and no syscalls cannot occur here, since the default
    /// action is required, so this always returns a filter).
    pub fn to_oci(
        &self,
        bounding: &HashSet<Capability>,
        host: &Host,
    ) -> Result<LinuxSeccomp, SeccompError> {
        let caps: HashSet<String> = bounding.iter().map(|c| cap_name(*c)).collect();
        let mut architectures: Vec<Arch> = self.architectures.clone().unwrap_or_default();
        if let (Some(map), Some(native)) = (&self.arch_map, native_scmp_arch(&host.arch)) {
            if let Some(entry) = map.iter().find(|m| m.architecture == native) {
                architectures.push(entry.architecture);
                architectures.extend(entry.sub_architectures.iter().flatten().copied());
            }
        }
        if !host.x32_abi {
            architectures.retain(|a| *a != Arch::ScmpArchX32);
        }
        let mut syscalls = Vec::new();
        for rule in self.syscalls.iter().flatten() {
            if !rule.applies(&caps, host) {
                continue;
            }
            let mut sc = LinuxSyscall::default();
            sc.set_names(rule.all_names());
            sc.set_action(rule.action);
            sc.set_errno_ret(rule.errno_ret);
            sc.set_args(rule.args.clone().filter(|a| !a.is_empty()));
            syscalls.push(sc);
        }
        let syscalls = order_for_libseccomp(syscalls, &host.arch);
        let mut out = LinuxSeccomp::default();
        out.set_default_action(self.default_action);
        out.set_default_errno_ret(self.default_errno_ret);
        out.set_architectures((!architectures.is_empty()).then_some(architectures));
        out.set_flags(self.flags.clone().filter(|f| !f.is_empty()));
        out.set_syscalls(Some(syscalls));
        Ok(out)
    }
}

impl Rule {
    fn all_names(&self) -> Vec<String> {
        match (&self.name, &self.names) {
            (Some(n), _) => vec![n.clone()],
            (None, Some(ns)) => ns.clone(),
            (None, None) => Vec::new(),
        }
    }

    /// Docker's rule selection: any exclude that matches removes the rule,
    /// then every include must match.
    fn applies(&self, caps: &HashSet<String>, host: &Host) -> bool {
        let kernel_at_least = |v: &str| parse_kernel(v).is_some_and(|min| host.kernel >= min);
        if let Some(ex) = &self.excludes {
            if ex.arches.iter().flatten().any(|a| *a == host.arch)
                || ex.caps.iter().flatten().any(|c| caps.contains(c))
                || ex.min_kernel.as_deref().is_some_and(kernel_at_least)
            {
                return false;
            }
        }
        if let Some(inc) = &self.includes {
            if let Some(arches) = inc.arches.as_ref().filter(|a| !a.is_empty()) {
                if !arches.contains(&host.arch) {
                    return false;
                }
            }
            if !inc.caps.iter().flatten().all(|c| caps.contains(c)) {
                return false;
            }
            if let Some(min) = &inc.min_kernel {
                if !kernel_at_least(min) {
                    return false;
                }
            }
        }
        true
    }
}

/// The rules reordered so that libseccomp builds them faster, with the same
/// filter as a result: names by descending syscall number on `arch`, and
/// consecutive names with the same action, errno and arguments back in one
/// rule. Both runtimes add the names one at a time, and libseccomp (2.5 and
/// 2.6) keeps each architecture's syscalls in a list sorted by number that
/// it walks from its head for every name added: in descending order each
/// name is inserted at the head (docs/security.md, "Cost": 0.6 ms of CPU
/// less a container with the default profile). The sort is stable and only
/// moves names past other names, so each syscall's own rules are added in
/// their original order and libseccomp builds the same BPF program. Names
/// without a number (other architectures) keep their order, last; on an
/// architecture without a table the rules are left as they are.
fn order_for_libseccomp(rules: Vec<LinuxSyscall>, arch: &str) -> Vec<LinuxSyscall> {
    let column = match arch {
        "amd64" => |k: &(&str, i32, i32)| k.1,
        "arm64" => |k: &(&str, i32, i32)| k.2,
        _ => return rules,
    };
    let key = |name: &str| {
        order::SYSCALL_KEYS
            .binary_search_by(|k| k.0.cmp(name))
            .map_or(-1, |i| column(&order::SYSCALL_KEYS[i]))
    };
    let mut names: Vec<(i32, usize, &String)> = rules
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.names().iter().map(move |n| (i, n)))
        .map(|(i, n)| (key(n), i, n))
        .collect();
    // Stable: equal keys (one syscall's rules) keep their order.
    names.sort_by_key(|n| std::cmp::Reverse(n.0));
    let same = |a: &LinuxSyscall, b: &LinuxSyscall| {
        a.action() == b.action() && a.errno_ret() == b.errno_ret() && a.args() == b.args()
    };
    // (the rule a run of names comes from, the run's names)
    let mut runs: Vec<(usize, Vec<String>)> = Vec::new();
    for (_, i, name) in names {
        match runs.last_mut() {
            Some((j, run)) if same(&rules[*j], &rules[i]) => run.push(name.clone()),
            _ => runs.push((i, vec![name.clone()])),
        }
    }
    runs.into_iter()
        .map(|(i, run)| {
            let mut r = rules[i].clone();
            r.set_names(run);
            r
        })
        .collect()
}

fn valid_syscall_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// berth's default profile, parsed once.
pub fn default_profile() -> &'static Profile {
    static DEFAULT: OnceLock<Profile> = OnceLock::new();
    DEFAULT.get_or_init(|| match Profile::parse(DEFAULT_PROFILE_JSON) {
        Ok(p) => p,
        // The file is part of the source and tested below; a broken one
        // must not ship, and cannot be recovered from at run time.
        Err(e) => panic!("berth's built-in seccomp profile does not parse: {e}"),
    })
}

/// How many translations of the default profile [`default_filter`] keeps
/// (one per distinct bounding set and host; most machines see a handful).
const DEFAULT_FILTERS_KEPT: usize = 8;

/// The default profile's OCI filter for a container whose bounding set is
/// `bounding`, on `host`: [`Profile::to_oci`], remembered for the last few
/// bounding sets, since nearly every container asks for the same one and the
/// translation is a tenth of a millisecond on the create path.
pub fn default_filter(
    bounding: &HashSet<Capability>,
    host: &Host,
) -> Result<LinuxSeccomp, SeccompError> {
    type Kept = Vec<((Vec<Capability>, Host), LinuxSeccomp)>;
    static KEPT: std::sync::Mutex<Kept> = std::sync::Mutex::new(Vec::new());
    let mut caps: Vec<Capability> = bounding.iter().copied().collect();
    caps.sort_by_key(|c| cap_name(*c));
    let key = (caps, host.clone());
    // A poisoned lock still holds whole entries (each is pushed whole).
    let lock = || KEPT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, f)) = lock().iter().find(|(k, _)| *k == key) {
        return Ok(f.clone());
    }
    // Translated outside the lock: a miss does not hold up other creates.
    let filter = default_profile().to_oci(bounding, host)?;
    let mut kept = lock();
    if kept.len() >= DEFAULT_FILTERS_KEPT {
        kept.remove(0);
    }
    kept.push((key, filter.clone()));
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DEFAULT_CAPABILITIES;

    fn host(arch: &str) -> Host {
        Host {
            arch: arch.into(),
            kernel: (6, 1),
            x32_abi: true,
        }
    }

    fn default_caps() -> HashSet<Capability> {
        DEFAULT_CAPABILITIES.iter().copied().collect()
    }

    /// Every name the filter allows unconditionally, and the rules by name.
    fn allowed(f: &LinuxSeccomp) -> HashSet<String> {
        f.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    fn rules_for<'a>(f: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        f.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    /// (name, action, errno, args) of every name, one per name added.
    type Added = (
        String,
        LinuxSeccompAction,
        Option<u32>,
        Option<Vec<LinuxSeccompArg>>,
    );
    fn added(rules: &[LinuxSyscall]) -> Vec<Added> {
        rules
            .iter()
            .flat_map(|r| {
                r.names()
                    .iter()
                    .map(|n| (n.clone(), r.action(), r.errno_ret(), r.args().clone()))
            })
            .collect()
    }

    fn key(arch: &str, name: &str) -> i32 {
        let k = order::SYSCALL_KEYS
            .iter()
            .find(|k| k.0 == name)
            .map_or((name, -1, -1), |k| *k);
        if arch == "amd64" {
            k.1
        } else {
            k.2
        }
    }

    #[test]
    fn the_remembered_default_filter_is_the_translation() {
        let host = Host::current();
        let mut more = default_caps();
        more.insert(Capability::SysAdmin);
        for _ in 0..2 {
            for caps in [default_caps(), more.clone(), HashSet::new()] {
                assert_eq!(
                    default_filter(&caps, &host).unwrap(),
                    default_profile().to_oci(&caps, &host).unwrap()
                );
            }
        }
        assert_ne!(
            default_filter(&default_caps(), &host).unwrap(),
            default_filter(&more, &host).unwrap()
        );
    }

    #[test]
    fn rules_are_ordered_for_libseccomp_without_changing_what_is_added() {
        assert!(
            order::SYSCALL_KEYS.windows(2).all(|w| w[0].0 < w[1].0),
            "order.rs must be sorted by name for the binary search"
        );
        for arch in ["amd64", "arm64"] {
            let h = host(arch);
            let p = default_profile();
            let f = p.to_oci(&default_caps(), &h).unwrap();
            let ordered = f.syscalls().clone().unwrap();
            // The same rules as the profile gives them, unordered.
            let caps: HashSet<String> = default_caps().iter().map(|c| cap_name(*c)).collect();
            let plain: Vec<LinuxSyscall> = p
                .syscalls
                .iter()
                .flatten()
                .filter(|r| r.applies(&caps, &h))
                .map(|r| {
                    let mut sc = LinuxSyscall::default();
                    sc.set_names(r.all_names());
                    sc.set_action(r.action);
                    sc.set_errno_ret(r.errno_ret);
                    sc.set_args(r.args.clone().filter(|a| !a.is_empty()));
                    sc
                })
                .collect();
            let (a, b) = (added(&ordered), added(&plain));
            let mut sorted_a = a.clone();
            let mut sorted_b = b.clone();
            sorted_a.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
            sorted_b.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
            assert_eq!(
                sorted_a, sorted_b,
                "{arch}: the same names, actions and arguments"
            );
            // Each syscall's own rules in their original order
            // (personality's five values).
            let of = |v: &[Added], n: &str| -> Vec<Added> {
                v.iter().filter(|x| x.0 == n).cloned().collect()
            };
            for n in ["personality", "clone", "socket"] {
                assert_eq!(of(&a, n), of(&b, n), "{arch}: {n}");
            }
            // Descending numbers; names without one last.
            let keys: Vec<i32> = a.iter().map(|x| key(arch, &x.0)).collect();
            assert!(keys.windows(2).all(|w| w[0] >= w[1]), "{arch}: {keys:?}");
            // Runs of like names are one rule again: the big allow-list is
            // a handful of rules, not one per name.
            assert!(ordered.len() < 60, "{arch}: {} rules", ordered.len());
            // Every name is in libseccomp's table (a name it does not know
            // is one order.rs is too old for: regenerate it).
            let unknown: Vec<&String> = a
                .iter()
                .map(|x| &x.0)
                .filter(|n| !order::SYSCALL_KEYS.iter().any(|k| k.0 == n.as_str()))
                .collect();
            assert!(unknown.is_empty(), "{arch}: not in order.rs: {unknown:?}");
        }
        // Elsewhere the profile's order stays.
        let f = default_profile()
            .to_oci(&default_caps(), &host("s390x"))
            .unwrap();
        assert_eq!(f.syscalls().as_ref().unwrap()[0].names()[0], "_llseek");
    }

    #[test]
    fn default_profile_parses_and_denies_with_eperm() {
        let p = default_profile();
        assert_eq!(p.default_action, LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret, Some(1));
        let f = p.to_oci(&default_caps(), &host("amd64")).unwrap();
        assert_eq!(
            f.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        let a = allowed(&f);
        for n in [
            "read",
            "write",
            "execve",
            "openat",
            "futex",
            "arch_prctl",
            "modify_ldt",
        ] {
            assert!(a.contains(n), "{n} should be allowed");
        }
        // Docker's notable refusals.
        for n in [
            "keyctl",
            "add_key",
            "request_key",
            "unshare",
            "mount",
            "setns",
            "bpf",
            "reboot",
            "init_module",
            "kexec_load",
            "userfaultfd",
            "clone3",
            "settimeofday",
            "open_by_handle_at",
            "syslog",
            "iopl",
            "swapon",
            "pivot_root",
        ] {
            assert!(!a.contains(n), "{n} should not be allowed by default");
        }
        // chroot: CAP_SYS_CHROOT is a default capability.
        assert!(a.contains("chroot"));
        // ptrace: kernel >= 4.8.
        assert!(a.contains("ptrace"));
        let old = Host {
            arch: "amd64".into(),
            kernel: (4, 4),
            x32_abi: true,
        };
        // Without the x32 ABI, no x32 sub-architecture.
        let no_x32 = Host {
            x32_abi: false,
            ..host("amd64")
        };
        assert_eq!(
            p.to_oci(&default_caps(), &no_x32)
                .unwrap()
                .architectures()
                .clone()
                .unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]
        );
        assert!(!allowed(&p.to_oci(&default_caps(), &old).unwrap()).contains("ptrace"));
    }

    #[test]
    fn clone_is_restricted_and_clone3_is_enosys_without_sys_admin() {
        let f = default_profile()
            .to_oci(&default_caps(), &host("amd64"))
            .unwrap();
        let clone = rules_for(&f, "clone");
        assert_eq!(clone.len(), 1, "{clone:?}");
        let args = clone[0].args().clone().unwrap();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].index(), 0);
        assert_eq!(args[0].value(), 0x7E02_0000);
        assert_eq!(args[0].value_two(), Some(0));
        let clone3 = rules_for(&f, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));
        // s390x: the flags are argument 1.
        let s = default_profile()
            .to_oci(&default_caps(), &host("s390x"))
            .unwrap();
        let clone = rules_for(&s, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args().clone().unwrap()[0].index(), 1);
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        caps.insert(Capability::SysPtrace);
        caps.insert(Capability::SysTime);
        caps.insert(Capability::SysModule);
        let f = default_profile().to_oci(&caps, &host("amd64")).unwrap();
        let a = allowed(&f);
        for n in [
            "unshare",
            "mount",
            "setns",
            "clone",
            "clone3",
            "bpf",
            "kcmp",
            "pidfd_getfd",
            "clock_settime",
            "init_module",
        ] {
            assert!(a.contains(n), "{n} should be allowed with its capability");
        }
        // No restricted clone and no ENOSYS clone3 once CAP_SYS_ADMIN is there.
        assert!(rules_for(&f, "clone3")
            .iter()
            .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow));
        assert!(rules_for(&f, "clone").iter().all(|r| r.args().is_none()));
        for n in ["reboot", "acct", "iopl", "vhangup", "mbind"] {
            assert!(!a.contains(n), "{n} needs a capability not given");
        }
        // syslog comes with CAP_SYS_ADMIN too, as in Docker.
        assert!(a.contains("syslog"));
        // Dropping CAP_SYS_CHROOT closes chroot.
        let mut fewer = default_caps();
        fewer.remove(&Capability::SysChroot);
        let f = default_profile().to_oci(&fewer, &host("amd64")).unwrap();
        assert!(!allowed(&f).contains("chroot"));
    }

    #[test]
    fn arches_select_their_rules_and_arch_map() {
        let f = default_profile()
            .to_oci(&default_caps(), &host("arm64"))
            .unwrap();
        assert_eq!(
            f.architectures().clone().unwrap(),
            vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
        );
        let a = allowed(&f);
        assert!(a.contains("set_tls") && a.contains("cacheflush"));
        assert!(!a.contains("arch_prctl") && !a.contains("modify_ldt"));
        // An architecture without an archMap entry: libseccomp's native only.
        let f = default_profile()
            .to_oci(&default_caps(), &host("mips"))
            .unwrap();
        assert!(f.architectures().is_none());
    }

    #[test]
    fn personality_and_socket_are_argument_dependent() {
        let f = default_profile()
            .to_oci(&default_caps(), &host("amd64"))
            .unwrap();
        let values: Vec<u64> = rules_for(&f, "personality")
            .iter()
            .map(|r| r.args().clone().unwrap()[0].value())
            .collect();
        assert_eq!(values, vec![0, 8, 0x20000, 0x20008, 0xffff_ffff]);
        let socket = rules_for(&f, "socket");
        assert_eq!(socket.len(), 1);
        let arg = socket[0].args().clone().unwrap()[0];
        assert_eq!((arg.index(), arg.value()), (0, 40));
        assert_eq!(arg.op(), oci_spec::runtime::LinuxSeccompOperator::ScmpCmpNe);
    }

    #[test]
    fn docker_style_custom_profiles() {
        let p = Profile::parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"name":"mkdir","action":"SCMP_ACT_ERRNO","errnoRet":13},
                            {"names":["chmod"],"action":"SCMP_ACT_ERRNO","comment":"x",
                             "excludes":{"caps":["CAP_FOWNER"]}}]}"#,
        )
        .unwrap();
        let f = p.to_oci(&default_caps(), &host("amd64")).unwrap();
        assert_eq!(f.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(
            f.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64]
        );
        let rules = f.syscalls().clone().unwrap();
        assert_eq!(rules.len(), 1, "chmod is excluded by CAP_FOWNER");
        assert_eq!(rules[0].names(), &vec!["mkdir".to_string()]);
        assert_eq!(rules[0].errno_ret(), Some(13));
    }

    #[test]
    fn bad_profiles_are_refused_with_a_reason() {
        for (json, want) in [
            ("", "not valid JSON"),
            ("[]", "not valid JSON"),
            (r#"{"defaultAction":"SCMP_ACT_NOPE"}"#, "not valid JSON"),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
                "both",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ALLOW"}]}"#,
                "both \"name\"",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["../x"],"action":"SCMP_ACT_ERRNO"}]}"#,
                "letters",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],"action":"SCMP_ACT_ERRNO","args":[{"index":9,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "arguments 0 to 5",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],"action":"SCMP_ACT_ERRNO","includes":{"minKernel":"new"}}]}"#,
                "minKernel",
            ),
            (r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#, "NOTIFY"),
        ] {
            let e = Profile::parse(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        let big = format!(
            "{{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"x\":\"{}\"}}",
            "a".repeat(MAX_PROFILE_BYTES)
        );
        assert!(matches!(Profile::parse(&big), Err(SeccompError::TooBig(_))));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.18.44-fc-v857"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5"), Some((5, 0)));
        assert_eq!(parse_kernel("x"), None);
        assert_eq!(cap_name(Capability::SysAdmin), "CAP_SYS_ADMIN");
    }
}
