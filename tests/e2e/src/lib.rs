//! Harness for berth's end-to-end tests: a private berthd per test (its own
//! root directory and socket), the real `berth` CLI, and a busybox rootfs
//! made from Debian's busybox-static by `scripts/mkrootfs.sh`.
//!
//! Every daemon is torn down in `Drop`, even when the test fails: its
//! containers are removed with `rm -f`, the daemon is stopped by the pid we
//! started, and its root is deleted. Nothing here waits with a bare sleep:
//! [`poll`] retries a condition until a deadline.
//!
//! [`registry`] runs a real image registry on loopback for the image tests.

pub mod registry;

pub mod image;

pub mod docker;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The directory holding `berth`, `berthd` and `berth-shim`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test binary> → target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The busybox rootfs shared by all tests (read-only use only).
pub fn rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            if let Some(d) = std::env::var_os("BERTH_TEST_ROOTFS") {
                return PathBuf::from(d);
            }
            let dir = workspace().join("target/e2e-rootfs");
            if !dir.join("bin/sh").exists() {
                // Build in a private dir and rename, so concurrent test
                // binaries never see a half-made rootfs.
                let tmp = workspace().join(format!("target/e2e-rootfs.{}", std::process::id()));
                let st = Command::new("bash")
                    .arg(workspace().join("scripts/mkrootfs.sh"))
                    .arg(&tmp)
                    .status()
                    .expect("run mkrootfs.sh");
                assert!(st.success(), "mkrootfs.sh failed");
                if std::fs::rename(&tmp, &dir).is_err() {
                    let _ = std::fs::remove_dir_all(&tmp);
                }
            }
            dir
        })
        .clone()
}

/// Retry `f` until it is true or `timeout` passes; whether it became true.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Retry `f` until it returns `Some`, or panic with `what` at the deadline.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The result of one CLI run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl Run {
    pub(crate) fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            raw_stdout: o.stdout,
        }
    }

    /// Assert success and return stdout trimmed.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self.stdout.trim().to_string()
    }
}

/// Which OCI runtime a daemon drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    Embedded,
    Runc,
}

impl Rt {
    pub fn flag(self) -> &'static str {
        match self {
            Rt::Embedded => "embedded",
            Rt::Runc => "runc",
        }
    }
}

/// A network namespace of the test's own (`ip netns add
/// berth-test-<pid>-<n>`, loopback up), deleted in `Drop` even when the
/// test fails: a daemon started in it (the default of [`Daemon`]) makes its
/// bridges, veths and firewall rules there, never on the host.
pub struct TestNetns {
    name: String,
}

