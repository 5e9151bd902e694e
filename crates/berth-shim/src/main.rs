//! `berth-shim`: the per-container monitor.
//!
//! - `berth-shim start <shim.json>`: detach, create the container, report
//!   [`berth_shim_proto::Ready`] on stdout, then supervise it until its init
//!   exits (see the lifecycle in `berth-shim-proto`).
//! - `berth-shim cleanup <shim.json>`: for berthd after a shim died: kill and
//!   delete the container, remove the socket. Idempotent.
//!
//! The shim is single-threaded, synchronous and frugal (one per container,
//! so its memory is a headline number): no async runtime, no threads, no
//! tracing subscriber (libcontainer's tracing must never reach container
//! stdio). libcontainer itself only ever runs in forked helpers (berth-oci),
//! so its code pages are never touched by this long-lived process.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use berth_oci::{Backend, Cli, Embedded};
use berth_shim_proto::{ErrorKind, Ready, RuntimeKind, ShimConfig, ShimError};

mod crilog;
mod shim;
mod stdio;
mod sys;

/// One line of diagnostics on the shim's stderr (the `shim_log`).
pub(crate) fn diag(args: std::fmt::Arguments<'_>) {
    eprintln!(
        "{} berth-shim[{}]: {args}",
        berth_shim_proto::now_rfc3339(),
        std::process::id()
    );
}

/// Ask the CPU for its features once, here: std caches the answer in
/// memory that every fork inherits (the zygote's shims, their runtime
/// helpers and the container's init), and otherwise the first feature
/// check in each of those processes asks again, a dozen CPUIDs that each
/// trap to the hypervisor on a VM (~7 µs apiece; 0.55% of all the CPU of
/// a 50-container burst was the init's). The feature asked for must not
/// be one the build assumes (that answer is compiled in, asking nothing).
fn warm_cpu_features() {
    #[cfg(target_arch = "x86_64")]
    let _ = std::arch::is_x86_feature_detected!("avx2");
    #[cfg(target_arch = "aarch64")]
    let _ = std::arch::is_aarch64_feature_detected!("sve");
}

fn main() {
    warm_cpu_features();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = match args.as_slice() {
        [cmd, path] if cmd == "start" && std::env::var_os(ZYGOTE).is_some() => zygote(path),
        [cmd, path] if cmd == "start" => start(Path::new(path)),
        [cmd, path] if cmd == "cleanup" => cleanup(Path::new(path)),
        _ => {
            eprintln!("usage: berth-shim start|cleanup <shim.json>");
            2
        }
    };
    std::process::exit(code);
}

/// Set by berthd on the zygote: one `berth-shim start` that berthd keeps
/// waiting and asks to fork each new container's shim, so that a shim
/// costs a fork instead of an exec and a start-up (on a VM the dynamic
/// loader alone, which asks the CPU dozens of CPUID questions, each a trip
/// to the hypervisor, is ~0.5 ms). Its argument is a placeholder of the
/// length of every shim.json path under berthd's run root.
const ZYGOTE: &str = "BERTH_SHIM_ZYGOTE";

/// The zygote: on fd 0, a SOCK_SEQPACKET socket from berthd; each message
/// is a shim.json path with the write end of that shim's ready pipe. Each
/// is forked into a shim that goes on as `start` would (it detaches from
/// us at once). Ends when berthd closes its end, or dies.
fn zygote(placeholder: &OsString) -> i32 {
    std::env::remove_var(ZYGOTE);
    let _ = std::env::set_current_dir("/");
    // Our forks exit as they detach: the kernel reaps them.
    if let Err(e) = sys::ignore_children(true) {
        diag(format_args!("zygote: {e}"));
        return 1;
    }
    let area = sys::argument_area();
    // Read once here, not in every shim's delete (see the function).
    berth_oci::warm_cgroup_mounts();
    loop {
        let (path, ready) = match sys::recv_request(0) {
            Ok(Some(r)) => r,
            Ok(None) => return 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                diag(format_args!("zygote: {e}"));
                continue;
            }
        };
        match sys::fork() {
            Ok(Some(_)) => drop(ready),
            Ok(None) => std::process::exit(zygote_child(placeholder, area, path, ready)),
            Err(e) => {
                // berthd reads EOF on the ready pipe and reports it.
                diag(format_args!("zygote: fork: {e}"));
            }
        }
    }
}

