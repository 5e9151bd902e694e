//! Random-input tests of the parsers that take untrusted input: spec
//! generation from API fields, signal names, seccomp profiles. A stand-in
//! for fuzzing on a stable toolchain (cargo-fuzz needs nightly): inputs come
//! from a fixed-seed generator, biased towards the characters and shapes
//! that matter (separators, NUL, `..`, huge numbers, near-valid JSON), and
//! every run is reproducible. By default each target runs a few thousand
//! cases; `BERTH_RANDOM_SECS=600` runs each for that long instead.
//!
//! The properties: no panic, no error message over one line, and what is
//! accepted is well-formed (signals in 1..=64, specs that serialize).

use std::time::{Duration, Instant};

use berth_core::exit::parse_signal;
use berth_core::seccomp::{self, Profile, DEFAULT_PROFILE_JSON};
use berth_core::spec::{self, HostInfo, Limits, SecurityOptions, SpecOptions};

/// xorshift64*: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// A string of pieces that matter to parsers.
    fn string(&mut self, max_pieces: usize) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "0",
            "9",
            "-",
            "_",
            ".",
            "..",
            "/",
            "../",
            ":",
            "=",
            "+",
            ",",
            " ",
            "\t",
            "\n",
            "\0",
            "\u{7f}",
            "é",
            "\u{202e}",
            "SIG",
            "RTMIN",
            "RTMAX",
            "CAP_",
            "ALL",
            "all",
            "SYS_ADMIN",
            "net.",
            "kernel.",
            "fs.mqueue.",
            "seccomp",
            "unconfined",
            "no-new-privileges",
            "true",
            "false",
            "systempaths",
            "{",
            "}",
            "[",
            "]",
            "\"",
            "/dev/null",
            "/dev/",
            "rwm",
            "r",
            "-1",
            "4294967295",
            "18446744073709551616",
            "2147483647",
            "-2147483648",
            "nofile",
            "nproc",
            "root",
            "nobody",
            "65534",
            "%s",
            "\\",
        ];
        let n = self.below(max_pieces + 1);
        (0..n).map(|_| *self.pick(PIECES)).collect()
    }
    fn strings(&mut self, max: usize, pieces: usize) -> Vec<String> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.string(pieces)).collect()
    }
}

/// Run `case` until the time budget or the case count is spent.
fn drive(name: &str, seed: u64, default_cases: u64, mut case: impl FnMut(&mut Rng)) {
    let secs: u64 = std::env::var("BERTH_RANDOM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let deadline = (secs > 0).then(|| Instant::now() + Duration::from_secs(secs));
    let mut rng = Rng(seed);
    let mut n = 0u64;
    loop {
        case(&mut rng);
        n += 1;
        match deadline {
            Some(d) if Instant::now() >= d => break,
            None if n >= default_cases => break,
            _ => {}
        }
    }
    eprintln!("{name}: {n} cases");
}

#[track_caller]
fn one_line(e: &impl std::fmt::Display) {
    let m = e.to_string();
    assert!(!m.contains('\n'), "multi-line error: {m:?}");
}

#[test]
fn signal_names() {
    drive("signal_names", 1, 200_000, |rng| {
        let s = rng.string(6);
        if let Some(n) = parse_signal(&s) {
            assert!((1..=64).contains(&n), "{s:?} -> {n}");
        }
    });
}

#[test]
fn spec_generation() {
    let rootfs = std::env::temp_dir().join(format!("berth-random-spec-{}", std::process::id()));
    drive("spec_generation", 2, 20_000, |rng| {
        let opts = SpecOptions {
            rootfs: if rng.chance(8) {
                rng.string(4).into()
            } else {
                rootfs.clone()
            },
            args: rng.strings(4, 4),
            env: rng.strings(4, 6),
            cwd: rng.chance(2).then(|| rng.string(5)),
            user: rng.chance(2).then(|| rng.string(4)),
            hostname: rng.chance(3).then(|| rng.string(4)),
            readonly_rootfs: rng.chance(2),
            terminal: rng.chance(2),
            cgroups_path: "/berth/x".into(),
            id: "0123456789abcdef".into(),
            limits: Limits {
                memory: rng.chance(3).then(|| rng.next() as i64),
                cpus: rng.chance(3).then(|| f64::from_bits(rng.next())),
                pids: rng.chance(3).then(|| rng.next() as i64),
                ..Limits::default()
            },
            security: SecurityOptions {
                cap_add: rng.strings(3, 3),
                cap_drop: rng.strings(3, 3),
                privileged: false,
                security_opt: rng.strings(2, 4),
                devices: rng.strings(2, 4),
                group_add: rng.strings(2, 3),
                sysctls: (0..rng.below(3))
                    .map(|_| (rng.string(4), rng.string(2)))
                    .collect(),
                ulimits: rng.strings(2, 4),
                oom_score_adj: rng.chance(3).then(|| rng.next() as i32),
                host: HostInfo::default(),
            },
            // Any range, even empty or past 2^32: refused, never a panic.
            userns: rng.chance(3).then(|| spec::IdRange {
                host: rng.next() as u32,
                size: rng.next() as u32,
            }),
        };
        let passwd = rng.chance(2).then(|| rng.string(12));
        let group = rng.chance(2).then(|| rng.string(12));
        match spec::generate(&opts, passwd.as_deref(), group.as_deref()) {
            Ok(s) => {
                serde_json::to_vec(&s).expect("an accepted spec serializes");
            }
            Err(e) => one_line(&e),
        }
    });
}

#[test]
fn seccomp_profiles() {
    let host = seccomp::Host::current();
    let caps = spec::DEFAULT_CAPABILITIES.iter().copied().collect();
    let base = DEFAULT_PROFILE_JSON.as_bytes();
    drive("seccomp_profiles", 3, 3_000, |rng| {
        // Mutations of the real profile: flipped, dropped, duplicated and
        // replaced bytes, a cut at any point.
        let mut b = base.to_vec();
        for _ in 0..=rng.below(8) {
            if b.is_empty() {
                break;
            }
            let at = rng.below(b.len());
            match rng.below(5) {
                0 => b[at] ^= 1 << rng.below(8),
                1 => {
                    b.remove(at);
                }
                2 => b.insert(at, *rng.pick(b"{}[]\",:0123456789-eE.ntf")),
                3 => b.truncate(at),
                _ => {
                    let s = rng.string(3);
                    b.splice(at..at, s.bytes());
                }
            }
        }
        let text = String::from_utf8_lossy(&b);
        match Profile::parse(&text) {
            Ok(p) => {
                let f = p
                    .to_oci(&caps, &host)
                    .expect("an accepted profile translates");
                serde_json::to_vec(&f).expect("and serializes");
            }
            Err(e) => one_line(&e),
        }
    });
}
