//! `berth cp`, `diff`, `export`, `commit`: a container's files.
//!
//! `cp` follows Docker's path rules; the client decides what the tar's top
//! entry is called and which directory it goes into (as Docker's CLI does
//! with `HEAD /archive`), the daemon resolves every container path inside
//! the container's root. Both ways the archive streams in 256 KiB chunks.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_api::{v1, FilesClient};
use berth_image::pack::{PackOptions, Packer};
use berth_image::unpack::{self, ExtractOptions};
use clap::Args;
use tonic::transport::Channel;

use crate::{CmdResult, Failure};

pub type Client = FilesClient<Channel>;

const CHUNK: usize = 256 * 1024;

/// Copy files between a container and the host, as tar streams. Works on
/// running and stopped containers; paths in the container are resolved in
/// its root (its symlinks as it sees them, never out to the host), and
/// volumes and bind mounts under them are copied as the container sees them.
///
///   berth cp web:/etc/nginx/nginx.conf ./nginx.conf
///
///   berth cp ./site/. web:/usr/share/html     (the content of ./site)
///
///   berth cp -a ./data web:/srv               (keep owners: /srv/data)
///
///   tar -c -C dir . | berth cp - web:/srv     (a tar stream into /srv)
///
///   berth cp web:/var/log - | tar -t          (a tar stream out)
///
/// SRC/. copies the content of SRC rather than SRC itself. A DEST that does
/// not exist is created (its parent must exist); a DEST ending in / must be
/// an existing directory.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct CpArgs {
    /// Archive mode: keep owners (uid/gid). Without it, what is copied in
    /// belongs to the container's root (0:0) and what is copied out to you.
    #[arg(short, long)]
    pub archive: bool,
    /// Follow a symlink at the end of SRC.
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// Accepted for Docker's scripts (berth prints no progress).
    #[arg(short, long)]
    pub quiet: bool,
    /// CONTAINER:PATH, a host path, or - (a tar stream on standard input).
    #[arg(value_name = "SRC")]
    pub src: String,
    /// CONTAINER:PATH, a host path, or - (a tar stream on standard output).
    #[arg(value_name = "DEST")]
    pub dest: String,
}

/// `CONTAINER:PATH` → (container, path). A path starting with `/` or `.`
/// is a host path even with a colon in it, as Docker reads it.
fn split_container(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (c, p) = arg.split_once(':')?;
    (!c.is_empty()).then_some((c, p))
}

fn last_name(p: &str) -> Option<String> {
    Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// SRC/. : the content of SRC.
fn content_only(p: &str) -> bool {
    p == "." || p.ends_with("/.")
}

/// The directory part of a container path ("/" for a bare name).
fn container_parent(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => trimmed[..i].to_string(),
    }
}

pub async fn cp(client: &mut Client, a: &CpArgs) -> CmdResult {
    match (split_container(&a.src), split_container(&a.dest)) {
        (Some(_), Some(_)) => Err(Failure::own(
            "copying between containers is not supported: copy to the host, then into the other container",
        )),
        (None, None) => Err(Failure::own(
            "one of SRC and DEST must name a container: CONTAINER:PATH",
        )),
        (Some((c, p)), None) => copy_out(client, a, c, p).await,
        (None, Some((c, p))) => copy_in(client, a, c, p).await,
    }
}

fn dir_fd(p: &Path) -> Result<OwnedFd, Failure> {
    std::fs::File::open(p)
        .map(OwnedFd::from)
        .map_err(|e| Failure::own(format!("cannot open the directory {}: {e}", p.display())))
}

