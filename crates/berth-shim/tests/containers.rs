//! The real shim binary against real containers (busybox rootfs), with the
//! embedded runtime (libcontainer) and with runc. Needs root.
//!
//! Every test works in its own temporary directory and, even when it fails,
//! tears down what it started: the shim by the pid it reported (SIGTERM,
//! then SIGKILL), then `berth-shim cleanup`, then the directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_shim_proto::{ErrorKind, ExitRecord, Ready, Response, ShimEvent, WireExit};
use serde_json::{json, Value};

const SHIM: &str = env!("CARGO_BIN_EXE_berth-shim");
const RUNC: &str = "/usr/sbin/runc";
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rt {
    Embedded,
    Runc,
}

/// Skip (pass with a note) where the tests cannot run.
fn can_run(rt: Rt) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    if rt == Rt::Runc && !Path::new(RUNC).exists() {
        eprintln!("skipped: {RUNC} not installed");
        return false;
    }
    if std::env::var_os("BERTH_TEST_ROOTFS").is_none() && !Path::new("/bin/busybox").exists() {
        eprintln!("skipped: no /bin/busybox and no BERTH_TEST_ROOTFS");
        return false;
    }
    true
}

/// Poll `f` until it returns `Some`, or panic after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Poll interval, bounded by the deadline above (not a bare sleep).
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is a live (non-zombie) process.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn vm_rss_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Build the busybox rootfs in `dir` (the repo script if present, else the
/// same steps here).
fn make_rootfs(dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_TEST_ROOTFS") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mkrootfs.sh");
    if script.exists() {
        let st = Command::new("bash").arg(&script).arg(dir).status().unwrap();
        assert!(st.success(), "mkrootfs.sh failed");
        return dir.to_path_buf();
    }
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    dir.to_path_buf()
}

/// One container under one shim, in a private directory.
struct Fixture {
    dir: PathBuf,
    id: String,
    shim_json: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    exit_file: PathBuf,
    exec_dir: PathBuf,
    runtime_root: PathBuf,
    shim_pid: Option<i32>,
    /// Container processes seen (init, execs): all must be gone at the end.
    pids: Vec<i32>,
}

impl Fixture {
    fn new(rt: Rt, args: &[&str]) -> Self {
        Self::with_memory_limit(rt, args, None)
    }

