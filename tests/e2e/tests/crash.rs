//! Crash-proofing: berthd killed with SIGKILL, shims killed, a simulated
//! host reboot, graceful shutdown, and a loop that kills berthd at random
//! moments while containers come and go.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::*;
use serde_json::Value;

fn sigkill(pid: i64) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn signal(pid: i64, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

fn pid_of(d: &Daemon, id: &str) -> i64 {
    d.inspect(id)["pid"].as_i64().unwrap()
}

/// The shim of a running container: its init's parent.
fn shim_of(d: &Daemon, id: &str) -> i64 {
    let shim = ppid_of(pid_of(d, id));
    let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "berth-shim", "the init's parent is its shim");
    // Forked from berthd's shim zygote or started by berthd, a shim names
    // its container's shim.json in its command line.
    let cmd = std::fs::read(format!("/proc/{shim}/cmdline")).unwrap_or_default();
    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
    let full = d.inspect(id)["id"].as_str().unwrap_or_default().to_string();
    let want = format!(
        "berth-shim start {}/containers/{full}/shim.json",
        d.run_dir().display()
    );
    assert!(
        cmd.contains(&want),
        "shim command line {cmd:?}, expected {want:?}"
    );
    shim
}

fn exit_events(d: &Daemon, id: &str) -> Vec<Value> {
    d.events_json(&[
        "--filter",
        &format!("container={id}"),
        "--filter",
        "type=exit",
    ])
}

/// A shell that exits with `code` on SIGUSR1 (signals reach a pid-1 shell
/// only through a trap).
fn on_usr1_exit(code: i32) -> String {
    format!("trap 'exit {code}' USR1; while true; do sleep 0.05; done")
}

/// Ten containers running, berthd killed -9; three exit while it is down
/// (codes 0, 7, and SIGKILL); after the restart the seven still run with
/// the same pids, the three show 0, 7 and 137, each exit event once, also
/// across a second restart.
fn ten_containers_and_three_exits_while_down(rt: Rt) {
    let mut d = Daemon::start(rt);
    let zero = d.run(&["-d"], &["sh", "-c", &on_usr1_exit(0)]).ok();
    let seven = d.run(&["-d"], &["sh", "-c", &on_usr1_exit(7)]).ok();
    let killed = d.run(&["-d"], &["sleep", "1000"]).ok();
    let mut live = Vec::new();
    for i in 0..6 {
        let script = format!("echo hello-{i}; while true; do sleep 0.05; done");
        live.push(d.run(&["-d"], &["sh", "-c", &script]).ok());
    }
    // One that talks, for a client attached after the restart.
    let talker = "trap 'echo bye; exit 2' USR1; while true; do echo tick; sleep 0.05; done";
    live.push(d.run(&["-d"], &["sh", "-c", talker]).ok());
    let pids: HashMap<String, i64> = live
        .iter()
        .chain([&zero, &seven, &killed])
        .map(|id| (id.clone(), pid_of(&d, id)))
        .collect();
    wait_for_trap(pids[&zero], libc::SIGUSR1);
    wait_for_trap(pids[&seven], libc::SIGUSR1);
    d.kill9();

    signal(pids[&zero], nix::sys::signal::Signal::SIGUSR1);
    signal(pids[&seven], nix::sys::signal::Signal::SIGUSR1);
    sigkill(pids[&killed]);
    for id in [&zero, &seven, &killed] {
        let exit_file = d.run_dir().join("containers").join(id).join("exit");
        poll("the exit file", Duration::from_secs(20), || {
            exit_file.exists().then_some(())
        });
    }
    d.restart();

    for id in &live {
        let c = d.inspect(id);
        assert_eq!(c["state"], "running", "{c}");
        assert_eq!(c["pid"].as_i64(), Some(pids[id]), "same pid after restart");
    }
    for (id, code) in [(&zero, 0), (&seven, 7), (&killed, 137)] {
        let c = d.inspect(id);
        assert_eq!(c["state"], "stopped", "{c}");
        assert_eq!(c["exit_code"], code, "{c}");
        assert_eq!(d.berth(&["wait", id]).ok(), code.to_string());
    }
    assert_eq!(d.inspect(&killed)["exit"]["signal"], 9);
    // ps, logs and exec work on the adopted containers.
    let ps = d.berth(&["ps", "-q"]).ok();
    assert_eq!(ps.lines().count(), 7, "{ps}");
    assert_eq!(d.berth(&["logs", &live[3]]).ok(), "hello-3");
    assert_eq!(d.berth(&["exec", &live[0], "sh", "-c", "exit 9"]).code, 9);

    for _ in 0..2 {
        for (id, code) in [(&zero, 0), (&seven, 7), (&killed, 137)] {
            let evs = exit_events(&d, id);
            assert_eq!(evs.len(), 1, "one exit event for {id}: {evs:?}");
            assert_eq!(evs[0]["exit_code"], code);
        }
        for id in &live {
            assert!(exit_events(&d, id).is_empty());
        }
        // Nothing is owed twice: a second restart emits nothing new.
        d.restart();
    }

    // A client attached to an adopted container streams its output and
    // ends with its exit code.
    let mut a = d
        .cmd(&["attach", &live[6]])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(a.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "tick\n");
    wait_for_trap(pids[&live[6]], libc::SIGUSR1);
    d.berth(&["kill", "-s", "USR1", &live[6]]).ok();
    let st = poll("attach to end", Duration::from_secs(10), || {
        a.try_wait().unwrap()
    });
    assert_eq!(st.code(), Some(2));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(rest.ends_with("bye\n"), "{rest:?}");
    live.pop();
    // logs -f and wait follow an adopted container to its end; it is
    // still stoppable, with its true code.
    let mut follow = d
        .cmd(&["logs", "-f", &live[0]])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(follow.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first, "hello-0\n");
    let waiter = d
        .cmd(&["wait", &live[0]])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    d.berth(&["kill", &live[0]]).ok();
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "137");
    let st = poll("logs -f to end", Duration::from_secs(10), || {
        follow.try_wait().unwrap()
    });
    assert!(st.success());
    for id in pids.keys() {
        d.berth(&["rm", "-f", id]).ok();
    }
    for (id, pid) in &pids {
        assert_no_leftovers(&d, id, *pid);
    }
}

