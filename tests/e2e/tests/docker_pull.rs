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
    let since = format!("{:.3}", berth_e2e::now_secs() - 1.0);
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
    // Every pull that succeeded is an image event named by its reference
    // (as moby's, also the one that found the image up to date); the
    // failed one is not.
    let until = format!("{:.3}", berth_e2e::now_secs() + 1.0);
    let pulls = docker_events(
        &d,
        &since,
        &until,
        &["type=image", "event=pull"],
        "{{.Action}} {{.Actor.ID}}",
    );
    assert_eq!(
        pulls.lines().collect::<Vec<_>>(),
        [
            format!("pull {name}"),
            format!("pull {name}"),
            format!("pull {other}")
        ],
        "{pulls}"
    );
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
    let out = docker_events(&d, &since, &until, &[], fmt);
    // Go templates print a missing attribute as "<no value>".
    let lines: Vec<String> = out.lines().map(|l| l.replace(" <no value>", "")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert!(lines.contains(&"container create ev"), "{out}");
    assert!(lines.contains(&"container start ev"), "{out}");
    assert!(lines.contains(&"container die ev 2"), "{out}");
    assert!(lines.contains(&"container rename ev2"), "{out}");
    assert!(lines.contains(&"container destroy ev2"), "{out}");
    // Filters: one action.
    let out = docker_events(&d, &since, &until, &["event=die"], fmt);
    assert_eq!(out.trim_end(), "container die ev 2");
    // And again after a berthd restart: the log is durable.
    let mut d = d;
    d.restart();
    poll(
        "the Docker API after a restart",
        Duration::from_secs(20),
        || (d.docker(&["version"]).code == 0).then_some(()),
    );
    let out = docker_events(&d, &since, &until, &["event=die"], fmt);
    assert_eq!(out.trim_end(), "container die ev 2");
}

/// `docker events --since S --until U` with `filters` (each a `--filter`
/// value) printed with the Go template `format`.
fn docker_events(d: &Daemon, since: &str, until: &str, filters: &[&str], format: &str) -> String {
    let mut args = vec!["events", "--since", since, "--until", until];
    for f in filters {
        args.extend(["--filter", f]);
    }
    args.extend(["--format", format]);
    d.docker(&args).ok()
}

/// `docker events --since S --until U` with `--filter type=KIND`: the
/// lines of `d`'s durable log about that kind, as `Type Action`.
fn kind_events(d: &Daemon, since: &str, until: &str, kind: &str) -> Vec<String> {
    let filter = format!("type={kind}");
    let out = docker_events(
        d,
        since,
        until,
        &[&filter],
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    );
    out.lines().map(str::to_string).collect()
}