/// A fork of the zygote becomes the shim of `path` (a shim.json).
fn zygote_child(
    placeholder: &OsString,
    area: Option<(usize, usize)>,
    path: Vec<u8>,
    ready: std::os::fd::OwnedFd,
) -> i32 {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    // The ready pipe is stdout, as for a shim berthd started; the control
    // socket is the zygote's alone.
    if let Err(e) = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&ready), 1) {
        diag(format_args!("zygote: ready pipe: {e}"));
        return 1;
    }
    drop(ready);
    if let Ok(null) = File::open("/dev/null") {
        let _ = sys::redirect(&null, 0);
    }
    if let Err(e) = sys::ignore_children(false) {
        return fail(0, format!("reset SIGCHLD: {e}"));
    }
    let path = OsString::from_vec(path);
    if !Path::new(&path).is_absolute() {
        return fail(
            0,
            format!("not an absolute path: {}", Path::new(&path).display()),
        );
    }
    if !area.is_some_and(|a| sys::set_argument(a, placeholder.as_bytes(), path.as_bytes())) {
        diag(format_args!(
            "cannot show {} in the command line",
            Path::new(&path).display()
        ));
    }
    start(Path::new(&path))
}

/// Read shim.json; relative paths are made absolute (the shim runs in `/`).
fn load_config(path: &Path) -> Result<ShimConfig, String> {
    let text = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut cfg: ShimConfig =
        serde_json::from_slice(&text).map_err(|e| format!("parse {}: {e}", path.display()))?;
    berth_oci::validate_id(&cfg.id).map_err(|e| e.message)?;
    let cwd = std::env::current_dir().map_err(|e| format!("current dir: {e}"))?;
    for p in [
        &mut cfg.bundle,
        &mut cfg.runtime_root,
        &mut cfg.socket,
        &mut cfg.log_path,
        &mut cfg.exit_file,
        &mut cfg.exec_dir,
        &mut cfg.shim_log,
    ] {
        if p.is_relative() {
            *p = cwd.join(&*p);
        }
    }
    if let RuntimeKind::Cli { path } = &mut cfg.runtime {
        // A bare name ("runc") is looked up in PATH; a relative path is not.
        if path.components().count() > 1 && path.is_relative() {
            *path = cwd.join(&*path);
        }
    }
    Ok(cfg)
}

/// The directory holding shim.json: the runtime CLI's scratch files go there.
fn scratch_dir(config: &Path) -> PathBuf {
    let dir = config.parent().unwrap_or(Path::new("."));
    if dir.as_os_str().is_empty() {
        return std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    }
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Brings `lo` up in the network namespace of the init `pid`. Run in the
/// create's helper, which has one thread and exits next: its `setns` needs
/// no undoing.
fn loopback_up_in_init(pid: i32) -> std::io::Result<()> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        std::io::Error::other(format!("join the container's network namespace: {e}"))
    })?;
    berth_shim_proto::netns::loopback_up()
        .map_err(|e| std::io::Error::other(format!("bring the container's loopback up: {e}")))
}

fn backend(cfg: &ShimConfig, scratch: PathBuf) -> Box<dyn Backend> {
    match &cfg.runtime {
        RuntimeKind::Embedded => {
            let embedded = Embedded::new(&cfg.runtime_root);
            // libcontainer leaves the loopback of a network namespace it
            // makes down; runc and crun bring theirs up themselves.
            Box::new(if shim::spec_facts(cfg).own_net_ns {
                embedded.after_create(loopback_up_in_init)
            } else {
                embedded
            })
        }
        RuntimeKind::Cli { path } => Box::new(Cli::new(path, &cfg.runtime_root, scratch)),
    }
}

