//! The berthd gRPC API (package `berth.v1`) and unix-socket transport helpers
//! shared by the daemon and the CLI.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Generated types and services of `proto/berth/v1/berth.proto`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("berth.v1");
}

pub use v1::containers_client::ContainersClient;
pub use v1::containers_server::{Containers, ContainersServer};
pub use v1::files_client::FilesClient;
pub use v1::files_server::{Files, FilesServer};
pub use v1::images_client::ImagesClient;
pub use v1::images_server::{Images, ImagesServer};
pub use v1::networks_client::NetworksClient;
pub use v1::networks_server::{Networks as NetworksService, NetworksServer};
pub use v1::volumes_client::VolumesClient;
pub use v1::volumes_server::{Volumes as VolumesService, VolumesServer};

pub mod display;

/// Default socket of berthd.
pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";
/// Default root directory of berthd.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";

/// Metadata key on an error status that carries the exit code the CLI should
/// use (126 or 127 when the container's command cannot be run).
pub const EXIT_CODE_METADATA: &str = "berth-exit-code";

/// Parse a size as the CLI and berthd flags take it: "4096", "512k",
/// "10m", "1g" (×1024, an optional trailing "b", any case) into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "cannot reach berthd at {path}: {source} (is berthd running? set --socket or BERTH_SOCKET)"
    )]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up a connection to berthd at {path}: {source}")]
    Transport {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Connect to berthd over its unix socket.
pub async fn connect(socket: &Path) -> Result<ContainersClient<Channel>, ConnectError> {
    Ok(ContainersClient::new(connect_channel(socket).await?).max_decoding_message_size(64 << 20))
}

/// The image API over the same kind of connection.
pub fn images_client(channel: Channel) -> ImagesClient<Channel> {
    ImagesClient::new(channel).max_decoding_message_size(64 << 20)
}

/// One connection to berthd, for any of its services (one connection per
/// command: a client for each service can share it).
pub async fn connect_channel(socket: &Path) -> Result<Channel, ConnectError> {
    // Connect here, to fail fast with a clear message when nothing listens
    // rather than with a transport error, and hand this connection to the
    // channel: one connection per command, not a probe and then another
    // (each costs berthd an accept and a connection task).
    let first = UnixStream::connect(socket)
        .await
        .map_err(|source| ConnectError::Unreachable {
            path: socket.to_path_buf(),
            source,
        })?;
    let first = std::sync::Arc::new(std::sync::Mutex::new(Some(first)));
    let path = socket.to_path_buf();
    // The URI is required by the HTTP/2 layer but never resolved.
    let channel = Endpoint::from_static("http://berthd.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            // A reconnect (berthd restarted under a long command) dials anew.
            let ready = first.lock().unwrap_or_else(|p| p.into_inner()).take();
            async move {
                let stream = match ready {
                    Some(s) => s,
                    None => UnixStream::connect(path).await?,
                };
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|source| ConnectError::Transport {
            path: socket.to_path_buf(),
            source,
        })?;
    Ok(channel)
}

impl v1::ExitStatus {
    /// The conventional numeric code: code, 128+signal, or -1 when unknown.
    pub fn code(&self) -> i32 {
        self.exit_code
    }
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512kb"), Some(512 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
    }
}
