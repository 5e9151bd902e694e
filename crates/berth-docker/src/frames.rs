//! Docker's stream framing: stdcopy frames (an 8-byte header: the stream,
//! three zero bytes, the payload length as a big-endian u32) when there is
//! no terminal, the raw bytes when there is one.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// One value as a line of Docker's JSON streams (events, pull progress,
/// stats, wait): the JSON and a newline.
pub fn json_line<T: serde::Serialize>(v: &T) -> Bytes {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// A chunked reply whose body is what comes on `rx`, with the head sent at
/// once (clients block on it: wait, logs -f, events, pull, stats).
pub fn streamed(content_type: &'static str, rx: mpsc::Receiver<Bytes>) -> Response {
    let s = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    let mut resp = Response::new(Body::from_stream(s));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// stdcopy stream numbers.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// A daemon error that ends the stream.
pub const SYSTEMERR: u8 = 3;

/// Append `data` as frames of `stream` (split to fit the u32 length).
pub fn frame(stream: u8, data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(u32::MAX as usize) {
        out.push(stream);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// `data` as the client should see it: framed, or raw with a terminal.
pub fn encode(tty: bool, stream: u8, data: &[u8]) -> Vec<u8> {
    if tty {
        data.to_vec()
    } else {
        let mut out = Vec::with_capacity(data.len() + 8);
        frame(stream, data, &mut out);
        out
    }
}

/// The content type of a stream (1.42 and later say which it is).
pub fn content_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// Docker's `--detach-keys` (`ctrl-p,ctrl-q`, `a,ctrl-@`) as bytes.
pub fn detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for key in spec.split(',') {
        let k = key.trim();
        let b = k.as_bytes();
        if b.len() == 1 {
            out.push(b[0]);
            continue;
        }
        let Some(c) = k.strip_prefix("ctrl-").filter(|c| c.len() == 1) else {
            return Err(format!(
                "invalid detach keys {spec:?}: use a comma-separated list of letters and ctrl-<value> (ctrl-a to ctrl-z, ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_)"
            ));
        };
        let c = c.as_bytes()[0].to_ascii_lowercase();
        let v = match c {
            b'a'..=b'z' => c - b'a' + 1,
            b'@' => 0,
            b'[' => 27,
            b'\\' => 28,
            b']' => 29,
            b'^' => 30,
            b'_' => 31,
            _ => {
                return Err(format!(
                    "invalid detach keys {spec:?}: ctrl-{} is not a control key",
                    c as char
                ))
            }
        };
        out.push(v);
    }
    Ok(out)
}

/// Watches stdin for the detach sequence. Bytes that might start it are
/// held back until the next bytes tell; a completed sequence is swallowed.
pub struct Escape {
    keys: Vec<u8>,
    matched: usize,
}

pub enum Scan {
    /// Forward these bytes.
    Data(Vec<u8>),
    /// The sequence was typed: forward these bytes, then detach.
    Detach(Vec<u8>),
}

impl Escape {
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    pub fn scan(&mut self, input: &[u8]) -> Scan {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return Scan::Data(out);
        }
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return Scan::Detach(out);
                }
                continue;
            }
            // Not the sequence after all: what was held back goes too.
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
            } else {
                out.push(b);
            }
        }
        Scan::Data(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(encode(false, STDOUT, b"hi\n"), b"\x01\0\0\0\0\0\0\x03hi\n");
        assert_eq!(encode(true, STDERR, b"hi\n"), b"hi\n");
    }

    #[test]
    fn keys() {
        assert_eq!(detach_keys("ctrl-p,ctrl-q"), Ok(vec![16, 17]));
        assert_eq!(detach_keys("a,ctrl-@"), Ok(vec![b'a', 0]));
        assert!(detach_keys("ctrl-1").is_err());
        assert!(detach_keys("abc").is_err());
    }

    #[test]
    fn escape() {
        let mut e = Escape::new(vec![16, 17]);
        assert!(matches!(e.scan(b"ab\x10"), Scan::Data(d) if d == b"ab"));
        assert!(matches!(e.scan(b"c"), Scan::Data(d) if d == b"\x10c"));
        assert!(matches!(e.scan(b"x\x10\x11y"), Scan::Detach(d) if d == b"x"));
        let mut e = Escape::new(vec![16, 17]);
        assert!(matches!(e.scan(b"\x10\x10\x11"), Scan::Detach(d) if d == b"\x10"));
    }
}