/// A shim killed with SIGKILL: within 1 s its container is stopped with
/// exit code -1 and a reason, what is left of it is killed and removed,
/// and the restart policy then applies.
fn killed_shim_is_noticed_within_a_second(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d.run(&["-d"], &["sleep", "1000"]).ok();
    let pid = pid_of(&d, &id);
    let shim = shim_of(&d, &id);
    let killed_at = now_secs();
    sigkill(shim);
    let ev = poll("the exit event", Duration::from_secs(20), || {
        exit_events(&d, &id).first().cloned()
    });
    let latency = rfc3339_secs(ev["time"].as_str().unwrap()) - killed_at;
    eprintln!(
        "shim death noticed in {:.0} ms ({})",
        latency * 1000.0,
        rt.flag()
    );
    assert!(latency < 1.0, "noticed after {latency:.3}s");
    assert_eq!(ev["exit_code"], -1);
    let c = d.inspect(&id);
    assert_eq!(c["state"], "stopped");
    assert_eq!(c["exit_code"], -1);
    assert_eq!(c["exit"]["kind"], "unknown");
    let reason = c["exit"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("shim"), "a reason: {c}");
    let ps = d.berth(&["ps", "-a"]).ok();
    assert!(ps.contains("Exited (-1)"), "{ps}");
    // The container's init went with the cleanup, before the event.
    assert!(!pid_alive(pid), "the init outlived its shim");
    assert!(cgroup_leftovers(&id).is_empty());
    d.berth(&["rm", &id]).ok();
    assert_no_leftovers(&d, &id, pid);

    // With a policy, the container comes back.
    let id = d
        .run(&["-d", "--restart", "on-failure"], &["sleep", "1000"])
        .ok();
    let pid = pid_of(&d, &id);
    sigkill(shim_of(&d, &id));
    poll("a restart", Duration::from_secs(20), || {
        let c = d.inspect(&id);
        (c["state"] == "running" && c["restart_count"] == 1).then_some(())
    });
    assert_ne!(pid_of(&d, &id), pid);
    assert!(!pid_alive(pid));
    d.berth(&["rm", "-f", &id]).ok();
    assert_no_leftovers(&d, &id, pid);
}