/// Write the one Ready line on stdout (the ready pipe).
fn report(ready: &Ready) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = berth_shim_proto::write_line(&mut out, ready) {
        diag(format_args!("write ready: {e}"));
    }
}

fn fail(shim_pid: i32, message: String) -> i32 {
    diag(format_args!("{message}"));
    report(&Ready {
        shim_pid,
        pid: 0,
        error: Some(ShimError::new(ErrorKind::Other, message)),
    });
    1
}

fn start(config: &Path) -> i32 {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(e) => return fail(0, e),
    };
    let scratch = scratch_dir(config);
    // Hold shim.json locked for our whole life (the lock passes to our
    // forks): berthd knows a shim is still at work on this container,
    // even before its socket exists, and removes the container's files
    // only while it holds the lock itself.
    let lock = match lock_config(config) {
        Ok(l) => l,
        Err(e) => return fail(0, e),
    };
    if let Err(e) = sys::daemonize() {
        return fail(0, format!("detach: {e}"));
    }
    // From here on we are the long-lived shim (berthd's child has exited).
    let shim_pid = i32::try_from(std::process::id()).unwrap_or(0);
    if let Ok(null) = File::open("/dev/null") {
        let _ = sys::redirect(&null, 0);
    }
    match OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.shim_log)
    {
        Ok(log) => {
            let _ = sys::redirect(&log, 2);
        }
        Err(e) => return fail(shim_pid, format!("open {}: {e}", cfg.shim_log.display())),
    }
    let _ = std::env::set_current_dir("/");
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return fail(shim_pid, format!("set child subreaper: {e}"));
    }
    let sigfd = match sys::signalfd() {
        Ok(fd) => fd,
        Err(e) => return fail(shim_pid, format!("signalfd: {e}")),
    };
    // Never hand berthd's socket-activation variables to a runtime.
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }

    let backend = backend(&cfg, scratch);
    let shim = match shim::Shim::create(cfg, backend, sigfd) {
        Ok(s) => s,
        Err(error) => {
            diag(format_args!("create failed: {error}"));
            report(&Ready {
                shim_pid,
                pid: 0,
                error: Some(error),
            });
            return 1;
        }
    };
    report(&Ready {
        shim_pid,
        pid: shim.init_pid(),
        error: None,
    });
    // Close the ready pipe: berthd sees EOF after the one line.
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = sys::redirect(&null, 1);
    }
    debug_assert_eq!(shim.shim_pid(), shim_pid);
    let code = shim.run();
    drop(lock);
    code
}

/// Lock `config` (shim.json) exclusively, and refuse a container whose
/// files berthd removed meanwhile (an orphan of a daemon that died while
/// we started).
fn lock_config(config: &Path) -> Result<nix::fcntl::Flock<File>, String> {
    use std::os::unix::fs::MetadataExt;
    let file = File::open(config).map_err(|e| format!("open {}: {e}", config.display()))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("lock {}: {e}", config.display()))?;
    let meta = lock
        .metadata()
        .map_err(|e| format!("stat {}: {e}", config.display()))?;
    if meta.nlink() == 0 {
        return Err(format!(
            "{} was removed: the container is gone",
            config.display()
        ));
    }
    Ok(lock)
}

fn cleanup(config: &Path) -> i32 {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-shim cleanup: {e}");
            return 1;
        }
    };
    let backend = backend(&cfg, scratch_dir(config));
    let _ = backend.kill(&cfg.id, libc::SIGKILL, true);
    let code = match backend.delete(&cfg.id, true) {
        Ok(()) => 0,
        Err(e) if e.kind == berth_oci::ErrorKind::NotFound => 0,
        Err(e) => {
            eprintln!("berth-shim cleanup: {e}");
            1
        }
    };
    match std::fs::remove_file(&cfg.socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("berth-shim cleanup: remove {}: {e}", cfg.socket.display());
        }
        _ => {}
    }
    code
}