static NETNS_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl TestNetns {
    pub fn new() -> TestNetns {
        let name = format!(
            "berth-test-{}-{}",
            std::process::id(),
            NETNS_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let ns = TestNetns { name };
        ns.ip(&["netns", "add", &ns.name]);
        ns.ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip ARGS` (asserting success).
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip netns exec NAME ARGS...`: a command run in the namespace (the
    /// test's "host" side).
    pub fn exec(&self, args: &[&str]) -> Run {
        Run::from(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run ip netns exec"),
        )
    }
}

impl Default for TestNetns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Deletes every interface in it with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A private berthd.
pub struct Daemon {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub rt: Rt,
    pub(crate) extra: Vec<String>,
    /// Started with `--config FILE` alone (plus `extra`): the file sets
    /// the root, socket, runtime and log level.
    config: Option<PathBuf>,
    launch: Option<Launch>,
    child: Option<Child>,
    /// The network namespace berthd runs in (`None`: the host's, with
    /// `--default-network none`). Dropped after the daemon is stopped.
    netns: Option<TestNetns>,
}

/// How a daemon's process is made, given berthd's path and its arguments
/// (e.g. with a socket at fd 3, as systemd would).
pub type Launch = std::sync::Arc<dyn Fn(&Path, &[std::ffi::OsString]) -> Command + Send + Sync>;

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Daemon {
    pub fn start(rt: Rt) -> Daemon {
        Self::start_with(rt, &[])
    }

    /// A daemon with extra berthd flags.
    pub fn start_with(rt: Rt, extra: &[&str]) -> Daemon {
        let mut d = Self::new(rt, extra);
        d.spawn();
        d
    }

    /// A daemon in the host's network namespace (for a test that needs
    /// the host's loopback, e.g. a registry on it); its containers default
    /// to `--network none`, so nothing is made in the host's network.
    pub fn start_host_net(rt: Rt, extra: &[&str]) -> Daemon {
        let mut d = Self::new(rt, extra);
        d.netns = None;
        d.extra
            .extend(["--default-network".to_string(), "none".to_string()]);
        d.spawn();
        d
    }

    /// The network namespace the daemon runs in.
    pub fn netns(&self) -> &TestNetns {
        self.netns
            .as_ref()
            .expect("a daemon started in a network namespace of its own")
    }

    pub(crate) fn new(rt: Rt, extra: &[&str]) -> Daemon {
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Short paths: unix sockets are limited to 107 bytes.
        let root = PathBuf::from(format!("/tmp/be2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create root");
        let socket = root.join("berth.sock");
        Daemon {
            root,
            socket,
            rt,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            config: None,
            launch: None,
            child: None,
            netns: Some(TestNetns::new()),
        }
    }

    /// A daemon whose process (at every start and restart) is made by
    /// `launch` from berthd's path and the harness's arguments.
    pub fn start_launched(rt: Rt, extra: &[&str], launch: Launch) -> Daemon {
        let mut d = Self::new(rt, extra);
        d.launch = Some(launch);
        d.spawn();
        d
    }

    /// A daemon started as `berthd --config FILE EXTRA...`, where FILE
    /// (`config_path()`) sets the root, socket, runtime and log level, then
    /// holds `settings` (more TOML lines).
    pub fn start_configured(rt: Rt, settings: &str, extra: &[&str]) -> Daemon {
        let mut d = Self::new(rt, extra);
        let path = d.root.join("berthd.toml");
        std::fs::write(&path, d.config_text(settings)).expect("write the config file");
        d.config = Some(path);
        d.spawn();
        d
    }

    /// The config file's text: this daemon's root, socket, runtime and
    /// log level (debug, unless `settings` sets it), then `settings`.
    pub fn config_text(&self, settings: &str) -> String {
        let level = if settings.contains("log-level") {
            ""
        } else {
            "log-level = \"debug\"\n"
        };
        format!(
            "root = {:?}\nsocket = {:?}\nruntime = {:?}\n{level}{settings}",
            self.state_dir(),
            self.socket,
            self.rt.flag()
        )
    }

    /// The config file of a daemon from `start_configured`.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .expect("a daemon started with a config file")
    }

    pub(crate) fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("berthd.log"))
            .expect("daemon log");
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        match &self.config {
            Some(file) => args.extend(["--config".into(), file.into()]),
            None => args.extend([
                "--root".into(),
                self.root.join("state").into(),
                "--socket".into(),
                (&self.socket).into(),
                "--runtime".into(),
                self.rt.flag().into(),
                "--log-level".into(),
                "debug".into(),
            ]),
        };
        args.extend(self.extra.iter().map(Into::into));
        let berthd = bin_dir().join("berthd");
        let mut cmd = match &self.launch {
            Some(launch) => launch(&berthd, &args),
            None => {
                let mut c = Command::new(&berthd);
                c.args(&args);
                c
            }
        };
        if let Some(ns) = &self.netns {
            let file = std::fs::File::open(ns.path()).expect("open the test's network namespace");
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            // SAFETY: setns is async-signal-safe; `file` lives in the
            // closure until the child has exec'd. Only the network
            // namespace changes: mounts stay the test's.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
        let sock = self.socket.clone();
        let child = self.child.as_mut().expect("child");
        poll("berthd to listen", Duration::from_secs(20), || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("berthd exited early with {st}");
            }
            std::os::unix::net::UnixStream::connect(&sock)
                .ok()
                .map(|_| ())
        });
    }

    /// The daemon's `--root`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// The daemon's run root: its default for a root of its own,
    /// `<root>/run` (bundles, shim sockets, exit files, runtime state).
    pub fn run_dir(&self) -> PathBuf {
        self.state_dir().join("run")
    }

    /// The ids with files under either `containers` directory (the
    /// root's and the run root's).
    pub fn container_dirs(&self) -> std::collections::BTreeSet<String> {
        [self.state_dir(), self.run_dir()]
            .iter()
            .filter_map(|d| std::fs::read_dir(d.join("containers")).ok())
            .flat_map(|r| r.flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Run the CLI against this daemon.
    pub fn berth(&self, args: &[&str]) -> Run {
        Run::from(
            self.cmd(args)
                .stdin(Stdio::null())
                .output()
                .expect("run berth"),
        )
    }

    /// Run the CLI with `input` on its stdin.
    pub fn berth_input(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run berth");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = input.to_vec();
        // A thread, so a CLI that stops reading cannot deadlock the test.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait berth");
        let _ = writer.join();
        Run::from(out)
    }

    /// A CLI command against this daemon, to spawn yourself.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("berth"));
        c.arg("--socket").arg(&self.socket).args(args);
        c
    }

    /// `berth run --rootfs <busybox> ARGS...` with options before the rootfs.
    pub fn run(&self, opts: &[&str], cmd: &[&str]) -> Run {
        let r = rootfs();
        let mut args = vec!["run"];
        args.extend_from_slice(opts);
        args.push("--rootfs");
        let rs = r.to_str().expect("utf8 path");
        args.push(rs);
        args.extend_from_slice(cmd);
        self.berth(&args)
    }

    pub fn inspect(&self, id: &str) -> serde_json::Value {
        let out = self.berth(&["inspect", id]).ok();
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
        v[0].clone()
    }

    pub fn state_of(&self, id: &str) -> String {
        self.inspect(id)["state"].as_str().unwrap_or("").to_string()
    }

    /// Kill the daemon with SIGKILL (its containers live on).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's pid (0 when it is not running).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// berthd's shim zygote: its child `berth-shim` that forks new shims
    /// (started at the first create), or 0 when there is none alive.
    pub fn shim_zygote(&self) -> i32 {
        let berthd = i64::from(self.pid());
        if berthd == 0 {
            return 0;
        }
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .find(|&pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmd).contains("/shim-zygote/")
                    && ppid_of(i64::from(pid)) == berthd
                    && pid_alive(i64::from(pid))
            })
            .unwrap_or(0)
    }

    /// SIGTERM the daemon by the pid we started and wait (bounded) for it
    /// to exit; returns its exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("berthd did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How the daemon ended, if it did (for a daemon that should be up).
    pub fn try_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Start the daemon again on the same root.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.root.join("berthd.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.berth(&["ps", "-aq"]);
            for id in ids.stdout.split_whitespace() {
                let _ = self.berth(&["rm", "-f", id]);
            }
            if let Some(mut c) = self.child.take() {
                // SIGTERM by the pid we started; SIGKILL if it lingers.
                let pid = nix::unistd::Pid::from_raw(c.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- berthd log ({}) ---\n{}",
                self.rt.flag(),
                self.daemon_log()
            );
        }
        // Never delete through a mount (a container's root, a bind mount):
        // unmount whatever is left under the root first.
        unmount_under(&self.root);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Lazily unmount every mount at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Some(prefix) = dir.to_str() else { return };
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|p| p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Now, as RFC 3339 UTC with nanoseconds (an `--until` that ends a replay).
pub fn now_rfc3339() -> String {
    rfc3339_in(0)
}

/// `secs` seconds from now, as RFC 3339 UTC with nanoseconds.
pub fn rfc3339_in(secs: u64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            &format!("--date=+{secs} sec"),
            "+%Y-%m-%dT%H:%M:%S.%NZ",
        ])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The parent of a process: for a container's init, its shim.