fn event_types(d: &Daemon, id: &str) -> Vec<String> {
    d.events_json(&["--filter", &format!("container={id}")])
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// on-failure:3 of a container that always exits 1: exactly three
/// restarts, each after a longer delay (100, 200, 400 ms at least).
fn on_failure_3_restarts_three_times_with_growing_delays(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .run(
            &["-d", "--restart", "on-failure:3"],
            &["sh", "-c", "exit 1"],
        )
        .ok();
    poll(
        "three restarts and the last exit",
        Duration::from_secs(30),
        || {
            let c = d.inspect(&id);
            (c["state"] == "stopped" && c["restart_count"] == 3 && !c["restarting"].as_bool()?)
                .then_some(())
        },
    );
    let mut want = vec!["create", "start", "exit"];
    for _ in 0..3 {
        want.extend(["restart", "start", "exit"]);
    }
    poll("the last exit event", Duration::from_secs(10), || {
        (event_types(&d, &id) == want).then_some(())
    });
    let evs = d.events_json(&["--filter", &format!("container={id}")]);
    let time = |e: &Value| rfc3339_secs(e["time"].as_str().unwrap());
    let mut delays = Vec::new();
    for w in evs.windows(2) {
        if w[1]["type"] == "restart" {
            assert_eq!(w[0]["type"], "exit");
            assert_eq!(w[0]["exit_code"], 1);
            delays.push(time(&w[1]) - time(&w[0]));
        }
    }
    eprintln!("restart delays: {delays:?}");
    assert_eq!(delays.len(), 3);
    for (i, d) in delays.iter().enumerate() {
        let floor = 0.1 * f64::from(1 << i);
        assert!(
            *d >= floor - 0.005,
            "restart {} after {d:.3}s < {floor}s",
            i + 1
        );
    }
    // No fourth restart: the container stays stopped with its true code.
    let c = d.inspect(&id);
    assert_eq!(c["exit_code"], 1);
    assert_eq!(c["restart_count"], 3);
    assert_eq!(c["restarting"], false);
    d.berth(&["rm", &id]).ok();
    assert_no_leftovers(&d, &id, 0);
}

/// --restart always survives a daemon restart: the container is adopted
/// (same pid), and its policy still applies afterwards.
fn always_survives_a_daemon_restart(rt: Rt) {
    let mut d = Daemon::start(rt);
    let id = d
        .run(&["-d", "--restart", "always"], &["sleep", "1000"])
        .ok();
    let pid = pid_of(&d, &id);
    d.kill9();
    d.restart();
    let c = d.inspect(&id);
    assert_eq!(c["state"], "running");
    assert_eq!(c["pid"].as_i64(), Some(pid));
    // Killed from outside (not a stop): the policy brings it back.
    sigkill(pid);
    poll("a restart", Duration::from_secs(20), || {
        let c = d.inspect(&id);
        (c["state"] == "running" && c["restart_count"] == 1).then_some(())
    });
    let c = d.inspect(&id);
    assert_ne!(c["pid"].as_i64(), Some(pid));
    let exits = exit_events(&d, &id);
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0]["exit_code"], 137);
    d.berth(&["rm", "-f", &id]).ok();
    assert_no_leftovers(&d, &id, 0);
}

/// The running container `id` was adopted by a berthd started again (the
/// same init); it is removed without leftovers.
fn readopted(d: &Daemon, id: &str, pid: i64) {
    let c = d.inspect(id);
    assert_eq!(c["state"], "running");
    assert_eq!(c["pid"].as_i64(), Some(pid));
    d.berth(&["rm", "-f", id]).ok();
    assert_no_leftovers(d, id, pid);
}

