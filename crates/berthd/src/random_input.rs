//! Random-input tests of what berthd decodes and checks from clients and
//! from the files its shims write: protobuf `CreateRequest`s, decoded from
//! mutated bytes as a client other than the CLI could send them, through
//! the daemon-side validation, the flag parsers and spec generation; and
//! CRI log lines. A stand-in for fuzzing on a stable toolchain (cargo-fuzz
//! needs nightly), as in berth-core's `tests/random_input.rs`: fixed seeds,
//! a few thousand cases by default; `BERTH_FUZZ_SECS=600` runs each target
//! that long (`BERTH_FUZZ_SEED` changes the seed).
//!
//! The properties: no panic; every refusal is one line; an accepted create
//! yields a spec that serializes, and writes nothing outside its root.

use std::path::Path;

use berth_api::v1;
use berth_testkit::{drive, listing, Rng};
use prost::Message;

/// The inputs that matter to berthd's validation.
trait Gen {
    fn string(&mut self) -> String;
    fn strings(&mut self) -> Vec<String>;
    fn opt_i64(&mut self) -> Option<i64>;
}

impl Gen for Rng {
    fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a",
            "0",
            "9",
            "-",
            "_",
            ".",
            "/",
            "../",
            ":",
            "=",
            ",",
            " ",
            "\0",
            "\n",
            "é",
            "..",
            "/data",
            "ro",
            "rw",
            "z",
            "rshared",
            "size=",
            "mode=",
            "auto",
            "host",
            "auto:size=",
            "65536",
            "-1",
            "0",
            "4294967296",
            "9223372036854775807",
            "type=bind",
            "type=volume",
            "type=tmpfs",
            "src=",
            "dst=",
            "target=",
            "none",
            "container:",
            "SIGKILL",
            "RTMIN+",
            "1g",
            "k",
            "always",
            "on-failure:",
            "unless-stopped",
            "NAME=",
            "PATH",
            "\u{202e}",
            "CAP_",
            "SYS_ADMIN",
            "ALL",
            "seccomp=",
            "unconfined",
            "no-new-privileges",
            "/dev/null",
            "rwm",
            "nofile=",
            "net.",
            "kernel.",
            "127.0.0.1",
            "::1",
            "localhost",
            "x:",
        ];
        self.string_of(PIECES, 6)
    }
    fn strings(&mut self) -> Vec<String> {
        let n = self.below(4);
        (0..n).map(|_| self.string()).collect()
    }
    fn opt_i64(&mut self) -> Option<i64> {
        self.chance(3).then(|| match self.below(4) {
            0 => -1,
            1 => 0,
            2 => (self.next_u64() % 100_000_000) as i64,
            _ => self.next_u64() as i64,
        })
    }
}

#[track_caller]
fn one_line(s: &tonic::Status) {
    assert!(
        !s.message().contains('\n') && !s.message().is_empty(),
        "not a one-line error: {:?}",
        s.message()
    );
}

fn request(rng: &mut Rng) -> v1::CreateRequest {
    v1::CreateRequest {
        name: rng.string(),
        source: Some(match rng.below(3) {
            0 => v1::create_request::Source::Image(rng.string()),
            1 => v1::create_request::Source::Rootfs(rng.string()),
            _ => v1::create_request::Source::Bundle(rng.string()),
        }),
        args: rng.strings(),
        env: rng.strings(),
        workdir: rng.string(),
        user: rng.string(),
        hostname: rng.string(),
        labels: (0..rng.below(3))
            .map(|_| (rng.string(), rng.string()))
            .collect(),
        stop_signal: rng.string(),
        stop_timeout: rng.chance(3).then(|| rng.next_u64() as u32),
        read_only: rng.chance(2),
        log_max_size: rng.next_u64() % 4,
        restart: rng.string(),
        memory: rng.opt_i64(),
        cpus: rng.chance(3).then(|| f64::from_bits(rng.next_u64())),
        pids_limit: rng.opt_i64(),
        tty: rng.chance(2),
        cap_add: rng.strings(),
        cap_drop: rng.strings(),
        security_opt: rng.strings(),
        devices: rng.strings(),
        group_add: rng.strings(),
        sysctls: (0..rng.below(3))
            .map(|_| (rng.string(), rng.string()))
            .collect(),
        ulimits: rng.strings(),
        oom_score_adj: rng.chance(3).then(|| rng.next_u64() as i32),
        userns: rng.string(),
        entrypoint: rng.chance(4).then(|| rng.string()),
        platform: if rng.chance(4) {
            rng.string()
        } else {
            String::new()
        },
        resources: rng.chance(3).then(|| v1::Resources {
            memory_swap: rng.opt_i64(),
            memory_reservation: rng.opt_i64(),
            kernel_memory: rng.opt_i64(),
            cpu_shares: rng.chance(3).then(|| rng.next_u64() % 300_000),
            cpu_period: rng.chance(3).then(|| rng.next_u64() % 2_000_000),
            cpu_quota: rng.opt_i64(),
            cpuset_cpus: rng.chance(3).then(|| rng.string()),
            cpuset_mems: rng.chance(3).then(|| rng.string()),
            blkio_weight: rng.chance(3).then(|| rng.next_u64() as u32 % 1200),
            device_read_bps: rng.strings(),
            device_write_bps: rng.strings(),
        }),
        health: rng.chance(4).then(|| v1::HealthCheck {
            test: rng.strings(),
            interval: rng.next_u64() % 4,
            timeout: rng.next_u64() % 4,
            start_period: rng.next_u64() % 4,
            retries: rng.next_u64() as u32 % 4,
        }),
        network: rng.string(),
        dns: rng.strings(),
        dns_search: rng.strings(),
        dns_option: rng.strings(),
        add_host: rng.strings(),
        binds: rng.strings(),
        mounts: rng.strings(),
        tmpfs: rng.strings(),
        shm_size: rng.opt_i64(),
        ..Default::default()
    }
}

