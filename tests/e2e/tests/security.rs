//! Secure by default, proved from inside real containers: the default
//! seccomp profile, Docker's capabilities, masked and read-only system
//! paths, and the security flags (`--cap-add/--cap-drop`, `--privileged`,
//! `--security-opt`, `--device`, `--group-add`, `--sysctl`, `--ulimit`,
//! `--oom-score-adj`), including their refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use berth_e2e::*;

/// Docker's default capability set as `CapEff` shows it (bits 0, 1, 3, 4, 5,
/// 6, 7, 8, 10, 13, 18, 27, 29, 31).
const DOCKER_CAP_EFF: &str = "00000000a80425fb";

/// A busybox rootfs of this test's own, with the `sysprobe` helper
/// (tests/e2e/helpers/sysprobe.c) built static into `/bin`; removed on drop.
struct Rootfs {
    dir: PathBuf,
}

impl Rootfs {
    fn new() -> Rootfs {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/be2e-sec-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = Command::new("bash")
            .arg(workspace().join("scripts/mkrootfs.sh"))
            .arg(&dir)
            .status()
            .expect("run mkrootfs.sh");
        assert!(st.success(), "mkrootfs.sh failed");
        let r = Rootfs { dir };
        let out = Command::new("gcc")
            .args(["-O", "-static", "-o"])
            .arg(r.dir.join("bin/sysprobe"))
            .arg(workspace().join("tests/e2e/helpers/sysprobe.c"))
            .output()
            .expect("run gcc (apt-get install gcc libc6-dev)");
        assert!(out.status.success(), "gcc: {out:?}");
        r
    }

