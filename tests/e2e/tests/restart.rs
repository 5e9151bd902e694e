//! Restart policies on real containers.

use std::time::Duration;

use berth_e2e::*;

fn types(d: &Daemon, id: &str) -> Vec<String> {
    d.events_json(&["--filter", &format!("container={id}")])
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Events of type `t` from `since` (exclusive) until `secs` seconds from
/// now: a bounded wait for something that must not happen.
fn none_within(d: &Daemon, since: u64, t: &str, secs: u64) -> bool {
    let until = rfc3339_in(secs);
    let out = d
        .berth(&[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until,
            "--filter",
            &format!("type={t}"),
        ])
        .ok();
    out.is_empty()
}

fn last_seq(d: &Daemon) -> u64 {
    d.events_json(&[])
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(0)
}

fn on_failure_retries_then_gives_up(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .run(
            &["-d", "--restart", "on-failure:2"],
            &["sh", "-c", "exit 3"],
        )
        .ok();
    poll(
        "two restarts and a final exit",
        Duration::from_secs(20),
        || {
            let c = d.inspect(&id);
            (c["state"] == "stopped" && c["restart_count"] == 2).then_some(())
        },
    );
    let want = [
        "create", "start", "exit", "restart", "start", "exit", "restart", "start", "exit",
    ];
    poll("the last exit event", Duration::from_secs(10), || {
        (types(&d, &id) == want).then_some(())
    });
    assert!(
        none_within(&d, last_seq(&d), "restart", 1),
        "a third restart"
    );
    assert_eq!(d.inspect(&id)["exit_code"], 3);
    d.berth(&["rm", &id]).ok();
}

fn always_is_held_by_an_explicit_stop(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .run(
            &["-d", "--restart", "always"],
            &["sh", "-c", "sleep 0.2; exit 0"],
        )
        .ok();
    poll("a restart", Duration::from_secs(20), || {
        (d.inspect(&id)["restart_count"].as_u64() >= Some(1)).then_some(())
    });
    d.berth(&["stop", "-t", "1", &id]).ok();
    assert_eq!(d.state_of(&id), "stopped");
    let seq = last_seq(&d);
    assert!(
        none_within(&d, seq, "restart", 2),
        "the policy undid a stop"
    );
    assert_eq!(d.state_of(&id), "stopped");
    // rm needs no -f while it waits, and cancels everything.
    d.berth(&["rm", &id]).ok();
    assert_no_leftovers(&d, &id, 0);
}

/// A container whose shim died while berthd was down (as after a crash)
/// comes back under `always` when berthd does.
fn always_comes_back_after_the_daemon(rt: Rt) {
    let mut d = Daemon::start(rt);
    let id = d
        .run(&["-d", "--restart", "always"], &["sleep", "100"])
        .ok();
    let pid = d.inspect(&id)["pid"].as_i64().unwrap();
    let shim = ppid_of(pid) as i32;
    d.kill9();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.restart();
    poll(
        "the container to run again",
        Duration::from_secs(20),
        || {
            let c = d.inspect(&id);
            (c["state"] == "running" && c["pid"].as_i64() != Some(pid)).then_some(())
        },
    );
    let c = d.inspect(&id);
    assert_eq!(c["restart_count"], 1);
    poll("the old init to be killed", Duration::from_secs(10), || {
        (!pid_alive(pid)).then_some(())
    });
    d.berth(&["rm", "-f", &id]).ok();
    assert_no_leftovers(&d, &id, 0);
}

both_runtimes!(
    on_failure_retries_then_gives_up,
    always_is_held_by_an_explicit_stop,
    always_comes_back_after_the_daemon,
);

#[test]
fn bad_policies_are_refused() {
    let d = Daemon::start(Rt::Embedded);
    let r = d.run(&["-d", "--restart", "sometimes"], &["true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("restart policy"), "{r:?}");
    let r = d.run(&["--rm", "--restart", "always"], &["true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
}
