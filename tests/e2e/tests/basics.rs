//! The first whole path: run, exit codes, output bytes, ps/inspect states,
//! rm leaving nothing behind, two daemons side by side, daemon restart.

use std::time::Duration;

use berth_e2e::*;

fn run_prints_and_exits_with_code(rt: Rt) {
    let d = Daemon::start(rt);
    let r = d.run(&["--rm"], &["/bin/sh", "-c", "echo hi; exit 3"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stdout, "hi\n");
    assert_eq!(r.stderr, "");
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "", "--rm left the container");
}

fn output_bytes_are_exact(rt: Rt) {
    let d = Daemon::start(rt);
    let r = d.run(
        &["--rm"],
        &[
            "/bin/sh",
            "-c",
            "printf 'a\\n\\nb  c'; printf 'err\\n' >&2; printf 'x' >&2",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.raw_stdout, b"a\n\nb  c");
    assert_eq!(r.stderr, "err\nx");
}

fn command_not_found_is_127_and_leaves_nothing(rt: Rt) {
    let d = Daemon::start(rt);
    let r = d.run(&["--rm"], &["/nonexistent"]);
    assert_eq!(r.code, 127, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "one-line error: {r:?}");
    assert!(r.stderr.contains("nonexistent"), "{r:?}");
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
    let left = d.container_dirs();
    assert!(left.is_empty(), "left behind: {left:?}");
    // Without --rm too: nothing is created when the command cannot run.
    let r = d.run(&[], &["nope-not-here"]);
    assert_eq!(r.code, 127, "{r:?}");
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
}

fn not_executable_is_126(rt: Rt) {
    let d = Daemon::start(rt);
    let r = d.run(&["--rm"], &["/etc/passwd"]);
    assert_eq!(r.code, 126, "{r:?}");
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
}

fn kill_9_is_137(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d.run(&["-d"], &["sleep", "100"]).ok();
    assert_eq!(id.len(), 64, "run -d prints the full id: {id}");
    assert_eq!(d.state_of(&id), "running");
    d.berth(&["kill", &id]).ok();
    assert_eq!(d.berth(&["wait", &id]).ok(), "137");
    let c = d.inspect(&id);
    assert_eq!(c["state"], "stopped");
    assert_eq!(c["exit_code"], 137);
    assert_eq!(c["exit"]["signal"], 9);
}

fn ps_and_inspect_follow_the_states(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .berth(&[
            "create",
            "--name",
            "web",
            "--rootfs",
            rootfs().to_str().unwrap(),
            "sh",
            "-c",
            // PID 1 ignores signals it has no handler for: trap TERM.
            "trap 'exit 7' TERM; sleep 100 & wait",
        ])
        .ok();
    assert_eq!(d.state_of("web"), "created");
    assert_eq!(
        d.berth(&["ps", "-q"]).ok(),
        "",
        "ps hides created containers"
    );
    let line = d.berth(&["ps", "-a", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["name"], "web");
    assert_eq!(v["state"], "created");
    assert!(v["exit_code"].is_null());
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));

    d.berth(&["start", &id[..10]]).ok();
    let c = d.inspect("web");
    assert_eq!(c["state"], "running");
    let pid = c["pid"].as_i64().unwrap();
    assert!(pid_alive(pid));
    assert!(c["started_at"].is_string());
    assert_eq!(d.berth(&["ps", "-q"]).ok(), &id[..12]);

    wait_for_trap(pid, libc::SIGTERM);
    d.berth(&["kill", "-s", "TERM", "web"]).ok();
    assert_eq!(d.berth(&["wait", "web"]).ok(), "7");
    let c = d.inspect("web");
    assert_eq!(c["state"], "stopped");
    assert_eq!(c["exit_code"], 7);
    assert!(c["finished_at"].is_string());
    assert_eq!(c["pid"], 0);
    let table = d.berth(&["ps", "-a"]).ok();
    assert!(table.contains("Exited (7)"), "{table}");

    d.berth(&["rm", "web"]).ok();
    assert_no_leftovers(&d, &id, pid);
    let r = d.berth(&["inspect", &id]);
    assert_eq!(r.code, 1, "{r:?}");
}

fn rm_force_leaves_nothing(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d.run(&["-d"], &["sleep", "100"]).ok();
    let pid = d.inspect(&id)["pid"].as_i64().unwrap();
    assert!(
        !cgroup_leftovers(&id).is_empty(),
        "the container has cgroups"
    );
    let r = d.berth(&["rm", &id]);
    assert_ne!(r.code, 0, "rm of a running container needs -f");
    assert!(r.stderr.contains("rm -f"), "{r:?}");
    d.berth(&["rm", "-f", &id]).ok();
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
    assert_no_leftovers(&d, &id, pid);
}

