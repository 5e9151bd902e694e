//! Container networking, first part (docs/networking.md): the `none`,
//! `host` and `container:ID` modes, and the per-container `/etc/hosts`,
//! `/etc/hostname` and `/etc/resolv.conf`.
//!
//! berthd owns a container's network namespace: for `none` it creates one
//! before the shim runs the init, brings its loopback up and keeps it as a
//! bind-mounted nsfs file `<root>/netns/<id>`; the spec names that file, so
//! the runtime joins a namespace instead of making one (no extra cost) and
//! `container:ID` can join it too, across restarts of either container. The
//! file goes when the container is removed; on restore, files of containers
//! the store does not know are removed.
//!
//! What a container's files hold is decided at create and kept in
//! `<root>/netns/<id>.json`; they are written into the container's
//! directory before each run (the directory is made anew by then).

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use berth_api::v1;
use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, Spec};
use serde::{Deserialize, Serialize};
use tonic::Status;
use tracing::warn;

use crate::shim::{Layout, RootfsProvider};

/// The network mode asked for, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A namespace of the container's own with loopback only.
    None,
    /// The daemon's namespace.
    Host,
    /// Join this namespace file (another container's).
    Join(PathBuf),
}

/// Parses `--network`; `container:` targets are returned as the key to look up.
pub fn parse_mode(s: &str) -> Result<ParsedMode, Status> {
    match s {
        "" | "none" => Ok(ParsedMode::None),
        "host" => Ok(ParsedMode::Host),
        "bridge" => Err(Status::invalid_argument(
            "--network bridge is not supported yet: use none, host or container:ID",
        )),
        _ => match s.strip_prefix("container:") {
            Some(k) if !k.is_empty() => Ok(ParsedMode::Container(k.to_string())),
            _ => Err(Status::invalid_argument(format!(
                "invalid --network {s:?}: use none, host or container:ID"
            ))),
        },
    }
}

/// `--network` before the other container is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedMode {
    None,
    Host,
    Container(String),
}

/// What berthd keeps for a container's network between create and its runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    /// Whether berthd makes (and owns) the container's namespace file.
    pub own_netns: bool,
    /// A namespace file of another container this one joins; it must still
    /// be there when this one runs.
    #[serde(default)]
    pub join: Option<PathBuf>,
    pub hosts: String,
    pub hostname: String,
    pub resolv_conf: String,
}

/// The network resources of berthd's containers under `<root>`.
pub struct Net {
    root: PathBuf,
}

