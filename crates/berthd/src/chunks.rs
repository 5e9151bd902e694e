//! Blocking `Read`/`Write` adapters between a gRPC byte stream and the
//! archive code that runs on a blocking thread (image load and save, `cp`,
//! `export`). Both move bounded chunks, so the daemon never holds a whole
//! archive.

use std::io::{Read, Write};

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Bytes per chunk sent to a client.
pub const CHUNK: usize = 256 * 1024;

/// How many chunks may wait between a client's stream and the blocking
/// code at the other end: enough to keep both busy, small enough that a
/// slow side holds back the other instead of the daemon buffering for it.
pub const DEPTH: usize = 8;

/// A `Read` over the chunks a client streams in.
pub struct ChunkReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    /// A reader over the messages of a client's stream, `data` taking
    /// each one's bytes. `first` are bytes already taken off the stream
    /// (those of the message that carried a header); a stream that breaks
    /// is a read error naming `what` ("the archive stream broke: …").
    pub fn from_stream<M, S>(
        first: Vec<u8>,
        mut input: S,
        data: fn(M) -> Vec<u8>,
        what: &'static str,
    ) -> Self
    where
        M: Send + 'static,
        S: Stream<Item = Result<M, Status>> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(DEPTH);
        tokio::spawn(async move {
            loop {
                let next = match input.next().await {
                    Some(Ok(m)) => Ok(data(m)),
                    None => return,
                    Some(Err(e)) => Err(std::io::Error::other(format!(
                        "{what} broke: {}",
                        e.message()
                    ))),
                };
                let broken = next.is_err();
                if tx.send(next).await.is_err() || broken {
                    return;
                }
            }
        });
        Self {
            rx,
            buf: first,
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A `Write` that sends what is written to the client in chunks of
/// [`CHUNK`] bytes, each wrapped in the stream's message by `wrap`; a
/// client that went away is a broken pipe (the copy stops).
pub struct ChunkWriter<M> {
    tx: mpsc::Sender<Result<M, Status>>,
    wrap: fn(Vec<u8>) -> M,
    buf: Vec<u8>,
}

impl<M> ChunkWriter<M> {
    pub fn new(tx: mpsc::Sender<Result<M, Status>>, wrap: fn(Vec<u8>) -> M) -> Self {
        // The buffer is allocated on the first write: a writer that never
        // writes costs nothing.
        Self {
            tx,
            wrap,
            buf: Vec::new(),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok((self.wrap)(data)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl<M> Write for ChunkWriter<M> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf.reserve(CHUNK);
        }
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
