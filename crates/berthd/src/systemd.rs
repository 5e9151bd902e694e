//! What berthd does for systemd, written against the documented protocols
//! (sd_listen_fds(3), sd_notify(3)) rather than linking libsystemd:
//!
//! - socket activation: a listening socket passed as fd 3 with
//!   `LISTEN_FDS`/`LISTEN_PID` (berth.socket) is served instead of binding
//!   `--socket`;
//! - readiness: `READY=1` (and `RELOADING=1`, `STOPPING=1`, `STATUS=`) as
//!   datagrams to `$NOTIFY_SOCKET` (berth.service is `Type=notify`).
//!
//! Both sets of variables are removed from the environment at once, before
//! any thread starts: the shims and runtimes berthd starts must not see
//! them (runc, for one, acts on `NOTIFY_SOCKET`).

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The first fd systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;

/// What systemd handed to this process.
#[derive(Debug, Default)]
pub struct Handover {
    /// The listening socket of berth.socket.
    pub listener: Option<UnixListener>,
    pub notify: Option<Notifier>,
}

/// Take the socket and the notify address from the environment and clear
/// the variables. Call it before any thread starts (it changes the
/// environment).
pub fn take() -> Result<Handover> {
    let pid = take_var("LISTEN_PID");
    let fds = take_var("LISTEN_FDS");
    let _names = take_var("LISTEN_FDNAMES");
    let notify = take_var("NOTIFY_SOCKET").map(Notifier::new).transpose()?;
    let listener = match (pid, fds) {
        (Some(pid), Some(fds)) => {
            // Meant for this process, not one it inherited them from.
            let ours = pid.to_str().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
            let n: RawFd = fds
                .to_str()
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("LISTEN_FDS={fds:?} is not a number"))?;
            if ours && n > 0 {
                Some(listener_from_fd(LISTEN_FDS_START, n)?)
            } else {
                None
            }
        }
        _ => None,
    };
    Ok(Handover { listener, notify })
}

fn take_var(name: &str) -> Option<OsString> {
    let v = std::env::var_os(name);
    // Single-threaded still (see take()): nothing reads the environment
    // concurrently.
    std::env::remove_var(name);
    v
}

/// Adopt fd `fd` (the first of `n` passed) as the API's listening socket.
fn listener_from_fd(fd: RawFd, n: RawFd) -> Result<UnixListener> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};
    for f in fd..fd + n {
        if nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            bail!("LISTEN_FDS={n} but fd {f} is not open");
        }
    }
    // SAFETY: the fds are open, and LISTEN_FDS/LISTEN_PID say systemd
    // passed fds 3..3+n to this very process: nothing else in berthd owns
    // them, and each is taken over exactly once, here.
    let owned: Vec<OwnedFd> = (fd..fd + n)
        .map(|f| unsafe { OwnedFd::from_raw_fd(f) })
        .collect();
    for f in &owned {
        // Passed without close-on-exec: the shims must not inherit them.
        nix::fcntl::fcntl(
            f.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .with_context(|| format!("fd {} from systemd", f.as_raw_fd()))?;
    }
    let mut owned = owned.into_iter();
    let Some(first) = owned.next() else {
        bail!("LISTEN_FDS is 0");
    };
    if owned.len() > 0 {
        tracing::warn!(
            extra = owned.len(),
            "systemd passed more than one socket: serving the first, closing the others"
        );
    }
    let what = "the socket systemd passed (fd 3; berth.socket must be a ListenStream= unix socket)";
    let stream = getsockopt(&first.as_fd(), sockopt::SockType)
        .map(|t| t == SockType::Stream)
        .unwrap_or(false);
    let listening = getsockopt(&first.as_fd(), sockopt::AcceptConn).unwrap_or(false);
    let unix = getsockname::<UnixAddr>(first.as_raw_fd()).is_ok();
    if !(stream && listening && unix) {
        bail!("{what} is not a listening unix stream socket");
    }
    let listener = UnixListener::from(first);
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot make {what} non-blocking"))?;
    Ok(listener)
}

/// The path a passed listener is bound to, for the log.
pub fn listener_path(l: &UnixListener) -> String {
    l.local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        .unwrap_or_else(|| "(unnamed)".to_string())
}

/// Sends state changes to systemd's notify socket.
#[derive(Debug)]
pub struct Notifier {
    addr: SocketAddr,
    shown: String,
}

impl Notifier {
    fn new(value: OsString) -> Result<Notifier> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        let bytes = value.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(PathBuf::from(&value)),
            // An abstract socket name.
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
            _ => bail!("NOTIFY_SOCKET={value:?} is neither a path nor an abstract socket (@name)"),
        }
        .with_context(|| format!("NOTIFY_SOCKET={value:?} is not a socket address"))?;
        Ok(Notifier {
            addr,
            shown: value.to_string_lossy().into_owned(),
        })
    }

    /// Send `state` (newline-separated `KEY=VALUE`s); a failure is logged,
    /// not fatal: systemd then times the start out by itself.
    pub fn send(&self, state: &str) {
        let sent =
            UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), &self.addr));
        if let Err(e) = sent {
            tracing::warn!(socket = %self.shown, error = %e, "cannot notify systemd");
        }
    }

    /// `RELOADING=1` with the monotonic time systemd asks of it.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_addresses() {
        assert!(Notifier::new("/run/systemd/notify".into()).is_ok());
        assert!(Notifier::new("@abstract".into()).is_ok());
        assert!(Notifier::new("relative".into()).is_err());
        assert!(Notifier::new("".into()).is_err());
    }

    #[test]
    fn notifier_sends_datagrams() {
        let dir = std::env::temp_dir().join(format!("berthd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.clone().into_os_string()).unwrap();
        n.send("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");
        n.reloading();
        let len = rx.recv(&mut buf).unwrap();
        assert!(buf[..len].starts_with(b"RELOADING=1\nMONOTONIC_USEC="));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
