//! Random-input tests of the parsers that take untrusted input: spec
//! generation from API fields, signal names, seccomp profiles. A stand-in
//! for fuzzing on a stable toolchain (cargo-fuzz needs nightly): inputs come
//! from a fixed-seed generator, biased towards the characters and shapes
//! that matter (separators, NUL, `..`, huge numbers, near-valid JSON), and
//! every run is reproducible. By default each target runs a few thousand
//! cases; `BERTH_FUZZ_SECS=600` runs each for that long instead.
//!
//! The properties: no panic, no error message over one line, and what is
//! accepted is well-formed (signals in 1..=64, specs that serialize).

use berth_testkit::{assert_one_line, drive, Rng};

use berth_core::exit::parse_signal;
use berth_core::seccomp::{self, Profile, DEFAULT_PROFILE_JSON};
use berth_core::spec::{self, HostInfo, Limits, SecurityOptions, SpecOptions};

/// The inputs that matter to these parsers.
trait Gen {
    fn string(&mut self, max_pieces: usize) -> String;
    fn strings(&mut self, max: usize, pieces: usize) -> Vec<String>;
}

impl Gen for Rng {
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
        self.string_of(PIECES, max_pieces)
    }
    fn strings(&mut self, max: usize, pieces: usize) -> Vec<String> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.string(pieces)).collect()
    }
}

#[track_caller]
fn one_line(e: &impl std::fmt::Display) {
    assert_one_line(&e.to_string());
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
                memory: rng.chance(3).then(|| rng.next_u64() as i64),
                cpus: rng.chance(3).then(|| f64::from_bits(rng.next_u64())),
                pids: rng.chance(3).then(|| rng.next_u64() as i64),
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
                oom_score_adj: rng.chance(3).then(|| rng.next_u64() as i32),
                host: HostInfo::default(),
            },
            // Any range, even empty or past 2^32: refused, never a panic.
            userns: rng.chance(3).then(|| spec::IdRange {
                host: rng.next_u64() as u32,
                size: rng.next_u64() as u32,
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
