//! The loopback of a network namespace, which both sides bring up: berthd in
//! the namespaces it makes and binds to a file, the shim in the one the
//! embedded runtime makes for a container (libcontainer leaves its `lo`
//! down; runc and crun bring theirs up themselves).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// Sets `IFF_UP` on `lo` of the calling thread's network namespace.
pub fn loopback_up() -> io::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is plain data, zeroed then given a NUL-terminated
    // name; the ioctls read and write only that struct, on a socket we own.
    unsafe {
        let mut req: nix::libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as nix::libc::c_char;
        }
        if nix::libc::ioctl(sock.as_raw_fd(), nix::libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= nix::libc::IFF_UP as nix::libc::c_short;
        if nix::libc::ioctl(sock.as_raw_fd(), nix::libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs [`loopback_up`] in the network namespace `ns` (a namespace file,
/// or `/proc/PID/ns/net`), on a thread of its own: `setns` moves only the
/// calling thread, and this one ends with it.
pub fn loopback_up_in(ns: &std::path::Path) -> io::Result<()> {
    let file = File::open(ns)?;
    std::thread::Builder::new()
        .name("loopback".into())
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            loopback_up()
        })?
        .join()
        .map_err(|_| io::Error::other("the loopback thread panicked"))?
}
