//! Networks through the Docker API (docs/docker-api.md): the real docker
//! CLI's `network create/ls/inspect/connect/disconnect/rm/prune`, two
//! containers on a user network reaching each other by name, `-p` to a
//! server in a container (in the test daemon's own network namespace), and
//! docker-compose's two-service project.

use std::time::Duration;

use berth_e2e::{poll, Daemon, Rt};

const SERVE: &str =
    "mkdir -p /www && echo hello-from-srv > /www/index.html && exec httpd -f -p 80 -h /www";

fn get(host: &str, port: u16) -> String {
    format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {host} {port}")
}

#[test]
fn docker_networks_names_and_published_ports() {
    let d = Daemon::start_docker(Rt::Embedded);
    d.load_busybox();
    d.docker(&["network", "create", "app"]).ok();
    let ls = d.docker(&["network", "ls", "--format", "{{.Name}}"]).ok();
    assert!(ls.lines().any(|l| l == "bridge"), "{ls}");
    assert!(ls.lines().any(|l| l == "app"), "{ls}");
    let r = d.docker(&["network", "create", "app"]);
    assert_ne!(r.code, 0, "a second network of the same name: {r:?}");

    // Two containers on it: the client reaches the server by name
    // (berthd's resolver on the network's gateway).
    d.docker(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "app",
        "busybox",
        "sh",
        "-c",
        SERVE,
    ])
    .ok();
    let body = poll("srv by name", Duration::from_secs(20), || {
        let r = d.docker(&[
            "run",
            "--rm",
            "--network",
            "app",
            "busybox",
            "sh",
            "-c",
            &get("srv", 80),
        ]);
        (r.code == 0 && r.stdout.contains("hello-from-srv")).then_some(r.stdout)
    });
    assert!(body.contains("200 OK"), "{body}");
    let ip = d
        .docker(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.Networks.app.IPAddress}}",
            "srv",
        ])
        .ok();
    assert!(ip.starts_with("10."), "{ip}");
    let members = d
        .docker(&[
            "network",
            "inspect",
            "app",
            "--format",
            "{{range .Containers}}{{.Name}} {{end}}",
        ])
        .ok();
    assert_eq!(members.trim(), "srv");

    // connect / disconnect.
    d.docker(&["network", "create", "other"]).ok();
    d.docker(&["network", "connect", "other", "srv"]).ok();
    let nets = d
        .docker(&[
            "inspect",
            "--format",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            "srv",
        ])
        .ok();
    assert!(nets.contains("other") && nets.contains("app"), "{nets}");
    d.docker(&["network", "disconnect", "other", "srv"]).ok();
    let r = d.docker(&["network", "rm", "app"]);
    assert_ne!(r.code, 0, "a network in use was removed: {r:?}");

    // -p: the published port answers from the daemon's namespace.
    d.docker(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "busybox", "sh", "-c", SERVE,
    ])
    .ok();
    assert_eq!(d.docker(&["port", "web", "80"]).ok(), "0.0.0.0:8080");
    let ps = d
        .docker(&["ps", "--filter", "name=web", "--format", "{{.Ports}}"])
        .ok();
    assert!(ps.contains("0.0.0.0:8080->80/tcp"), "{ps}");
    let body = poll("the published port", Duration::from_secs(20), || {
        let r = d.netns().exec(&["sh", "-c", &get("127.0.0.1", 8080)]);
        (r.code == 0 && r.stdout.contains("hello-from-srv")).then_some(r.stdout)
    });
    assert!(body.contains("200 OK"), "{body}");

    d.docker(&["rm", "-f", "srv", "web"]).ok();
    d.docker(&["network", "rm", "app"]).ok();
    let pruned = d.docker(&["network", "prune", "-f"]).ok();
    assert!(pruned.contains("other"), "{pruned}");
    assert_eq!(
        d.docker(&["network", "ls", "--format", "{{.Name}}"]).ok(),
        "bridge"
    );
}

#[test]
fn docker_compose_two_services_by_name_with_a_named_volume() {
    let d = Daemon::start_docker(Rt::Embedded);
    d.load_busybox();
    let dir = d.root.join("proj");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        r#"version: "3"
services:
  server:
    image: busybox
    command: ["sh", "-c", "echo hello-from-server > /data/index.html && exec httpd -f -p 80 -h /data"]
    volumes:
      - data:/data
  client:
    image: busybox
    depends_on: [server]
    command: ["sh", "-c", "until printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 2 server 80; do sleep 0.2; done; exec sleep 1000"]
volumes:
  data:
"#,
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let out = std::process::Command::new("docker-compose")
            .current_dir(&dir)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", d.docker_socket().display()),
            )
            .env("DOCKER_CONFIG", d.root.join("docker-config"))
            .args(["-p", "proj"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run docker-compose (scripts/setup.sh installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "docker-compose {args:?}: {text}");
        text
    };
    compose(&["up", "-d"]);
    let ps = compose(&["ps"]);
    assert!(
        ps.contains("proj_server_1") && ps.contains("proj_client_1"),
        "{ps}"
    );
    assert!(
        ps.matches(" Up ").count() >= 2 || ps.matches("Up").count() >= 2,
        "{ps}"
    );
    // The client reaches the server by its service name; the page is
    // what the server wrote into the named volume.
    let logs = poll("the client's fetch", Duration::from_secs(30), || {
        let l = compose(&["logs", "client"]);
        l.contains("hello-from-server").then_some(l)
    });
    assert!(logs.contains("200 OK"), "{logs}");
    assert!(d.docker(&["volume", "ls", "-q"]).ok().contains("proj_data"));
    compose(&["down", "-v"]);
    assert_eq!(d.docker(&["ps", "-aq"]).ok(), "");
    assert_eq!(d.docker(&["volume", "ls", "-q"]).ok(), "");
    assert_eq!(
        d.docker(&["network", "ls", "--format", "{{.Name}}"]).ok(),
        "bridge"
    );
}