pub fn ppid_of(pid: i64) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Daemon {
    /// Every event so far, as JSON objects, with extra `events` arguments
    /// (filters).
    pub fn events_json(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let until = now_rfc3339();
        let mut args = vec![
            "events", "--since", "0", "--until", &until, "--format", "json",
        ];
        args.extend_from_slice(extra);
        self.berth(&args)
            .ok()
            .lines()
            .map(|l| serde_json::from_str(l).expect("event json"))
            .collect()
    }
}

/// The process exists and is not a zombie (an orphaned container process
/// that was killed may wait a while for the host's init to reap it).
pub fn pid_alive(pid: i64) -> bool {
    if pid <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesized command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// Every cgroup directory of container `id` that still exists.
pub fn cgroup_leftovers(id: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") else {
        return left;
    };
    for c in ctrls.flatten() {
        let p = c.path().join("berth").join(id);
        if p.exists() {
            left.push(p);
        }
    }
    left
}

/// The mounts mentioning `needle` still there once removal has settled:
/// a removed container's network namespace file is unmounted by a thread
/// of berthd's a moment after `rm` replies (off the removal's path), so
/// wait up to 10 s for none to be left, then return what is.
pub fn settled_mount_leftovers(needle: &str) -> Vec<String> {
    let mut left = Vec::new();
    poll_until(Duration::from_secs(10), || {
        left = mount_leftovers(needle);
        left.is_empty()
    });
    left
}

