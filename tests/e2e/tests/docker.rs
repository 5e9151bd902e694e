//! The Docker Engine API end to end: the real docker CLI against berthd's
//! `--docker-socket` (docs/docker-api.md).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::{poll, Daemon, Rt};
use nix::pty::{openpty, Winsize};

/// `docker version` negotiates (HEAD /_ping) and shows berth as the
/// server; `docker info` reads the counts, the engine's ID (the same after
/// a restart), its security options and registry settings.
#[test]
fn docker_version_and_info() {
    let mut d = Daemon::start_docker(Rt::Embedded);
    let out = d.docker(&[
        "version",
        "--format",
        "{{.Server.Version}} {{.Server.APIVersion}} {{.Server.MinAPIVersion}} {{.Server.Os}}",
    ]);
    let text = out.ok();
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{text}");
    assert_eq!(fields[0], env!("CARGO_PKG_VERSION"));
    assert!(fields[1].starts_with("1."), "{text}");
    assert_eq!(fields[2], "1.24");
    assert_eq!(fields[3], "linux");
    let info = d
        .docker(&[
            "info",
            "--format",
            "{{.Containers}} {{.OSType}} {{.DockerRootDir}}",
        ])
        .ok();
    assert_eq!(
        info,
        format!("0 linux {}", d.state_dir().display()),
        "docker info"
    );
    let facts = || {
        d.docker(&[
            "info",
            "--format",
            "{{.ID}}|{{json .SecurityOptions}}|{{json .RegistryConfig.InsecureRegistryCIDRs}}",
        ])
        .ok()
    };
    let before = facts();
    let fields: Vec<&str> = before.split('|').collect();
    assert_eq!(fields.len(), 3, "{before}");
    assert_eq!(fields[0].len(), 36, "a UUID: {before}");
    assert!(
        fields[1].contains("name=seccomp,profile=builtin"),
        "{before}"
    );
    assert_eq!(fields[2], r#"["::1/128","127.0.0.0/8"]"#, "{before}");
    d.restart();
    let after = poll(
        "docker info after a restart",
        Duration::from_secs(20),
        || {
            let r = d.docker(&["info", "--format", "{{.ID}}"]);
            (r.code == 0).then_some(r.stdout.trim().to_string())
        },
    );
    assert_eq!(after, fields[0], "the engine's ID lasts across restarts");
}

/// `docker run --rm`: the output, the true exit code, and nothing left.
#[test]
fn docker_run_rm_output_and_exit_codes() {
    let d = Daemon::start_docker(Rt::Embedded);
    d.load_busybox();
    let r = d.docker(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "hi\n");
    let r = d.docker(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo oops >&2; exit 3",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stderr, "oops\n");
    // --rm: gone when run returns.
    assert_eq!(d.docker(&["ps", "-aq"]).ok(), "");
    // An image that is not there: Docker's 404 (the CLI then tries a pull,
    // which this daemon does not serve yet, and fails).
    let r = d.docker(&["run", "--rm", "--pull", "never", "nosuchimage", "true"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("No such image"), "{r:?}");
}

/// `run -d`, `ps` and its formats, `logs --tail` and `-f`, `exec`,
/// `inspect --format`, `stop`, `kill`, `wait`, `rm -f`.
#[test]
fn docker_detached_lifecycle() {
    let d = Daemon::start_docker(Rt::Embedded);
    d.load_busybox();
    let id = d
        .docker(&[
            "run", "-d", "--name", "web", "busybox", "sh", "-c",
            "trap 'exit 0' TERM; for i in 1 2 3 4 5; do echo line$i; done; while true; do sleep 0.1; done",
        ])
        .ok();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(d.docker(&["ps", "--format", "{{.Names}}"]).ok(), "web");
    let ps = d.docker(&["ps"]).ok();
    assert!(ps.contains("busybox") && ps.contains("Up "), "{ps}");
    // The list reply has a slim configuration (no whole spec): ps shows the
    // network inspect shows from the whole one.
    let mode = d
        .docker(&["inspect", "--format", "{{.HostConfig.NetworkMode}}", "web"])
        .ok();
    assert!(!mode.is_empty());
    assert_eq!(d.docker(&["ps", "--format", "{{.Networks}}"]).ok(), mode);
    poll("the output", Duration::from_secs(10), || {
        (d.docker(&["logs", "web"]).stdout.lines().count() == 5).then_some(())
    });
    assert_eq!(
        d.docker(&["logs", "--tail", "2", "web"]).ok(),
        "line4\nline5"
    );
    // exec: output and exit code.
    assert_eq!(
        d.docker(&["exec", "web", "echo", "from-exec"]).ok(),
        "from-exec"
    );
    let r = d.docker(&["exec", "web", "sh", "-c", "exit 7"]);
    assert_eq!(r.code, 7, "{r:?}");
    // stop: the trap exits 0.
    d.docker(&["stop", "-t", "5", "web"]).ok();
    assert_eq!(
        d.docker(&[
            "inspect",
            "--format",
            "{{.State.ExitCode}} {{.State.Status}}",
            "web"
        ])
        .ok(),
        "0 exited"
    );
    assert_eq!(d.docker(&["ps", "-q"]).ok(), "");
    let all = d
        .docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
        .ok();
    assert!(all.starts_with("web Exited (0)"), "{all}");
    assert_eq!(d.docker(&["wait", "web"]).ok(), "0");
    // Starting again, then kill: 137.
    d.docker(&["start", "web"]).ok();
    d.docker(&["kill", "web"]).ok();
    assert_eq!(d.docker(&["wait", "web"]).ok(), "137");
    // kill of a stopped container: Docker's 409.
    let r = d.docker(&["kill", "web"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is not running"), "{r:?}");
    // logs -f ends with the container.
    let short = d
        .docker(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "echo a; sleep 0.5; echo b",
        ])
        .ok();
    assert_eq!(d.docker(&["logs", "-f", &short]).ok(), "a\nb");
    // rm -f of a running container.
    d.docker(&["run", "-d", "--name", "spin", "busybox", "sleep", "1000"])
        .ok();
    d.docker(&["rm", "-f", "spin", "web", &short]).ok();
    assert_eq!(d.docker(&["ps", "-aq"]).ok(), "");
    let r = d.docker(&["inspect", "web"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.to_lowercase().contains("no such"), "{r:?}");
}

/// The controlling side of a pty with the docker CLI on the other end.
struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
    seen: Vec<u8>,
}

impl Pty {
    fn new() -> Pty {
        let ws = Winsize {
            ws_row: 30,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let p = openpty(Some(&ws), None).expect("openpty");
        let fl = nix::fcntl::fcntl(p.master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(p.master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(fl)).unwrap();
        Pty {
            master: std::fs::File::from(p.master),
            slave: p.slave,
            seen: Vec::new(),
        }
    }

    fn spawn(&self, d: &Daemon, args: &[&str]) -> Reap {
        let io = || Stdio::from(self.slave.try_clone().expect("dup slave"));
        Reap(
            d.docker_cmd(args)
                .stdin(io())
                .stdout(io())
                .stderr(io())
                .spawn()
                .expect("spawn docker"),
        )
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to the pty");
    }

    #[track_caller]
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = self
                .seen
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                self.seen.drain(..i + needle.len());
                return;
            }
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => self.seen.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not appear; the terminal shows {:?}",
                String::from_utf8_lossy(&self.seen)
            );
        }
    }
}

/// The CLI is killed (by its pid) if the test fails first.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[track_caller]
fn exit_code(child: &mut Reap) -> i32 {
    let status = poll("the CLI to exit", Duration::from_secs(20), || {
        child.0.try_wait().expect("try_wait")
    });
    status.code().unwrap_or(-1)
}

/// `run -it` in a pty: a shell that reads what is typed, detach with
/// ctrl-p ctrl-q (the container runs on), `attach` again, `exec -it`, and
/// the shell's exit code as the CLI's.
#[test]
fn docker_run_it_detach_attach_exec_it() {
    let d = Daemon::start_docker(Rt::Embedded);
    d.load_busybox();
    let mut pty = Pty::new();
    let mut cli = pty.spawn(&d, &["run", "-it", "--name", "tty", "busybox", "sh"]);
    pty.send(b"echo hello-$((40+2))\r");
    pty.expect("hello-42");
    // The terminal's size reached the container (resize after start).
    pty.send(b"stty size\r");
    pty.expect("30 100");
    pty.send(b"\x10\x11");
    assert_eq!(exit_code(&mut cli), 0, "detach ends the CLI with 0");
    assert_eq!(
        d.docker(&["inspect", "--format", "{{.State.Status}}", "tty"])
            .ok(),
        "running"
    );
    // exec -it: a second terminal in the same container.
    let mut pty2 = Pty::new();
    let mut exec = pty2.spawn(&d, &["exec", "-it", "tty", "sh"]);
    pty2.send(b"echo in-exec-$((1+1))\r");
    pty2.expect("in-exec-2");
    pty2.send(b"exit 4\r");
    assert_eq!(exit_code(&mut exec), 4);
    // attach: back to the first shell, whose exit ends everything.
    let mut pty3 = Pty::new();
    let mut att = pty3.spawn(&d, &["attach", "tty"]);
    // Nothing is echoed until something is typed: type first.
    pty3.send(b"echo back-$((2+3))\r");
    pty3.expect("back-5");
    pty3.send(b"exit 5\r");
    assert_eq!(exit_code(&mut att), 5);
    assert_eq!(
        d.docker(&["inspect", "--format", "{{.State.ExitCode}}", "tty"])
            .ok(),
        "5"
    );
}
