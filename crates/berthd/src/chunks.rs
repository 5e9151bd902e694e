//! Blocking `Read`/`Write` adapters between a gRPC byte stream and the
//! archive code that runs on a blocking thread (image load and save, `cp`,
//! `export`). Both move bounded chunks, so the daemon never holds a whole
//! archive.

use std::io::{Read, Write};

use tokio::sync::mpsc;
use tonic::Status;

/// Bytes per chunk sent to a client.
pub const CHUNK: usize = 256 * 1024;

/// A `Read` over the chunks a client streams in.
pub struct ChunkReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<std::io::Result<Vec<u8>>>) -> Self {
        Self {
            rx,
            buf: Vec::new(),
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