/// Mounts whose path mentions `needle`.
pub fn mount_leftovers(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// Assert that nothing of container `id` is left: no process, cgroup,
/// mount, runtime state or file.
#[track_caller]
pub fn assert_no_leftovers(d: &Daemon, id: &str, pid: i64) {
    if pid > 0 {
        poll("the init to be gone", Duration::from_secs(10), || {
            (!pid_alive(pid)).then_some(())
        });
    }
    assert_eq!(cgroup_leftovers(id), Vec::<PathBuf>::new(), "cgroups left");
    // The record goes first, then the files and the root (a crash in
    // between leaves orphans the next start removes): a client can see the
    // container gone a moment before its files are.
    let files = [d.state_dir(), d.run_dir()].map(|r| r.join("containers").join(id));
    let gone = poll_until(Duration::from_secs(5), || {
        files.iter().all(|f| !f.exists()) && mount_leftovers(id).is_empty()
    });
    assert_eq!(mount_leftovers(id), Vec::<String>::new(), "mounts left");
    assert!(gone, "files left in {files:?}");
    let rt_state = d.run_dir().join("runtime").join(id);
    assert!(
        !rt_state.exists(),
        "runtime state left in {}",
        rt_state.display()
    );
}

/// A file a container can wait for (`while [ ! -e PATH ]`), created by the
/// test through the shared rootfs, and removed when dropped: tests share
/// one rootfs, so each marker has a name of its own.
pub struct Marker {
    /// The path inside the container.
    pub path: String,
}

impl Marker {
    pub fn new() -> Marker {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Marker {
            path: format!("/tmp/marker-{}-{n}", std::process::id()),
        }
    }

    fn host_path(&self) -> PathBuf {
        rootfs().join(self.path.trim_start_matches('/'))
    }

    /// Create the file: the container sees it.
    pub fn set(&self) {
        std::fs::write(self.host_path(), b"").expect("create the marker");
    }
}

impl Default for Marker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.host_path());
    }
}

/// Generate one `#[test]` per runtime for a test body `fn(Rt)`.
#[macro_export]
macro_rules! both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[test] fn $name() { super::$name($crate::Rt::Embedded) } )*
        }
        mod runc {
            $( #[test] fn $name() { super::$name($crate::Rt::Runc) } )*
        }
    };
}

/// Seconds since the epoch of an RFC 3339 UTC time as berth writes it
/// (`2026-01-02T03:04:05.123456789Z`).
pub fn rfc3339_secs(t: &str) -> f64 {
    let (date, time) = t.trim_end_matches('Z').split_once('T').expect("rfc3339");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().expect("date")).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut parts = time.split(':');
    let h: f64 = parts.next().expect("h").parse().expect("h");
    let mi: f64 = parts.next().expect("m").parse().expect("m");
    let s: f64 = parts.next().expect("s").parse().expect("s");
    days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + s
}

/// Seconds since the epoch, now.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Wait until process `pid` catches signal `sig` (its shell ran `trap`):
/// a signal sent earlier to a container's pid 1 would be ignored.
#[track_caller]
pub fn wait_for_trap(pid: i64, sig: i32) {
    poll("the trap to be set", Duration::from_secs(20), || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
        (mask & (1 << (sig - 1)) != 0).then_some(())
    });
}

/// The container's eth0 address (`ip -4 -o addr show eth0` inside it).
pub fn addr_of(d: &Daemon, id: &str) -> String {
    let out = d
        .berth(&["exec", id, "ip", "-4", "-o", "addr", "show", "eth0"])
        .ok();
    let word = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {out:?}"));
    word.split('/').next().unwrap_or_default().to_string()
}

/// The addresses berthd holds for its containers, as `network/address`:
/// each attachment record (`<root>/net/attachments/<id>/<net>.json`) is
/// its address's lease.
pub fn leases(d: &Daemon) -> Vec<String> {
    let mut v = Vec::new();
    let Ok(ids) = std::fs::read_dir(d.state_dir().join("net/attachments")) else {
        return v;
    };
    for c in ids.flatten() {
        for f in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
            let Ok(data) = std::fs::read(f.path()) else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<serde_json::Value>(&data) else {
                continue;
            };
            if let Some(a) = rec["result"]["ips"][0]["address"].as_str() {
                v.push(format!("{}/{a}", rec["network"].as_str().unwrap_or("")));
            }
        }
    }
    v.sort();
    v
}