async fn copy_out(client: &mut Client, a: &CpArgs, container: &str, path: &str) -> CmdResult {
    if a.dest == "-" && std::io::stdout().is_terminal() {
        return Err(Failure::own(
            "cowardly refusing to write a tar stream to a terminal: redirect standard output",
        ));
    }
    let mut stream = client
        .archive(v1::ArchiveRequest {
            container: container.to_string(),
            path: path.to_string(),
            follow: a.follow_link,
        })
        .await?
        .into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Failure::own("berthd sent no archive"))?;
    let stat = first
        .stat
        .ok_or_else(|| Failure::own("berthd sent an archive without its header"))?;
    let is_dir = stat.mode & libc::S_IFMT == libc::S_IFDIR;
    let whole_root = stat.name == "/";

    // Where the archive goes, and what its top entry is renamed to.
    let (into, rebase): (Option<PathBuf>, Option<(PathBuf, PathBuf)>) = if a.dest == "-" {
        (None, None)
    } else {
        let dest = Path::new(&a.dest);
        let top = PathBuf::from(&stat.name);
        let meta = std::fs::metadata(dest).ok();
        let parent = || -> Result<PathBuf, Failure> {
            let p = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !p.is_dir() {
                return Err(Failure::own(format!(
                    "cannot copy to {}: the directory {} does not exist",
                    a.dest,
                    p.display()
                )));
            }
            Ok(p.to_path_buf())
        };
        let dest_name = || PathBuf::from(dest.file_name().unwrap_or_default());
        match (is_dir, meta) {
            (true, Some(m)) if m.is_dir() => {
                if whole_root {
                    (Some(dest.to_path_buf()), None)
                } else if content_only(path) {
                    (Some(dest.to_path_buf()), Some((top, PathBuf::new())))
                } else {
                    (Some(dest.to_path_buf()), None)
                }
            }
            (true, Some(_)) => {
                return Err(Failure::own(format!(
                    "cannot copy the directory {path} onto the file {}",
                    a.dest
                )))
            }
            (true, None) => {
                let p = parent()?;
                if whole_root {
                    std::fs::create_dir(dest).map_err(|e| {
                        Failure::own(format!("cannot create {}: {e}", dest.display()))
                    })?;
                    (Some(dest.to_path_buf()), None)
                } else {
                    (Some(p), Some((top, dest_name())))
                }
            }
            (false, Some(m)) if m.is_dir() => (Some(dest.to_path_buf()), None),
            (false, None) if a.dest.ends_with('/') => {
                return Err(Failure::own(format!(
                    "cannot copy to {}: no such directory (a DEST ending in / must exist)",
                    a.dest
                )))
            }
            (false, _) => (Some(parent()?), Some((top, dest_name()))),
        }
    };

    // Chunks into a blocking reader on a thread: the extraction writes files.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let owner = (!a.archive).then(|| {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    });
    let worker = match into {
        None => std::thread::spawn(move || -> Result<(), String> {
            let mut out = std::io::stdout().lock();
            for chunk in rx {
                out.write_all(&chunk)
                    .map_err(|e| format!("cannot write the archive: {e}"))?;
            }
            out.flush()
                .map_err(|e| format!("cannot write the archive: {e}"))
        }),
        Some(dir) => {
            let fd = dir_fd(&dir)?;
            std::thread::spawn(move || -> Result<(), String> {
                let reader = ChanReader {
                    rx,
                    buf: Vec::new(),
                    pos: 0,
                };
                unpack::extract(reader, fd, ExtractOptions { owner, rebase })
                    .map(|_| ())
                    .map_err(|e| format!("cannot write into {}: {e}", dir.display()))
            })
        }
    };
    let mut failed = None;
    loop {
        match stream.message().await {
            Ok(Some(c)) => {
                if c.data.is_empty() {
                    continue;
                }
                if tx.send(c.data).is_err() {
                    break; // the writer failed: its error says why
                }
            }
            Ok(None) => break,
            Err(e) => {
                failed = Some(Failure::from(e));
                break;
            }
        }
    }
    drop(tx);
    let written = worker
        .join()
        .map_err(|_| Failure::own("the copy's writer panicked"))?;
    if let Some(f) = failed {
        return Err(f);
    }
    written.map_err(Failure::own)?;
    Ok(0)
}

