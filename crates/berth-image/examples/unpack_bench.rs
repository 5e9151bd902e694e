//! Layer unpack throughput (a benchmark, not a test):
//! `cargo run --release -p berth-image --example unpack_bench -- DIR [MB [none,gzip,zstd,snapshots]]`
//! builds a layer of about MB megabytes (default 200: 40 files of 2 MiB,
//! the rest in 4-64 KiB files in 100 directories), then unpacks it into a
//! fresh directory under DIR, uncompressed, gzip and zstd, and reports
//! MB/s of uncompressed tar, with and without the final syncfs; then the
//! time to prepare a container root on it, overlay and copy.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

use berth_image::snapshot::{Snapshotter, SnapshotterChoice};
use berth_image::unpack::{unpack_layer, Compression, Whiteouts};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let base = Path::new(args.get(1).ok_or("usage: unpack_bench DIR [MB]")?);
    let mb: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let tar = build(mb << 20)?;
    eprintln!("layer: {} MB of tar", tar.len() >> 20);
    let only = args
        .get(3)
        .map(String::as_str)
        .unwrap_or("none,gzip,zstd,snapshots");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    if only.contains("gzip") {
        gz.write_all(&tar)?;
    }
    let gz = gz.finish()?;
    let zst = if only.contains("zstd") {
        zstd::encode_all(&tar[..], 3)?
    } else {
        Vec::new()
    };
    for (name, blob, c) in [
        ("none", &tar, Compression::None),
        ("gzip", &gz, Compression::Gzip),
        ("zstd", &zst, Compression::Zstd),
    ] {
        if !only.contains(name) {
            continue;
        }
        let dest = tempfile::tempdir_in(base)?;
        let start = Instant::now();
        let cpu0 = cpu_seconds()?;
        let out = unpack_layer(&blob[..], c, dest.path(), Whiteouts::Overlay)?;
        let cpu = cpu_seconds()? - cpu0;
        let unpacked = start.elapsed();
        let fd = std::fs::File::open(dest.path())?;
        rustix::fs::syncfs(fd.as_fd())?;
        let synced = start.elapsed();
        let size = out.uncompressed_size as f64 / 1e6;
        println!(
            "{name}: {:.0} MB ({:.0} MB compressed), {} entries: unpack {:.2}s = {:.0} MB/s ({cpu:.2} CPU s); with syncfs {:.2}s = {:.0} MB/s",
            size,
            blob.len() as f64 / 1e6,
            out.entries,
            unpacked.as_secs_f64(),
            size / unpacked.as_secs_f64(),
            synced.as_secs_f64(),
            size / synced.as_secs_f64(),
        );
    }
    if !only.contains("snapshots") {
        return Ok(());
    }
    // Container roots from that layer: an overlay mount, and a copy (the
    // copy snapshotter copies committed layers; syncfs included).
    let snaps = tempfile::tempdir_in(base)?;
    let diff_id = berth_image::digest::Digest::of(&tar);
    let chain = vec![diff_id.clone()];
    let overlay = Snapshotter::open(snaps.path(), SnapshotterChoice::Overlay)?;
    overlay.unpack_layer(&chain[0], &diff_id, &tar[..], Compression::None)?;
    let start = Instant::now();
    overlay.prepare("bench-overlay", &chain)?;
    println!("prepare overlay: {:.3}s", start.elapsed().as_secs_f64());
    let copy = Snapshotter::open(snaps.path(), SnapshotterChoice::Copy)?;
    let start = Instant::now();
    copy.prepare("bench-copy", &chain)?;
    let t = start.elapsed().as_secs_f64();
    println!(
        "prepare copy: {t:.2}s = {:.0} MB/s",
        tar.len() as f64 / 1e6 / t
    );
    let apply = tempfile::tempdir_in(base)?;
    let start = Instant::now();
    unpack_layer(&tar[..], Compression::None, apply.path(), Whiteouts::Apply)?;
    rustix::fs::syncfs(std::fs::File::open(apply.path())?.as_fd())?;
    let t = start.elapsed().as_secs_f64();
    println!(
        "unpack in apply form instead, with syncfs: {t:.2}s = {:.0} MB/s",
        tar.len() as f64 / 1e6 / t
    );
    overlay.remove("bench-overlay")?;
    copy.remove("bench-copy")?;
    Ok(())
}

/// user + system CPU time of this process (all threads), from /proc.
fn cpu_seconds() -> Result<f64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(')').ok_or("odd /proc/self/stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Ok(ticks as f64 / hz)
}

/// Compressible like real binaries and text: runs of a small pseudo-random
/// alphabet.
fn build(total: usize) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::with_capacity(total + (total >> 4)));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut data = vec![0u8; 2 << 20];
    for chunk in data.chunks_mut(8) {
        let r = next();
        let v = (r % 23) as u8 + b'a';
        let run = if r & 0x100 == 0 {
            0
        } else {
            r.to_le_bytes()[2]
        };
        for (i, c) in chunk.iter_mut().enumerate() {
            *c = if i % 2 == 0 { v } else { run };
        }
    }
    let mut written = 0;
    let mut i = 0u64;
    while written < total {
        let size = if i < 40 {
            2 << 20
        } else {
            4096 << (next() % 5)
        };
        let mut h = tar::Header::new_ustar();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        let off = (next() as usize) % (data.len() - size + 1);
        b.append_data(&mut h, format!("d{}/f{i}", i % 100), &data[off..off + size])?;
        written += size;
        i += 1;
    }
    b.into_inner()
}
