//! The everyday commands on real containers: `top` (the container's
//! processes, by its cgroup, with ps options), `restart`, `rename`
//! (durable, a `rename` event, a name in use refused), `container prune`
//! (filters, what it prints), `ps -s` and `system df` (sizes as Docker
//! prints them).

use std::time::Duration;

use berth_e2e::image::{busybox_layer, Compression, Config, Image};
use berth_e2e::{poll, Daemon, Rt};

fn busybox_image(d: &Daemon) {
    let img = Image::build(&[busybox_layer()], Compression::None, &Config::default());
    let r = d.berth_input(&["load"], &img.oci_archive("docker.io/library/bb:1"));
    assert_eq!(r.code, 0, "load failed: {r:?}");
}

fn pid_of(d: &Daemon, id: &str) -> i64 {
    d.inspect(id)["pid"].as_i64().unwrap_or(0)
}

#[test]
fn top_shows_the_containers_processes_with_ps_options() {
    let d = Daemon::start(Rt::Embedded);
    d.run(
        &["-d", "--name", "t"],
        &["sh", "-c", "sleep 1001 & exec sleep 1000"],
    )
    .ok();
    let init = pid_of(&d, "t");
    // The child may still be starting, and until the shell has forked and
    // both have exec'd, a row's command is `sh -c sleep 1001 & exec sleep
    // 1000`, which names both: poll until each sleep is a command of its own.
    let out = poll("top shows both sleeps", Duration::from_secs(10), || {
        let r = d.berth(&["top", "t"]);
        let cmds: Vec<String> = r
            .stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().skip(7).collect::<Vec<_>>().join(" "))
            .collect();
        (r.code == 0
            && cmds.iter().any(|c| c == "sleep 1000")
            && cmds.iter().any(|c| c == "sleep 1001"))
        .then_some(r.stdout)
    });
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "{out}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "only the container's processes: {out}");
    assert!(
        rows.iter()
            .any(|r| r.split_whitespace().nth(1) == Some(&init.to_string())
                && r.ends_with("sleep 1000")),
        "the init by its host pid {init}: {out}"
    );
    // Columns aligned as Docker's (at least 20 wide, 3 apart).
    assert!(out.starts_with("UID                 PID "), "{out}");

    // ps options pass through.
    let r = d.berth(&["top", "t", "-o", "pid,comm"]);
    let out = r.ok();
    assert!(out.starts_with("PID"), "{out}");
    assert!(out.contains(&init.to_string()), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");

    // Without a PID column: a one-line error that says what to do.
    let r = d.berth(&["top", "t", "-o", "comm"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("no PID column"), "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");

    // A stopped container has no processes.
    d.berth(&["kill", "t"]).ok();
    poll("stopped", Duration::from_secs(10), || {
        (d.state_of("t") == "stopped").then_some(())
    });
    let r = d.berth(&["top", "t"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("is not running"), "{r:?}");
    let r = d.berth(&["top", "nosuch"]);
    assert_eq!(r.code, 1, "{r:?}");
    d.berth(&["rm", "t"]).ok();
}

#[test]
fn restart_stops_and_starts_again_with_events() {
    let d = Daemon::start(Rt::Embedded);
    d.run(&["-d", "--name", "r"], &["sleep", "1000"]).ok();
    let before = pid_of(&d, "r");
    // sleep as pid 1 ignores SIGTERM: -t 1 bounds the stop.
    let t = std::time::Instant::now();
    assert_eq!(d.berth(&["restart", "-t", "1", "r"]).ok(), "r");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(d.state_of("r"), "running");
    let after = pid_of(&d, "r");
    assert!(after > 0 && after != before, "{before} -> {after}");
    let types: Vec<String> = d
        .events_json(&["--filter", "container=r"])
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        types,
        ["create", "start", "exit", "start", "restart"],
        "{types:?}"
    );
    // A stopped container is started; a created one too.
    d.berth(&["kill", "r"]).ok();
    poll("stopped", Duration::from_secs(10), || {
        (d.state_of("r") == "stopped").then_some(())
    });
    d.berth(&["restart", "r"]).ok();
    assert_eq!(d.state_of("r"), "running");
    d.berth(&[
        "create",
        "--name",
        "c",
        "--rootfs",
        berth_e2e::rootfs().to_str().unwrap(),
        "sleep",
        "1000",
    ])
    .ok();
    d.berth(&["restart", "c"]).ok();
    assert_eq!(d.state_of("c"), "running");
    // --rm containers are removed when they stop: refused, not lost.
    d.run(&["-d", "--rm", "--name", "gone"], &["sleep", "1000"])
        .ok();
    let r = d.berth(&["restart", "gone"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("--rm"), "{r:?}");
    assert_eq!(d.state_of("gone"), "running");
    let r = d.berth(&["restart", "nosuch"]);
    assert_eq!(r.code, 1, "{r:?}");
    d.berth(&["rm", "-f", "r", "c", "gone"]).ok();
}

#[test]
fn rename_is_durable_with_an_event_and_refuses_a_name_in_use() {
    let mut d = Daemon::start(Rt::Embedded);
    d.run(&["-d", "--name", "one"], &["sleep", "1000"]).ok();
    d.run(&["-d", "--name", "two"], &["sleep", "1000"]).ok();
    let id = d.inspect("one")["id"].as_str().unwrap().to_string();
    let r = d.berth(&["rename", "one", "web"]);
    assert_eq!(r.ok(), "");
    assert_eq!(d.inspect("web")["id"], id.as_str());
    assert_eq!(d.berth(&["inspect", "one"]).code, 1);
    // ps shows the new name.
    let names = d.berth(&["ps", "--format", "{{.Names}}"]).ok();
    assert_eq!(names, "web\ntwo");

    let r = d.berth(&["rename", "web", "two"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("already in use"), "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    let r = d.berth(&["rename", "web", "-bad"]);
    assert_eq!(r.code, 125, "{r:?}");
    let r = d.berth(&["rename", "web", "web"]);
    assert_eq!(r.code, 125, "{r:?}");
    let r = d.berth(&["rename", "nosuch", "x"]);
    assert_eq!(r.code, 1, "{r:?}");
    // The old name is free again (names with no hex digit: never an id prefix).
    d.run(&["-d", "--name", "one"], &["sleep", "1000"]).ok();

    let ev: Vec<_> = d
        .events_json(&["--filter", "type=rename"])
        .into_iter()
        .collect();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["container"], id.as_str());
    assert_eq!(ev[0]["name"], "web");
    assert_eq!(ev[0]["old_name"], "one");

    // Durable: a new daemon knows it by the new name.
    d.restart();
    assert_eq!(d.inspect("web")["id"], id.as_str());
    assert_eq!(d.inspect("web")["state"], "running");
    d.berth(&["rm", "-f", "web", "one", "two"]).ok();
}

#[test]
fn prune_ps_size_and_system_df_count_as_docker() {
    let d = Daemon::start(Rt::Embedded);
    busybox_image(&d);
    let overlay = d.berth(&["info"]).ok().contains("overlay");
    // A container that wrote 5000 bytes and stopped, one labelled to
    // keep, one running.
    d.berth(&[
        "run",
        "--name",
        "w",
        "bb:1",
        "sh",
        "-c",
        "head -c 5000 /dev/zero > /f",
    ])
    .ok();
    d.berth(&[
        "create", "--name", "keep", "--label", "keep=1", "bb:1", "true",
    ])
    .ok();
    d.berth(&["run", "-d", "--name", "up", "bb:1", "sleep", "1000"])
        .ok();
    d.berth(&["volume", "create", "v1"]).ok();
    d.berth(&[
        "run",
        "--rm",
        "-v",
        "v1:/data",
        "bb:1",
        "sh",
        "-c",
        "head -c 36 /dev/zero > /data/x",
    ])
    .ok();

    let ps = d.berth(&["ps", "-a", "-s"]).ok();
    let header = ps.lines().next().unwrap();
    assert!(header.ends_with("SIZE"), "{ps}");
    let w = ps.lines().find(|l| l.contains(" w ")).unwrap();
    if overlay {
        assert!(w.contains("   5kB (virtual "), "{ps}");
    }
    let sized = d
        .berth(&["ps", "-a", "--format", "{{.Names}} {{.Size}}"])
        .ok();
    assert!(sized.lines().all(|l| l.contains("B (virtual ")), "{sized}");
    let json = d.berth(&["ps", "-a", "-s", "--format", "json"]).ok();
    let w: serde_json::Value = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["name"] == "w")
        .unwrap();
    if overlay {
        assert_eq!(w["size_rw"], 5000, "{w}");
    }
    assert!(w["size_root_fs"].as_i64().unwrap() > 1_000_000, "{w}");

    let df = d.berth(&["system", "df"]).ok();
    let lines: Vec<&str> = df.lines().collect();
    assert_eq!(lines.len(), 5, "{df}");
    assert_eq!(
        lines[0],
        "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE"
    );
    assert!(
        lines[1].starts_with("Images          1         1         "),
        "{df}"
    );
    assert!(
        lines[2].starts_with("Containers      3         1         "),
        "{df}"
    );
    if overlay {
        // Only the stopped ones are reclaimable: w's 5000 bytes.
        assert!(lines[2].ends_with("5kB (100%)"), "{df}");
    }
    assert_eq!(
        lines[3], "Local Volumes   1         0         36B       36B (100%)",
        "{df}"
    );
    assert_eq!(lines[4], "Build Cache     0         0         0B        0B");
    let v = d.berth(&["system", "df", "-v"]).ok();
    for want in [
        "Images space usage:",
        "Containers space usage:",
        "Local Volumes space usage:",
        "Build cache usage: 0B",
        "REPOSITORY   TAG       IMAGE ID ",
    ] {
        assert!(v.contains(want), "{want:?} in {v}");
    }
    assert!(
        v.lines()
            .any(|l| l.starts_with("bb           1         ") && l.ends_with("   3")),
        "{v}"
    );
    assert!(v.lines().any(|l| l == "v1            0         36B"), "{v}");

    // Bad filters are refused before anything goes.
    let r = d.berth(&["container", "prune", "--filter", "name=w"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("until="), "{r:?}");
    let r = d.berth(&["container", "prune", "--filter", "until=soon"]);
    assert_eq!(r.code, 125, "{r:?}");
    // Nothing was created more than an hour ago.
    let r = d
        .berth(&["container", "prune", "-f", "--filter", "until=1h"])
        .ok();
    assert_eq!(r, "Total reclaimed space: 0B");
    let w_id = d.inspect("w")["id"].as_str().unwrap().to_string();
    let r = d
        .berth(&["container", "prune", "-f", "--filter", "label!=keep"])
        .ok();
    let want = if overlay { "5kB" } else { "" };
    assert!(
        r.starts_with(&format!(
            "Deleted Containers:\n{w_id}\n\nTotal reclaimed space: {want}"
        )),
        "{r}"
    );
    let left = d.berth(&["ps", "-a", "--format", "{{.Names}}"]).ok();
    assert_eq!(left, "keep\nup");
    // Without filters the created one goes too; the running one stays.
    let r = d.berth(&["container", "prune"]).ok();
    assert!(r.starts_with("Deleted Containers:\n"), "{r}");
    assert_eq!(d.berth(&["ps", "-a", "--format", "{{.Names}}"]).ok(), "up");
    d.berth(&["rm", "-f", "up"]).ok();
    d.berth(&["volume", "rm", "v1"]).ok();
}
