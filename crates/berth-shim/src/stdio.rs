//! A process's stdio on the shim's side: the pipes or pty master it reads
//! output from, the stdin it writes for attached clients, and the console
//! socket over which a runtime hands over a pty master.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth_oci::Stdio;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::sys;

/// Pipe buffer for a process's stdout/stderr: a fast writer fills 64 KiB
/// pipes in microseconds; a bigger one halves the shim's wake-ups.
const PIPE_SIZE: i32 = 1 << 20;

/// Pipes for a new process: the child's ends for the backend, our
/// nonblocking read ends of stdout and stderr, and, with `open_stdin`, the
/// nonblocking write end of its stdin (otherwise closed at once: the
/// process reads EOF).
pub fn pipes(open_stdin: bool) -> io::Result<(Stdio, [Option<File>; 2], Option<File>)> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from);
    let (stdin, stdin_w) = pipe()?;
    let stdin_w = if open_stdin {
        sys::set_nonblocking(&stdin_w)?;
        Some(File::from(stdin_w))
    } else {
        None
    };
    let (out_r, stdout) = pipe()?;
    let (err_r, stderr) = pipe()?;
    for r in [&out_r, &err_r] {
        sys::set_nonblocking(r)?;
        sys::set_pipe_size(r, PIPE_SIZE);
    }
    Ok((
        Stdio {
            stdin,
            stdout,
            stderr,
        },
        [Some(File::from(out_r)), Some(File::from(err_r))],
        stdin_w,
    ))
}

/// A unix socket a runtime connects to in order to send a pty master
/// (`--console-socket`). It lives in a private directory with a short path
/// (runc dials the path as given, and a sockaddr_un holds 108 bytes), under
/// /run when there is one (a tmpfs: nothing survives a reboot), and is
/// removed when dropped.
pub struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> io::Result<Self> {
        let base = if Path::new("/run").is_dir() {
            PathBuf::from("/run")
        } else {
            std::env::temp_dir()
        };
        let pid = std::process::id();
        for n in 0..1000 {
            let dir = base.join(format!(".berth-tty-{pid}-{n}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            let path = dir.join("sock");
            return match UnixListener::bind(&path) {
                Ok(listener) => Ok(Self {
                    dir,
                    path,
                    listener,
                }),
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir);
                    Err(e)
                }
            };
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free console socket directory",
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master the runtime sent (it has connected and sent it by
    /// the time its create or exec returned), waiting at most until
    /// `deadline`. Returned nonblocking.
    pub fn receive(&self, deadline: Instant) -> io::Result<File> {
        self.listener.set_nonblocking(true)?;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    let left = deadline.saturating_duration_since(Instant::now());
                    stream.set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))))?;
                    let master = File::from(sys::recv_fd(&stream)?);
                    sys::set_nonblocking(&master)?;
                    return Ok(master);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the runtime did not send the terminal",
                ));
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A process's input: its stdin pipe or its pty master, with what attached
/// clients sent that it has not read yet.
pub struct Input {
    fd: File,
    buf: Vec<u8>,
    /// Close once `buf` is written (the client's stdin ended).
    close: bool,
    /// A pty master: never closed on stdin EOF (that would hang up the
    /// terminal); the process sees the client's ^D instead.
    tty: bool,
}

impl Input {
    /// `fd` must be nonblocking.
    pub fn new(fd: File, tty: bool) -> Self {
        Self {
            fd,
            buf: Vec::new(),
            close: false,
            tty,
        }
    }

    pub fn fd(&self) -> &File {
        &self.fd
    }

    /// Bytes accepted but not written to the process yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, data: &[u8]) {
        if !self.close {
            self.buf.extend_from_slice(data);
        }
    }

    /// The client's stdin ended: close the process's stdin after what is
    /// buffered (not for a terminal).
    pub fn close(&mut self) {
        if !self.tty {
            self.close = true;
        }
    }

    /// Write what is buffered, without blocking. False when this input is
    /// finished (closed after an EOF, or the process stopped reading) and
    /// should be dropped, which closes the fd.
    pub fn flush(&mut self) -> bool {
        while !self.buf.is_empty() {
            match self.fd.write(&self.buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false, // EPIPE: nobody reads it any more
            }
        }
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
        !self.close
    }
}
