//! Budgets that can be asserted without timing anything:
//! - the shim's memory, asserted as conmon-rs does: an idle shim
//!   supervising a `sleep` container stays within 1.5 MiB of resident
//!   memory (VmRSS from /proc/PID/status);
//! - the processes forked and the durable writes (fsync, fdatasync) of one
//!   `run --rm /bin/true`, counted with `strace -f` over the whole stack.
//!
//! Latency and throughput live in `bench/` (see docs/performance.md).
//!
//! The budget is the shipped shim's: the release build (opt-level "s",
//! `-no-pie`), which `test.sh` builds and passes as `BERTH_BUDGET_SHIM`.
//! An unoptimised debug shim idles at ~1.8 MiB and is not what ships.

use std::time::Duration;

use berth_e2e::*;

/// VmRSS budget of one idle shim, in KiB.
const SHIM_RSS_BUDGET_KIB: u64 = 1536;

fn vm_rss_kib(pid: i64) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The release shim: `BERTH_BUDGET_SHIM`, else `target/release/berth-shim`.
fn release_shim() -> String {
    let path = std::env::var("BERTH_BUDGET_SHIM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target/release/berth-shim"));
    assert!(
        path.exists(),
        "no release shim at {}: build it with `cargo build --release -p berth-shim` \
         (test.sh does) or set BERTH_BUDGET_SHIM",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

fn idle_shim_within_budget(rt: Rt) {
    let shim_bin = release_shim();
    let d = Daemon::start_with(rt, &["--shim", &shim_bin]);
    let id = d.run(&["-d"], &["sleep", "1000"]).ok();
    let pid = d.inspect(&id)["pid"].as_i64().unwrap_or(0);
    assert!(pid > 0, "no init pid for {id}");
    let shim = ppid_of(pid);
    assert!(shim > 1, "no shim for init {pid}");
    let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap_or_default();
    assert!(
        comm.trim().starts_with("berth-shim"),
        "parent of the init is {comm:?}, not the shim"
    );

    // The shim trims the file pages it touched during start-up before it
    // goes idle; give it a moment to get there, then read it as it idles.
    let mut last = 0;
    let settled = poll_ok(Duration::from_secs(5), || {
        last = vm_rss_kib(shim).unwrap_or(u64::MAX);
        last <= SHIM_RSS_BUDGET_KIB
    });
    assert!(
        settled,
        "idle shim {shim} ({}): VmRSS {last} KiB > budget {SHIM_RSS_BUDGET_KIB} KiB",
        rt.flag()
    );
    // Still within budget a little later: it does not creep up while idle.
    std::thread::sleep(Duration::from_millis(300));
    let again = vm_rss_kib(shim).unwrap_or(u64::MAX);
    assert!(
        again <= SHIM_RSS_BUDGET_KIB,
        "idle shim {shim} ({}): VmRSS {again} KiB > budget {SHIM_RSS_BUDGET_KIB} KiB",
        rt.flag()
    );
    eprintln!("idle shim ({}): VmRSS {again} KiB", rt.flag());

    d.berth(&["rm", "-f", &id]).ok();
    assert_no_leftovers(&d, &id, pid);
}

/// Retry `f` every 50 ms until it holds or `timeout` passes.
fn poll_ok(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Counted, not timed: the processes forked and the durable writes of one
// `run --rm /bin/true`, across the whole stack (the CLI, berthd, the shim,
// the runtime's helpers and the container). Timing is noise on a shared
// machine; these counts are not, and each fork or fsync on the hot path
// costs 0.5-5 ms. A change that adds one fails here: if it pays for itself,
// raise the budget in the same commit and say why (docs/performance.md).
// ---------------------------------------------------------------------------

/// The syscalls that are counted: process creation and durable writes.
const TRACED: &str = "trace=clone,clone3,fork,vfork,execve,fsync,fdatasync,sync_file_range,syncfs";

/// What one traced stretch did, from `strace -f -Y -o` output.
#[derive(Debug, Default)]
struct Counts {
    /// New processes (fork, vfork, clone/clone3 without CLONE_THREAD).
    forks: u32,
    execs: u32,
    /// fsync, fdatasync, sync_file_range, syncfs.
    syncs: u32,
    /// "comm syscall" → count, for the failure message.
    by: std::collections::BTreeMap<String, u32>,
}

impl Counts {
    fn parse(text: &str, into: &mut Counts) {
        for line in text.lines() {
            // `PID<comm> name(args...` ; resumed calls, signals and exits
            // start with `<...`, `---` or `+++` and were counted already.
            let Some((who, call)) = line.split_once(' ') else {
                continue;
            };
            let call = call.trim_start();
            let Some(name) = call.split_once('(').map(|(n, _)| n) else {
                continue;
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let comm = who
                .split_once('<')
                .map(|(_, c)| c.trim_end_matches('>'))
                .unwrap_or("?");
            let kind = match name {
                "clone" | "clone3" if call.contains("CLONE_THREAD") => continue,
                "clone" | "clone3" | "fork" | "vfork" => {
                    into.forks += 1;
                    "fork"
                }
                "execve" => {
                    into.execs += 1;
                    "execve"
                }
                "fsync" | "fdatasync" | "sync_file_range" | "syncfs" => {
                    into.syncs += 1;
                    name
                }
                _ => continue,
            };
            *into.by.entry(format!("{comm} {kind}")).or_default() += 1;
        }
    }
}

/// The tracer of thread `tid` of process `pid`, if it is traced.
fn tracer_of(pid: i32, tid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&t| t != 0)
}

/// The processes with a task (thread) traced by `tracer`.
fn traced_by(tracer: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let tracer_pid = status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse::<u32>().ok());
            if tracer_pid == Some(tracer) {
                out.push(pid);
            }
        }
    }
    out
}