/// What a reboot does to a daemon's world: every shim and container
/// process gone (killed by the pids we read) and their cgroups with them.
/// The root is on disk, so its files stay; the run root (here under the
/// root, on disk) keeps runtime state and stale shim sockets too, unless
/// `wipe_run`: then it is gone, as the default run root on a tmpfs would
/// be.
fn simulate_reboot(d: &mut Daemon, running: &[&str], wipe_run: bool) {
    let procs: Vec<(i64, i64)> = running
        .iter()
        .map(|id| {
            let pid = pid_of(d, id);
            (pid, ppid_of(pid))
        })
        .collect();
    d.kill9();
    for &(pid, shim) in &procs {
        sigkill(shim);
        sigkill(pid);
    }
    for &(pid, shim) in &procs {
        poll("a process to die", Duration::from_secs(10), || {
            (!pid_alive(pid) && !pid_alive(shim)).then_some(())
        });
    }
    for id in running {
        for cg in cgroup_leftovers(id) {
            remove_cgroup(&cg);
        }
    }
    if !wipe_run {
        // The next berthd runs in another boot: it must not trust the
        // runtime state left on disk (its pids may be anyone's now).
        let boot_id = d.state_dir().join("boot_id");
        assert!(boot_id.exists(), "berthd records the boot it runs in");
        std::fs::write(&boot_id, "00000000-0000-0000-0000-000000000000\n").unwrap();
        return;
    }
    // The run root on a tmpfs: bundles, sockets, exit files and the
    // runtime's state, all gone.
    let run = d.run_dir();
    assert!(run.starts_with(d.state_dir()), "{}", run.display());
    std::fs::remove_dir_all(&run).unwrap();
}

/// rmdir a cgroup and its children, deepest first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    poll("an empty cgroup to go", Duration::from_secs(10), || {
        std::fs::remove_dir(dir).is_ok().then_some(())
    });
}

/// After a simulated host reboot, `always` and `unless-stopped` containers
/// come back; a stopped `unless-stopped` one stays stopped; one without a
/// policy is stopped with an unknown exit.
fn policies_after_a_host_reboot(rt: Rt) {
    reboot(rt, false);
    reboot(rt, true);
}

fn reboot(rt: Rt, wipe_run: bool) {
    let mut d = Daemon::start(rt);
    let always = d
        .run(&["-d", "--restart", "always"], &["sleep", "1000"])
        .ok();
    let unless = d
        .run(&["-d", "--restart", "unless-stopped"], &["sleep", "1000"])
        .ok();
    let held = d
        .run(&["-d", "--restart", "unless-stopped"], &["sleep", "1000"])
        .ok();
    let plain = d.run(&["-d"], &["sleep", "1000"]).ok();
    d.berth(&["stop", "-t", "0", &held]).ok();
    assert_eq!(d.state_of(&held), "stopped");
    let old = [pid_of(&d, &always), pid_of(&d, &unless)];

    simulate_reboot(&mut d, &[&always, &unless, &plain], wipe_run);
    d.restart();
    if !wipe_run {
        assert!(d.daemon_log().contains("the host rebooted"));
    }

    for id in [&always, &unless] {
        poll(
            "the container to come back",
            Duration::from_secs(30),
            || (d.state_of(id) == "running").then_some(()),
        );
        let pid = pid_of(&d, id);
        assert!(!old.contains(&pid));
        assert!(pid_alive(pid));
    }
    let c = d.inspect(&held);
    assert_eq!(c["state"], "stopped", "{c}");
    assert_eq!(c["exit_code"], 137);
    let c = d.inspect(&plain);
    assert_eq!(c["state"], "stopped", "{c}");
    assert_eq!(c["exit_code"], -1);
    // The stopped one stays stopped (nothing pending).
    assert!(!d.inspect(&held)["restarting"].as_bool().unwrap_or(true));
    for id in [&always, &unless, &held, &plain] {
        d.berth(&["rm", "-f", id]).ok();
        assert_no_leftovers(&d, id, 0);
    }
}