#[test]
fn docker_events_of_images_volumes_and_networks_replay_after_a_restart() {
    let d = Daemon::start_docker(Rt::Embedded);
    let start = berth_e2e::now_secs() - 1.0;
    d.load_busybox();
    d.docker(&["tag", "busybox", "ev/bb:1"]).ok();
    d.docker(&["rmi", "ev/bb:1"]).ok();
    d.docker(&["volume", "create", "evvol"]).ok();
    d.docker(&["volume", "rm", "evvol"]).ok();
    d.docker(&["network", "create", "evnet"]).ok();
    d.docker(&["create", "--name", "evc", "busybox", "true"])
        .ok();
    d.docker(&["network", "connect", "evnet", "evc"]).ok();
    d.docker(&["network", "disconnect", "evnet", "evc"]).ok();
    // An anonymous volume: made by the create, removed with rm -v.
    d.docker(&[
        "create", "--name", "evanon", "-v", "/data", "busybox", "true",
    ])
    .ok();
    d.docker(&["rm", "-v", "evanon", "evc"]).ok();
    d.docker(&["network", "rm", "evnet"]).ok();
    d.docker(&["rmi", "busybox"]).ok();
    let until = berth_e2e::now_secs() + 1.0;
    let (since, until) = (format!("{start:.3}"), format!("{until:.3}"));

    let check = |d: &Daemon| {
        let images = kind_events(d, &since, &until, "image");
        assert_eq!(images.len(), 5, "{images:?}");
        assert_eq!(
            images[..4],
            [
                "image load busybox:latest",
                "image tag ev/bb:1",
                "image untag ev/bb:1",
                "image untag busybox:latest",
            ],
            "{images:?}"
        );
        // The delete's name is the image id (as moby's), and so is its ID.
        assert!(images[4].starts_with("image delete sha256:"), "{images:?}");
        let deletes = docker_events(
            d,
            &since,
            &until,
            &["type=image", "event=delete"],
            "{{.Action}} {{.Actor.ID}}",
        );
        assert!(
            deletes.trim_end().starts_with("delete sha256:"),
            "{deletes}"
        );
        let volumes = kind_events(d, &since, &until, "volume");
        assert_eq!(volumes.len(), 4, "{volumes:?}");
        assert_eq!(
            &volumes[..2],
            ["volume create <no value>", "volume destroy <no value>"]
        );
        assert_eq!(
            &volumes[2..],
            ["volume create <no value>", "volume destroy <no value>"]
        );
        let networks = kind_events(d, &since, &until, "network");
        assert_eq!(
            networks,
            [
                "network create evnet",
                "network connect evnet",
                "network disconnect evnet",
                "network destroy evnet",
            ],
            "{networks:?}"
        );
        // A volume filter by name, and Docker's attributes.
        let vol = docker_events(
            d,
            &since,
            &until,
            &["volume=evvol"],
            "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.driver}}",
        );
        assert_eq!(vol.trim_end(), "create evvol local\ndestroy evvol local");
        // A connect names its container.
        let c = docker_events(
            d,
            &since,
            &until,
            &["event=connect"],
            "{{.Actor.Attributes.type}} {{.Actor.Attributes.container}}",
        );
        assert!(c.trim_end().starts_with("bridge "), "{c}");
        // Everything, in log order: the objects interleave with the
        // containers' events as they happened.
        let all = docker_events(d, &since, &until, &[], "{{.Type}} {{.Action}}");
        let all: Vec<&str> = all.lines().collect();
        let at = |l: &str| {
            all.iter()
                .position(|x| *x == l)
                .unwrap_or_else(|| panic!("{l} missing: {all:?}"))
        };
        assert!(at("image tag") < at("volume create"), "{all:?}");
        assert!(at("volume destroy") < at("network create"), "{all:?}");
        assert!(at("network create") < at("container create"), "{all:?}");
        assert!(at("container create") < at("network connect"), "{all:?}");
        assert!(at("network destroy") < at("image delete"), "{all:?}");
    };
    check(&d);
    // And again after a berthd restart: the log is durable.
    let mut d = d;
    d.restart();
    poll(
        "the Docker API after a restart",
        Duration::from_secs(20),
        || (d.docker(&["version"]).code == 0).then_some(()),
    );
    check(&d);
    // berth's own CLI shows them too, with its type filter.
    let rfc3339 = |secs: f64| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{secs:.0}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let from = rfc3339(start - 1.0);
    let to = rfc3339(berth_e2e::now_secs() + 1.0);
    let out = d
        .berth(&[
            "events",
            "--since",
            &from,
            "--until",
            &to,
            "--filter",
            "type=network",
        ])
        .ok();
    let kinds: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).zip(l.split_whitespace().nth(3)))
        .map(|(o, t)| if o == "network" { t } else { o })
        .collect();
    assert_eq!(
        kinds,
        // berth's own names: a removal is `delete` for every kind.
        ["create", "connect", "disconnect", "delete"],
        "{out}"
    );
    assert!(out.contains("(evnet)"), "{out}");
    let json = d
        .berth(&[
            "events",
            "--since",
            &from,
            "--until",
            &to,
            "--filter",
            "type=volume",
            "--format",
            "json",
        ])
        .ok();
    let first: serde_json::Value =
        serde_json::from_str(json.lines().next().unwrap_or("{}")).expect("a JSON line");
    assert_eq!(first["object"], "volume", "{json}");
    assert_eq!(first["type"], "create", "{json}");
    assert_eq!(first["id"], "evvol", "{json}");
}