/// `strace -f` attached to a running berthd (and so to every process it
/// makes from then on); killed by its pid when dropped.
struct Tracer {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl Tracer {
    /// Attach to `roots` (berthd, and for an exec the container's shim,
    /// which was started before the trace).
    fn attach(roots: &[i32], out: std::path::PathBuf) -> Tracer {
        let mut cmd = std::process::Command::new("strace");
        cmd.args(["-f", "-Y", "-qq", "-e", "signal=none", "-e", TRACED, "-o"])
            .arg(&out);
        for pid in roots {
            cmd.arg("-p").arg(pid.to_string());
        }
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("strace is needed (scripts/setup.sh installs it)");
        let tracer = Tracer { child, out };
        let me = tracer.child.id();
        // Every thread the roots have now is traced (threads they make
        // later are followed by -f). Threads come and go: look at the
        // current ones.
        poll(
            "strace to attach to berthd",
            Duration::from_secs(30),
            || {
                roots
                    .iter()
                    .all(|&pid| {
                        let tasks: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
                            .map(|d| {
                                d.flatten()
                                    .filter_map(|t| t.file_name().to_string_lossy().parse().ok())
                                    .collect()
                            })
                            .unwrap_or_default();
                        !tasks.is_empty() && tasks.iter().all(|&t| tracer_of(pid, t) == Some(me))
                    })
                    .then_some(())
            },
        );
        tracer
    }

