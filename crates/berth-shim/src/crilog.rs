//! Container logs in the CRI format, rotated by size.
//!
//! One record per line: `<RFC3339Nano UTC> <stdout|stderr> <F|P> <content>\n`.
//! Every chunk read from a pipe is split at `\n`: each complete line is an
//! `F` (full) record without its newline; a trailing fragment is written at
//! once as a `P` (partial) record rather than held back, so output that never
//! ends a line still reaches the log. Concatenating P contents and F
//! contents + `"\n"` gives back exactly the bytes the process wrote.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Records are written out once this many bytes are built.
const FLUSH_AT: usize = 64 * 1024;

pub struct CriLog {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    max_files: u32,
    /// Reused for every chunk's records.
    buf: Vec<u8>,
    /// Set after a failed write so that a full disk is reported once.
    failing: bool,
    /// Records were written since the log was opened or last synced.
    unsynced: bool,
}

impl CriLog {
    /// Open (append to) the log at `path`. `max_size` 0 never rotates;
    /// otherwise `max_files` rotated files (`path.1` newest) are kept.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max_size,
            max_files,
            buf: Vec::new(),
            failing: false,
            unsynced: false,
        })
    }

    /// Write the records for one chunk read from `stream` ("stdout"/"stderr").
    /// The file is rotated between records, so no file grows past
    /// `max_size` by more than one record (a line longer than `max_size`
    /// still goes out whole).
    pub fn write(&mut self, stream: &str, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let ts = berth_shim_proto::now_rfc3339();
        self.buf.clear();
        let mut start = 0;
        let mut newlines = memchr::memchr_iter(b'\n', data);
        while start < data.len() {
            let (content, tag, next) = match newlines.next() {
                Some(i) => (&data[start..i], b'F', i + 1),
                None => (&data[start..], b'P', data.len()),
            };
            // Bounded buffer: write out what is built so far.
            if self.buf.len() >= FLUSH_AT {
                self.flush_buf();
            }
            let record_len = (ts.len() + stream.len() + content.len() + 5) as u64;
            let pending = self.size + self.buf.len() as u64;
            if self.max_size > 0 && pending > 0 && pending + record_len > self.max_size {
                self.flush_buf();
                if let Err(e) = self.rotate() {
                    crate::diag(format_args!("rotate {}: {e}", self.path.display()));
                }
            }
            self.buf.extend_from_slice(ts.as_bytes());
            self.buf.push(b' ');
            self.buf.extend_from_slice(stream.as_bytes());
            self.buf.push(b' ');
            self.buf.push(tag);
            self.buf.push(b' ');
            self.buf.extend_from_slice(content);
            self.buf.push(b'\n');
            start = next;
        }
        self.flush_buf();
        // Do not keep a huge buffer around after a burst.
        if self.buf.capacity() > 2 * FLUSH_AT {
            self.buf = Vec::new();
        }
    }

    /// Append the buffered records to the live file.
    fn flush_buf(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // Even a failed write may have put part of the buffer in the file.
        self.unsynced = true;
        let result = match self.file.as_mut() {
            Some(f) => f.write_all(&self.buf),
            None => Err(io::Error::other("log file is not open")),
        };
        match result {
            Ok(()) => {
                self.failing = false;
                self.size += self.buf.len() as u64;
            }
            Err(e) => {
                if !self.failing {
                    crate::diag(format_args!("write {}: {e}", self.path.display()));
                }
                self.failing = true;
                // Try to recover for the next chunk (file removed by hand...).
                if let Ok(f) = open_append(&self.path) {
                    self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(f);
                }
            }
        }
        self.buf.clear();
    }

    /// log → log.1 → log.2 …, keeping `max_files` rotated files.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.max_files == 0 {
            remove_if_exists(&self.path)?;
        } else {
            remove_if_exists(&numbered(self.max_files))?;
            for n in (1..self.max_files).rev() {
                match std::fs::rename(numbered(n), numbered(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = Some(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }

    /// Give back the record buffer (the shim is going idle).
    pub fn release(&mut self) {
        self.buf = Vec::new();
    }

    /// Make the log durable (called once, before the exit is reported).
    /// A log this shim wrote nothing to has nothing to make durable: a
    /// silent process (`/bin/true`, most execs) costs no fdatasync.
    pub fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        if let Some(f) = self.file.as_mut() {
            if f.sync_data().is_ok() {
                self.unsynced = false;
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-crilog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Rebuild the original bytes from the records, checking their shape.
    fn reassemble(text: &str, stream: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for line in text.lines() {
            let mut parts = line.splitn(4, ' ');
            let ts = parts.next().unwrap();
            assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
            if parts.next().unwrap() != stream {
                continue;
            }
            let tag = parts.next().unwrap();
            out.extend_from_slice(parts.next().unwrap_or("").as_bytes());
            match tag {
                "F" => out.push(b'\n'),
                "P" => {}
                t => panic!("bad tag {t}"),
            }
        }
        out
    }

    #[test]
    fn only_a_written_log_is_synced() {
        let dir = tmpdir("sync");
        let path = dir.join("log");
        let mut log = CriLog::open(&path, 0, 1).unwrap();
        assert!(!log.unsynced, "nothing written yet");
        log.sync();
        log.write("stdout", b"");
        assert!(!log.unsynced, "an empty chunk writes nothing");
        log.write("stdout", b"line\n");
        assert!(log.unsynced);
        log.sync();
        assert!(!log.unsynced);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_round_trip() {
        let d = tmpdir("rt");
        let p = d.join("log");
        let mut log = CriLog::open(&p, 0, 0).unwrap();
        let chunks: [&[u8]; 5] = [b"hi\n", b"a\nb", b"c\n\n", b"tail", b"\n"];
        for c in chunks {
            log.write("stdout", c);
        }
        log.write("stderr", b"err\n");
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(reassemble(&text, "stdout"), b"hi\na\nbc\n\ntail\n");
        assert_eq!(reassemble(&text, "stderr"), b"err\n");
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, ["F", "F", "P", "F", "F", "P", "F", "F"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotation_keeps_max_files() {
        let d = tmpdir("rot");
        let p = d.join("c.log");
        let mut log = CriLog::open(&p, 100, 2).unwrap();
        for i in 0..20 {
            log.write("stdout", format!("line {i} with some padding\n").as_bytes());
        }
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["c.log", "c.log.1", "c.log.2"]);
        let last = std::fs::read_to_string(d.join("c.log.1")).unwrap();
        assert!(
            last.contains("line 19") || std::fs::read_to_string(&p).unwrap().contains("line 19")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
