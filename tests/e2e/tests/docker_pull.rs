//! Pull, login, events and disk usage through the real docker CLI
//! (docs/docker-api.md): `docker pull` from a loopback docker-registry
//! (with Docker's progress stream), `docker login` against one with basic
//! auth, `docker events --since/--until` replayed from berth's durable
//! log, `docker system df`.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use berth_e2e::registry::{Registry, TestImage};
use berth_e2e::{poll, Daemon, Rt};

/// `reg` holding busybox as `repo`, and a daemon serving the Docker API in
/// the host's network namespace (the registry is on its loopback); the
/// image's full name.
fn with_busybox(reg: &Registry, repo: &str) -> (Daemon, String) {
    reg.push_image(&TestImage::busybox(), repo);
    let d = Daemon::start_docker_host_net(Rt::Embedded);
    (d, format!("{}/{repo}", reg.addr()))
}

#[test]
fn docker_pull_from_a_loopback_registry_and_run() {
    let reg = Registry::start();
    let (d, name) = with_busybox(&reg, "e2e/bb:1");
    let r = d.docker(&["pull", &name]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("1: Pulling from e2e/bb"), "{r:?}");
    assert!(r.stdout.contains("Pull complete"), "{r:?}");
    assert!(r.stdout.contains("Digest: sha256:"), "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{r:?}"
    );
    let again = d.docker(&["pull", &name]).ok();
    assert!(again.contains("Image is up to date"), "{again}");
    assert_eq!(
        d.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .ok(),
        name
    );
    // run pulls what is missing (the CLI's create 404, then images/create).
    reg.push_image(&TestImage::busybox(), "e2e/other:2");
    let other = format!("{}/e2e/other:2", reg.addr());
    let r = d.docker(&["run", "--rm", &other, "echo", "pulled"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.lines().last(), Some("pulled"), "{r:?}");
    assert!(r.stderr.contains("Unable to find image"), "{r:?}");
    // A tag the registry does not have: the CLI fails with the reason.
    let r = d.docker(&["pull", &format!("{}/e2e/bb:nope", reg.addr())]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(!r.stderr.is_empty(), "{r:?}");
    // system df counts what is there.
    let df = d
        .docker(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"])
        .ok();
    assert!(df.lines().any(|l| l == "Images 1"), "{df}");
    assert!(df.lines().any(|l| l == "Containers 0"), "{df}");
}

#[test]
fn docker_login_is_checked_against_the_registry() {
    let reg = Registry::start_with_basic_auth("alice", "s3cret");
    let (d, name) = with_busybox(&reg, "e2e/private:1");
    let login = |pass: &str| {
        let mut c = d.docker_cmd(&["login", "-u", "alice", "--password-stdin", &reg.addr()]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{pass}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let r = d.docker(&["pull", &name]);
    assert_ne!(r.code, 0, "an anonymous pull of a private image: {r:?}");
    let (code, _, err) = login("wrong");
    assert_ne!(code, 0, "{err}");
    let (code, out, err) = login("s3cret");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Login Succeeded"), "{out}");
    // The CLI keeps the credentials and sends them with the pull.
    let r = d.docker(&["pull", &name]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn docker_events_since_replays_the_durable_log() {
    let d = Daemon::start_docker(Rt::Embedded);
    d.load_busybox();
    let start = berth_e2e::now_secs() - 1.0;
    let r = d.docker(&["run", "--name", "ev", "busybox", "sh", "-c", "exit 2"]);
    assert_eq!(r.code, 2, "{r:?}");
    d.docker(&["rename", "ev", "ev2"]).ok();
    d.docker(&["rm", "ev2"]).ok();
    let until = berth_e2e::now_secs() + 1.0;
    let since = format!("{start:.3}");
    let until = format!("{until:.3}");
    let fmt = "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}";
    let out = d
        .docker(&[
            "events", "--since", &since, "--until", &until, "--format", fmt,
        ])
        .ok();
    // Go templates print a missing attribute as "<no value>".
    let lines: Vec<String> = out.lines().map(|l| l.replace(" <no value>", "")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert!(lines.contains(&"container create ev"), "{out}");
    assert!(lines.contains(&"container start ev"), "{out}");
    assert!(lines.contains(&"container die ev 2"), "{out}");
    assert!(lines.contains(&"container rename ev2"), "{out}");
    assert!(lines.contains(&"container destroy ev2"), "{out}");
    // Filters: one action.
    let out = d
        .docker(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "event=die",
            "--format",
            fmt,
        ])
        .ok();
    assert_eq!(out.trim_end(), "container die ev 2");
    // And again after a berthd restart: the log is durable.
    let mut d = d;
    d.restart();
    poll(
        "the Docker API after a restart",
        Duration::from_secs(20),
        || (d.docker(&["version"]).code == 0).then_some(()),
    );
    let out = d
        .docker(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "event=die",
            "--format",
            fmt,
        ])
        .ok();
    assert_eq!(out.trim_end(), "container die ev 2");
}
