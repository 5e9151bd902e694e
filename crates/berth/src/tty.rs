//! The client's terminal: raw mode, its size, and the detach keys.

use std::io::{IsTerminal, Read};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::termios::{self, SetArg, Termios};
use tokio::sync::mpsc;

/// Docker's default detach sequence: ctrl-p ctrl-q.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Puts stdin in raw mode (bytes go to the container as typed: ^C, ^D and
/// ^Z included, no echo) and restores it when dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on stdin, when it is a terminal.
    pub fn enable() -> Option<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Read a line from the terminal on stdin without echoing it (a password).
pub fn read_password(prompt: &str) -> std::io::Result<String> {
    use std::io::Write;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(std::io::Error::other(
            "stdin is not a terminal: use --password-stdin",
        ));
    }
    let saved = termios::tcgetattr(stdin.as_fd()).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(termios::LocalFlags::ECHO);
    quiet.local_flags.insert(termios::LocalFlags::ECHONL);
    termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &saved);
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The size (rows, columns) of the terminal on stdout, else on stdin.
pub fn size() -> Option<(u16, u16)> {
    [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()]
        .into_iter()
        .find_map(|fd| {
            let mut ws = libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer,
            // which is valid and writable for the call; a non-terminal fd
            // fails with ENOTTY and writes nothing.
            let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
            (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
        })
}

/// Parse detach keys as Docker does: comma-separated `ctrl-<c>` (c one of
/// a-z @ [ \ ] ^ _) or single characters. Empty disables detaching.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |k: &str| {
        format!(
            "invalid detach key {k:?}: use ctrl-<letter> or single characters separated by commas, e.g. ctrl-p,ctrl-q"
        )
    };
    spec.split(',')
        .map(|key| {
            if let Some(c) = key.strip_prefix("ctrl-") {
                match c.as_bytes() {
                    [b @ b'a'..=b'z'] => Ok(b - b'a' + 1),
                    [b @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_')] => Ok(b - b'@'),
                    _ => Err(bad(key)),
                }
            } else {
                match key.as_bytes() {
                    [b] if b.is_ascii() => Ok(*b),
                    _ => Err(bad(key)),
                }
            }
        })
        .collect()
}

/// Finds the detach sequence in a stream of input, holding back a partial
/// match until it is complete or broken.
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    /// The bytes of `input` to send on, and whether the sequence completed
    /// (then the bytes before it are returned and the rest is dropped).
    pub fn scan(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        if self.keys.is_empty() {
            return (input.to_vec(), false);
        }
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            // A broken match: what was held back is ordinary input.
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.matched = 0;
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Read stdin on a thread of its own (a blocking read cannot be cancelled;
/// the thread ends with the process). `None` marks the end of input.
pub fn stdin_reader() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.blocking_send(None);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse_detach_keys("ctrl-@,a,ctrl-_").unwrap(),
            vec![0, b'a', 31]
        );
        assert!(parse_detach_keys("").unwrap().is_empty());
        assert!(parse_detach_keys("ctrl-").is_err());
        assert!(parse_detach_keys("ctrl-pq").is_err());
        assert!(parse_detach_keys("ab").is_err());
    }

    #[test]
    fn scanner_holds_partial_matches() {
        let mut s = DetachScanner::new(vec![16, 17]);
        assert_eq!(s.scan(b"ab\x10"), (b"ab".to_vec(), false));
        // The held ctrl-p turns out to be input.
        assert_eq!(s.scan(b"c"), (b"\x10c".to_vec(), false));
        assert_eq!(s.scan(b"\x10\x10"), (b"\x10".to_vec(), false));
        assert_eq!(s.scan(b"\x11rest"), (Vec::new(), true));
        let mut s = DetachScanner::new(vec![16, 17]);
        assert_eq!(s.scan(b"x\x10\x11y"), (b"x".to_vec(), true));
        let mut none = DetachScanner::new(Vec::new());
        assert_eq!(none.scan(b"\x10\x11"), (b"\x10\x11".to_vec(), false));
    }
}
