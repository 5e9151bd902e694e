//! The whole lifecycle: exec, stop, kill, pause, run to completion, and
//! events that no one can lose.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_e2e::*;
use serde_json::Value;

/// An init that ends with code 0 on SIGTERM (PID 1 ignores signals it has
/// no handler for).
const OBEDIENT: &str = "trap 'exit 0' TERM; sleep 100 & wait";

/// Every event so far, as JSON, optionally for one container.
fn events(d: &Daemon, container: Option<&str>) -> Vec<Value> {
    match container {
        Some(c) => d.events_json(&["--filter", &format!("container={c}")]),
        None => d.events_json(&[]),
    }
}

fn kinds(evs: &[Value]) -> Vec<(String, Option<i64>)> {
    evs.iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["exit_code"].as_i64(),
            )
        })
        .collect()
}

fn ev(t: &str, code: Option<i64>) -> (String, Option<i64>) {
    (t.to_string(), code)
}

fn exec_runs_in_the_container(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .run(&["-d", "--name", "box"], &["sh", "-c", OBEDIENT])
        .ok();
    let r = d.berth(&["exec", "box", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(r.code, 7, "{r:?}");
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    let r = d.berth(&[
        "exec",
        "-e",
        "A=b c",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        "box",
        "sh",
        "-c",
        "echo $A; pwd; id -u",
    ]);
    assert_eq!(r.stdout, "b c\n/tmp\n65534\n", "{r:?}");
    // Sees the init: same pid namespace.
    let r = d.berth(&["exec", "box", "cat", "/proc/1/cmdline"]);
    assert!(r.stdout.starts_with("sh"), "{r:?}");
    let exec_id = d.berth(&["exec", "-d", "box", "sleep", "1"]).ok();
    assert_eq!(exec_id.len(), 16, "{exec_id}");
    let r = d.berth(&["exec", "box", "/nonexistent"]);
    assert_eq!(r.code, 127, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    d.berth(&["stop", "box"]).ok();
    let r = d.berth(&["exec", "box", "true"]);
    assert_eq!(r.code, 125, "exec into a stopped container: {r:?}");
    assert!(r.stderr.contains("not running"), "{r:?}");
    d.berth(&["rm", &id]).ok();
}

fn events_of_run_exec_stop_rm(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d.run(&["-d"], &["sh", "-c", OBEDIENT]).ok();
    assert_eq!(d.berth(&["exec", &id, "true"]).code, 0);
    d.berth(&["stop", &id]).ok();
    d.berth(&["rm", &id]).ok();
    let evs = events(&d, Some(&id));
    assert_eq!(
        kinds(&evs),
        vec![
            ev("create", None),
            ev("start", None),
            ev("exec-added", None),
            ev("exec-started", None),
            ev("exec-exit", Some(0)),
            ev("exit", Some(0)),
            ev("delete", None),
        ]
    );
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for e in &evs {
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(e["container"], id.as_str());
    }
    assert_eq!(evs[0]["process"], "init");
    assert!(evs[0]["pid"].as_i64().unwrap() > 0);
    assert_eq!(evs[2]["process"], evs[4]["process"]);
    assert_ne!(evs[2]["process"], "init");
}

fn stop_is_prompt_and_bounded(rt: Rt) {
    let d = Daemon::start(rt);
    // Obeys SIGTERM: done long before the 10 s deadline, with its own code.
    let a = d.run(&["-d"], &["sh", "-c", OBEDIENT]).ok();
    // A SIGTERM before the trap is set would be ignored (PID 1).
    wait_for_trap(d.inspect(&a)["pid"].as_i64().unwrap(), libc::SIGTERM);
    let t = Instant::now();
    d.berth(&["stop", &a]).ok();
    let obedient = t.elapsed();
    assert!(obedient < Duration::from_secs(5), "took {obedient:?}");
    assert_eq!(d.inspect(&a)["exit_code"], 0);
    // Ignores SIGTERM (sleep as PID 1): SIGKILL after about one second.
    let b = d.run(&["-d"], &["sleep", "100"]).ok();
    let t = Instant::now();
    d.berth(&["stop", "-t", "1", &b]).ok();
    let stubborn = t.elapsed();
    assert!(
        stubborn >= Duration::from_millis(900) && stubborn < Duration::from_secs(5),
        "took {stubborn:?}"
    );
    assert_eq!(d.berth(&["wait", &b]).ok(), "137");
    // Already stopped is success.
    d.berth(&["stop", &b]).ok();
    // The container's own stop signal and timeout.
    let c = d
        .run(
            &["-d", "--stop-signal", "USR1", "--stop-timeout", "30"],
            &["sh", "-c", "trap 'exit 10' USR1; sleep 100 & wait"],
        )
        .ok();
    wait_for_trap(d.inspect(&c)["pid"].as_i64().unwrap(), libc::SIGUSR1);
    let t = Instant::now();
    d.berth(&["stop", &c]).ok();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(d.inspect(&c)["exit_code"], 10);
    eprintln!("stop: obedient {obedient:?}, stubborn with -t 1 {stubborn:?}");
}

fn kill_takes_names_and_numbers(rt: Rt) {
    let d = Daemon::start(rt);
    let a = d
        .run(
            &["-d"],
            &["sh", "-c", "trap 'exit 12' USR2; sleep 100 & wait"],
        )
        .ok();
    wait_for_trap(d.inspect(&a)["pid"].as_i64().unwrap(), libc::SIGUSR2);
    d.berth(&["kill", "-s", "SIGUSR2", &a]).ok();
    assert_eq!(d.berth(&["wait", &a]).ok(), "12");
    let b = d.run(&["-d"], &["sh", "-c", OBEDIENT]).ok();
    wait_for_trap(d.inspect(&b)["pid"].as_i64().unwrap(), libc::SIGTERM);
    d.berth(&["kill", "--signal", "15", &b]).ok();
    assert_eq!(d.berth(&["wait", &b]).ok(), "0");
    let c = d.run(&["-d"], &["sleep", "100"]).ok();
    let r = d.berth(&["kill", "-s", "NOPE", &c]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("invalid signal"), "{r:?}");
    let r = d.berth(&["kill", &a]);
    assert_ne!(r.code, 0, "kill of a stopped container: {r:?}");
    d.berth(&["rm", "-f", &c]).ok();
}

fn pause_and_unpause(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d.run(&["-d"], &["sh", "-c", OBEDIENT]).ok();
    d.berth(&["pause", &id]).ok();
    assert_eq!(d.state_of(&id), "paused");
    let ps: Value = serde_json::from_str(&d.berth(&["ps", "--format", "json"]).ok()).unwrap();
    assert_eq!(ps["state"], "paused");
    assert!(d.berth(&["ps"]).ok().contains("(Paused)"));
    let freezer = format!("/sys/fs/cgroup/freezer/berth/{id}/freezer.state");
    if std::path::Path::new(&freezer).exists() {
        assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    }
    assert_ne!(d.berth(&["exec", &id, "true"]).code, 0);
    assert_ne!(d.berth(&["pause", &id]).code, 0, "already paused");
    d.berth(&["unpause", &id]).ok();
    assert_eq!(d.state_of(&id), "running");
    assert_eq!(d.berth(&["exec", &id, "true"]).code, 0);
    // A paused container still stops (the signal lands once thawed).
    d.berth(&["pause", &id]).ok();
    d.berth(&["stop", "-t", "2", &id]).ok();
    assert_eq!(d.state_of(&id), "stopped");
    let types: Vec<String> = kinds(&events(&d, Some(&id)))
        .into_iter()
        .map(|k| k.0)
        .collect();
    assert!(types.contains(&"pause".to_string()) && types.contains(&"resume".to_string()));
}

fn exec_exits_come_before_the_init_exit(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d.run(&["-d"], &["sleep", "100"]).ok();
    d.berth(&["exec", "-d", &id, "sleep", "100"]).ok();
    d.berth(&["exec", "-d", &id, "sleep", "200"]).ok();
    d.berth(&["kill", &id]).ok();
    assert_eq!(d.berth(&["wait", &id]).ok(), "137");
    let k = kinds(&events(&d, Some(&id)));
    let exit_at = k.iter().position(|e| e.0 == "exit").unwrap();
    let exec_exits: Vec<usize> = k
        .iter()
        .enumerate()
        .filter(|(_, e)| e.0 == "exec-exit")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(exec_exits.len(), 2, "{k:?}");
    assert!(exec_exits.iter().all(|i| *i < exit_at), "{k:?}");
    assert_eq!(k[exit_at].1, Some(137));
}

fn run_to_completion_when_nothing_is_attached(rt: Rt) {
    let d = Daemon::start(rt);
    let r = rootfs();
    let st = d
        .cmd(&[
            "run",
            "--rm",
            "--rootfs",
            r.to_str().unwrap(),
            "sh",
            "-c",
            "echo x; exit 3",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(3));
    let st = d
        .cmd(&["run", "--rm", "--rootfs", r.to_str().unwrap(), "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
    let k: Vec<String> = kinds(&events(&d, None)).into_iter().map(|e| e.0).collect();
    assert_eq!(
        k,
        ["create", "start", "exit", "delete", "create", "start", "exit", "delete"]
    );
}

/// A subscriber that resumes with --since its last seq sees no gap and no
/// duplicate, across its own restart and across a daemon restart.
fn events_resume_without_gap_or_duplicate(rt: Rt) {
    let mut d = Daemon::start(rt);
    let mut sub = d
        .cmd(&["events", "--format", "json", "--since", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let a = d.run(&["-d"], &["sleep", "100"]).ok();
    let mut seen: Vec<u64> = Vec::new();
    while seen.len() < 2 {
        let l = lines.next().unwrap().unwrap();
        let v: Value = serde_json::from_str(&l).unwrap();
        seen.push(v["seq"].as_u64().unwrap());
    }
    // The subscriber dies; events happen while it is away.
    let _ = sub.kill();
    let _ = sub.wait();
    d.berth(&["kill", &a]).ok();
    d.berth(&["wait", &a]).ok();
    let b = d.run(&["-d"], &["sleep", "100"]).ok();
    let last = *seen.last().unwrap();
    let resumed: Vec<u64> = {
        let until = now_rfc3339();
        d.berth(&[
            "events",
            "--since",
            &last.to_string(),
            "--until",
            &until,
            "--format",
            "json",
        ])
        .ok()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
    };
    seen.extend(&resumed);
    // The daemon dies and comes back; more events.
    d.kill9();
    d.restart();
    d.berth(&["rm", "-f", &b]).ok();
    d.berth(&["rm", &a]).ok();
    let last = *seen.last().unwrap();
    let until = now_rfc3339();
    let after_restart: Vec<Value> = d
        .berth(&[
            "events",
            "--since",
            &last.to_string(),
            "--until",
            &until,
            "--format",
            "json",
        ])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    seen.extend(after_restart.iter().map(|v| v["seq"].as_u64().unwrap()));
    let want: Vec<u64> = (1..=*seen.last().unwrap()).collect();
    assert_eq!(seen, want, "a gap or a duplicate");
    let types: Vec<&str> = after_restart
        .iter()
        .map(|v| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["exit", "delete", "delete"], "{after_restart:?}");
}

/// Ctrl-C / SIGTERM to a foreground `run` or `exec` goes to the process it
/// is attached to (docker's sig-proxy), and the CLI exits with its code.
fn signals_are_forwarded_to_the_attached_process(rt: Rt) {
    let d = Daemon::start(rt);
    let r = rootfs();
    let mut run = d
        .cmd(&[
            "run",
            "--rm",
            "--name",
            "fg",
            "--rootfs",
            r.to_str().unwrap(),
            "sh",
            "-c",
            "trap 'exit 21' TERM; echo ready; sleep 100 & wait",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(run.stdout.take().unwrap()).lines();
    assert_eq!(out.next().unwrap().unwrap(), "ready");
    let cli = nix::unistd::Pid::from_raw(run.id() as i32);
    nix::sys::signal::kill(cli, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(run.wait().unwrap().code(), Some(21));

    let id = d.run(&["-d"], &["sleep", "100"]).ok();
    let mut exec = d
        .cmd(&[
            "exec",
            &id,
            "sh",
            "-c",
            "trap 'exit 22' INT; echo ready; sleep 100 & wait",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(exec.stdout.take().unwrap()).lines();
    assert_eq!(out.next().unwrap().unwrap(), "ready");
    let cli = nix::unistd::Pid::from_raw(exec.id() as i32);
    nix::sys::signal::kill(cli, nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(exec.wait().unwrap().code(), Some(22));
    assert_eq!(d.state_of(&id), "running", "only the exec got the signal");
    d.berth(&["rm", "-f", &id]).ok();
}

both_runtimes!(
    signals_are_forwarded_to_the_attached_process,
    exec_runs_in_the_container,
    events_of_run_exec_stop_rm,
    stop_is_prompt_and_bounded,
    kill_takes_names_and_numbers,
    pause_and_unpause,
    exec_exits_come_before_the_init_exit,
    run_to_completion_when_nothing_is_attached,
    events_resume_without_gap_or_duplicate,
    start_is_idempotent_and_stop_of_created_is_prompt,
);

#[test]
fn events_filters_and_bad_input() {
    let d = Daemon::start(Rt::Embedded);
    let a = d.run(&["--rm", "--name", "one"], &["true"]);
    assert_eq!(a.code, 0);
    d.run(&["--rm", "--name", "two"], &["true"]);
    let until = now_rfc3339();
    let out = d
        .berth(&[
            "events",
            "--since",
            "0",
            "--until",
            &until,
            "--filter",
            "type=exit",
            "--format",
            "json",
        ])
        .ok();
    let names: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["one", "two"]);
    let out = d
        .berth(&[
            "events",
            "--since",
            "0",
            "--until",
            &until,
            "--filter",
            "container=two",
        ])
        .ok();
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.lines().all(|l| l.contains("(two)")), "{out}");
    let r = d.berth(&["events", "--since", "yesterday"]);
    assert_eq!(r.code, 125, "{r:?}");
    let r = d.berth(&[
        "events",
        "--filter",
        "type=bogus",
        "--since",
        "0",
        "--until",
        "1",
    ]);
    assert_eq!(r.code, 125, "{r:?}");
    let r = d.berth(&["events", "--filter", "color=red"]);
    assert_eq!(r.code, 125, "{r:?}");
}

/// A bounded log drops the oldest events; a subscriber asking for them gets
/// an explicit `missed` record, then the rest in order.
#[test]
fn compacted_events_are_reported_as_missed() {
    let d = Daemon::start_with(Rt::Embedded, &["--events-max", "5"]);
    for _ in 0..3 {
        assert_eq!(d.run(&["--rm"], &["true"]).code, 0);
    }
    // 3 containers x (create, start, exit, delete) = seq 1..=12; 8..=12 kept.
    let until = now_rfc3339();
    let evs: Vec<Value> = d
        .berth(&[
            "events", "--since", "0", "--until", &until, "--format", "json",
        ])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(evs[0]["type"], "missed", "{evs:?}");
    assert_eq!(evs[0]["missed"], 7);
    let seqs: Vec<u64> = evs[1..]
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![8, 9, 10, 11, 12]);
    let human = d.berth(&["events", "--since", "0", "--until", &until]).ok();
    assert!(
        human.lines().next().unwrap().contains("missed 7 events"),
        "{human}"
    );
}

fn start_is_idempotent_and_stop_of_created_is_prompt(rt: Rt) {
    let d = Daemon::start(rt);
    let r = rootfs();
    let id = d
        .berth(&["create", "--rootfs", r.to_str().unwrap(), "sleep", "100"])
        .ok();
    let t = Instant::now();
    d.berth(&["stop", &id]).ok();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(d.state_of(&id), "stopped");
    d.berth(&["start", &id]).ok();
    d.berth(&["start", &id]).ok();
    assert_eq!(d.state_of(&id), "running");
    d.berth(&["rm", "-f", &id]).ok();
}