    fn with_memory_limit(rt: Rt, args: &[&str], memory_limit: Option<u64>) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let id = format!("bst-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("berth-shim-test-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = Self {
            shim_json: dir.join("shim.json"),
            socket: dir.join("shim.sock"),
            log: dir.join("container.log"),
            exit_file: dir.join("exit.json"),
            exec_dir: dir.join("execs"),
            runtime_root: dir.join("runtime"),
            dir,
            id,
            shim_pid: None,
            pids: Vec::new(),
        };
        let rootfs = make_rootfs(&f.dir.join("rootfs"));
        let bundle = f.dir.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        let config = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/",
                "noNewPrivileges": true
            },
            "root": {"path": rootfs, "readonly": true},
            "hostname": "berth-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "cgroupsPath": format!("/berth-test/{}", f.id),
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                    {"type": "mount"}, {"type": "network"}
                ]
            }
        });
        let mut config = config;
        if let Some(limit) = memory_limit {
            config["linux"]["resources"] = json!({"memory": {"limit": limit}});
        }
        std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
        let runtime = match rt {
            Rt::Embedded => json!({"kind": "embedded"}),
            Rt::Runc => json!({"kind": "cli", "path": RUNC}),
        };
        let shim = json!({
            "id": f.id,
            "bundle": bundle,
            "runtime": runtime,
            "runtime_root": f.runtime_root,
            "socket": f.socket,
            "log_path": f.log,
            "exit_file": f.exit_file,
            "exec_dir": f.exec_dir,
            "shim_log": f.dir.join("shim.log"),
        });
        std::fs::write(&f.shim_json, shim.to_string()).unwrap();
        f
    }

    /// `berth-shim start`: the Ready line.
    fn start_shim(&mut self) -> Ready {
        let mut child = Command::new(SHIM)
            .arg("start")
            .arg(&self.shim_json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let line = read_line_deadline(&mut out, Instant::now() + TIMEOUT);
        // The process we started detaches at once: reap it.
        let st = child.wait().unwrap();
        assert!(st.success(), "berth-shim start exited with {st}");
        let ready: Ready = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        if ready.shim_pid > 0 {
            self.shim_pid = Some(ready.shim_pid);
        }
        if ready.pid > 0 {
            self.pids.push(ready.pid);
        }
        ready
    }

    fn connect(&self) -> UnixStream {
        let s = berth_shim_proto::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s
    }

    fn request(&self, req: Value) -> Response {
        let mut s = self.connect();
        s.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn subscribe(&self) -> Events {
        let mut s = self.connect();
        s.write_all(b"{\"op\":\"subscribe\"}\n").unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\""), "subscribe: {line}");
        Events(r)
    }

    fn start(&self) {
        let r = self.request(json!({"op": "start"}));
        assert!(matches!(r, Response::Ok), "start: {r:?}");
    }

    fn exit_record(&self) -> ExitRecord {
        let text = wait_for("exit file", TIMEOUT, || {
            std::fs::read_to_string(&self.exit_file).ok()
        });
        serde_json::from_str(&text).unwrap()
    }

    /// Wait for the shim to be gone, then check that nothing is left.
    fn assert_clean(&self) {
        if let Some(pid) = self.shim_pid {
            wait_for("the shim to exit", TIMEOUT, || (!alive(pid)).then_some(()));
        }
        for ctrl in cgroup_controllers() {
            let dir = ctrl.join("berth-test").join(&self.id);
            assert!(!dir.exists(), "cgroup left behind: {}", dir.display());
        }
        let state = self.runtime_root.join(&self.id);
        assert!(
            !state.exists(),
            "runtime state left behind: {}",
            state.display()
        );
        assert!(!self.socket.exists(), "socket left behind");
        for &pid in &self.pids {
            assert!(!alive(pid), "process {pid} left behind");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // The shim first (its pid, checked to still be a berth-shim): SIGTERM
        // makes it kill the container and clean up; SIGKILL if it hangs.
        if let Some(pid) = self.shim_pid.filter(|&p| alive(p) && is_shim(p)) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid.as_raw()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid.as_raw()) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            }
        }
        // Then whatever a dead shim left: container processes, cgroups, state.
        let _ = Command::new(SHIM)
            .arg("cleanup")
            .arg(&self.shim_json)
            .stderr(Stdio::null())
            .status();
        for ctrl in cgroup_controllers() {
            let _ = std::fs::remove_dir(ctrl.join("berth-test").join(&self.id));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_shim(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "berth-shim")
}

fn cgroup_controllers() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Read one line from a pipe, giving up at `deadline`.
fn read_line_deadline(r: &mut std::process::ChildStdout, deadline: Instant) -> String {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(ms)).unwrap();
        assert!(n > 0, "timed out waiting for the ready line");
        match r.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("read ready pipe: {e}"),
        }
    }
    String::from_utf8(line).unwrap()
}

/// A subscription: ShimEvent lines.
struct Events(BufReader<UnixStream>);

impl Events {
    fn next(&mut self) -> Option<ShimEvent> {
        let mut line = String::new();
        match self.0.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))),
            Err(e) => panic!("event stream: {e}"),
        }
    }

    /// Exit events up to and including the init's.
    fn exits_until_init(&mut self) -> Vec<ExitRecord> {
        let mut out = Vec::new();
        while let Some(ev) = self.next() {
            if let ShimEvent::Exit(rec) = ev {
                let init = rec.process == "init";
                out.push(rec);
                if init {
                    break;
                }
            }
        }
        out
    }
}

/// Records of `stream` in a CRI log: (tag, content).
fn records(log: &str, stream: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next()?;
            assert!(
                humantime::parse_rfc3339(ts).is_ok(),
                "bad timestamp in {l:?}"
            );
            (p.next()? == stream).then(|| {
                (
                    p.next().unwrap_or("").to_owned(),
                    p.next().unwrap_or("").to_owned(),
                )
            })
        })
        .collect()
}

