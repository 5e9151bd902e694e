//! berthd under systemd: the units pass `systemd-analyze verify`; a
//! listening socket passed at fd 3 (LISTEN_FDS, as berth.socket does) is
//! served; READY=1 reaches NOTIFY_SOCKET only once restore is done.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use berth_e2e::*;

/// Start berthd as systemd would: the test binds the socket of `--socket`,
/// passes it at fd 3 with LISTEN_FDS=1 and LISTEN_PID set to berthd's own
/// pid (a shell exports `$$` and execs berthd), and sets NOTIFY_SOCKET.
fn systemd_like(notify: Option<PathBuf>) -> Launch {
    Arc::new(move |berthd: &Path, args: &[OsString]| {
        let at = args
            .iter()
            .position(|a| a == "--socket")
            .expect("the harness passes --socket");
        let sock = PathBuf::from(&args[at + 1]);
        let _ = std::fs::remove_file(&sock);
        let fd = OwnedFd::from(UnixListener::bind(&sock).expect("bind the activation socket"));
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(
                "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=berth.socket; exec \"$0\" \"$@\"",
            )
            .arg(berthd)
            .args(args);
        if let Some(n) = &notify {
            c.env("NOTIFY_SOCKET", n);
        }
        // SAFETY: dup2 and fcntl are async-signal-safe; `fd` lives in the
        // closure until the child has exec'd.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(fd.as_raw_fd(), 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    })
}

/// A datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    path: PathBuf,
    sock: UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = PathBuf::from(format!("/tmp/be2e-notify-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket { path, sock }
    }

    /// The next message within `timeout`, or None.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn environ(pid: i64) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
        .replace('\0', "\n")
}

#[test]
fn socket_activation_serves_the_passed_socket() {
    let notify = NotifySocket::new();
    let mut d = Daemon::start_launched(Rt::Embedded, &[], systemd_like(Some(notify.path.clone())));
    let ready = notify.recv(Duration::from_secs(20)).expect("READY=1");
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=serving on {}", d.socket.display())),
        "{ready}"
    );
    // berthd did not bind the socket itself: it would have found ours in
    // use and refused to start.
    assert!(
        d.daemon_log().contains("activated=true"),
        "{}",
        d.daemon_log()
    );
    let id = d.run(&["-d"], &["sleep", "600"]).ok();
    assert_eq!(d.state_of(&id), "running");
    // The shim (and so the container) sees none of systemd's variables.
    let shim = ppid_of(d.inspect(&id)["pid"].as_i64().unwrap());
    let env = environ(shim);
    assert!(env.contains("PATH="), "{env}");
    for var in ["LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET"] {
        assert!(!env.contains(var), "{var} leaked to the shim: {env}");
    }
    // Nor the socket: it was close-on-exec.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{shim}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    let listening = listening_inodes(&d.socket);
    for f in &fds {
        assert!(
            !listening.iter().any(|i| f == &format!("socket:[{i}]")),
            "the shim holds the API socket: {fds:?}"
        );
    }
    d.berth(&["rm", "-f", &id]).ok();
    // SIGTERM: STOPPING=1, and the socket file stays (systemd's).
    assert_eq!(d.terminate(Duration::from_secs(20)), Some(0));
    let stopping = notify.recv(Duration::from_secs(5)).expect("STOPPING=1");
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    assert!(d.socket.exists(), "berthd removed systemd's socket");
}

/// The inodes of listening unix sockets bound at `path` (/proc/net/unix).
fn listening_inodes(path: &Path) -> Vec<String> {
    let want = path.display().to_string();
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(&want))
        .filter_map(|l| l.split_whitespace().nth(6).map(String::from))
        .collect()
}

/// Sends SIGCONT to a stopped process when dropped, so a failing test
/// never leaves it stopped.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i64) -> Stopped {
        let p = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGSTOP).unwrap();
        Stopped(pid as i32)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let p = nix::unistd::Pid::from_raw(self.0);
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGCONT);
    }
}

/// A restarted berthd holds READY=1 back while restore waits on a shim
/// (stopped with SIGSTOP), and sends it once the container is restored.
#[test]
fn ready_only_after_restore() {
    let notify = NotifySocket::new();
    let mut d = Daemon::start_launched(Rt::Embedded, &[], systemd_like(Some(notify.path.clone())));
    assert!(notify
        .recv(Duration::from_secs(20))
        .expect("READY")
        .starts_with("READY=1"));
    let id = d.run(&["-d"], &["sleep", "600"]).ok();
    let pid = d.inspect(&id)["pid"].as_i64().unwrap();
    let shim = ppid_of(pid);

    d.kill9();
    let stopped = Stopped::stop(shim);
    d.restart();
    // Restore is stuck asking the stopped shim: no READY yet.
    assert_eq!(
        notify.recv(Duration::from_millis(1500)),
        None,
        "READY before restore"
    );
    drop(stopped);
    let ready = notify
        .recv(Duration::from_secs(40))
        .expect("READY after restore");
    assert!(ready.starts_with("READY=1"), "{ready}");
    // Right at READY (no polling): the container is restored and served.
    let c = d.inspect(&id);
    assert_eq!(c["state"], "running", "{c}");
    assert_eq!(c["pid"].as_i64(), Some(pid));

    // A reload: RELOADING=1 (with the monotonic time), then READY=1.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let reloading = notify.recv(Duration::from_secs(10)).expect("RELOADING=1");
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let again = notify
        .recv(Duration::from_secs(10))
        .expect("READY after reload");
    assert_eq!(again, "READY=1");
}

/// `systemd-analyze verify` accepts berth.service and berth.socket (with
/// ExecStart pointing at the berthd under test: verify checks it exists).
#[test]
fn units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: systemd-analyze is missing (Debian package systemd; scripts/setup.sh installs it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("be2e-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = workspace().join("packaging/systemd");
    let service = std::fs::read_to_string(src.join("berth.service")).unwrap();
    assert!(
        service.contains("\nExecStart=/usr/bin/berthd\n"),
        "{service}"
    );
    for want in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "LimitNOFILE=",
        "Restart=on-failure",
        "Requires=berth.socket",
    ] {
        assert!(service.contains(want), "berth.service lacks {want}");
    }
    let service = service.replace(
        "\nExecStart=/usr/bin/berthd\n",
        &format!("\nExecStart={}\n", bin_dir().join("berthd").display()),
    );
    std::fs::write(dir.join("berth.service"), service).unwrap();
    std::fs::copy(src.join("berth.socket"), dir.join("berth.socket")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("berth.socket"))
        .arg(dir.join("berth.service"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
