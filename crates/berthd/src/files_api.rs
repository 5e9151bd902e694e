//! The gRPC `Files` service over [`Files`]: tar streams go through bounded
//! channels of 256 KiB chunks, so a slow client slows the copy down
//! (back-pressure) and berthd never holds more than a few chunks.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use berth_api::v1;
use berth_image::pack::PathStat;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::chunks::{ChunkReader, ChunkWriter, DEPTH};
use crate::files::{Files, FilesError};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct FilesApi {
    files: Arc<Files>,
}

impl FilesApi {
    pub fn new(files: Arc<Files>) -> Self {
        Self { files }
    }

    /// Extract a copy stream (the header first, then the tar's bytes):
    /// the gRPC call's and the Docker API's `PUT archive`. The entries
    /// written.
    pub async fn extract_chunks<S>(&self, mut input: S) -> Result<u64, Status>
    where
        S: Stream<Item = Result<v1::ExtractChunk, Status>> + Send + Unpin + 'static,
    {
        let first =
            input.next().await.transpose()?.ok_or_else(|| {
                Status::invalid_argument("an empty copy stream: send a header first")
            })?;
        let header = first.header.ok_or_else(|| {
            Status::invalid_argument("the copy stream's first message must carry its header")
        })?;
        let reader = ChunkReader::from_stream(first.data, input, |c| c.data, "the copy stream");
        self.files
            .extract(&header.container, &header.path, reader, header.copy_uid_gid)
            .await
            .map_err(files_status)
    }
}

pub fn files_status(e: FilesError) -> Status {
    let msg = e.to_string();
    match e {
        FilesError::NotFound(_) => Status::not_found(msg),
        FilesError::Invalid(_) => Status::invalid_argument(msg),
        FilesError::State(_) => Status::failed_precondition(msg),
        FilesError::Failed(_) => Status::internal(msg),
    }
}

fn stat_proto(s: PathStat) -> v1::PathStat {
    v1::PathStat {
        name: s.name,
        size: s.size,
        mode: s.mode,
        mtime: s.mtime,
        link_target: s.link_target,
    }
}

/// A stream of archive chunks fed by `job` (given the writer); an error is
/// the stream's last item.
fn archive_stream<F>(first: Option<v1::ArchiveChunk>, job: F) -> BoxStream<v1::ArchiveChunk>
where
    F: FnOnce(
            ChunkWriter<v1::ArchiveChunk>,
        )
            -> Pin<Box<dyn std::future::Future<Output = Result<u64, FilesError>> + Send>>
        + Send
        + 'static,
{
    let (tx, rx) = mpsc::channel(DEPTH);
    tokio::spawn(async move {
        if let Some(f) = first {
            if tx.send(Ok(f)).await.is_err() {
                return;
            }
        }
        let w = ChunkWriter::new(tx.clone(), |data| v1::ArchiveChunk { stat: None, data });
        if let Err(e) = job(w).await {
            let _ = tx.send(Err(files_status(e))).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Flushes the last chunk once the archive is written.
struct Flushing(ChunkWriter<v1::ArchiveChunk>);

impl Write for Flushing {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.write(data)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Drop for Flushing {
    fn drop(&mut self) {
        let _ = self.0.flush();
    }
}

#[tonic::async_trait]
impl berth_api::Files for FilesApi {
    async fn stat(
        &self,
        req: Request<v1::StatPathRequest>,
    ) -> Result<Response<v1::PathStat>, Status> {
        let r = req.into_inner();
        let st = self
            .files
            .stat(&r.container, &r.path, r.follow)
            .await
            .map_err(files_status)?;
        Ok(Response::new(stat_proto(st)))
    }

    type ArchiveStream = BoxStream<v1::ArchiveChunk>;

    async fn archive(
        &self,
        req: Request<v1::ArchiveRequest>,
    ) -> Result<Response<Self::ArchiveStream>, Status> {
        let r = req.into_inner();
        // A missing path is the call's error, not a broken stream.
        let st = self
            .files
            .stat(&r.container, &r.path, r.follow)
            .await
            .map_err(files_status)?;
        let first = v1::ArchiveChunk {
            stat: Some(stat_proto(st)),
            data: Vec::new(),
        };
        let files = self.files.clone();
        Ok(Response::new(archive_stream(Some(first), move |w| {
            Box::pin(async move {
                files
                    .archive(&r.container, &r.path, r.follow, Flushing(w))
                    .await
            })
        })))
    }

    async fn extract(
        &self,
        req: Request<Streaming<v1::ExtractChunk>>,
    ) -> Result<Response<v1::ExtractResponse>, Status> {
        let entries = self.extract_chunks(req.into_inner()).await?;
        Ok(Response::new(v1::ExtractResponse { entries }))
    }

    async fn diff(
        &self,
        req: Request<v1::DiffRequest>,
    ) -> Result<Response<v1::DiffResponse>, Status> {
        let r = req.into_inner();
        let changes = self
            .files
            .diff(&r.container)
            .await
            .map_err(files_status)?
            .into_iter()
            .map(|c| v1::Change {
                kind: c.kind.to_string(),
                path: c.path,
            })
            .collect();
        Ok(Response::new(v1::DiffResponse { changes }))
    }

    type ExportStream = BoxStream<v1::ArchiveChunk>;

    async fn export(
        &self,
        req: Request<v1::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let r = req.into_inner();
        // An unknown container is the call's error.
        self.files.check(&r.container).map_err(files_status)?;
        let files = self.files.clone();
        Ok(Response::new(archive_stream(None, move |w| {
            Box::pin(async move { files.export(&r.container, Flushing(w)).await })
        })))
    }

    async fn commit(
        &self,
        req: Request<v1::CommitRequest>,
    ) -> Result<Response<v1::CommitResponse>, Status> {
        let r = req.into_inner();
        let id = self
            .files
            .commit(crate::files::CommitOptions {
                container: r.container,
                reference: r.reference,
                message: r.message,
                author: r.author,
                changes: r.changes,
                pause: !r.no_pause,
            })
            .await
            .map_err(files_status)?;
        Ok(Response::new(v1::CommitResponse { id }))
    }
}