fn output_and_exit_code(rt: Rt) {
    if !can_run(rt) {
        return;
    }
    let mut f = Fixture::new(
        rt,
        &["sh", "-c", "echo hi; echo err >&2; printf tail; exit 3"],
    );
    let ready = f.start_shim();
    assert!(ready.error.is_none(), "{:?}", ready.error);
    assert!(ready.pid > 0);
    let mut events = f.subscribe();
    f.start();
    let exits = events.exits_until_init();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].exit, WireExit::Exited { code: 3 });
    assert_eq!(exits[0].pid, ready.pid);
    let rec = f.exit_record();
    assert_eq!(rec.exit, WireExit::Exited { code: 3 });
    assert_eq!(rec.process, "init");
    let log = std::fs::read_to_string(&f.log).unwrap();
    let out = records(&log, "stdout");
    let err = records(&log, "stderr");
    assert_eq!(
        out,
        [("F".into(), "hi".into()), ("P".into(), "tail".into())],
        "{log}"
    );
    assert_eq!(err, [("F".into(), "err".into())], "{log}");
    f.assert_clean();
}

fn killed_by_signal(rt: Rt) {
    if !can_run(rt) {
        return;
    }
    let mut f = Fixture::new(rt, &["sleep", "100"]);
    let ready = f.start_shim();
    assert!(ready.error.is_none(), "{:?}", ready.error);
    let mut events = f.subscribe();
    f.start();
    let r = f.request(json!({"op": "hello"}));
    assert!(
        matches!(r, Response::Hello { state: berth_shim_proto::ShimState::Running, pid, .. } if pid == ready.pid),
        "{r:?}"
    );
    // Starting twice is a state error.
    let r = f.request(json!({"op": "start"}));
    assert!(
        matches!(&r, Response::Error(e) if e.kind == ErrorKind::InvalidState),
        "{r:?}"
    );
    let r = f.request(json!({"op": "kill", "signal": 9}));
    assert!(matches!(r, Response::Ok), "{r:?}");
    let exits = events.exits_until_init();
    assert_eq!(
        exits.last().map(|e| e.exit.clone()),
        Some(WireExit::Signaled { signal: 9 })
    );
    assert_eq!(f.exit_record().exit, WireExit::Signaled { signal: 9 });
    f.assert_clean();
}

fn missing_command(rt: Rt) {
    if !can_run(rt) {
        return;
    }
    let mut f = Fixture::new(rt, &["/nonexistent"]);
    let ready = f.start_shim();
    let err = ready.error.expect("create must fail");
    assert_eq!(err.kind, ErrorKind::CommandNotFound, "{err:?}");
    assert!(!err.message.contains('\n'), "{:?}", err.message);
    assert!(err.message.contains("/nonexistent"), "{:?}", err.message);
    assert!(!f.exit_file.exists());
    f.assert_clean();
}

