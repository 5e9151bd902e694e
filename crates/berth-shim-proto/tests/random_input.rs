//! Random-input tests of the shim protocol's decoders (the JSON lines of
//! requests, responses and events, and the attach frames): no panic, bounded
//! memory, decoded ranges inside the buffer. A stand-in for fuzzing on a
//! stable toolchain, with a fixed seed; `BERTH_FUZZ_SECS=600` runs each
//! target that long instead of the default few thousand cases.

use std::io::Cursor;

use berth_testkit::drive;

use berth_shim_proto::{frame, read_line, Request, Response, ShimEvent, MAX_LINE};

/// Valid messages to mutate.
const SEEDS: &[&str] = &[
    r#"{"op":"hello"}"#,
    r#"{"op":"kill","signal":9,"all":true,"process":"init"}"#,
    r#"{"op":"exec","exec_id":"0123abcd","process":{"args":["sh"],"cwd":"/"},"attach":{"stdin":true}}"#,
    r#"{"op":"attach","process":"init","stdin":false}"#,
    r#"{"op":"subscribe"}"#,
    r#"{"result":"ok"}"#,
    r#"{"result":"started","pid":12}"#,
    r#"{"event":"exit","process":"init","status":"exited","code":3,"at":"2026-01-01T00:00:00Z"}"#,
];

#[test]
fn json_lines() {
    drive("json_lines", 11, 5_000, |rng| {
        let mut b = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
        for _ in 0..=rng.below(6) {
            if b.is_empty() {
                break;
            }
            let at = rng.below(b.len());
            match rng.below(4) {
                0 => b[at] ^= 1 << rng.below(8),
                1 => {
                    b.remove(at);
                }
                2 => {
                    let pieces = b"{}[]\",:0-9e\\u\n\0";
                    b.insert(at, pieces[rng.below(pieces.len())]);
                }
                _ => b.truncate(at),
            }
        }
        if rng.below(500) == 0 {
            // Past the line limit: refused, not buffered without bound.
            b.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        }
        b.push(b'\n');
        let _ = read_line::<Request, _>(&mut Cursor::new(&b));
        let _ = read_line::<Response, _>(&mut Cursor::new(&b));
        let _ = read_line::<ShimEvent, _>(&mut Cursor::new(&b));
        if b.len() > MAX_LINE + 1 {
            assert!(read_line::<Request, _>(&mut Cursor::new(&b)).is_err());
        }
    });
}

#[test]
fn attach_frames() {
    drive("attach_frames", 12, 200_000, |rng| {
        let len = rng.below(64);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if rng.below(3) == 0 && buf.len() >= frame::HEADER {
            // A plausible length, sometimes past the end or past the limit.
            let l = match rng.below(3) {
                0 => rng.below(64) as u32,
                1 => (frame::MAX_PAYLOAD + rng.below(10)) as u32,
                _ => u32::MAX,
            };
            buf[1..5].copy_from_slice(&l.to_be_bytes());
        }
        // Decode frame after frame, as the readers do.
        let mut at = 0;
        while let Ok(Some((kind, range))) = frame::decode(&buf[at..]) {
            assert!(range.end <= buf.len() - at, "range inside the buffer");
            if kind == frame::RESIZE {
                let _ = frame::parse_resize(&buf[at + range.start..at + range.end]);
            }
            at += range.end;
        }
    });
}