/// The daemon-side checks a create goes through before anything is made.
/// Returns whether all of them accepted it.
fn check(r: &v1::CreateRequest) -> bool {
    let mut ok = true;
    for res in [
        crate::validate::create(r),
        crate::mounts::requests(r, &[]).map(drop),
        crate::mounts::shm_size(r).map(drop),
        crate::resources::create_limits(r).map(drop),
        crate::net::parse_mode(&r.network).map(drop),
        crate::resources::health_config(r.health.as_ref()).map(drop),
    ] {
        if let Err(e) = res {
            one_line(&e);
            ok = false;
        }
    }
    if let Err(e) = crate::userns::parse_mode(&r.userns) {
        assert!(!e.contains('\n'), "{e:?}");
        ok = false;
    }
    ok
}

/// Spec generation from a request's flags, with a rootfs of its own:
/// the spec of an accepted request serializes, and nothing appears outside
/// `base/state` but what a bind asked for under `base/host`.
/// No user networks (a create names only the default ones here).
pub(crate) struct NoNetworks;

impl crate::net::NetworkStore for NoNetworks {
    fn load_networks(&self) -> Result<Vec<berth_net::Network>, String> {
        Ok(Vec::new())
    }
    fn save_network(&self, _: &berth_net::Network) -> Result<(), String> {
        Err("no network store here".into())
    }
    fn remove_network(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

fn generate(base: &Path, rootfs: &Path, mut r: v1::CreateRequest) {
    let state = base.join("state");
    // `-v /path:...` creates a missing host directory, as Docker's does:
    // keep those under `base/host`, never anywhere else on this machine.
    let host = base.join("host");
    r.binds.retain(|b| !b.contains(".."));
    for b in &mut r.binds {
        if b.starts_with('/') {
            *b = format!("{}{b}", host.display());
        }
    }
    r.mounts.retain(|m| !m.contains(".."));
    r.source = Some(v1::create_request::Source::Rootfs(
        rootfs.display().to_string(),
    ));
    r.entrypoint = None;
    r.platform.clear();
    let settings = crate::net::Settings {
        default_network: "none".into(),
        bridge_subnet: berth_net::network::DEFAULT_SUBNET
            .parse()
            .expect("the default subnet parses"),
        plugin_dir: berth_net::cni::DEFAULT_PLUGIN_DIR.into(),
        pool: "10.89.0.0/16".parse().expect("the pool parses"),
    };
    let net = crate::net::Net::new(
        &state,
        &state.join("run"),
        &settings,
        std::sync::Arc::new(NoNetworks),
    )
    .expect("the default network settings");
    let vols = match crate::volumes::Volumes::open(&state.join("volumes")) {
        Ok(v) => v,
        Err(e) => panic!("volumes: {e}"),
    };
    let mode = match crate::net::parse_mode(&r.network) {
        Ok(crate::net::ParsedMode::None) => crate::net::Mode::None,
        Ok(crate::net::ParsedMode::Host) => crate::net::Mode::Host,
        _ => crate::net::Mode::None,
    };
    match crate::service::create_params(
        "0123456789abcdef".into(),
        r,
        None,
        Some(&mode),
        &net,
        &vols,
        None,
    ) {
        Ok(p) => {
            serde_json::to_vec(&p.spec).expect("an accepted spec serializes");
        }
        Err(e) => one_line(&e),
    }
    for p in listing(base) {
        let p = Path::new(&p);
        assert!(
            p.starts_with(&state) || p.starts_with(&host) || p.starts_with(rootfs),
            "a create wrote outside its root: {}",
            p.display()
        );
    }
}

/// Removes the test's directory however the test ends.
struct TempBase(std::path::PathBuf);

impl Drop for TempBase {
    fn drop(&mut self) {
        if self.0.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn create_requests_decoded_from_mutated_bytes() {
    let guard =
        TempBase(std::env::temp_dir().join(format!("berthd-random-{}", std::process::id())));
    let base = guard.0.clone();
    let rootfs = base.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs");
    drive("create_requests", 3, 3_000, |rng| {
        let r = request(rng);
        if check(&r) || rng.chance(8) {
            generate(&base, &rootfs, r.clone());
        }
        let mut bytes = r.encode_to_vec();
        for _ in 0..rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let i = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[i] = rng.next_u64() as u8,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, rng.next_u64() as u8),
            }
        }
        // Whatever decodes is checked like any other request.
        if let Ok(r) = v1::CreateRequest::decode(&bytes[..]) {
            if check(&r) {
                generate(&base, &rootfs, r);
            }
        }
    });
}

#[test]
fn cri_log_lines() {
    const PIECES: &[&[u8]] = &[
        b"2026-01-01T00:00:00.000000000Z",
        b" ",
        b"stdout",
        b"stderr",
        b"F",
        b"P",
        b"x",
        b"\xff",
        b"\0",
        b"\r",
        b"  ",
        b"\n",
    ];
    drive("cri_log_lines", 5, 50_000, |rng| {
        let n = rng.below(8);
        let line: Vec<u8> = (0..n)
            .flat_map(|_| rng.pick(PIECES).iter().copied())
            .collect();
        if let Some(rec) = crate::logs::parse_record(&line) {
            // A full record ends with exactly the newline it was given.
            assert_eq!(rec.full, rec.data.last() == Some(&b'\n') && rec.full);
            assert!(line.starts_with(rec.time.as_bytes()));
            assert!(rec.data.len() <= line.len() + 1);
        }
    });
}