fn run_rm_removes_everything(rt: Rt) {
    let d = Daemon::start(rt);
    let r = d.run(&["--rm", "--name", "gone"], &["sh", "-c", "echo $$"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
    assert_eq!(d.container_dirs().len(), 0, "container files left");
    // Detached --rm: removed once it exits.
    let id = d.run(&["-d", "--rm"], &["sh", "-c", "exit 0"]).ok();
    poll("auto-removal", Duration::from_secs(10), || {
        (d.berth(&["inspect", &id]).code == 1).then_some(())
    });
    assert_no_leftovers(&d, &id, 0);
}

fn flags_reach_the_process(rt: Rt) {
    let d = Daemon::start(rt);
    let r = d.run(
        &[
            "--rm",
            "-e",
            "FOO=bar baz",
            "-w",
            "/tmp",
            "-u",
            "65534:65534",
            "--hostname",
            "box",
        ],
        &["sh", "-c", "echo \"$FOO\"; pwd; id -u; id -g; hostname"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "bar baz\n/tmp\n65534\n65534\nbox\n");
    let r = d.run(
        &["--rm", "-u", "nobody"],
        &["sh", "-c", "id -u; echo $HOME"],
    );
    assert_eq!(r.stdout, "65534\n/nonexistent\n", "{r:?}");
}

fn logs_replay_output(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .run(
            &["-d"],
            &[
                "sh",
                "-c",
                "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2; printf end",
            ],
        )
        .ok();
    assert_eq!(d.berth(&["wait", &id]).ok(), "0");
    let r = d.berth(&["logs", &id]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, "line1\nline2\nline3\nline4\nline5\nend");
    assert_eq!(r.stderr, "oops\n");
    let r = d.berth(&["logs", "--tail", "2", &id]);
    assert_eq!(r.stdout, "line5\nend", "{r:?}");
    assert_eq!(r.stderr, "oops\n");
    let r = d.berth(&["logs", "-t", &id]);
    let first = r.stdout.lines().next().unwrap();
    assert!(first.ends_with("Z line1"), "{first}");
}

fn two_daemons_side_by_side(rt: Rt) {
    let a = Daemon::start(rt);
    let b = Daemon::start(rt);
    let ia = a.run(&["-d", "--name", "same"], &["sleep", "100"]).ok();
    let ib = b.run(&["-d", "--name", "same"], &["sleep", "100"]).ok();
    assert_ne!(ia, ib);
    assert_eq!(a.berth(&["ps", "-q"]).ok(), &ia[..12]);
    assert_eq!(b.berth(&["ps", "-q"]).ok(), &ib[..12]);
    a.berth(&["rm", "-f", "same"]).ok();
    assert_eq!(b.state_of("same"), "running");
    b.berth(&["rm", "-f", "same"]).ok();
}

fn daemon_restart_keeps_containers(rt: Rt) {
    let mut d = Daemon::start(rt);
    let live = d.run(&["-d", "--name", "live"], &["sleep", "100"]).ok();
    let quick = d
        .run(&["-d", "--name", "quick"], &["sh", "-c", "sleep 1; exit 5"])
        .ok();
    let pid = d.inspect(&live)["pid"].as_i64().unwrap();
    let qpid = d.inspect(&quick)["pid"].as_i64().unwrap();
    d.kill9();
    // While berthd is down, one container exits.
    poll("quick to exit", Duration::from_secs(10), || {
        (!pid_alive(qpid)).then_some(())
    });
    d.restart();
    assert_eq!(d.state_of("live"), "running");
    assert_eq!(d.inspect("live")["pid"].as_i64().unwrap(), pid);
    assert_eq!(d.berth(&["wait", "quick"]).ok(), "5");
    d.berth(&["kill", "live"]).ok();
    assert_eq!(d.berth(&["wait", "live"]).ok(), "137");
    d.berth(&["rm", "live", "quick"]).ok();
    assert_no_leftovers(&d, &live, pid);
    assert_no_leftovers(&d, &quick, 0);
}

fn bad_input_is_refused_cleanly(rt: Rt) {
    let d = Daemon::start(rt);
    let r = d.run(&["--name", "bad/name"], &["true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("invalid container name"), "{r:?}");
    let r = d.berth(&["run", "--rootfs", "/does/not/exist", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    let r = d.run(&["-w", "relative"], &["true"]);
    assert_eq!(r.code, 125, "{r:?}");
    let r = d.run(&["-u", "alice"], &["true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("alice"), "{r:?}");
    let r = d.berth(&["kill", "nosuch"]);
    assert_eq!(r.code, 1, "{r:?}");
    let r = d.berth(&["--bogus-flag"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(!r.stderr.is_empty());
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
}

both_runtimes!(
    run_prints_and_exits_with_code,
    output_bytes_are_exact,
    command_not_found_is_127_and_leaves_nothing,
    not_executable_is_126,
    kill_9_is_137,
    ps_and_inspect_follow_the_states,
    rm_force_leaves_nothing,
    run_rm_removes_everything,
    flags_reach_the_process,
    logs_replay_output,
    two_daemons_side_by_side,
    daemon_restart_keeps_containers,
    bad_input_is_refused_cleanly,
);

#[test]
fn unreachable_daemon_is_125() {
    let out = std::process::Command::new(bin_dir().join("berth"))
        .args(["--socket", "/tmp/berth-no-such.sock", "ps"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/tmp/berth-no-such.sock"), "{err}");
}