/// SIGTERM: containers keep running by default and are adopted by the
/// next daemon; an open `wait` does not hold the shutdown.
fn sigterm_leaves_containers_running(rt: Rt) {
    let mut d = Daemon::start(rt);
    let id = d.run(&["-d"], &["sleep", "1000"]).ok();
    let pid = pid_of(&d, &id);
    let mut waiter = d
        .cmd(&["wait", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(d.terminate(Duration::from_secs(20)), Some(0));
    let _ = poll("the waiter to end", Duration::from_secs(10), || {
        waiter.try_wait().unwrap()
    });
    assert!(pid_alive(pid), "the container was stopped");
    d.restart();
    readopted(&d, &id, pid);
}

/// `--stop-containers-on-exit`: SIGTERM stops every container with its
/// stop signal and deadline; the exits are recorded once with their true
/// codes; policies apply again when the daemon comes back.
fn stop_containers_on_exit(rt: Rt) {
    let mut d = Daemon::start_with(rt, &["--stop-containers-on-exit"]);
    let polite = d
        .run(
            &["-d"],
            &[
                "sh",
                "-c",
                "trap 'exit 3' TERM; while true; do sleep 0.05; done",
            ],
        )
        .ok();
    let stubborn = d
        .run(&["-d", "--stop-timeout", "1"], &["sleep", "1000"])
        .ok();
    let usr = d
        .run(
            &["-d", "--stop-signal", "USR1"],
            &["sh", "-c", &on_usr1_exit(4)],
        )
        .ok();
    let back = d
        .run(&["-d", "--restart", "unless-stopped"], &["sleep", "1000"])
        .ok();
    let pids: Vec<i64> = [&polite, &stubborn, &usr, &back]
        .iter()
        .map(|id| pid_of(&d, id))
        .collect();
    wait_for_trap(pids[0], libc::SIGTERM);
    wait_for_trap(pids[2], libc::SIGUSR1);
    assert_eq!(d.terminate(Duration::from_secs(30)), Some(0));
    for pid in &pids {
        assert!(!pid_alive(*pid), "a container outlived the daemon");
    }
    d.restart();
    for (id, code) in [(&polite, 3), (&stubborn, 137), (&usr, 4)] {
        let c = d.inspect(id);
        assert_eq!(c["state"], "stopped", "{c}");
        assert_eq!(c["exit_code"], code, "{c}");
        assert_eq!(exit_events(&d, id).len(), 1);
    }
    // Not an explicit stop: unless-stopped comes back.
    poll(
        "unless-stopped to come back",
        Duration::from_secs(30),
        || (d.state_of(&back) == "running").then_some(()),
    );
    for id in [&polite, &stubborn, &usr, &back] {
        d.berth(&["rm", "-f", id]).ok();
        assert_no_leftovers(&d, id, 0);
    }
}

// ---------------------------------------------------------------------
// The crash loop.

/// A small xorshift generator: reproducible from the seed it prints.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("BERTH_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| now_secs().to_bits() | 1);
        eprintln!("crash test seed: BERTH_CRASH_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn iterations() -> usize {
    std::env::var("BERTH_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

/// Exit codes a container of each kind may truly have: `t` traps TERM
/// and exits 3 (137 when killed before its trap is set, or by rm -f/a
/// stop of a created one), `q` exits 4 by itself (137 when stopped:
/// it ignores TERM as pid 1); `r` is a `q` under `--restart on-failure:2`.
fn codes_for(name: &str) -> &'static [i64] {
    if name.starts_with('t') {
        &[3, 137]
    } else {
        &[4, 137]
    }
}

/// Everything that is ours: the containers' files on disk, the shims
/// (found by our root in their command line) and the event log.
struct World {
    db: BTreeMap<String, Value>,
    disk: BTreeSet<String>,
    shims: Vec<(i64, String)>,
}

fn our_shims(d: &Daemon) -> Vec<(i64, String)> {
    let needle = format!("{}/containers/", d.run_dir().display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        // Shims and their forks; not a passing `berth-shim cleanup`.
        if !cmd.contains("berth-shim start") || !pid_alive(pid) {
            continue;
        }
        if let Some(rest) = cmd.split(&needle).nth(1) {
            let id = rest.split('/').next().unwrap_or_default().to_string();
            out.push((pid, id));
        }
    }
    out
}

fn world(d: &Daemon) -> World {
    let ps = d.berth(&["ps", "-a", "--format", "json"]).ok();
    let mut db = BTreeMap::new();
    for l in ps.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).expect("ps json");
        if v.is_array() {
            for c in v.as_array().unwrap() {
                db.insert(c["id"].as_str().unwrap().to_string(), c.clone());
            }
        } else {
            db.insert(v["id"].as_str().unwrap().to_string(), v);
        }
    }
    let disk = d.container_dirs();
    World {
        db,
        disk,
        shims: our_shims(d),
    }
}

/// Database, disk, processes, mounts and cgroups agree; every exit code is
/// true; every exit event appears once per run.
fn check_world(d: &Daemon, seen: &BTreeSet<String>, round: usize) {
    let w = world(d);
    let db: BTreeSet<String> = w.db.keys().cloned().collect();
    assert_eq!(db, w.disk, "round {round}: database and disk disagree");
    let live: BTreeSet<&String> =
        w.db.iter()
            .filter(|(_, c)| matches!(c["state"].as_str(), Some("running" | "created" | "paused")))
            .map(|(id, _)| id)
            .collect();
    // Stopped, but the policy will run it again: its next run may be
    // under way.
    let restarting: BTreeSet<&String> =
        w.db.iter()
            .filter(|(_, c)| {
                c["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Restarting"))
            })
            .map(|(id, _)| id)
            .collect();
    for (pid, id) in &w.shims {
        if !live.contains(id) && !restarting.contains(id) {
            // Its container just stopped: the shim exits right after it
            // reported the exit.
            poll(
                "a stopped container's shim to exit",
                Duration::from_secs(10),
                || (!pid_alive(*pid)).then_some(()),
            );
        }
    }
    let runtime = d.run_dir().join("runtime");
    for id in seen {
        let is_live = live.contains(id);
        if !is_live && !restarting.contains(id) {
            assert!(
                cgroup_leftovers(id).is_empty(),
                "round {round}: cgroup of {id} left"
            );
            assert!(
                !runtime.join(id).exists(),
                "round {round}: runtime state of {id} left"
            );
        }
        // A runtime call in flight (runc create or delete of a run that a
        // policy restarts, or rm removes) shows transient mounts: only
        // ones that stay are leaks.
        // A stopped container keeps its network namespace file (bound at
        // <root>/netns/<id>) until it is removed (docs/networking.md); a
        // removed one keeps nothing.
        let netns = d.state_dir().join("netns").join(id);
        let netns = netns.to_string_lossy().into_owned();
        let kept = |m: &String| w.db.contains_key(id) && m.contains(&format!(" {netns} "));
        poll(
            &format!("round {round}: mounts of {id} to go"),
            Duration::from_secs(10),
            || mount_leftovers(id).iter().all(&kept).then_some(()),
        );
    }
    for (id, c) in &w.db {
        let name = c["name"].as_str().unwrap_or_default();
        let state = c["state"].as_str().unwrap_or_default();
        let pid = c["pid"].as_i64().unwrap_or(0);
        match state {
            "running" | "paused" if !pid_alive(pid) => {
                // It exited since we listed (a `q` container ends by
                // itself): its exit must be recorded, promptly and true.
                let c = poll(
                    "a gone init to be recorded",
                    Duration::from_secs(10),
                    || {
                        let c = d.inspect(id);
                        // Stopped, or already running again by its policy.
                        (c["state"] == "stopped" || c["pid"].as_i64() != Some(pid)).then_some(c)
                    },
                );
                let code = c["exit"]["exit_code"].as_i64();
                assert!(
                    code.is_some_and(|x| codes_for(name).contains(&x)),
                    "round {round}: {name} {id} stopped with {code:?}: {c}"
                );
            }
            "running" | "paused" => {
                assert!(
                    w.shims.iter().any(|(_, s)| s == id),
                    "round {round}: {id} is {state} without a shim"
                );
            }
            "stopped" => {
                let code = c["exit_code"].as_i64();
                // `restarting` never happens here: no policies in the loop.
                let ok = code.is_some_and(|x| codes_for(name).contains(&x));
                assert!(ok, "round {round}: {name} {id} stopped with {code:?}: {c}");
            }
            _ => {}
        }
    }
    // Events: per container, one exit per start (one fewer while it runs),
    // one exec-exit per exec-added of a stopped container, never twice.
    // A `q` container may end between reading the log and the states:
    // read both again until they agree (a real disagreement stays).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let Err(last) = check_events(d) else {
            return;
        };
        assert!(Instant::now() < deadline, "round {round}: {last}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check_events(d: &Daemon) -> Result<(), String> {
    macro_rules! check {
        ($cond:expr, $($fmt:tt)*) => {
            if !$cond {
                return Err(format!($($fmt)*));
            }
        };
    }
    let events = d.events_json(&[]);
    let db = world(d).db;
    let mut per: HashMap<String, Vec<Value>> = HashMap::new();
    for e in events {
        per.entry(e["container"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(e);
    }
    for (id, evs) in &per {
        let count = |t: &str| evs.iter().filter(|e| e["type"] == t).count();
        let (starts, exits, deletes) = (count("start"), count("exit"), count("delete"));
        check!(deletes <= 1, "{id} deleted {deletes} times");
        let state = db.get(id).and_then(|c| c["state"].as_str());
        match state {
            Some("running") | Some("paused") => check!(
                exits + 1 == starts,
                "{id} running: {starts} starts, {exits} exits"
            ),
            Some("created") => check!(
                exits == starts,
                "{id} created: {starts} starts, {exits} exits"
            ),
            // A stopped container, or a deleted one: every run ended once
            // (a created-never-started run ends with an exit too).
            _ => check!(
                exits == starts || exits == starts + 1,
                "{id}: {starts} starts, {exits} exits: {evs:?}"
            ),
        }
        // pause and resume alternate within a run, and the last says
        // whether it is paused now.
        let mut frozen = false;
        for e in evs {
            match e["type"].as_str().unwrap_or_default() {
                "pause" => {
                    check!(!frozen, "{id}: paused twice: {evs:?}");
                    frozen = true;
                }
                "resume" => {
                    check!(frozen, "{id}: resumed while not paused: {evs:?}");
                    frozen = false;
                }
                "start" | "exit" => frozen = false,
                _ => {}
            }
        }
        if let Some(st @ ("running" | "paused")) = state {
            check!(frozen == (st == "paused"), "{id} is {st}: {evs:?}");
        }
        let mut exec_exits = BTreeSet::new();
        for e in evs.iter().filter(|e| e["type"] == "exec-exit") {
            let p = e["process"].as_str().unwrap_or_default().to_string();
            check!(exec_exits.insert(p.clone()), "exec-exit of {p} twice");
            let code = e["exit_code"].as_i64();
            check!(
                matches!(code, Some(5) | Some(-1) | Some(137)),
                "exec {p} of {id} exited {code:?}"
            );
        }
        if state.is_none() || state == Some("stopped") {
            for e in evs.iter().filter(|e| e["type"] == "exec-added") {
                let p = e["process"].as_str().unwrap_or_default();
                check!(
                    exec_exits.contains(p),
                    "exec {p} of {id} never reported its exit"
                );
            }
        }
        for e in evs.iter().filter(|e| e["type"] == "exit") {
            let name = e["name"].as_str().unwrap_or_default();
            let code = e["exit_code"].as_i64();
            check!(
                code.is_some_and(|x| codes_for(name).contains(&x)),
                "exit of {name} {id} with {code:?}"
            );
        }
    }
    Ok(())
}

/// Spawn a CLI command in the background (its outcome does not matter:
/// the daemon may die under it).
fn spawn(d: &Daemon, args: &[&str]) -> Child {
    d.cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berth")
}

fn reap(children: Vec<Child>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for mut c in children {
        loop {
            if c.try_wait().ok().flatten().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("a berth command hung after its daemon died");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Create / start / exec / pause / unpause / stop / rm across many
/// containers while berthd
/// is killed with SIGKILL at random moments; after each restart, the
/// world must agree with the database and every exit code be true.
fn crash_loop(rt: Rt) {
    let iterations = iterations();
    let mut rng = Rng::new();
    let mut d = Daemon::start(rt);
    let rootfs = rootfs();
    let rootfs = rootfs.to_str().unwrap().to_string();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let started = Instant::now();
    for round in 0..iterations {
        if let Some(st) = d.try_exited() {
            panic!("round {round}: berthd died: {st:?}");
        }
        let w = world(&d);
        seen.extend(w.db.keys().cloned());
        let ids: Vec<String> = w.db.keys().cloned().collect();
        let running: Vec<String> =
            w.db.iter()
                .filter(|(_, c)| c["state"] == "running")
                .map(|(id, _)| id.clone())
                .collect();
        let paused: Vec<String> =
            w.db.iter()
                .filter(|(_, c)| c["state"] == "paused")
                .map(|(id, _)| id.clone())
                .collect();
        let created: Vec<String> =
            w.db.iter()
                .filter(|(_, c)| c["state"] == "created")
                .map(|(id, _)| id.clone())
                .collect();
        let pick = |rng: &mut Rng, v: &[String]| -> Option<String> {
            (!v.is_empty()).then(|| v[rng.below(v.len() as u64) as usize].clone())
        };
        let mut kids = Vec::new();
        let n = 2 + rng.below(4);
        for k in 0..n {
            let kind = ["t", "q", "r"][rng.below(3) as usize];
            let name = format!("{kind}{round}x{k}");
            let cmd = if kind == "t" {
                "trap 'exit 3' TERM; while true; do sleep 0.05; done"
            } else {
                "sleep 0.3; exit 4"
            };
            let verb = if rng.below(3) == 0 { "create" } else { "run" };
            let mut args = vec![verb];
            if verb == "run" {
                args.push("-d");
            }
            args.extend(["--name", &name, "--stop-timeout", "1", "--rootfs", &rootfs]);
            if kind == "r" {
                args.extend(["--restart", "on-failure:2"]);
            }
            args.extend(["sh", "-c", cmd]);
            kids.push(spawn(&d, &args));
        }
        if let Some(id) = pick(&mut rng, &running) {
            kids.push(spawn(&d, &["exec", &id, "sh", "-c", "sleep 0.1; exit 5"]));
        }
        if let Some(id) = pick(&mut rng, &running) {
            kids.push(spawn(&d, &["exec", "-d", &id, "sh", "-c", "exit 5"]));
        }
        if let Some(id) = pick(&mut rng, &created) {
            kids.push(spawn(&d, &["start", &id]));
        }
        if let Some(id) = pick(&mut rng, &running) {
            kids.push(spawn(&d, &["stop", "-t", "1", &id]));
        }
        if let Some(id) = pick(&mut rng, &running) {
            kids.push(spawn(&d, &["pause", &id]));
        }
        if let Some(id) = pick(&mut rng, &paused) {
            kids.push(spawn(&d, &["unpause", &id]));
        }
        if let Some(id) = pick(&mut rng, &ids) {
            kids.push(spawn(&d, &["rm", "-f", &id]));
        }
        if ids.len() > 12 {
            for id in ids.iter().take(4) {
                kids.push(spawn(&d, &["rm", "-f", id]));
            }
        }
        // The random moment: not a wait for anything.
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        // Everything on disk before the kill may be an orphan afterwards.
        seen.extend(d.container_dirs());
        d.kill9();
        reap(kids);
        seen.extend(d.container_dirs());
        d.restart();
        if let Some(st) = d.try_exited() {
            panic!("round {round}: berthd died after its restart: {st:?}");
        }
        check_world(&d, &seen, round);
    }
    eprintln!(
        "crash loop ({}): {iterations} iterations, {} containers, {:.1}s",
        rt.flag(),
        seen.len(),
        started.elapsed().as_secs_f64()
    );
    for id in world(&d).db.keys() {
        d.berth(&["rm", "-f", id]).ok();
    }
    let w = world(&d);
    assert!(
        w.db.is_empty() && w.disk.is_empty(),
        "left: {:?} {:?}",
        w.db,
        w.disk
    );
    assert!(w.shims.is_empty(), "shims left: {:?}", w.shims);
    for id in &seen {
        assert_no_leftovers(&d, id, 0);
    }
}

/// berthd finds shims only under the run root they were started in: a
/// new --run-root while one still runs is refused, in one line that says
/// which to use, and leaves the container running and the new directory
/// unmade; the old one goes on as before.
#[test]
fn a_new_run_root_is_refused_while_containers_run() {
    let mut d = Daemon::start(Rt::Embedded);
    let id = d.run(&["-d"], &["sleep", "1000"]).ok();
    let pid = pid_of(&d, &id);
    d.kill9();
    let other = d.root.join("other-run");
    let out = std::process::Command::new(bin_dir().join("berthd"))
        .arg("--root")
        .arg(d.state_dir())
        .arg("--run-root")
        .arg(&other)
        .arg("--socket")
        .arg(d.root.join("other.sock"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // Up again first, so that a failed assertion below still ends with a
    // daemon that removes the container.
    d.restart();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("still run")
            && last.contains(&format!("--run-root {}", d.run_dir().display())),
        "{err}"
    );
    assert!(!other.exists(), "{}", other.display());
    readopted(&d, &id, pid);
}

both_runtimes!(
    ten_containers_and_three_exits_while_down,
    killed_shim_is_noticed_within_a_second,
    on_failure_3_restarts_three_times_with_growing_delays,
    always_survives_a_daemon_restart,
    policies_after_a_host_reboot,
    sigterm_leaves_containers_running,
    stop_containers_on_exit,
    crash_loop,
);