fn exec_in_running_container(rt: Rt) {
    if !can_run(rt) {
        return;
    }
    let mut f = Fixture::new(rt, &["sleep", "100"]);
    let ready = f.start_shim();
    assert!(ready.error.is_none(), "{:?}", ready.error);
    let mut events = f.subscribe();
    f.start();
    let process = |args: Value| json!({"args": args, "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}});
    let r = f.request(json!({"op": "exec", "exec_id": "e1",
        "process": process(json!(["sh", "-c", "echo x; exit 7"]))}));
    let Response::Started { pid: e1 } = r else {
        panic!("exec: {r:?}")
    };
    f.pids.push(e1);
    // e1's exit arrives on its own.
    let first = loop {
        match events.next().expect("event stream ended") {
            ShimEvent::Exit(rec) => break rec,
            ShimEvent::Oom => {}
        }
    };
    assert_eq!(first.process, "e1");
    assert_eq!(first.pid, e1);
    assert_eq!(first.exit, WireExit::Exited { code: 7 });
    let log = std::fs::read_to_string(f.exec_dir.join("e1.log")).unwrap();
    assert_eq!(records(&log, "stdout"), [("F".into(), "x".into())], "{log}");
    let rec: ExitRecord =
        serde_json::from_str(&std::fs::read_to_string(f.exec_dir.join("e1.exit")).unwrap())
            .unwrap();
    assert_eq!(rec.exit, WireExit::Exited { code: 7 });

    // Errors: unknown exec, duplicate id, missing command.
    let r = f.request(json!({"op": "kill", "signal": 15, "process": "nope"}));
    assert!(
        matches!(&r, Response::Error(e) if e.kind == ErrorKind::NotFound),
        "{r:?}"
    );
    let r = f.request(json!({"op": "exec", "exec_id": "bad",
        "process": process(json!(["/nonexistent"]))}));
    assert!(
        matches!(&r, Response::Error(e) if e.kind == ErrorKind::CommandNotFound),
        "{r:?}"
    );

    // A long exec dies with the init; its exit is reported first.
    let r = f.request(json!({"op": "exec", "exec_id": "e2",
        "process": process(json!(["sleep", "100"]))}));
    let Response::Started { pid: e2 } = r else {
        panic!("exec: {r:?}")
    };
    f.pids.push(e2);
    let r = f.request(json!({"op": "hello"}));
    assert!(
        matches!(&r, Response::Hello { execs, .. } if execs == &["e2".to_string()]),
        "{r:?}"
    );
    let r = f.request(json!({"op": "kill", "signal": 9}));
    assert!(matches!(r, Response::Ok), "{r:?}");
    let exits = events.exits_until_init();
    let order: Vec<&str> = exits.iter().map(|e| e.process.as_str()).collect();
    assert_eq!(order, ["e2", "init"], "{exits:?}");
    assert_eq!(exits[0].exit, WireExit::Signaled { signal: 9 });
    assert!(f.exec_dir.join("e2.exit").exists());
    assert_eq!(f.exit_record().exit, WireExit::Signaled { signal: 9 });
    f.assert_clean();
}

/// Idle RSS of the shim supervising `sleep`; returns kB.
fn idle_rss(rt: Rt) -> Option<u64> {
    if !can_run(rt) {
        return None;
    }
    let mut f = Fixture::new(rt, &["sleep", "100"]);
    let ready = f.start_shim();
    assert!(ready.error.is_none(), "{:?}", ready.error);
    f.start();
    let r = f.request(json!({"op": "hello"}));
    assert!(matches!(r, Response::Hello { .. }), "{r:?}");
    // Idle: the shim has gone back to sleep (and trimmed its resident
    // pages, see sys::trim_file_pages, half a second after its last work)
    // once VmRSS stops moving. Poll until the samples of 0.8 s agree.
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let settled = wait_for("an idle shim", Duration::from_secs(10), || {
        samples.push((Instant::now(), vm_rss_kb(ready.shim_pid)?));
        let now = Instant::now();
        let first = samples
            .iter()
            .position(|(t, _)| now - *t <= Duration::from_millis(800))?;
        let tail = &samples[first..];
        let long = first > 0;
        (long && tail.iter().all(|&(_, v)| v == tail[0].1)).then_some(tail[0].1)
    });
    eprintln!("{rt:?}: idle shim VmRSS {settled} kB");
    let r = f.request(json!({"op": "kill", "signal": 9, "all": true}));
    assert!(matches!(r, Response::Ok), "{r:?}");
    assert_eq!(f.exit_record().exit, WireExit::Signaled { signal: 9 });
    f.assert_clean();
    Some(settled)
}

fn sigterm_kills_container(rt: Rt) {
    if !can_run(rt) {
        return;
    }
    let mut f = Fixture::new(rt, &["sleep", "100"]);
    let ready = f.start_shim();
    assert!(ready.error.is_none(), "{:?}", ready.error);
    f.start();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ready.shim_pid),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(f.exit_record().exit, WireExit::Signaled { signal: 9 });
    f.assert_clean();
}

fn cleanup_after_shim_death(rt: Rt) {
    if !can_run(rt) {
        return;
    }
    let mut f = Fixture::new(rt, &["sleep", "100"]);
    let ready = f.start_shim();
    assert!(ready.error.is_none(), "{:?}", ready.error);
    f.start();
    let pid = nix::unistd::Pid::from_raw(ready.shim_pid);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL).unwrap();
    wait_for("the shim to die", TIMEOUT, || {
        (!alive(pid.as_raw())).then_some(())
    });
    assert!(alive(ready.pid), "the container outlives a killed shim");
    for _ in 0..2 {
        // Idempotent: the second run finds nothing and succeeds too.
        let st = Command::new(SHIM)
            .arg("cleanup")
            .arg(&f.shim_json)
            .status()
            .unwrap();
        assert!(st.success(), "cleanup: {st}");
    }
    wait_for("the init to die", TIMEOUT, || {
        (!alive(ready.pid)).then_some(())
    });
    f.assert_clean();
}

