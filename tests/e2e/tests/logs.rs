//! Logs that never lose a line: a million numbered lines, with and without
//! rotation and across a daemon killed mid-stream; a 1 MiB line and a last
//! line without a newline, byte for byte; time windows.

use std::process::Stdio;
use std::time::Duration;

use berth_e2e::*;

const LINES: u32 = 1_000_000;

/// "1\n2\n...N\n", what `seq 1 N` writes.
fn numbered(n: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 8);
    for i in 1..=n {
        out.extend_from_slice(i.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// The first difference between what came back and what was written.
#[track_caller]
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(20)..(at + 20).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: {} bytes back, {} written, first difference at byte {at}: {:?} instead of {:?}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    );
}

fn logs_of(d: &Daemon, id: &str) -> Vec<u8> {
    let out = d.cmd(&["logs", id]).stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn a_million_lines(rt: Rt) {
    let d = Daemon::start(rt);
    let want = numbered(LINES);
    // Without rotation (the default keeps 16 MiB per file).
    let plain = d.run(&["-d"], &["seq", "1", &LINES.to_string()]).ok();
    // Rotated every 2 MiB, with room to keep every file.
    let rotated = d
        .run(
            &["-d", "--log-max-size", "2m", "--log-max-files", "40"],
            &["seq", "1", &LINES.to_string()],
        )
        .ok();
    // Followed from the start while it is written and rotated.
    let follow = d
        .cmd(&["logs", "-f", &rotated])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(d.berth(&["wait", &plain]).ok(), "0");
    assert_eq!(d.berth(&["wait", &rotated]).ok(), "0");
    assert_same(&logs_of(&d, &plain), &want, "without rotation");
    assert_same(&logs_of(&d, &rotated), &want, "with rotation");
    let followed = follow.wait_with_output().unwrap();
    assert!(followed.status.success());
    assert_same(&followed.stdout, &want, "followed across rotations");
    let files = std::fs::read_dir(d.state_dir().join("containers").join(&rotated))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .count();
    assert!(files > 3, "only {files} log files: no rotation happened");
    // `--tail` counts lines from the end.
    let tail = d.berth(&["logs", "--tail", "3", &rotated]).ok();
    assert_eq!(tail, "999998\n999999\n1000000");
}

fn a_daemon_killed_mid_stream_loses_nothing(rt: Rt) {
    let mut d = Daemon::start(rt);
    let half = LINES / 2;
    // Writes half, waits to be told, writes the rest: berthd dies in
    // between and while the rest is written.
    let go = Marker::new();
    let script = format!(
        "seq 1 {half}; while [ ! -e {go} ]; do sleep 0.05; done; seq {} {LINES}",
        half + 1,
        go = go.path
    );
    let id = d
        .run(
            &["-d", "--log-max-size", "1m", "--log-max-files", "80"],
            &["sh", "-c", &script],
        )
        .ok();
    // Until the shim has written the first chunk there is no log yet and
    // `logs` fails ("no output recorded"): retry rather than assert.
    poll("half the lines", Duration::from_secs(60), || {
        let out = d.cmd(&["logs", &id]).stdin(Stdio::null()).output().ok()?;
        (out.status.success() && out.stdout.ends_with(format!("\n{half}\n").as_bytes()))
            .then_some(())
    });
    go.set();
    d.kill9();
    std::thread::sleep(Duration::from_millis(200));
    d.restart();
    assert_eq!(d.berth(&["wait", &id]).ok(), "0");
    assert_same(
        &logs_of(&d, &id),
        &numbered(LINES),
        "across a daemon restart",
    );
}

fn long_line_and_unterminated_last_line(rt: Rt) {
    let d = Daemon::start(rt);
    let script = "head -c 1048576 /dev/zero | tr '\\0' x; echo; printf 'no newline'; \
                  head -c 300000 /dev/zero | tr '\\0' y >&2";
    let mut want = vec![b'x'; 1 << 20];
    want.extend_from_slice(b"\nno newline");
    let want_err = vec![b'y'; 300_000];
    // Attached (foreground run) ...
    let out = d
        .cmd(&[
            "run",
            "--name",
            "long",
            "--rootfs",
            rootfs().to_str().unwrap(),
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_same(&out.stdout, &want, "attached stdout");
    assert_same(&out.stderr, &want_err, "attached stderr");
    // ... and from the log.
    let logs = d.cmd(&["logs", "long"]).output().unwrap();
    assert_same(&logs.stdout, &want, "logged stdout");
    assert_same(&logs.stderr, &want_err, "logged stderr");
    // A long line is split into partial records, none bigger than a read.
    let log = std::fs::read(d.inspect("long")["log_path"].as_str().unwrap()).unwrap();
    let records: Vec<&[u8]> = log
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert!(records
        .iter()
        .any(|r| r.split(|b| *b == b' ').nth(2) == Some(b"P")));
    assert!(
        records.iter().all(|r| r.len() < 70 * 1024),
        "a record is too long"
    );
    // -t puts a timestamp at the start of every line only.
    let t = d.berth(&["logs", "-t", "long"]);
    let lines: Vec<&str> = t.stdout.split('\n').collect();
    assert_eq!(lines.len(), 2, "two lines on stdout");
    assert!(lines
        .iter()
        .all(|l| l.len() > 30 && l.as_bytes()[4] == b'-'));
}

fn since_and_until_select_a_window(rt: Rt) {
    let d = Daemon::start(rt);
    let id = d
        .run(
            &["-d", "-i"],
            &["sh", "-c", "echo early; read x; echo late"],
        )
        .ok();
    poll("early", Duration::from_secs(10), || {
        d.berth(&["logs", &id])
            .stdout
            .contains("early")
            .then_some(())
    });
    let between = now_rfc3339();
    // The second line comes once stdin has a line: through attach.
    let mut a = d
        .cmd(&["attach", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut a.stdin.take().unwrap(), b"go\n").unwrap();
    assert_eq!(d.berth(&["wait", &id]).ok(), "0");
    let _ = a.wait();
    assert_eq!(d.berth(&["logs", "--until", &between, &id]).ok(), "early");
    assert_eq!(d.berth(&["logs", "--since", &between, &id]).ok(), "late");
    let r = d.berth(&["logs", "--until", "yesterday", &id]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
}

both_runtimes!(
    a_million_lines,
    a_daemon_killed_mid_stream_loses_nothing,
    long_line_and_unterminated_last_line,
    since_and_until_select_a_window,
);