    fn path(&self) -> &str {
        self.dir.to_str().expect("utf8")
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        // Only the directory this guard made.
        if self.dir.starts_with("/tmp") && self.dir.file_name().is_some() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `run --rm OPTS --rootfs ROOT sh -c SCRIPT`.
fn sh(d: &Daemon, root: &str, opts: &[&str], script: &str) -> Run {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["--rootfs", root, "sh", "-c", script]);
    d.berth(&args)
}

fn status_field(out: &str, field: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in {out:?}"))
}

fn default_seccomp_refuses_what_docker_refuses(rt: Rt) {
    let d = Daemon::start(rt);
    let r = Rootfs::new();
    let out = sh(
        &d,
        r.path(),
        &[],
        "grep Seccomp: /proc/self/status; unshare -U true 2>&1; echo unshare=$?; sysprobe add_key; sysprobe keyctl; echo 'done'",
    )
    .ok();
    assert_eq!(status_field(&out, "Seccomp"), "2", "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("unshare=1"), "{out}");
    // EPERM is 1: the profile's default action.
    assert_eq!(
        out.lines().filter(|l| *l == "errno 1").count(),
        2,
        "add_key and keyctl: {out}"
    );
    assert!(out.ends_with("done"), "{out}");

    let out = sh(
        &d,
        r.path(),
        &["--security-opt", "seccomp=unconfined"],
        "grep Seccomp: /proc/self/status; unshare -U true; echo unshare=$?; sysprobe add_key; sysprobe keyctl",
    )
    .ok();
    assert_eq!(status_field(&out, "Seccomp"), "0", "{out}");
    assert!(out.contains("unshare=0"), "{out}");
    assert_eq!(out.lines().filter(|l| *l == "ok").count(), 2, "{out}");
}

/// `berth exec` processes run under the container's filter with the
/// container's capabilities, as the init does: with the embedded runtime
/// berth loads the filter itself (libcontainer's exec would not), and the
/// CAP_SYS_ADMIN it lends the process for the load is gone again.
fn exec_gets_the_containers_filter_and_capabilities(rt: Rt) {
    let d = Daemon::start(rt);
    let r = Rootfs::new();
    // CAP_SYS_ADMIN is bit 21.
    let with_sys_admin = "00000000a82425fb";
    let probe = "grep -E '^(Seccomp|CapEff|CapPrm|CapBnd):' /proc/self/status; \
                 unshare -U true 2>&1; echo unshare=$?";
    for (opts, seccomp, caps, unshare) in [
        (vec![], "2", DOCKER_CAP_EFF, "unshare=1"),
        (
            vec!["--cap-add", "SYS_ADMIN"],
            "2",
            with_sys_admin,
            "unshare=0",
        ),
        // Neither CAP_SYS_ADMIN nor CAP_SETPCAP: both lent, both gone.
        (
            vec!["--cap-drop", "ALL"],
            "2",
            "0000000000000000",
            "unshare=1",
        ),
        (
            vec!["--security-opt", "seccomp=unconfined"],
            "0",
            DOCKER_CAP_EFF,
            // A user namespace needs no capability: only the filter stops it.
            "unshare=0",
        ),
    ] {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(&opts);
        args.extend_from_slice(&["--rootfs", r.path(), "sleep", "100"]);
        let id = d.berth(&args).ok();
        let exec = d.berth(&["exec", &id, "sh", "-c", probe]).ok();
        let init = d.berth(&["exec", &id, "cat", "/proc/1/status"]).ok();
        for (who, out) in [("exec", &exec), ("init", &init)] {
            assert_eq!(
                status_field(out, "Seccomp"),
                seccomp,
                "{opts:?} {who}: {out}"
            );
            for f in ["CapEff", "CapPrm", "CapBnd"] {
                assert_eq!(status_field(out, f), caps, "{opts:?} {who} {f}: {out}");
            }
        }
        assert!(exec.ends_with(unshare), "{opts:?}: {exec}");
        if unshare == "unshare=1" && seccomp == "2" {
            // EPERM from the filter, not a missing capability's message.
            assert!(exec.contains("Operation not permitted"), "{exec}");
        }
        d.berth(&["rm", "-f", &id]).ok();
    }
}

fn a_notify_profile_is_refused(rt: Rt) {
    let d = Daemon::start(rt);
    let r = Rootfs::new();
    let profile = d.root.join("notify.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let run = sh(&d, r.path(), &["--security-opt", &opt], "true");
    assert_eq!(run.code, 125, "{run:?}");
    assert!(run.stderr.contains("SCMP_ACT_NOTIFY"), "{run:?}");
}

fn a_profile_file_is_read_by_the_cli(rt: Rt) {
    let d = Daemon::start(rt);
    let r = Rootfs::new();
    // Docker's format: allow everything but mkdir, which gets EACCES (13).
    let profile = d.root.join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let run = sh(&d, r.path(), &["--security-opt", &opt], "mkdir /tmp/x");
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("Permission denied"), "{run:?}");
    // A broken profile is refused at create time, in one line.
    std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_SOMETIMES"}"#).unwrap();
    let run = sh(&d, r.path(), &["--security-opt", &opt], "true");
    assert_eq!(run.code, 125, "{run:?}");
    assert!(run.stderr.contains("seccomp profile"), "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
}

fn capabilities_are_dockers(rt: Rt) {
    let d = Daemon::start(rt);
    let r = Rootfs::new();
    let caps = |opts: &[&str]| {
        status_field(
            &sh(&d, r.path(), opts, "grep CapEff /proc/self/status").ok(),
            "CapEff",
        )
    };
    assert_eq!(caps(&[]), DOCKER_CAP_EFF);
    assert_eq!(caps(&["--cap-drop", "ALL"]), "0000000000000000");
    assert_eq!(
        caps(&["--cap-drop", "all", "--cap-add", "net_bind_service"]),
        "0000000000000400"
    );
    // NET_ADMIN is bit 12; CAP_CHOWN (bit 0) dropped.
    assert_eq!(
        caps(&["--cap-add", "CAP_NET_ADMIN", "--cap-drop", "chown"]),
        "00000000a80435fa"
    );
    // With CAP_SYS_ADMIN the profile lets unshare through, as Docker's does.
    let out = sh(
        &d,
        r.path(),
        &["--cap-add", "SYS_ADMIN"],
        "unshare -U true; echo unshare=$?",
    )
    .ok();
    assert!(out.contains("unshare=0"), "{out}");
}

fn system_paths_are_protected(rt: Rt) {
    let d = Daemon::start(rt);
    let r = Rootfs::new();
    let out = sh(
        &d,
        r.path(),
        &[],
        "echo x > /proc/sys/kernel/domainname && echo wrote; \
         for f in /proc/kcore /proc/interrupts /proc/timer_list; do [ -e $f ] && echo $f=$(wc -c < $f); done; \
         touch /sys/x 2>/dev/null && echo sys-writable; touch /ok && echo rootfs-writable",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("wrote"), "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    // Masked: each reads as empty (this test kernel has no /proc/kcore at
    // all; where it has one, it is masked like the others).
    let host_has_kcore = std::path::Path::new("/proc/kcore").exists();
    assert_eq!(
        out.stdout.contains("/proc/kcore=0"),
        host_has_kcore,
        "{out:?}"
    );
    assert!(out.stdout.contains("/proc/interrupts=0"), "{out:?}");
    assert!(out.stdout.contains("/proc/timer_list=0"), "{out:?}");
    assert!(!out.stdout.contains("sys-writable"), "{out:?}");
    assert!(out.stdout.contains("rootfs-writable"), "{out:?}");
    let _ = std::fs::remove_file(r.dir.join("ok"));

    // --read-only: / too.
    let out = sh(&d, r.path(), &["--read-only"], "touch /nope");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    assert!(!r.dir.join("nope").exists());

    // systempaths=unconfined: /proc/interrupts is the kernel's again.
    let out = sh(
        &d,
        r.path(),
        &["--security-opt", "systempaths=unconfined"],
        "echo interrupts=$(wc -c < /proc/interrupts); echo x > /proc/sys/kernel/domainname && echo wrote",
    );
    assert!(!out.stdout.contains("interrupts=0"), "{out:?}");
    assert!(out.stdout.contains("wrote"), "{out:?}");
}

fn no_new_privileges_stops_setuid(rt: Rt) {
    let d = Daemon::start(rt);
    let r = Rootfs::new();
    // A setuid-root copy of the probe, run as nobody.
    let suid = r.dir.join("bin/suidprobe");
    std::fs::copy(r.dir.join("bin/sysprobe"), &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let euid = |opts: &[&str]| {
        let mut o = vec!["-u", "65534"];
        o.extend_from_slice(opts);
        sh(
            &d,
            r.path(),
            &o,
            "grep NoNewPrivs /proc/self/status; suidprobe euid",
        )
        .ok()
    };
    let plain = euid(&[]);
    assert_eq!(status_field(&plain, "NoNewPrivs"), "0", "{plain}");
    assert!(
        plain.ends_with("\n0"),
        "setuid works without the flag: {plain}"
    );
    for opt in ["no-new-privileges", "no-new-privileges=true"] {
        let nnp = euid(&["--security-opt", opt]);
        assert_eq!(status_field(&nnp, "NoNewPrivs"), "1", "{nnp}");
        assert!(nnp.ends_with("\n65534"), "setuid is ignored: {nnp}");
    }
    let off = euid(&["--security-opt", "no-new-privileges=false"]);
    assert_eq!(status_field(&off, "NoNewPrivs"), "0", "{off}");
}

fn privileged_sees_the_host(rt: Rt) {
    let d = Daemon::start(rt);
    let r = Rootfs::new();
    let out = sh(
        &d,
        r.path(),
        &["--privileged"],
        "grep -E 'Seccomp:|CapEff' /proc/self/status; ls /dev/loop-control /dev/kmsg; \
         echo interrupts=$(wc -c < /proc/interrupts); mount | grep ' on /sys type '",
    );
    assert_eq!(status_field(&out.stdout, "Seccomp"), "0", "{out:?}");
    let host_bnd = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        status_field(&out.stdout, "CapEff"),
        status_field(&host_bnd, "CapBnd"),
        "all the capabilities berthd has"
    );
    assert!(out.stdout.contains("/dev/loop-control"), "{out:?}");
    assert!(out.stdout.contains("/dev/kmsg"), "{out:?}");
    assert!(!out.stdout.contains("interrupts=0"), "not masked: {out:?}");
    assert!(out.stdout.contains("(rw,"), "writable /sys: {out:?}");
    // Not privileged: neither device.
    let out = sh(&d, r.path(), &[], "ls /dev/loop-control /dev/kmsg 2>&1");
    assert!(out.stdout.contains("No such file"), "{out:?}");
}

fn flags_reach_the_container(rt: Rt) {
    let d = Daemon::start(rt);
    let r = Rootfs::new();
    let out = sh(
        &d,
        r.path(),
        &[
            "--device",
            "/dev/null:/dev/mynull:rw",
            "--group-add",
            "nogroup",
            "--group-add",
            "4242",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--sysctl",
            "kernel.shmmax=123456789",
            "--ulimit",
            "nofile=100:200",
            "--oom-score-adj",
            "300",
        ],
        "echo hi > /dev/mynull && echo dev-ok; id -G; cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax; \
         ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj",
    )
    .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "dev-ok",
            "0 4242 65534",
            "1",
            "123456789",
            "100",
            "200",
            "300"
        ],
        "{out}"
    );
}

fn bad_flags_are_one_line_errors_that_leave_nothing(rt: Rt) {
    let d = Daemon::start(rt);
    let r = Rootfs::new();
    let host_nofile_hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(String::from))
        .unwrap();
    let too_high = format!("nofile=10:{}", host_nofile_hard.parse::<u64>().unwrap() + 1);
    for (opts, want) in [
        (vec!["--oom-score-adj", "-5"], "CAP_SYS_RESOURCE"),
        (vec!["--oom-score-adj", "5000"], "-1000 to 1000"),
        (vec!["--cap-add", "SYS_RESOURCE"], "bounding set"),
        (vec!["--cap-add", "FLY"], "unknown capability"),
        (vec!["--sysctl", "vm.swappiness=1"], "not namespaced"),
        (vec!["--sysctl", "net/../../x=1"], "invalid --sysctl name"),
        (vec!["--ulimit", too_high.as_str()], "CAP_SYS_RESOURCE"),
        (vec!["--ulimit", "bogus=1"], "unknown limit"),
        (
            vec!["--device", "/etc/passwd"],
            "not a character or block device",
        ),
        (vec!["--device", "/dev/null:rwx"], "absolute"),
        (
            vec!["--security-opt", "seccomp=/nonexistent.json"],
            "cannot read the seccomp profile",
        ),
        (vec!["--security-opt", "bogus"], "unknown --security-opt"),
        (
            vec!["--security-opt", "apparmor=docker-default"],
            "AppArmor",
        ),
        (vec!["--group-add", "wheelz"], "unable to find group wheelz"),
    ] {
        let run = sh(&d, r.path(), &opts, "true");
        assert_eq!(run.code, 125, "{opts:?}: {run:?}");
        assert!(run.stderr.contains(want), "{opts:?}: {run:?}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{opts:?}: {run:?}");
    }
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
    let left = d.container_dirs();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The security flags do not apply to a bundle: refused, not ignored.
    let bundle = d.root.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), "{}").unwrap();
    let run = d.berth(&[
        "run",
        "--rm",
        "--cap-add",
        "NET_ADMIN",
        "--bundle",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 125, "{run:?}");
    assert!(run.stderr.contains("do not apply to a --bundle"), "{run:?}");
}

both_runtimes!(
    default_seccomp_refuses_what_docker_refuses,
    a_profile_file_is_read_by_the_cli,
    exec_gets_the_containers_filter_and_capabilities,
    a_notify_profile_is_refused,
    capabilities_are_dockers,
    system_paths_are_protected,
    no_new_privileges_stops_setuid,
    privileged_sees_the_host,
    flags_reach_the_container,
    bad_flags_are_one_line_errors_that_leave_nothing,
);
