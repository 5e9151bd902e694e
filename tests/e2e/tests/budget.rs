//! The shim's memory budget, asserted as conmon-rs does: an idle shim
//! supervising a `sleep` container stays within 1.5 MiB of resident memory
//! (VmRSS from /proc/PID/status). This is the only performance figure the
//! tests assert; latency and throughput live in `bench/` (see
//! docs/performance.md).
//!
//! The budget is the shipped shim's: the release build (opt-level "s",
//! `-no-pie`), which `test.sh` builds and passes as `BERTH_BUDGET_SHIM`.
//! An unoptimised debug shim idles at ~1.8 MiB and is not what ships.

use std::time::Duration;

use berth_e2e::*;

/// VmRSS budget of one idle shim, in KiB.
const SHIM_RSS_BUDGET_KIB: u64 = 1536;

fn vm_rss_kib(pid: i64) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The release shim: `BERTH_BUDGET_SHIM`, else `target/release/berth-shim`.
fn release_shim() -> String {
    let path = std::env::var("BERTH_BUDGET_SHIM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target/release/berth-shim"));
    assert!(
        path.exists(),
        "no release shim at {}: build it with `cargo build --release -p berth-shim` \
         (test.sh does) or set BERTH_BUDGET_SHIM",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

fn idle_shim_within_budget(rt: Rt) {
    let shim_bin = release_shim();
    let d = Daemon::start_with(rt, &["--shim", &shim_bin]);
    let id = d.run(&["-d"], &["sleep", "1000"]).ok();
    let pid = d.inspect(&id)["pid"].as_i64().unwrap_or(0);
    assert!(pid > 0, "no init pid for {id}");
    let shim = ppid_of(pid);
    assert!(shim > 1, "no shim for init {pid}");
    let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap_or_default();
    assert!(
        comm.trim().starts_with("berth-shim"),
        "parent of the init is {comm:?}, not the shim"
    );

    // The shim trims the file pages it touched during start-up before it
    // goes idle; give it a moment to get there, then read it as it idles.
    let mut last = 0;
    let settled = poll_ok(Duration::from_secs(5), || {
        last = vm_rss_kib(shim).unwrap_or(u64::MAX);
        last <= SHIM_RSS_BUDGET_KIB
    });
    assert!(
        settled,
        "idle shim {shim} ({}): VmRSS {last} KiB > budget {SHIM_RSS_BUDGET_KIB} KiB",
        rt.flag()
    );
    // Still within budget a little later: it does not creep up while idle.
    std::thread::sleep(Duration::from_millis(300));
    let again = vm_rss_kib(shim).unwrap_or(u64::MAX);
    assert!(
        again <= SHIM_RSS_BUDGET_KIB,
        "idle shim {shim} ({}): VmRSS {again} KiB > budget {SHIM_RSS_BUDGET_KIB} KiB",
        rt.flag()
    );
    eprintln!("idle shim ({}): VmRSS {again} KiB", rt.flag());

    d.berth(&["rm", "-f", &id]).ok();
    assert_no_leftovers(&d, &id, pid);
}

/// Retry `f` every 50 ms until it holds or `timeout` passes.
fn poll_ok(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

both_runtimes!(idle_shim_within_budget);
