//! Reading the CRI-format logs the shims write:
//! `<RFC3339Nano> <stdout|stderr> <F|P> <content>` per record. An `F` record
//! ends a line (its newline is implied), a `P` record is a fragment written
//! as-is, so the bytes come back exactly as the process wrote them.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub time: String,
    pub stream: Stream,
    /// The content with its newline when the record ends a line.
    pub data: Vec<u8>,
    /// This record ends a line.
    pub full: bool,
}

/// Parse one record (without its trailing `\n`).
pub fn parse_record(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let mut data = parts.next().unwrap_or_default().to_vec();
    if full {
        data.push(b'\n');
    }
    Some(Record {
        time,
        stream,
        data,
        full,
    })
}

/// The files of a log, oldest first: `log.N`, ..., `log.1`, `log`.
///
/// The shim's rotation shifts the numbered files up one at a time (`log.2`
/// to `log.3`, then `log.1` to `log.2`, then `log` to `log.1`), so while it
/// runs one number is free: the listing goes on over a single missing
/// number, or it would end there and leave the older files out.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    let mut missing = 0;
    for n in 1.. {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        let p = PathBuf::from(p);
        if !p.exists() {
            missing += 1;
            if missing == 2 {
                break;
            }
            continue;
        }
        missing = 0;
        rotated.push(p);
    }
    rotated.reverse();
    rotated.push(path.to_path_buf());
    rotated
}

/// Selection of records.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
    /// Only the records of the last N lines.
    pub tail: Option<usize>,
    /// Only records at or before this time.
    pub until: Option<SystemTime>,
}

impl Filter {
    pub fn keep(&self, r: &Record) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Ok(t) = humantime::parse_rfc3339(&r.time) else {
            return true;
        };
        self.since.is_none_or(|since| t >= since) && self.until.is_none_or(|until| t <= until)
    }
}

/// Every complete record in one file.
#[cfg(test)]
pub fn read_all_file(file: &Path) -> std::io::Result<Vec<Record>> {
    match File::open(file) {
        Ok(f) => read_all(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Every complete record from an open log file.
pub fn read_all(f: File) -> std::io::Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            break; // a record still being written
        }
        line.pop();
        if let Some(r) = parse_record(&line) {
            out.push(r);
        }
    }
    Ok(out)
}

/// The files of a log with their inodes, oldest first.
fn listing(path: &Path) -> Vec<(PathBuf, u64)> {
    log_files(path)
        .into_iter()
        .filter_map(|p| std::fs::metadata(&p).ok().map(|m| (p, m.ino())))
        .collect()
}