async fn copy_in(client: &mut Client, a: &CpArgs, container: &str, path: &str) -> CmdResult {
    if path.is_empty() {
        return Err(Failure::own(
            "no path in the container: give CONTAINER:PATH, e.g. web:/tmp",
        ));
    }
    let (target_dir, source): (String, Source) = if a.src == "-" {
        if std::io::stdin().is_terminal() {
            return Err(Failure::own(
                "cp - wants a tar stream on standard input, not a terminal",
            ));
        }
        // A tar stream goes as it is into an existing directory.
        (path.to_string(), Source::Stdin)
    } else {
        let src = Path::new(&a.src);
        let meta = if a.follow_link {
            std::fs::metadata(src)
        } else {
            std::fs::symlink_metadata(src)
        }
        .map_err(|e| Failure::own(format!("cannot copy {}: {e}", a.src)))?;
        let src_dir = meta.is_dir();
        let flags = if a.follow_link {
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC
        } else {
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC
        };
        let fd = nix::fcntl::open(src, flags, nix::sys::stat::Mode::empty())
            .map_err(|e| Failure::own(format!("cannot open {}: {e}", a.src)))?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let src_name = last_name(&a.src)
            .filter(|n| n != "." && n != "..")
            .or_else(|| {
                std::fs::canonicalize(src)
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            })
            .unwrap_or_else(|| "root".into());
        let st = client
            .stat(v1::StatPathRequest {
                container: container.to_string(),
                path: path.to_string(),
                follow: true,
            })
            .await;
        match st {
            Ok(st) => {
                let st = st.into_inner();
                if st.mode & libc::S_IFMT == libc::S_IFDIR {
                    let what = if src_dir && content_only(&a.src) {
                        Source::Children(fd)
                    } else {
                        Source::Object(fd, src_name)
                    };
                    (path.to_string(), what)
                } else if src_dir {
                    return Err(Failure::own(format!(
                        "cannot copy the directory {} onto the file {path} in {container}",
                        a.src
                    )));
                } else {
                    let name = last_name(path).unwrap_or(src_name);
                    (container_parent(path), Source::Object(fd, name))
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                if s.message().starts_with("no such container") {
                    return Err(s.into());
                }
                if path.ends_with('/') {
                    return Err(Failure::new(
                        1,
                        format!("cannot copy to {container}:{path}: no such directory (a DEST ending in / must exist)"),
                    ));
                }
                let name = last_name(path).unwrap_or(src_name);
                (container_parent(path), Source::Object(fd, name))
            }
            Err(s) => return Err(s.into()),
        }
    };

    let (tx, rx) = tokio::sync::mpsc::channel::<v1::ExtractChunk>(8);
    let header = v1::ExtractChunk {
        header: Some(v1::ExtractHeader {
            container: container.to_string(),
            path: target_dir,
            copy_uid_gid: a.archive,
        }),
        data: Vec::new(),
    };
    tx.send(header)
        .await
        .map_err(|_| Failure::own("the copy ended early"))?;
    let src_shown = a.src.clone();
    let worker = std::thread::spawn(move || -> Result<(), String> {
        let w = ChanWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        match source {
            Source::Stdin => {
                let mut w = w;
                let mut input = std::io::stdin().lock();
                std::io::copy(&mut input, &mut w)
                    .map_err(|e| format!("cannot read the tar stream: {e}"))?;
                w.flush().map_err(|e| format!("cannot send: {e}"))
            }
            Source::Object(fd, name) => {
                let mut p = Packer::new(w, PackOptions::default());
                p.add(fd.as_fd(), Path::new(&name))
                    .map_err(|e| format!("cannot copy {src_shown}: {e}"))?;
                p.finish()
                    .and_then(|mut w| w.flush().map_err(berth_image::pack::PackError::Write))
                    .map_err(|e| format!("cannot send: {e}"))
            }
            Source::Children(fd) => {
                let dir = nix::fcntl::openat(
                    Some(std::os::fd::AsRawFd::as_raw_fd(&fd)),
                    ".",
                    nix::fcntl::OFlag::O_RDONLY
                        | nix::fcntl::OFlag::O_DIRECTORY
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| format!("cannot open {src_shown}: {e}"))?;
                // SAFETY: `openat` just returned this descriptor; nothing else owns it.
                let dir = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dir) };
                let mut p = Packer::new(w, PackOptions::default());
                p.children(dir.as_fd(), Path::new(""))
                    .map_err(|e| format!("cannot copy {src_shown}: {e}"))?;
                p.finish()
                    .and_then(|mut w| w.flush().map_err(berth_image::pack::PackError::Write))
                    .map_err(|e| format!("cannot send: {e}"))
            }
        }
    });
    let result = client
        .extract(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let sent = worker
        .join()
        .map_err(|_| Failure::own("the copy's reader panicked"))?;
    // The daemon's error first: a sender that failed because the daemon
    // hung up has nothing to add.
    result?;
    sent.map_err(Failure::own)?;
    Ok(0)
}

enum Source {
    Stdin,
    /// The object and the name it gets in the container.
    Object(OwnedFd, String),
    /// The content of a directory (SRC/.).
    Children(OwnedFd),
}

struct ChanReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct ChanWriter {
    tx: tokio::sync::mpsc::Sender<v1::ExtractChunk>,
    buf: Vec<u8>,
}

impl ChanWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(v1::ExtractChunk { header: None, data })
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
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

/// Show what a container changed in its image's files: A added, C changed,
/// D deleted (from its layer of changes; volumes and mounts are not in it).
///
///   berth diff web
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct DiffArgs {
    pub container: String,
}

pub async fn diff(client: &mut Client, a: &DiffArgs) -> CmdResult {
    let r = client
        .diff(v1::DiffRequest {
            container: a.container.clone(),
        })
        .await?
        .into_inner();
    let mut out = std::io::stdout().lock();
    for c in r.changes {
        let _ = writeln!(out, "{} {}", c.kind, c.path);
    }
    Ok(0)
}

/// Write a container's files (its image and its changes; no volume or
/// mount) as a tar archive, to standard output unless -o.
///
///   berth export -o web.tar web
///
///   berth export web | tar -t
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ExportArgs {
    /// Write to this file.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    pub container: String,
}