    /// Wait until only the roots' own threads are traced (the processes
    /// they started for the command are gone), then stop tracing and
    /// return what was seen.
    fn finish(mut self, roots: &[i32]) -> String {
        let me = self.child.id();
        poll(
            "the traced shim and container processes to exit",
            Duration::from_secs(30),
            || {
                traced_by(me)
                    .iter()
                    .all(|&p| roots.contains(&(p as i32)))
                    .then_some(())
            },
        );
        // SIGINT detaches strace from berthd, which runs on.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(me as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // After finish() the child is reaped and this is a no-op.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Budgets per `run --rm /bin/true` (output to a pipe: the attach path, as
/// `bench/suite.sh` runs it), the whole stack: (forks, execs, syncs).
fn run_budget(rt: Rt) -> (u32, u32, u32) {
    match rt {
        Rt::Embedded => (EMBEDDED_FORKS, EMBEDDED_EXECS, EMBEDDED_SYNCS),
        Rt::Runc => (RUNC_FORKS, RUNC_EXECS, RUNC_SYNCS),
    }
}

// The counts as measured when the budget was set (docs/performance.md,
// "Counted, not timed", has the breakdown).
// Embedded: berthd's shim zygote forks the shim (1; berthd started the
// zygote once, at the first create), which daemonizes with one fork (1)
// and forks a libcontainer helper for the create (1; start and delete run
// in the shim when the container has no hooks); youki's intermediate and
// init (2). execve: the CLI and the container's /bin/true (a shim forked
// from the zygote runs no exec; one started by berthd did: 3 before).
// Syncs: berthd 3 fdatasyncs (create, with the network plan queued before
// it; start; then the exit and the removal in one), the shim 2 fsyncs (the
// exit file and its directory); /bin/true writes nothing, so its log needs
// no fdatasync. (7 while the plan was a file of its own: 2 fsyncs more.)
const EMBEDDED_FORKS: u32 = 5;
const EMBEDDED_EXECS: u32 = 2;
const EMBEDDED_SYNCS: u32 = 5;
// runc: the shim execs runc create, start and delete, and runc forks its
// own parent/child/init chain (the shim's daemonize: one fork).
const RUNC_FORKS: u32 = 8;
const RUNC_EXECS: u32 = 6;
const RUNC_SYNCS: u32 = 5;

/// One traced `run --rm /bin/true`: berthd and all it starts (the shim
/// zygote's forks too), and the CLI.
fn traced_run(d: &Daemon, n: u32) -> Counts {
    let zygote = d.shim_zygote();
    assert!(zygote > 0, "berthd has no shim zygote after a first run");
    let rootfs = rootfs();
    let args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        "--rm".into(),
        "--rootfs".into(),
        rootfs.into(),
        "/bin/true".into(),
    ];
    traced(d, &format!("run.{n}"), &args, &[zygote])
}

/// One traced CLI command (`berth --socket S ARGS`): berthd, the processes
/// in `also` (a running container's shim), all they start, and the CLI.
fn traced(d: &Daemon, tag: &str, args: &[std::ffi::OsString], also: &[i32]) -> Counts {
    let mut roots = vec![d.pid()];
    roots.extend_from_slice(also);
    let daemon_out = d.root.join(format!("strace-berthd.{tag}"));
    let cli_out = d.root.join(format!("strace-cli.{tag}"));
    let tracer = Tracer::attach(&roots, daemon_out);
    let out = std::process::Command::new("strace")
        .args(["-f", "-Y", "-qq", "-e", "signal=none", "-e", TRACED, "-o"])
        .arg(&cli_out)
        .arg(bin_dir().join("berth"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run strace berth");
    let daemon_text = tracer.finish(&roots);
    assert!(
        out.status.success(),
        "traced run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = Counts::default();
    Counts::parse(&daemon_text, &mut c);
    Counts::parse(
        &std::fs::read_to_string(&cli_out).unwrap_or_default(),
        &mut c,
    );
    c
}

/// Check the smallest count of each kind over `runs` (so that a rare retry
/// cannot fail the test, and an added fork still does) against `budget`
/// (forks, execs, syncs); print every traced run.
fn check_budget(what: &str, rt: Rt, runs: &[Counts], budget: (u32, u32, u32)) {
    for (n, c) in runs.iter().enumerate() {
        eprintln!(
            "{what} ({}), traced run {n}: {} forks, {} execs, {} syncs: {:?}",
            rt.flag(),
            c.forks,
            c.execs,
            c.syncs,
            c.by
        );
    }
    let min = |f: fn(&Counts) -> u32| runs.iter().map(f).min().unwrap_or(u32::MAX);
    let (forks, execs, syncs) = (min(|c| c.forks), min(|c| c.execs), min(|c| c.syncs));
    let (max_forks, max_execs, max_syncs) = budget;
    let detail = runs
        .first()
        .map(|c| format!("{:?}", c.by))
        .unwrap_or_default();
    let rt = rt.flag();
    assert!(
        forks <= max_forks,
        "{what} ({rt}) forked {forks} processes, budget {max_forks}: {detail}"
    );
    assert!(
        execs <= max_execs,
        "{what} ({rt}) ran {execs} execve, budget {max_execs}: {detail}"
    );
    assert!(
        syncs <= max_syncs,
        "{what} ({rt}) made {syncs} durable writes (fsync/fdatasync), budget {max_syncs}: {detail}"
    );
    if (forks, execs, syncs) < (max_forks, max_execs, max_syncs) {
        eprintln!(
            "below budget ({forks}/{max_forks} forks, {execs}/{max_execs} execs, \
             {syncs}/{max_syncs} syncs): lower the budget in tests/e2e/tests/budget.rs"
        );
    }
}

fn run_rm_within_fork_and_sync_budget(rt: Rt) {
    // The budget is the engine's own path: `--network none` (the bridge
    // adds the CNI plugins' processes, bench/network.sh times them).
    let d = Daemon::start_with(rt, &["--default-network", "none"]);
    // The first run makes directories and caches once; count a later one.
    d.run(&["--rm"], &["/bin/true"]).ok();
    // Two counted runs; the smaller count of each kind is checked, so a
    // rare retry cannot fail the test, and an added fork still does.
    let runs: Vec<Counts> = (0..2).map(|n| traced_run(&d, n)).collect();
    check_budget("run --rm /bin/true", rt, &runs, run_budget(rt));
}

// Budgets per `exec /bin/true` into a running container (forks, execs,
// syncs). Embedded: the shim forks a libcontainer tenant helper, which forks
// the intermediate, which forks the process (3); execve: the CLI and
// /bin/true; syncs: berthd 2 fdatasyncs (the exec's record with its `added`
// and `started` events in one write, then its exit), the shim 2 fsyncs (the
// exec's exit file and its directory). runc: the shim forks and execs
// `runc exec` (1 fork, 1 execve), which re-execs itself (1) and forks its
// parent/child/init chain (3), and the init execs /bin/true; the same syncs.
// Before the two exec events shared a write: 5 syncs on either runtime.
fn exec_budget(rt: Rt) -> (u32, u32, u32) {
    match rt {
        Rt::Embedded => (3, 2, 4),
        Rt::Runc => (RUNC_EXEC_FORKS, RUNC_EXEC_EXECS, 4),
    }
}
const RUNC_EXEC_FORKS: u32 = 4;
const RUNC_EXEC_EXECS: u32 = 4;

fn exec_within_fork_and_sync_budget(rt: Rt) {
    let d = Daemon::start_with(rt, &["--default-network", "none"]);
    let id = d
        .run(&["-d", "--name", "idle"], &["/bin/sleep", "1000"])
        .ok();
    let shim = ppid_of(d.inspect(&id)["pid"].as_i64().unwrap_or(0));
    assert!(shim > 1, "no shim for container {id}");
    // The first exec makes the exec directory once; count later ones.
    d.berth(&["exec", "idle", "/bin/true"]).ok();
    let args: Vec<std::ffi::OsString> = ["exec", "idle", "/bin/true"]
        .into_iter()
        .map(Into::into)
        .collect();
    let runs: Vec<Counts> = (0..2)
        .map(|n| traced(&d, &format!("exec.{n}"), &args, &[shim as i32]))
        .collect();
    check_budget("exec /bin/true", rt, &runs, exec_budget(rt));
    d.berth(&["rm", "-f", "idle"]).ok();
}

both_runtimes!(
    idle_shim_within_budget,
    run_rm_within_fork_and_sync_budget,
    exec_within_fork_and_sync_budget
);
