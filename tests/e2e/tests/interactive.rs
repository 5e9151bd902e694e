//! stdin, terminals, attach and detach, driven through real pipes and a
//! real pseudo-terminal.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::*;
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags};

/// The controlling side of a pty with a berth CLI on the other end.
struct Pty {
    master: std::fs::File,
    /// Kept to read the terminal's modes after the CLI is gone.
    slave: OwnedFd,
    seen: Vec<u8>,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    fn new(rows: u16, cols: u16) -> Pty {
        let p = openpty(Some(&winsize(rows, cols)), None).expect("openpty");
        let fl = nix::fcntl::fcntl(p.master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(p.master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(fl)).unwrap();
        Pty {
            master: std::fs::File::from(p.master),
            slave: p.slave,
            seen: Vec::new(),
        }
    }

    /// Spawn the CLI with the pty as its stdin, stdout and stderr.
    fn spawn(&self, d: &Daemon, args: &[&str]) -> Child {
        let io = |_: ()| Stdio::from(self.slave.try_clone().expect("dup slave"));
        d.cmd(args)
            .stdin(io(()))
            .stdout(io(()))
            .stderr(io(()))
            .spawn()
            .expect("spawn berth")
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to the pty");
    }

    /// Read until `needle` appears in what was output since the last call.
    #[track_caller]
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = find(&self.seen, needle.as_bytes()) {
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

    fn resize(&self, rows: u16, cols: u16) {
        // SAFETY: TIOCSWINSZ reads one valid `winsize` for the call.
        let r = unsafe {
            libc::ioctl(
                self.master.as_raw_fd(),
                libc::TIOCSWINSZ,
                &winsize(rows, cols),
            )
        };
        assert_eq!(r, 0, "TIOCSWINSZ");
    }

    /// The terminal is back in cooked mode (echo and line editing).
    fn cooked(&self) -> bool {
        let t = tcgetattr(self.slave.as_fd()).expect("tcgetattr");
        t.local_flags
            .contains(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[track_caller]
fn exit_code(child: &mut Child) -> i32 {
    let status = poll("the CLI to exit", Duration::from_secs(20), || {
        child.try_wait().expect("try_wait")
    });
    status.code().unwrap_or(-1)
}

/// The CLI is not killed by the test on failure otherwise.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rootfs_str() -> String {
    rootfs().to_str().expect("utf8").to_string()
}

fn run_it_resize_detach_and_reattach(rt: Rt) {
    let d = Daemon::start(rt);
    let mut pty = Pty::new(30, 100);
    let rootfs = rootfs_str();
    let cli = pty.spawn(
        &d,
        &[
            "run", "-it", "--name", "tty1", "--rootfs", &rootfs, "/bin/sh",
        ],
    );
    let mut cli = Reap(cli);
    pty.expect("# ");
    pty.send(b"echo $((6 * 7))\r");
    pty.expect("42");
    pty.send(b"stty size\r");
    pty.expect("30 100");
    // The client's terminal changes size: the CLI hears SIGWINCH (sent by
    // hand: the test's pty is nobody's controlling terminal).
    pty.resize(40, 120);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cli.0.id() as i32),
        nix::sys::signal::Signal::SIGWINCH,
    )
    .unwrap();
    poll(
        "the resize to reach the container",
        Duration::from_secs(20),
        || {
            pty.send(b"stty size\r");
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut buf = [0u8; 1024];
            while Instant::now() < deadline {
                if let Ok(n) = pty.master.read(&mut buf) {
                    pty.seen.extend_from_slice(&buf[..n]);
                }
                if find(&pty.seen, b"40 120").is_some() {
                    return Some(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        },
    );
    // ctrl-p ctrl-q: the CLI leaves, the shell stays.
    pty.send(b"\x10\x11");
    assert_eq!(exit_code(&mut cli.0), 0);
    assert!(pty.cooked(), "the terminal was not restored");
    assert_eq!(d.state_of("tty1"), "running");

    let mut pty2 = Pty::new(24, 80);
    let again = pty2.spawn(&d, &["attach", "tty1"]);
    let mut again = Reap(again);
    pty2.send(b"echo back-$((1+1))\r");
    pty2.expect("back-2");
    pty2.send(b"stty size\r");
    pty2.expect("24 80");
    pty2.send(b"exit 7\r");
    assert_eq!(exit_code(&mut again.0), 7);
    assert!(pty2.cooked());
    assert_eq!(d.state_of("tty1"), "stopped");
    // The terminal's output is in the log too, as one stream.
    let logs = d.berth(&["logs", "tty1"]);
    assert!(logs.stdout.contains("back-2"), "{logs:?}");
    assert_eq!(logs.stderr, "");
}

fn exec_it_gets_its_own_terminal(rt: Rt) {
    let d = Daemon::start(rt);
    d.run(&["-d", "--name", "host"], &["sleep", "1000"]).ok();
    let mut pty = Pty::new(33, 99);
    let cli = pty.spawn(&d, &["exec", "-it", "host", "/bin/sh"]);
    let mut cli = Reap(cli);
    pty.expect("# ");
    pty.send(b"tty; stty size; echo TERM=$TERM\r");
    pty.expect("/dev/pts/");
    pty.expect("33 99");
    pty.expect("TERM=xterm");
    // ^C is a keystroke for the exec's terminal, not a signal to the CLI.
    pty.send(b"sleep 100\r");
    std::thread::sleep(Duration::from_millis(300));
    pty.send(b"\x03");
    pty.expect("# ");
    pty.send(b"exit 3\r");
    assert_eq!(exit_code(&mut cli.0), 3);
    assert!(pty.cooked());
    assert_eq!(d.state_of("host"), "running");
}

fn start_ai_and_it_without_a_terminal(rt: Rt) {
    let d = Daemon::start(rt);
    let rootfs = rootfs_str();
    // -it needs a terminal to read from.
    let r = d.berth(&["run", "-it", "--rootfs", &rootfs, "/bin/true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("not a TTY"), "{r:?}");
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "", "nothing was created");

    let id = d
        .berth(&["create", "-it", "--rootfs", &rootfs, "/bin/sh"])
        .ok();
    let mut pty = Pty::new(25, 81);
    let cli = pty.spawn(&d, &["start", "-ai", &id]);
    let mut cli = Reap(cli);
    pty.expect("# ");
    pty.send(b"stty size\r");
    pty.expect("25 81");
    pty.send(b"exit 4\r");
    assert_eq!(exit_code(&mut cli.0), 4);
}

fn stdin_streams_and_its_end_closes(rt: Rt) {
    let d = Daemon::start(rt);
    let rootfs = rootfs_str();
    // 8 MiB through cat: more than every buffer on the way holds.
    let input: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut child = d
        .cmd(&["run", "--rm", "-i", "--rootfs", &rootfs, "/bin/cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&data).unwrap();
        // Dropped: EOF, which must close the container's stdin.
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == input,
        "cat returned {} bytes",
        out.stdout.len()
    );

    // exec -i, stdout and stderr apart.
    d.run(&["-d", "--name", "h"], &["sleep", "1000"]).ok();
    let mut child = d
        .cmd(&[
            "exec",
            "-i",
            "h",
            "sh",
            "-c",
            "while read l; do echo out:$l; echo err:$l >&2; done; exit 6",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a\nb\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out:a\nout:b\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err:a\nerr:b\n");
}

fn several_clients_and_one_that_goes_away(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .run(
            &["-d", "-i", "--name", "chat"],
            &["sh", "-c", "while read l; do echo got:$l; done"],
        )
        .ok();
    let spawn_attach = |stdin: bool| {
        let mut args = vec!["attach"];
        if !stdin {
            args.push("--no-stdin");
        }
        args.push("chat");
        d.cmd(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut writer = Reap(spawn_attach(true));
    let mut reader = Reap(spawn_attach(false));
    let gone = Reap(spawn_attach(false));
    // A client killed outright must not disturb the others.
    drop(gone);
    let mut w_in = writer.0.stdin.take().unwrap();
    let mut r_out = reader.0.stdout.take().unwrap();
    let mut w_out = writer.0.stdout.take().unwrap();
    // The attach is live once a line comes back; resend until it does.
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = r_out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while matches!(w_out.read(&mut buf), Ok(n) if n > 0) {}
    });
    poll(
        "both clients to be attached",
        Duration::from_secs(20),
        || {
            w_in.write_all(b"ping\n").ok()?;
            std::thread::sleep(Duration::from_millis(200));
            find(&lines.lock().unwrap(), b"got:ping").map(|_| ())
        },
    );
    w_in.write_all(b"last\n").unwrap();
    poll(
        "the reader to see the writer's line",
        Duration::from_secs(20),
        || find(&lines.lock().unwrap(), b"got:last").map(|_| ()),
    );
    // The writer's stdin ends: the container's stdin closes and it exits.
    drop(w_in);
    assert_eq!(exit_code(&mut writer.0), 0);
    assert_eq!(exit_code(&mut reader.0), 0);
    assert_eq!(d.state_of(&id), "stopped");
}

fn a_stalled_client_does_not_block_the_container(rt: Rt) {
    let d = Daemon::start(rt);
    let go = Marker::new();
    // Says it waits until told to go, then writes 32 MiB and exits.
    let script = format!(
        "while [ ! -e {go} ]; do echo wait; sleep 0.1; done; head -c 33554432 /dev/zero; echo done",
        go = go.path
    );
    let id = d.run(&["-d", "--name", "big"], &["sh", "-c", &script]).ok();
    let mut stalled = Reap(
        d.cmd(&["attach", "--no-stdin", "big"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Attached once it relays a line; then it stops reading altogether.
    let mut out = stalled.0.stdout.take().unwrap();
    let mut buf = [0u8; 5];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"wait\n");
    let pid = nix::unistd::Pid::from_raw(stalled.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    go.set();
    // The shim holds the output back for a while, then drops the client.
    assert_eq!(d.berth(&["wait", &id]).ok(), "0");
    let shim_log =
        std::fs::read_to_string(d.run_dir().join("containers").join(&id).join("shim.log"))
            .unwrap_or_default();
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    drop(out);
    assert!(shim_log.contains("dropping a client"), "{shim_log}");
    let logs = d.cmd(&["logs", &id]).output().unwrap();
    assert!(logs.stdout.ends_with(b"\0\0done\n"));
    assert!(logs.stdout.len() > 32 << 20);
}

both_runtimes!(
    run_it_resize_detach_and_reattach,
    exec_it_gets_its_own_terminal,
    start_ai_and_it_without_a_terminal,
    stdin_streams_and_its_end_closes,
    several_clients_and_one_that_goes_away,
);

#[test]
fn stalled_client_embedded() {
    a_stalled_client_does_not_block_the_container(Rt::Embedded);
}