/// Open the files of the log older than `live` (the follower's file),
/// oldest first; `None` when the listing was caught mid-rotation (a file
/// renamed or gone under it): call again. A listing is used only when a
/// second one, taken after every file is open, is the same.
pub fn open_older(path: &Path, live: &Follower) -> std::io::Result<Option<Vec<File>>> {
    let before = listing(path);
    let Some(end) = before.iter().position(|(_, ino)| *ino == live.inode()) else {
        // Rotated out altogether: every file there is newer, the
        // follower's to read. Still linked: renamed under the listing.
        return Ok((!live.linked()).then(Vec::new));
    };
    let mut files = Vec::with_capacity(end);
    for (p, ino) in &before[..end] {
        let f = match File::open(p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if f.metadata()?.ino() != *ino {
            return Ok(None);
        }
        files.push(f);
    }
    Ok((listing(path) == before).then_some(files))
}

/// Keep the records `filter` selects.
pub fn apply_filter(mut records: Vec<Record>, filter: &Filter) -> Vec<Record> {
    records.retain(|r| filter.keep(r));
    if let Some(n) = filter.tail {
        // Count lines from the end: a line is the records up to an F.
        let mut lines = 0;
        let mut start = records.len();
        for (i, r) in records.iter().enumerate().rev() {
            if r.full {
                if lines == n {
                    break;
                }
                lines += 1;
            }
            start = i;
        }
        if n == 0 {
            start = records.len();
        }
        records.drain(..start);
    }
    records
}

/// Read every record now in the log files (rotated ones first), filtered.
#[cfg(test)]
pub fn read_log(path: &Path, filter: &Filter) -> std::io::Result<Vec<Record>> {
    let mut out = Vec::new();
    for file in log_files(path) {
        out.extend(read_all_file(&file)?);
    }
    Ok(apply_filter(out, filter))
}

/// Everything in a log now (rotated files included), then a follower at its
/// end: no gap and no duplicate between the two.
pub fn open_log(path: &Path, filter: &Filter) -> std::io::Result<(Vec<Record>, Follower)> {
    // The live file first: whatever rotates after this, the follower holds
    // it and finds the newer ones; the files older than it are read here,
    // from descriptors opened on a listing that held still (a rotation
    // renames the files one by one).
    let mut follower = open_live(path)?;
    // A listing caught mid-rotation is taken again (a rotation is a few
    // renames); one that never holds still within the bound is an error,
    // never a log with a file left out.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut tries = 0u32;
    let older = loop {
        if let Some(older) = open_older(path, &follower)? {
            break older;
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::other(
                "the log rotated throughout the read: try again",
            ));
        }
        tries += 1;
        if tries < 100 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let mut records = Vec::new();
    for f in older {
        records.extend(read_all(f)?);
    }
    records.extend(follower.poll()?);
    Ok((apply_filter(records, filter), follower))
}

/// A follower at the start of the live log file. The shim's rotation renames
/// the live file to `.1` before it makes the new one, so for a moment there
/// is none: while `.1` exists, a NotFound is a rotation under way and is
/// tried again, for up to 2 s (a shim starved of CPU may take that long
/// between the two calls). A log that never had output has no `.1` and
/// fails at once.
fn open_live(path: &Path) -> std::io::Result<Follower> {
    let mut first = path.as_os_str().to_owned();
    first.push(".1");
    let first = PathBuf::from(first);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match Follower::at_start(path) {
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && Instant::now() < deadline
                    && first.exists() =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

/// Follows the live log file from a position, across rotations.
pub struct Follower {
    path: PathBuf,
    reader: BufReader<File>,
    ino: u64,
    partial: Vec<u8>,
    /// Files newer than the one being read, oldest first, opened as soon as
    /// they are seen: a rotation that deletes one cannot take its content
    /// from an open descriptor.
    pending: VecDeque<(u64, File)>,
}

impl Follower {
    fn new(path: &Path, f: File) -> std::io::Result<Self> {
        let ino = f.metadata()?.ino();
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::new(f),
            ino,
            partial: Vec::new(),
            pending: VecDeque::new(),
        })
    }

    /// Start at the current end of the live file.
    #[cfg(test)]
    pub fn at_end(path: &Path) -> std::io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        let mut f = File::open(path)?;
        f.seek(SeekFrom::End(0))?;
        Self::new(path, f)
    }

    /// Start at the beginning of the live file.
    pub fn at_start(path: &Path) -> std::io::Result<Self> {
        Self::new(path, File::open(path)?)
    }

    /// The inode of the file being read.
    pub fn inode(&self) -> u64 {
        self.ino
    }

    /// Whether the file being read still has a name (rotation deletes the
    /// oldest).
    pub fn linked(&self) -> bool {
        self.reader
            .get_ref()
            .metadata()
            .map(|m| m.nlink() > 0)
            .unwrap_or(false)
    }

    /// The live log file this follows.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open every file of the log newer than the newest one held.
    fn track(&mut self) {
        let list = || listing(&self.path);
        let files = list();
        // A rotation renames files one by one: a listing taken meanwhile
        // can miss a file or show one twice. Act only on a listing that
        // holds still; the next wake-up (a write, a rename, the tick) looks
        // again.
        if files != list() {
            return;
        }
        let (newest, newest_nlink) = match self.pending.back() {
            Some((ino, f)) => (*ino, f.metadata().map(|m| m.nlink()).unwrap_or(0)),
            None => (
                self.ino,
                self.reader
                    .get_ref()
                    .metadata()
                    .map(|m| m.nlink())
                    .unwrap_or(0),
            ),
        };
        let start = match files.iter().position(|(_, ino)| *ino == newest) {
            Some(i) => i + 1,
            // Deleted by rotation (the oldest go first): every file listed
            // is newer.
            None if newest_nlink == 0 => 0,
            // Still linked but not listed: renamed under the listing.
            None => return,
        };
        for (path, ino) in &files[start..] {
            let Ok(f) = File::open(path) else { continue };
            // Renamed between the listing and the open: the next call sees it.
            if f.metadata().map(|m| m.ino()).ok() != Some(*ino) {
                break;
            }
            self.pending.push_back((*ino, f));
        }
    }

    /// Records written since the last call, across any number of rotations
    /// between calls: the file being read is finished, then each newer one.
    pub fn poll(&mut self) -> std::io::Result<Vec<Record>> {
        let mut out = Vec::new();
        self.track();
        loop {
            self.drain(&mut out)?;
            // A newer file exists, so the one just drained is complete.
            let Some((ino, f)) = self.pending.pop_front() else {
                return Ok(out);
            };
            self.ino = ino;
            self.reader = BufReader::new(f);
            self.partial.clear();
        }
    }

    fn drain(&mut self, out: &mut Vec<Record>) -> std::io::Result<()> {
        loop {
            let n = self.reader.read_until(b'\n', &mut self.partial)?;
            if n == 0 || self.partial.last() != Some(&b'\n') {
                return Ok(()); // EOF, possibly mid-record: keep the fragment
            }
            self.partial.pop();
            if let Some(r) = parse_record(&self.partial) {
                out.push(r);
            }
            self.partial.clear();
        }
    }
}