pub async fn export(client: &mut Client, a: &ExportArgs) -> CmdResult {
    let request = client.export(v1::ExportRequest {
        container: a.container.clone(),
    });
    write_archive(a.output.as_deref(), request, |c| c.data).await
}

/// Write the archive a server stream carries (`request`, sent once the
/// output is known to be writable) to `output` or standard output.
pub(crate) async fn write_archive<M>(
    output: Option<&Path>,
    request: impl std::future::Future<
        Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>,
    >,
    data: fn(M) -> Vec<u8>,
) -> CmdResult {
    let mut out = ArchiveOut::open(output)?;
    let result = async {
        let mut stream = request.await?.into_inner();
        while let Some(chunk) = stream.message().await? {
            out.write(&data(chunk))?;
        }
        Ok(())
    }
    .await;
    out.complete(result)
}

/// Where `export` and `image save` write their archive: the file of `-o`,
/// or standard output when it is not a terminal.
enum ArchiveOut {
    File(std::fs::File, PathBuf),
    Stdout(std::io::StdoutLock<'static>),
}

impl ArchiveOut {
    fn open(path: Option<&Path>) -> Result<Self, Failure> {
        match path {
            Some(p) => std::fs::File::create(p)
                .map(|f| Self::File(f, p.to_path_buf()))
                .map_err(|e| Failure::own(format!("cannot create {}: {e}", p.display()))),
            None if std::io::stdout().is_terminal() => Err(Failure::own(
                "cowardly refusing to write an archive to a terminal: give -o FILE or redirect stdout",
            )),
            None => Ok(Self::Stdout(std::io::stdout().lock())),
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Failure> {
        match self {
            Self::File(f, _) => f.write_all(data),
            Self::Stdout(o) => o.write_all(data),
        }
        .map_err(write_failed)
    }

    /// The command's result once the stream ended (`result`) or broke. A
    /// file is complete, synced, when the command says so; a half-written
    /// one is no archive and is removed.
    fn complete(self, result: Result<(), Failure>) -> CmdResult {
        let done = result.and_then(|()| match &self {
            Self::File(f, _) => f.sync_all().map_err(write_failed),
            Self::Stdout(_) => Ok(()),
        });
        match (self, done) {
            (Self::Stdout(mut o), Ok(())) => o.flush().map_err(write_failed).map(|()| 0),
            (_, Ok(())) => Ok(0),
            (Self::File(f, p), Err(e)) => {
                drop(f);
                let _ = std::fs::remove_file(p);
                Err(e)
            }
            (Self::Stdout(_), Err(e)) => Err(e),
        }
    }
}

fn write_failed(e: std::io::Error) -> Failure {
    Failure::own(format!("cannot write the archive: {e}"))
}

/// Make an image of a container's changes: a new layer on its image, with
/// the config changes of -c (Dockerfile instructions: CMD, ENTRYPOINT, ENV,
/// WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL, VOLUME). A running container
/// is paused while its layer is written. Prints the new image's id.
///
///   berth commit web web:v2
///
///   berth commit -m 'add config' -a 'Ann <ann@example.com>' -c 'CMD ["nginx"]' web web:v2
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct CommitArgs {
    /// The history entry's comment.
    #[arg(short, long)]
    pub message: Option<String>,
    /// The author ("Name <email>").
    #[arg(short, long)]
    pub author: Option<String>,
    /// A Dockerfile instruction for the new config (repeatable).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// Pause a running container while its layer is written.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub pause: bool,
    pub container: String,
    /// IMAGE[:TAG] (none: an untagged image).
    pub image: Option<String>,
}

pub async fn commit(client: &mut Client, a: &CommitArgs) -> CmdResult {
    let r = client
        .commit(v1::CommitRequest {
            container: a.container.clone(),
            reference: a.image.clone().unwrap_or_default(),
            message: a.message.clone().unwrap_or_default(),
            author: a.author.clone().unwrap_or_default(),
            changes: a.changes.clone(),
            no_pause: !a.pause,
        })
        .await?
        .into_inner();
    println!("{}", r.id);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_args_split_as_docker_reads_them() {
        assert_eq!(split_container("web:/etc"), Some(("web", "/etc")));
        assert_eq!(split_container("./a:b"), None);
        assert_eq!(split_container("/tmp/x:y"), None);
        assert_eq!(split_container("file"), None);
        assert_eq!(container_parent("/a/b"), "/a");
        assert_eq!(container_parent("/a"), "/");
        assert_eq!(container_parent("b"), "/");
        assert!(content_only("dir/."));
        assert!(!content_only("dir"));
    }
}
