//! Test support shared by berth's crates (a dev-dependency only).
//!
//! The random-input tests of the parsers that take untrusted input (API
//! requests, spec flags, seccomp profiles, image references, layer entry
//! paths, the shim protocol, CRI log lines) are a stand-in for fuzzing on
//! a stable toolchain: cargo-fuzz needs nightly. Each target is a closure
//! that [`drive`] calls with a fixed-seed [`Rng`], so every run is
//! reproducible; the generators that bias inputs towards what matters to
//! each parser stay beside the parser's tests.
//!
//! The knobs, the same for every target:
//! - `BERTH_FUZZ_SECS=N` runs each target for N seconds instead of its
//!   default case count (`BERTH_RANDOM_SECS` is the older name);
//! - `BERTH_FUZZ_SEED=S` mixes S into each target's seed, to explore
//!   other inputs; the seed used is printed, so a failure can be replayed.

use std::path::Path;
use std::time::{Duration, Instant};

/// xorshift64*: small, fast, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0, which xorshift cannot leave, becomes 1).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True once in `one_in` draws.
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Up to `max` pieces drawn from `pieces`, joined.
    pub fn string_of(&mut self, pieces: &[&str], max: usize) -> String {
        let n = self.below(max + 1);
        (0..n).map(|_| *self.pick(pieces)).collect()
    }
}

/// The seconds each target runs for (`BERTH_FUZZ_SECS`, or the older
/// `BERTH_RANDOM_SECS`); 0 means its default case count.
pub fn budget_secs() -> u64 {
    ["BERTH_FUZZ_SECS", "BERTH_RANDOM_SECS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Run `case` `default_cases` times (or for `budget_secs()`) with a
/// generator seeded from `seed` and `BERTH_FUZZ_SEED`; print the count
/// and the seed used.
pub fn drive(name: &str, seed: u64, default_cases: u64, mut case: impl FnMut(&mut Rng)) {
    let secs = budget_secs();
    let seed = std::env::var("BERTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(seed, |s| s ^ seed)
        .max(1);
    let deadline = (secs > 0).then(|| Instant::now() + Duration::from_secs(secs));
    let mut rng = Rng::new(seed);
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
    eprintln!("{name}: {n} cases (seed {seed})");
}

/// An error message must be one line: berth's errors are printed as one.
#[track_caller]
pub fn assert_one_line(message: &str) {
    assert!(!message.contains('\n'), "multi-line error: {message:?}");
}

/// Every path under `dir`, sorted: compared before and after a target to
/// prove that it made nothing outside where it may write.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A fresh directory under the system's temp dir, removed with all it holds
/// when dropped, also when the test that made it panics.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// `<temp>/<prefix>-<pid>-<n>`, made empty (a leftover of an earlier
    /// run with the same pid is removed first).
    pub fn new(prefix: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_fixed_by_the_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(0).next_u64(), 0, "a zero seed must not stick at 0");
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn drive_runs_the_default_count() {
        let mut n = 0;
        if budget_secs() == 0 {
            drive("count", 1, 25, |_| n += 1);
            assert_eq!(n, 25);
        }
    }
}