/// Wakes a follower when the files of a log change (writes, rotations), so
/// output streams without polling delay and a burst of rotations is read
/// while the rotated files still exist.
pub struct LogWatch {
    fd: tokio::io::unix::AsyncFd<InotifyFd>,
}

/// An inotify instance, owned, with the `AsRawFd` that `AsyncFd` needs.
struct InotifyFd(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl LogWatch {
    /// Watch the directory holding `log` (rotation renames within it).
    pub fn new(log: &Path) -> std::io::Result<Self> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let dir = log.parent().unwrap_or(Path::new("/"));
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        ino.add_watch(
            dir,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
        )?;
        // SAFETY: `InotifyFd` owns the inotify descriptor for as long as the
        // AsyncFd holds it, and `as_raw_fd` always returns that descriptor.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                InotifyFd(ino),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Resolves once something changed since the last call.
    pub async fn changed(&self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                // The reactor is gone; let the caller's fallback tick drive.
                return std::future::pending().await;
            };
            match guard.get_inner().0.read_events() {
                Ok(_) => return,
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random records (a stand-in for fuzzing on a stable toolchain, fixed
    /// seed; `BERTH_FUZZ_SECS=600` runs it that long): the parser and the
    /// filters never panic, and an accepted record is well-formed.
    #[test]
    fn random_records() {
        const PIECES: &[&[u8]] = &[
            b"2026-01-01T00:00:00.000000001Z",
            b"2026-13-45T99:99:99Z",
            b"1970-01-01T00:00:00Z",
            b"stdout",
            b"stderr",
            b"stdin",
            b"F",
            b"P",
            b"X",
            b" ",
            b"  ",
            b"\n",
            b"\0",
            b"\xff",
            b"\xc3\x28",
            b"hello",
            b"",
            b"9999-12-31T23:59:59.999999999Z",
            b"-",
            b"+",
        ];
        berth_testkit::drive("random_records", 21, 50_000, |rng| {
            let mut file = Vec::new();
            for _ in 0..rng.below(8) {
                for _ in 0..rng.below(8) {
                    let piece: &&[u8] = rng.pick(PIECES);
                    file.extend_from_slice(piece);
                }
                file.push(b'\n');
            }
            let records: Vec<Record> = file
                .split(|b| *b == b'\n')
                .filter_map(parse_record)
                .inspect(|r| assert_eq!(r.full, r.data.last() == Some(&b'\n') && r.full))
                .collect();
            let at = |n: u64| std::time::UNIX_EPOCH + std::time::Duration::from_nanos(n);
            let filter = Filter {
                since: rng.chance(2).then(|| at(rng.next_u64())),
                until: rng.chance(2).then(|| at(rng.next_u64())),
                tail: rng.chance(2).then(|| rng.below(5)),
            };
            let _ = apply_filter(records, &filter);
        });
    }

    #[test]
    fn parse() {
        let r = parse_record(b"2026-01-01T00:00:00.000000001Z stdout F hello world").unwrap();
        assert_eq!(r.stream, Stream::Stdout);
        assert_eq!(r.data, b"hello world\n");
        let r = parse_record(b"2026-01-01T00:00:00.000000001Z stderr P tail").unwrap();
        assert_eq!(r.stream, Stream::Stderr);
        assert_eq!(r.data, b"tail");
        let r = parse_record(b"2026-01-01T00:00:00.000000001Z stdout F ").unwrap();
        assert_eq!(r.data, b"\n");
        assert!(parse_record(b"garbage").is_none());
    }

    /// A reader that opens the log while the shim rotates it, again and
    /// again: every open finds the log (the live file is briefly missing
    /// between the rename and the new file), and every read holds a
    /// contiguous run of records, none missing or twice. The writer keeps
    /// ten rotated files, as a shim with `--log-max-files` does: with every
    /// file kept, a rotation of a hundred renames left a loaded machine's
    /// reader no still listing within its bound (a true "try again", but
    /// not the case this test is about).
    #[test]
    fn open_log_while_it_rotates() {
        use std::io::Write;
        use std::sync::atomic::{AtomicBool, Ordering};
        let tmp = berth_testkit::TempDir::new("berthd-logs-rot");
        let dir = tmp.path().to_path_buf();
        let log = dir.join("container.log");
        let numbered = |n: u32| dir.join(format!("container.log.{n}"));
        let t = "2026-01-01T00:00:00.000000000Z";
        const KEPT: u32 = 10;
        std::fs::write(&log, "").unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let rotations = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let writer = {
            let (stop, log, dir) = (stop.clone(), log.clone(), dir.clone());
            let rotations = rotations.clone();
            std::thread::spawn(move || {
                let numbered = |n: u32| dir.join(format!("container.log.{n}"));
                let mut line = 0u64;
                // As the shim: 10 lines a file, ten files kept, a gap
                // before the new file, and a moment of writing between two
                // rotations (a shim rotates at --log-max-size, at least
                // kilobytes apart; back-to-back rotations would leave a
                // reader no still listing at all, and the read then fails
                // as it should, with "try again").
                while !stop.load(Ordering::Relaxed) && line < 200_000 {
                    std::thread::sleep(Duration::from_millis(1));
                    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                    for _ in 0..10 {
                        line += 1;
                        writeln!(f, "{t} stdout F {line}").unwrap();
                    }
                    drop(f);
                    let mut files = rotations.load(Ordering::Relaxed).min(KEPT);
                    if files == KEPT {
                        std::fs::remove_file(numbered(KEPT)).unwrap();
                        files -= 1;
                    }
                    for n in (1..=files).rev() {
                        std::fs::rename(numbered(n), numbered(n + 1)).unwrap();
                    }
                    std::fs::rename(&log, numbered(1)).unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                    std::fs::write(&log, "").unwrap();
                    rotations.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // Reads until the writer has rotated 200 times; the writer is
        // stopped before any verdict, so a failure leaves nothing running.
        let read = || -> Result<(), String> {
            let deadline = Instant::now() + Duration::from_secs(60);
            while rotations.load(Ordering::Relaxed) < 200 {
                if Instant::now() >= deadline {
                    return Err("the writer is stuck".into());
                }
                let (records, _) =
                    open_log(&log, &Filter::default()).map_err(|e| format!("open_log: {e}"))?;
                let got: Vec<u64> = records
                    .iter()
                    .map(|r| {
                        std::str::from_utf8(&r.data)
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                            .unwrap_or(0)
                    })
                    .collect();
                let first = got.first().copied().unwrap_or(1);
                let want: Vec<u64> = (first..first + got.len() as u64).collect();
                if got != want || (first - 1) % 10 != 0 {
                    return Err(format!("a gap or a duplicate: {got:?}"));
                }
            }
            Ok(())
        };
        let outcome = read();
        stop.store(true, Ordering::Relaxed);
        let wrote = writer.join();
        outcome.unwrap();
        assert!(wrote.is_ok(), "the writer failed");
        assert!(numbered(KEPT).exists());
        assert!(!numbered(KEPT + 1).exists());
    }

    #[test]
    fn tail_and_rotation() {
        let tmp = berth_testkit::TempDir::new("berthd-logs");
        let dir = tmp.path();
        let log = dir.join("container.log");
        let t = "2026-01-01T00:00:00.000000000Z";
        std::fs::write(
            dir.join("container.log.1"),
            format!("{t} stdout F one\n{t} stdout P tw\n"),
        )
        .unwrap();
        std::fs::write(&log, format!("{t} stdout F o\n{t} stderr F three\n")).unwrap();
        let all = read_log(&log, &Filter::default()).unwrap();
        let bytes: Vec<u8> = all.iter().flat_map(|r| r.data.clone()).collect();
        assert_eq!(bytes, b"one\ntwo\nthree\n");
        let tail = read_log(
            &log,
            &Filter {
                tail: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        let bytes: Vec<u8> = tail.iter().flat_map(|r| r.data.clone()).collect();
        assert_eq!(bytes, b"two\nthree\n");
        let none = read_log(
            &log,
            &Filter {
                tail: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(none.is_empty());

        let mut f = Follower::at_end(&log).unwrap();
        assert!(f.poll().unwrap().is_empty());
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        write!(w, "{t} stdout F four\n{t} stdout F fi").unwrap();
        let got = f.poll().unwrap();
        assert_eq!(got.len(), 1);
        writeln!(w, "ve").unwrap();
        // Rotate as the shim does: .1 → .2, live → .1, a new live file.
        std::fs::rename(dir.join("container.log.1"), dir.join("container.log.2")).unwrap();
        std::fs::rename(&log, dir.join("container.log.1")).unwrap();
        std::fs::write(&log, format!("{t} stdout F six\n")).unwrap();
        let got: Vec<u8> = f
            .poll()
            .unwrap()
            .iter()
            .flat_map(|r| r.data.clone())
            .collect();
        assert_eq!(got, b"five\nsix\n");
    }
}
