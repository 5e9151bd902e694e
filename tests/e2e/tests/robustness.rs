//! Failure paths and logs: a shim that dies, following output, rotation.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use berth_e2e::*;

/// A shim killed with SIGKILL takes the exit status with it: the exit is
/// reported as unknown (-1, CLI 125), never as success, and the container
/// is still cleaned up completely.
fn dead_shim_means_unknown_exit_not_success(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d.run(&["-d"], &["sleep", "100"]).ok();
    let pid = d.inspect(&id)["pid"].as_i64().unwrap();
    let shim = ppid_of(pid);
    assert_ne!(shim, 1, "the shim is the init's parent");
    let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap();
    assert_eq!(comm.trim(), "berth-shim");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let r = d.berth(&["wait", &id]);
    assert_eq!(r.stdout.trim(), "-1", "{r:?}");
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("could not be determined"), "{r:?}");
    let c = d.inspect(&id);
    assert_eq!(c["state"], "stopped");
    assert_eq!(c["exit_code"], -1);
    assert_eq!(c["exit"]["kind"], "unknown");
    d.berth(&["rm", &id]).ok();
    assert_no_leftovers(&d, &id, pid);
}

/// The shim zygote (berthd's child that forks each new shim) killed with
/// SIGKILL is started again at the next create, which still works; and a
/// berthd killed with SIGKILL leaves no zygote behind (it ends when its
/// socket to berthd closes).
fn a_killed_shim_zygote_comes_back_and_goes_with_berthd(rt: Rt) {
    let mut d = Daemon::start(rt);
    d.run(&["--rm"], &["true"]).ok();
    let zygote = d.shim_zygote();
    assert!(zygote > 0, "no shim zygote after a first run");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    poll("the killed zygote to go", Duration::from_secs(10), || {
        (!pid_alive(i64::from(zygote))).then_some(())
    });
    let r = d.run(&["--rm"], &["sh", "-c", "echo after; exit 3"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stdout, "after\n", "{r:?}");
    let again = d.shim_zygote();
    assert!(again > 0 && again != zygote, "no new zygote: {again}");
    let id = d.run(&["-d"], &["sleep", "100"]).ok();
    d.kill9();
    poll(
        "the zygote to end with berthd",
        Duration::from_secs(10),
        || (!pid_alive(i64::from(again))).then_some(()),
    );
    // The container forked from it lives on, and berthd adopts it.
    d.restart();
    assert_eq!(d.state_of(&id), "running");
    d.berth(&["rm", "-f", &id]).ok();
}

fn logs_follow_until_exit(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .run(
            &["-d"],
            &[
                "sh",
                "-c",
                "echo one; read x; echo two; echo three >&2; exit 4",
            ],
        )
        .ok();
    let mut f = d
        .cmd(&["logs", "-f", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(f.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    // `read` returns at once (stdin is closed), so the rest comes and the
    // container exits: the follower must end by itself.
    let st = poll("logs -f to end", Duration::from_secs(10), || {
        f.try_wait().unwrap()
    });
    assert!(st.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "two\n");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut f.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(err, "three\n");
    assert_eq!(d.berth(&["wait", &id]).ok(), "4");
}

fn attach_streams_new_output_and_the_exit(rt: Rt) {
    let d = Daemon::start(rt);
    let script = "echo before; trap 'echo bye; exit 8' TERM; \
                  while true; do echo tick; sleep 0.05; done";
    let id = d.run(&["-d"], &["sh", "-c", script]).ok();
    poll("before to be logged", Duration::from_secs(5), || {
        d.berth(&["logs", &id])
            .stdout
            .contains("before")
            .then_some(())
    });
    let mut a = d
        .cmd(&["attach", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(a.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "tick\n", "attach shows only output written after it");
    d.berth(&["kill", "-s", "TERM", &id]).ok();
    let st = poll("attach to end", Duration::from_secs(10), || {
        a.try_wait().unwrap()
    });
    assert_eq!(st.code(), Some(8));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(rest.ends_with("bye\n"), "{rest:?}");
    assert!(!rest.contains("before"));
    // Attaching to a stopped container is refused, in one line.
    let r = d.berth(&["attach", &id]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("start it first"), "{r:?}");
}

fn logs_rotate_by_size(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .run(
            &["-d", "--log-max-size", "4k", "--log-max-files", "2"],
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
            ],
        )
        .ok();
    assert_eq!(d.berth(&["wait", &id]).ok(), "0");
    let files: Vec<String> = std::fs::read_dir(d.state_dir().join("containers").join(&id))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("container.log"))
        .collect();
    assert!(files.len() <= 3, "{files:?}");
    for f in &files {
        let len = std::fs::metadata(d.state_dir().join("containers").join(&id).join(f))
            .unwrap()
            .len();
        assert!(len <= 4096 + 256, "{f} is {len} bytes: rotation overshot");
    }
    // What is kept is the newest output, whole lines, in order, to the end.
    let out = d.berth(&["logs", &id]).ok();
    let nums: Vec<u32> = out
        .lines()
        .map(|l| l.strip_prefix("line-").unwrap().parse().unwrap())
        .collect();
    assert_eq!(*nums.last().unwrap(), 1999);
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "lines lost or reordered"
    );
    assert!(nums.len() < 2000, "nothing was rotated away");
}

/// An exec that exits while berthd is down still gets its exec-exit event,
/// with its real code, once berthd is back.
fn exec_exit_while_daemon_is_down(rt: Rt) {
    let mut d = Daemon::start(rt);
    let id = d.run(&["-d"], &["sleep", "100"]).ok();
    let exec = d
        .berth(&["exec", "-d", &id, "sh", "-c", "sleep 1; exit 6"])
        .ok();
    d.kill9();
    let exit_file = d
        .state_dir()
        .join("containers")
        .join(&id)
        .join("execs")
        .join(format!("{exec}.exit"));
    poll("the exec to exit", Duration::from_secs(10), || {
        exit_file.exists().then_some(())
    });
    d.restart();
    let evs = d.events_json(&["--filter", "type=exec-exit"]);
    let v = evs.first().expect("an exec-exit event");
    assert_eq!(v["process"], exec.as_str());
    assert_eq!(v["exit_code"], 6);
    d.berth(&["rm", "-f", &id]).ok();
}

/// The file `name` of container `id`'s cgroup, in whichever hierarchy has it.
fn cgroup_file(id: &str, name: &str) -> Option<String> {
    std::fs::read_dir("/sys/fs/cgroup")
        .ok()?
        .flatten()
        .map(|c| c.path().join("berth").join(id).join(name))
        .chain(std::iter::once(
            std::path::Path::new("/sys/fs/cgroup/berth")
                .join(id)
                .join(name),
        ))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
}

fn limits_reach_the_cgroup_and_oom_is_reported(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .run(
            &[
                "-d",
                "--cpus",
                "0.5",
                // runc's init is a Go program waiting with ~5 threads
                // in the cgroup: a limit of 5 leaves it no thread to spare.
                "--pids-limit",
                "32",
                "--memory",
                "64m",
            ],
            &["sleep", "100"],
        )
        .ok();
    assert_eq!(cgroup_file(&id, "pids.max").as_deref(), Some("32"));
    assert_eq!(
        cgroup_file(&id, "cpu.cfs_quota_us").as_deref(),
        Some("50000")
    );
    assert_eq!(
        cgroup_file(&id, "memory.limit_in_bytes").as_deref(),
        Some("67108864")
    );
    d.berth(&["rm", "-f", &id]).ok();

    // The OOM killer ends a 64 MiB allocation under a 16 MiB limit.
    let id = d
        .run(
            &["-d", "--memory", "16m"],
            &["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1"],
        )
        .ok();
    assert_eq!(d.berth(&["wait", &id]).ok(), "137");
    assert_eq!(d.inspect(&id)["oom_killed"], true);
    let k: Vec<String> = d
        .events_json(&["--filter", &format!("container={id}")])
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect();
    let oom = k.iter().position(|t| t == "oom").expect("an oom event");
    let exit = k.iter().position(|t| t == "exit").unwrap();
    assert!(oom < exit, "{k:?}");
    d.berth(&["rm", &id]).ok();

    let r = d.run(&["--rm", "--memory", "1m"], &["true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("6 MiB"), "{r:?}");
    let r = d.run(&["--rm", "--cpus", "-1"], &["true"]);
    assert_eq!(r.code, 125, "{r:?}");
}

both_runtimes!(
    a_killed_shim_zygote_comes_back_and_goes_with_berthd,
    limits_reach_the_cgroup_and_oom_is_reported,
    attach_streams_new_output_and_the_exit,
    exec_exit_while_daemon_is_down,
    dead_shim_means_unknown_exit_not_success,
    logs_follow_until_exit,
    logs_rotate_by_size,
);