impl Net {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join("netns")
    }

    /// The namespace file berthd makes for a container of its own network.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.dir().join(id)
    }

    fn plan_path(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}.json"))
    }

    /// Checks the DNS and hosts flags and builds the plan and the spec
    /// changes for `mode`: the namespace entry and the three bind mounts.
    pub fn apply(
        &self,
        id: &str,
        mode: &Mode,
        r: &v1::CreateRequest,
        spec: &mut Spec,
    ) -> Result<Plan, Status> {
        for d in &r.dns {
            d.parse::<IpAddr>().map_err(|_| {
                Status::invalid_argument(format!(
                    "invalid --dns {d:?}: give a nameserver's IP address, e.g. 192.0.2.53"
                ))
            })?;
        }
        for s in r.dns_search.iter().chain(&r.dns_option) {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Status::invalid_argument(format!(
                    "invalid --dns-search or --dns-option {s:?}: it must be one word without spaces"
                )));
            }
        }
        let mut extra = String::new();
        for h in &r.add_host {
            let (name, ip) = parse_add_host(h)?;
            extra.push_str(&format!("{ip}\t{name}\n"));
        }
        let hostname = spec.hostname().clone().unwrap_or_default();
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv_conf = resolv_conf(
            &host_resolv,
            *mode == Mode::Host,
            &r.dns,
            &r.dns_search,
            &r.dns_option,
        );
        let hosts = hosts_file(&hostname, &extra);

        let linux = spec
            .linux_mut()
            .as_mut()
            .ok_or_else(|| Status::internal("the generated spec has no linux section"))?;
        let mut namespaces: Vec<_> = linux
            .namespaces()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.typ() != LinuxNamespaceType::Network)
            .collect();
        let (own_netns, join) = match mode {
            Mode::Host => (false, None),
            Mode::None => (true, Some(self.netns_path(id))),
            Mode::Join(p) => (false, Some(p.clone())),
        };
        if let Some(path) = &join {
            let ns = LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()
                .map_err(|e| Status::internal(e.to_string()))?;
            namespaces.push(ns);
        }
        linux.set_namespaces(Some(namespaces));

        let dir = Layout::new(&self.root, id).dir;
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for (file, dest) in [
            ("hosts", "/etc/hosts"),
            ("hostname", "/etc/hostname"),
            ("resolv.conf", "/etc/resolv.conf"),
        ] {
            let m = MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(dir.join(file))
                .options(vec!["rbind".to_string(), "rprivate".to_string()])
                .build()
                .map_err(|e| Status::internal(e.to_string()))?;
            mounts.push(m);
        }
        spec.set_mounts(Some(mounts));
        Ok(Plan {
            own_netns,
            join: if own_netns { None } else { join },
            hosts,
            hostname: format!("{hostname}\n"),
            resolv_conf,
        })
    }

    /// Keeps the plan of a container being created.
    pub fn save(&self, id: &str, plan: &Plan) -> Result<(), Status> {
        std::fs::create_dir_all(self.dir())
            .and_then(|()| {
                let data = serde_json::to_vec(plan).map_err(std::io::Error::other)?;
                berth_shim_proto::write_atomic(&self.plan_path(id), &data)
            })
            .map_err(|e| Status::internal(format!("cannot keep the network settings: {e}")))
    }

    /// Removes a container's namespace file and plan.
    pub fn remove(&self, id: &str) {
        let ns = self.netns_path(id);
        if is_nsfs(&ns) {
            if let Err(e) = nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH) {
                warn!(id, error = %e, "cannot unmount the container's network namespace");
            }
        }
        for p in [ns, self.plan_path(id)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(path = %p.display(), error = %e, "cannot remove"),
            }
        }
    }

    /// Removes the namespace files and plans of containers not in `known`
    /// (a daemon killed during a create, or before a removal finished).
    pub fn reconcile(&self, known: &[String]) {
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".json").unwrap_or(&name).to_string();
            if !known.contains(&id) {
                self.remove(&id);
            }
        }
    }

    fn ensure_netns(&self, id: &str) -> Result<(), String> {
        let path = self.netns_path(id);
        if is_nsfs(&path) {
            return Ok(());
        }
        std::fs::create_dir_all(self.dir())
            .and_then(|()| std::fs::File::create(&path).map(drop))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        // unshare(CLONE_NEWNET) moves only the calling thread: a thread of
        // its own, which ends after its namespace is bound to the file.
        let p = path.clone();
        let res = std::thread::spawn(move || -> Result<(), String> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot create a network namespace: {e}"))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("cannot bind the network namespace to {}: {e}", p.display()))?;
            loopback_up().map_err(|e| format!("cannot bring the loopback up: {e}"))
        })
        .join()
        .map_err(|_| "the network namespace thread panicked".to_string())?;
        if res.is_err() {
            self.remove(id);
        }
        res
    }
}

impl RootfsProvider for Net {
    fn ensure(&self, id: &str) -> Result<(), String> {
        let data = match std::fs::read(self.plan_path(id)) {
            Ok(d) => d,
            // A container without a plan (a bundle) keeps its spec's network.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot read the network settings: {e}")),
        };
        let plan: Plan = serde_json::from_slice(&data)
            .map_err(|e| format!("unreadable network settings: {e}"))?;
        if plan.own_netns {
            self.ensure_netns(id)?;
        }
        if let Some(p) = &plan.join {
            if !is_nsfs(p) {
                return Err(format!(
                    "the network namespace to join ({}) is gone: its container was removed; recreate this one",
                    p.display()
                ));
            }
        }
        let dir = Layout::new(&self.root, id).dir;
        for (file, data) in [
            ("hosts", &plan.hosts),
            ("hostname", &plan.hostname),
            ("resolv.conf", &plan.resolv_conf),
        ] {
            let p = dir.join(file);
            std::fs::write(&p, data).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        }
        Ok(())
    }