fn pause_and_resume(rt: Rt) {
    if !can_run(rt) {
        return;
    }
    let mut f = Fixture::new(rt, &["sleep", "100"]);
    let ready = f.start_shim();
    assert!(ready.error.is_none(), "{:?}", ready.error);
    let mut events = f.subscribe();
    let state = |f: &Fixture| match f.request(json!({"op": "hello"})) {
        Response::Hello { state, .. } => state,
        r => panic!("hello: {r:?}"),
    };
    use berth_shim_proto::ShimState;
    // Not running yet: pausing is a state error.
    let r = f.request(json!({"op": "pause"}));
    assert!(
        matches!(&r, Response::Error(e) if e.kind == ErrorKind::InvalidState),
        "{r:?}"
    );
    f.start();
    let r = f.request(json!({"op": "pause"}));
    assert!(matches!(r, Response::Ok), "{r:?}");
    assert_eq!(state(&f), ShimState::Paused);
    let freezer = format!("/sys/fs/cgroup/freezer/berth-test/{}/freezer.state", f.id);
    if let Ok(s) = std::fs::read_to_string(&freezer) {
        assert_eq!(s.trim(), "FROZEN");
    }
    let r =
        f.request(json!({"op": "exec", "exec_id": "p", "process": {"args": ["true"], "cwd": "/"}}));
    assert!(
        matches!(&r, Response::Error(e) if e.kind == ErrorKind::InvalidState),
        "{r:?}"
    );
    let r = f.request(json!({"op": "resume"}));
    assert!(matches!(r, Response::Ok), "{r:?}");
    assert_eq!(state(&f), ShimState::Running);
    let r = f.request(json!({"op": "resume"}));
    assert!(
        matches!(&r, Response::Error(e) if e.kind == ErrorKind::InvalidState),
        "{r:?}"
    );
    // SIGKILL reaches a frozen container too.
    let r = f.request(json!({"op": "pause"}));
    assert!(matches!(r, Response::Ok), "{r:?}");
    let r = f.request(json!({"op": "kill", "signal": 9}));
    assert!(matches!(r, Response::Ok), "{r:?}");
    let exits = events.exits_until_init();
    assert_eq!(
        exits.last().map(|e| e.exit.clone()),
        Some(WireExit::Signaled { signal: 9 })
    );
    f.assert_clean();
}

fn oom_is_reported(rt: Rt) {
    if !can_run(rt) {
        return;
    }
    let script = "a=$(head -c 100000000 /dev/zero | tr '\\0' x); echo survived";
    let mut f = Fixture::with_memory_limit(rt, &["sh", "-c", script], Some(16 << 20));
    let ready = f.start_shim();
    assert!(ready.error.is_none(), "{:?}", ready.error);
    let mut events = f.subscribe();
    f.start();
    let mut saw_oom = false;
    let exit = loop {
        match events.next().expect("event stream ended") {
            ShimEvent::Oom => saw_oom = true,
            ShimEvent::Exit(rec) if rec.process == "init" => break rec,
            ShimEvent::Exit(_) => {}
        }
    };
    assert!(saw_oom, "no oom event before {exit:?}");
    assert!(exit.oom_killed, "{exit:?}");
    assert!(f.exit_record().oom_killed);
    f.assert_clean();
}

macro_rules! both {
    ($case:ident) => {
        mod $case {
            #[test]
            fn embedded() {
                super::$case(super::Rt::Embedded);
            }
            #[test]
            fn runc() {
                super::$case(super::Rt::Runc);
            }
        }
    };
}

both!(output_and_exit_code);
both!(killed_by_signal);
both!(missing_command);
both!(exec_in_running_container);
both!(sigterm_kills_container);
both!(cleanup_after_shim_death);
both!(pause_and_resume);
both!(oom_is_reported);

#[test]
fn idle_rss_embedded() {
    if let Some(kb) = idle_rss(Rt::Embedded) {
        assert!(kb <= 2048, "idle shim VmRSS {kb} kB > 2 MB");
    }
}

#[test]
fn idle_rss_runc() {
    if let Some(kb) = idle_rss(Rt::Runc) {
        assert!(kb <= 2048, "idle shim VmRSS {kb} kB > 2 MB");
    }
}
