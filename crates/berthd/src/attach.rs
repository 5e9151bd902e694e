//! Attach connections to a shim: one request line, one response line, then
//! frames both ways (see `berth_shim_proto::frame`), relayed to and from
//! the channels of an [`AttachIo`].

use std::path::Path;
use std::time::Duration;

use berth_core::runtime::{
    AttachInput, AttachIo, Output, OutputStream, RuntimeError, RuntimeErrorKind,
};
use berth_shim_proto::{self as proto, frame};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::debug;

/// Bound on the request/response exchange that opens the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunks of output in flight between the shim and the client: a small
/// window, so a slow client slows the relay and the shim notices.
const OUTPUT_WINDOW: usize = 16;

fn unexpected(resp: &proto::Response) -> RuntimeError {
    RuntimeError::other(format!("unexpected answer from berth-shim: {resp:?}"))
}

/// Connect to the shim at `socket`, send `req` as one line and read the
/// one-line answer. The connection's halves are returned for what follows
/// the answer (frames, events), the reader with whatever it buffered.
pub async fn handshake(
    socket: &Path,
    req: &proto::Request,
) -> std::io::Result<(proto::Response, BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
    let short = proto::ShortPath::new(socket)?;
    let stream = UnixStream::connect(short.path()).await?;
    let (rd, mut wr) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    wr.write_all(&line).await?;
    let mut reader = BufReader::new(rd);
    let mut resp = String::new();
    reader.read_line(&mut resp).await?;
    if resp.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the shim closed the connection",
        ));
    }
    let resp = serde_json::from_str::<proto::Response>(&resp)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok((resp, reader, wr))
}

/// Send `req` on a new connection to the shim at `socket`; when the answer
/// is `Ok` or `Started`, the connection carries the process's stdio from
/// then on. Returns the answer and the relay.
pub async fn open(
    socket: &Path,
    req: &proto::Request,
) -> Result<(proto::Response, AttachIo), RuntimeError> {
    let (resp, reader, wr) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(socket, req)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::NotFound,
                    "the container's shim is gone (the container has exited)",
                ))
            }
            Ok(Err(e)) => return Err(RuntimeError::other(format!("attaching: {e}"))),
            Err(_) => {
                return Err(RuntimeError::other(format!(
                    "berth-shim did not answer within {}s",
                    HANDSHAKE_TIMEOUT.as_secs()
                )))
            }
        };
    match resp {
        proto::Response::Ok | proto::Response::Started { .. } => {}
        proto::Response::Error(e) => {
            return Err(RuntimeError::new(crate::shim::kind_of(e.kind), e.message))
        }
        other => return Err(unexpected(&other)),
    }
    let (in_tx, in_rx) = mpsc::channel(OUTPUT_WINDOW);
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_WINDOW);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(relay_output(reader, out_tx, done_tx));
    tokio::spawn(relay_input(in_rx, wr, done_rx));
    Ok((
        resp,
        AttachIo {
            input: in_tx,
            output: out_rx,
        },
    ))
}

/// Frames from the shim to the output channel, until the shim closes the
/// connection (the process's output ended) or the receiver goes away.
/// `_done` is dropped on return.
async fn relay_output(
    mut reader: BufReader<OwnedReadHalf>,
    out: mpsc::Sender<Output>,
    _done: tokio::sync::oneshot::Sender<()>,
) {
    loop {
        let mut header = [0u8; frame::HEADER];
        if reader.read_exact(&mut header).await.is_err() {
            return; // EOF: the output has ended
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > frame::MAX_PAYLOAD {
            debug!(len, "oversized frame from berth-shim");
            return;
        }
        let mut data = vec![0u8; len];
        if reader.read_exact(&mut data).await.is_err() {
            return;
        }
        let stream = match header[0] {
            frame::STDOUT => OutputStream::Stdout,
            frame::STDERR => OutputStream::Stderr,
            _ => continue,
        };
        if out.send(Output { stream, data }).await.is_err() {
            return; // the client went away: dropping the reader detaches
        }
    }
}

/// The client's input to the shim. The write half stays open until the
/// output relay is over even when the client has nothing more to send:
/// closing it would tell the shim the client is gone.
async fn relay_input(
    mut input: mpsc::Receiver<AttachInput>,
    mut wr: OwnedWriteHalf,
    mut done: tokio::sync::oneshot::Receiver<()>,
) {
    let mut buf = Vec::new();
    loop {
        let msg = tokio::select! {
            msg = input.recv() => msg,
            _ = &mut done => return,
        };
        let Some(msg) = msg else {
            let _ = done.await;
            return;
        };
        buf.clear();
        match msg {
            AttachInput::Stdin(data) => {
                for chunk in data.chunks(frame::MAX_PAYLOAD) {
                    frame::encode(frame::STDIN, chunk, &mut buf);
                }
            }
            AttachInput::CloseStdin => frame::encode(frame::CLOSE_STDIN, &[], &mut buf),
            AttachInput::Resize { rows, cols } => {
                frame::encode(frame::RESIZE, &frame::resize(rows, cols), &mut buf)
            }
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
    }
}