    fn release(&self, id: &str) {
        self.remove(id);
    }
}

/// Whether `path` is a bound namespace (and not the empty file under it).
fn is_nsfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Sets IFF_UP on `lo` of the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is plain data, zeroed then given a NUL-terminated
    // name; the ioctls read and write only that struct, on a socket we own.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `NAME:IP` of `--add-host` (the IP may be IPv6, so split at the first colon).
fn parse_add_host(h: &str) -> Result<(String, IpAddr), Status> {
    let bad = || {
        Status::invalid_argument(format!(
            "invalid --add-host {h:?}: use NAME:IP, e.g. db:192.0.2.10"
        ))
    };
    let (name, ip) = h.split_once(':').ok_or_else(bad)?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err(bad());
    }
    Ok((name.to_string(), ip.parse().map_err(|_| bad())?))
}

fn hosts_file(hostname: &str, extra: &str) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    s.push_str(extra);
    if !hostname.is_empty() {
        s.push_str(&format!("127.0.0.1\t{hostname}\n"));
    }
    s
}

fn is_loopback(ns: &str) -> bool {
    ns.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The container's resolv.conf from the host's: loopback nameservers are
/// dropped unless the container shares the host's namespace (they would
/// be the container's own loopback); the flags replace what they name.
fn resolv_conf(
    host: &str,
    host_net: bool,
    dns: &[String],
    search: &[String],
    options: &[String],
) -> String {
    let mut servers = Vec::new();
    let mut host_search = Vec::new();
    let mut host_options = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ns) = words.next() {
                    if host_net || !is_loopback(ns) {
                        servers.push(ns.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => host_search = words.map(String::from).collect(),
            Some("options") => host_options.extend(words.map(String::from)),
            _ => {}
        }
    }
    let pick = |flag: &[String], host: Vec<String>| {
        if flag.is_empty() {
            host
        } else {
            flag.to_vec()
        }
    };
    let mut out = String::new();
    for ns in pick(dns, servers) {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    let search = pick(search, host_search);
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    let options = pick(options, host_options);
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Both of berthd's per-container providers: the root, then the network.
pub struct Providers(pub Vec<std::sync::Arc<dyn RootfsProvider>>);

impl RootfsProvider for Providers {
    fn ensure(&self, id: &str) -> Result<(), String> {
        self.0.iter().try_for_each(|p| p.ensure(id))
    }
    fn release(&self, id: &str) {
        self.0.iter().for_each(|p| p.release(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_drops_loopback_and_flags_replace() {
        let host =
            "nameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch a.example\noptions ndots:1\n";
        assert_eq!(
            resolv_conf(host, false, &[], &[], &[]),
            "nameserver 192.0.2.1\nsearch a.example\noptions ndots:1\n"
        );
        assert!(resolv_conf(host, true, &[], &[], &[]).contains("127.0.0.53"));
        let s = resolv_conf(
            host,
            false,
            &["192.0.2.9".into()],
            &["b.example".into()],
            &["ndots:3".into()],
        );
        assert_eq!(
            s,
            "nameserver 192.0.2.9\nsearch b.example\noptions ndots:3\n"
        );
    }

    #[test]
    fn add_host_forms() {
        assert_eq!(
            parse_add_host("db:192.0.2.10").unwrap(),
            ("db".into(), "192.0.2.10".parse().unwrap())
        );
        assert_eq!(
            parse_add_host("v6:::1").unwrap().1,
            "::1".parse::<IpAddr>().unwrap()
        );
        assert!(parse_add_host("db").is_err());
        assert!(parse_add_host(":1.2.3.4").is_err());
        assert!(parse_add_host("db:nope").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("").unwrap(), ParsedMode::None);
        assert_eq!(parse_mode("host").unwrap(), ParsedMode::Host);
        assert_eq!(
            parse_mode("container:abc").unwrap(),
            ParsedMode::Container("abc".into())
        );
        assert!(parse_mode("container:").is_err());
        assert!(parse_mode("weird").is_err());
    }
}
