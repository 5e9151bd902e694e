//! Pulls through berthd from a real registry (Debian's docker-registry on
//! 127.0.0.1, images pushed with skopeo): pull and run, pull on run, a
//! corrupted blob refused, and a berthd SIGKILLed in the middle of a pull
//! whose next pull fetches only what it did not have.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_e2e::registry::{noise, tar_gz, Registry, TestImage};
use berth_e2e::{poll, Daemon, Rt};

/// busybox plus a small layer of our own.
fn app_image() -> TestImage {
    let mut img = TestImage::busybox();
    let extra = tar_gz(&[("hello.txt", b"hello from the registry\n")]);
    img = TestImage::new(
        img.layers
            .iter()
            .map(|l| l.bytes.clone())
            .chain(std::iter::once(extra))
            .collect(),
        &["cat", "/hello.txt"],
    );
    img
}

#[test]
fn pull_then_run_and_run_pulls_what_is_missing() {
    let reg = Registry::start();
    reg.push_image(&app_image(), "e2e/app:1");
    let d = Daemon::start_host_net(Rt::Embedded, &[]);
    let name = format!("{}/e2e/app:1", reg.addr());

    let r = d.berth(&["pull", &name]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Pulling from e2e/app"), "{}", r.stdout);
    assert!(r.stdout.contains("Pull complete"), "{}", r.stdout);
    assert!(r.stdout.contains("Digest: sha256:"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{}",
        r.stdout
    );
    // No terminal: plain lines, no control characters.
    assert!(!r.stdout.contains('\x1b'), "{:?}", r.stdout);
    assert_eq!(
        d.berth(&["run", "--rm", &name]).ok(),
        "hello from the registry"
    );

    let again = d.berth(&["pull", "-q", &name]).ok();
    assert!(again.starts_with("sha256:"), "{again}");
    let r = d.berth(&["pull", &name]).ok();
    assert!(r.contains("Image is up to date"), "{r}");

    // run pulls an image it does not have, as Docker's CLI does.
    reg.push_image(&app_image(), "e2e/other:2");
    let other = format!("{}/e2e/other:2", reg.addr());
    let r = d.berth(&["run", "--rm", &other]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "hello from the registry\n");
    assert!(r.stderr.contains("Unable to find image"), "{}", r.stderr);

    // A tag the registry does not have: one line, exit 125.
    let r = d.berth(&["pull", &format!("{}/e2e/app:nope", reg.addr())]);
    assert_eq!(r.code, 125, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
}

#[test]
fn a_corrupted_blob_is_refused_and_nothing_is_stored() {
    let reg = Registry::start();
    let img = app_image();
    reg.push_image(&img, "e2e/bad:1");
    let victim = img.layers.last().unwrap().digest.clone();
    let path = reg.blob_path(&victim);
    let mut data = std::fs::read(&path).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&path, data).unwrap();

    let d = Daemon::start_host_net(Rt::Embedded, &[]);
    let r = d.berth(&["pull", &format!("{}/e2e/bad:1", reg.addr())]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr.contains(&victim),
        "the error names the blob: {r:?}"
    );
    assert_eq!(d.berth(&["images", "-aq"]).ok(), "");
    let blobs = d.state_dir().join("images/blobs/sha256");
    let left: Vec<_> = std::fs::read_dir(&blobs)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left.iter().any(|f| victim.ends_with(f.to_str().unwrap())),
        "the bad blob was stored: {left:?}"
    );
}

/// A TCP proxy that passes the upstream's bytes at about `rate` bytes/s,
/// so a pull can be interrupted half way. Lives as long as the test.
fn slow_proxy(upstream: u16, rate: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let chunk = 16 * 1024;
                let pause = Duration::from_secs_f64(chunk as f64 / rate as f64);
                let mut buf = vec![0u8; chunk];
                loop {
                    match s_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c_out.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                    std::thread::sleep(pause);
                }
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn a_pull_interrupted_by_a_berthd_sigkill_resumes_without_fetching_finished_blobs() {
    let reg = Registry::start();
    let small = tar_gz(&[("small.txt", b"small layer\n")]);
    let big = tar_gz(&[("big.bin", &noise(12 << 20, 7))]);
    let img = TestImage::new(vec![small, big], &["true"]);
    let (small_d, big_d) = (img.layers[0].digest.clone(), img.layers[1].digest.clone());
    let big_size = img.layers[1].bytes.len() as u64;
    reg.push_image(&img, "e2e/big:1");
    // 4 MiB/s: the big layer takes about 3 s through the proxy.
    let proxy = slow_proxy(reg.port(), 4 << 20);
    let name = format!("127.0.0.1:{proxy}/e2e/big:1");

    let mut d = Daemon::start_host_net(Rt::Embedded, &[]);
    let mut pull = d
        .cmd(&["pull", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once the small layer is in and part of the big one is on disk,
    // SIGKILL berthd.
    reg.wait_blob_gets(&small_d, 1);
    let partial = d
        .state_dir()
        .join("images/ingest")
        .join(big_d.trim_start_matches("sha256:"))
        .join("data");
    let got = poll(
        "part of the big layer on disk",
        Duration::from_secs(20),
        || {
            std::fs::metadata(&partial)
                .ok()
                .map(|m| m.len())
                .filter(|n| *n > 1 << 20)
        },
    );
    assert!(got < big_size, "the big layer finished before the kill");
    d.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pull.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = pull.kill();
    let _ = pull.wait();
    assert_eq!(d.berth(&["images", "-aq"]).code, 125, "berthd is down");

    d.restart();
    let r = d.berth(&["pull", &format!("{}/e2e/big:1", reg.addr())]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("Already exists") || r.stdout.contains("Pull complete"),
        "{}",
        r.stdout
    );
    // The small layer was fetched once in all; the big one once in part
    // and once from where it stopped.
    let (small_gets, _) = reg.blob_served(&small_d);
    assert_eq!(small_gets, 1, "the finished layer was fetched again");
    reg.wait_blob_gets(&big_d, 1);
    let last = last_get_bytes(&reg.access_log(), &big_d);
    assert!(
        last > 0 && last < big_size,
        "the big layer was fetched again from the start: the last GET sent {last} of {big_size} bytes\n{}",
        reg.access_log()
    );
    // Whole and verified: the image is recorded and its layers unpacked.
    assert_eq!(d.berth(&["images", "-q"]).ok().lines().count(), 1);
}

/// The bytes sent by the last successful GET of blob `digest`.
fn last_get_bytes(log: &str, digest: &str) -> u64 {
    let needle = format!("/blobs/{digest} ");
    log.lines()
        .rev()
        .filter(|l| l.contains("\"GET ") && l.contains(&needle))
        .find_map(|l| {
            let (_, after) = l.split_once("HTTP/1.1\" ")?;
            let mut f = after.split_whitespace();
            let status = f.next()?;
            let bytes = f.next()?.parse().ok()?;
            status.starts_with('2').then_some(bytes)
        })
        .unwrap_or(0)
}

#[test]
fn login_is_checked_stored_0600_and_sent_with_the_pull() {
    let reg = Registry::start_with_basic_auth("alice", "s3cret");
    reg.push_image(&app_image(), "e2e/private:1");
    let d = Daemon::start_host_net(Rt::Embedded, &[]);
    let home = d.root.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cli = |args: &[&str], input: &str| {
        let mut c = d.cmd(args);
        c.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("DOCKER_CONFIG", home.join(".docker"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let name = format!("{}/e2e/private:1", reg.addr());
    let auth_file = home.join(".config/berth/auth.json");

    let (code, _, err) = cli(&["pull", &name], "");
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("login"), "tells to log in: {err}");

    let (code, _, err) = cli(
        &["login", "-u", "alice", "--password-stdin", &reg.addr()],
        "wrong\n",
    );
    assert_eq!(code, 125, "{err}");
    assert!(!auth_file.exists(), "wrong credentials were stored");

    let (code, out, err) = cli(
        &["login", "-u", "alice", "--password-stdin", &reg.addr()],
        "s3cret\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "Login Succeeded");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (code, out, err) = cli(&["pull", "-q", &name], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("sha256:"), "{out}");

    let (code, _, _) = cli(&["logout", &reg.addr()], "");
    assert_eq!(code, 0);
    let text = std::fs::read_to_string(&auth_file).unwrap_or_default();
    assert!(!text.contains(&reg.addr()), "{text}");
}
