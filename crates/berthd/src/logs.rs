//! Reading the CRI-format logs the shims write:
//! `<RFC3339Nano> <stdout|stderr> <F|P> <content>` per record. An `F` record
//! ends a line (its newline is implied), a `P` record is a fragment written
//! as-is, so the bytes come back exactly as the process wrote them.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    for n in 1.. {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        let p = PathBuf::from(p);
        if !p.exists() {
            break;
        }
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
}

impl Filter {
    fn keep(&self, r: &Record) -> bool {
        match self.since {
            None => true,
            Some(since) => humantime::parse_rfc3339(&r.time).map_or(true, |t| t >= since),
        }
    }
}

/// Every complete record in one file.
pub fn read_all_file(file: &Path) -> std::io::Result<Vec<Record>> {
    let mut out = Vec::new();
    let f = match File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
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
pub fn read_all(path: &Path, filter: &Filter) -> std::io::Result<Vec<Record>> {
    let mut out = Vec::new();
    for file in log_files(path) {
        out.extend(read_all_file(&file)?);
    }
    Ok(apply_filter(out, filter))
}

/// Follows the live log file from a position, across rotations.
pub struct Follower {
    path: PathBuf,
    reader: BufReader<File>,
    ino: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Start at the current end of the live file.
    pub fn at_end(path: &Path) -> std::io::Result<Self> {
        let mut f = File::open(path)?;
        let ino = f.metadata()?.ino();
        f.seek(SeekFrom::End(0))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::new(f),
            ino,
            partial: Vec::new(),
        })
    }

    /// Start at the beginning of the live file.
    pub fn at_start(path: &Path) -> std::io::Result<Self> {
        let f = File::open(path)?;
        let ino = f.metadata()?.ino();
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::new(f),
            ino,
            partial: Vec::new(),
        })
    }

    /// Records written since the last call. Switches to the new live file
    /// once the old one is drained after a rotation.
    pub fn poll(&mut self) -> std::io::Result<Vec<Record>> {
        let mut out = Vec::new();
        loop {
            self.drain(&mut out)?;
            match std::fs::metadata(&self.path) {
                Ok(m) if m.ino() != self.ino => {
                    // Rotated: the old file is complete; continue in the new.
                    self.drain(&mut out)?;
                    let f = File::open(&self.path)?;
                    self.ino = f.metadata()?.ino();
                    self.reader = BufReader::new(f);
                    self.partial.clear();
                }
                _ => return Ok(out),
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn tail_and_rotation() {
        let dir = std::env::temp_dir().join(format!("berthd-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("container.log");
        let t = "2026-01-01T00:00:00.000000000Z";
        std::fs::write(
            dir.join("container.log.1"),
            format!("{t} stdout F one\n{t} stdout P tw\n"),
        )
        .unwrap();
        std::fs::write(&log, format!("{t} stdout F o\n{t} stderr F three\n")).unwrap();
        let all = read_all(&log, &Filter::default()).unwrap();
        let bytes: Vec<u8> = all.iter().flat_map(|r| r.data.clone()).collect();
        assert_eq!(bytes, b"one\ntwo\nthree\n");
        let tail = read_all(
            &log,
            &Filter {
                tail: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        let bytes: Vec<u8> = tail.iter().flat_map(|r| r.data.clone()).collect();
        assert_eq!(bytes, b"two\nthree\n");
        let none = read_all(
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
        std::fs::rename(&log, dir.join("container.log.2")).unwrap();
        std::fs::write(&log, format!("{t} stdout F six\n")).unwrap();
        let got: Vec<u8> = f
            .poll()
            .unwrap()
            .iter()
            .flat_map(|r| r.data.clone())
            .collect();
        assert_eq!(got, b"five\nsix\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
