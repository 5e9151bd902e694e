//! berthd's embedded DNS resolver for user networks.
//!
//! One [`Resolver`] per daemon. Each user network it is told about gets a UDP
//! and a TCP listener on the network's gateway address, port 53 (berthd runs
//! in the namespace that holds the bridge; a container reaches the gateway
//! through its default route). A question that arrives on a network's
//! listener is answered from that network's members only — their names,
//! aliases (and short ids, which the caller passes as aliases), as `NAME` or
//! `NAME.NETWORK`, case-insensitive, A, AAAA and PTR. Everything else goes to
//! the host's nameservers (never for an `--internal` network).
//!
//! Membership is a table in memory that [`Resolver::join`] and
//! [`Resolver::leave`] change under a lock; every question reads it afresh,
//! so a change is seen by the next question (no file is copied anywhere).
//!
//! Bounded by construction: one receive buffer per listener, a cap on the
//! questions being forwarded at once (over it, SERVFAIL at once), a cap on
//! TCP connections, a timeout on every read, write and forward; a malformed
//! packet is dropped without an answer.

mod answer;
mod forward;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::timeout;

use answer::{Action, Found, Lookup};
pub use forward::Upstreams;

/// The port a network's resolver listens on (tests use other ports).
pub const DNS_PORT: u16 = 53;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {addr} ({proto}): {source}; is another DNS server (or another berthd) bound to that address?")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
    #[error("the DNS resolver must be made inside a tokio runtime")]
    NoRuntime,
}

/// The resolver's knobs; [`Config::new`] has the daemon's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub upstreams: Upstreams,
    /// How long one upstream gets to answer before the next is tried.
    pub attempt_timeout: Duration,
    /// How long a forwarded question may take in all (then SERVFAIL).
    pub forward_deadline: Duration,
    /// Questions being forwarded at once, all networks together.
    pub max_inflight: usize,
    /// Open TCP connections, all networks together.
    pub max_tcp_conns: usize,
    /// A TCP connection idle (or stalled mid-message) this long is closed.
    pub tcp_idle: Duration,
    /// TTL of the answers about members: short, since members come and go
    /// and a container that caches (a local dnsmasq, systemd-resolved) must
    /// not keep a gone member for long.
    pub ttl: u32,
}

impl Config {
    pub fn new(upstreams: Upstreams) -> Self {
        Self {
            upstreams,
            attempt_timeout: Duration::from_secs(2),
            forward_deadline: Duration::from_secs(4),
            max_inflight: 256,
            max_tcp_conns: 64,
            tcp_idle: Duration::from_secs(10),
            ttl: 5,
        }
    }
}

/// A user network as the resolver sees it.
#[derive(Debug, Clone)]
pub struct NetworkDns {
    /// The network's name: `NAME.NETWORK` resolves too.
    pub name: String,
    /// Where to listen: the gateway address(es), port [`DNS_PORT`].
    pub listen: Vec<SocketAddr>,
    /// `--internal`: answer members, forward nothing.
    pub internal: bool,
}

/// A container on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name (PTR answers `NAME.NETWORK.`).
    pub name: String,
    /// Network aliases, and whatever else should resolve (the short id).
    pub aliases: Vec<String>,
    /// Its addresses on this network.
    pub addrs: Vec<IpAddr>,
}

struct Net {
    /// Lower case, as the question's name is compared.
    name: String,
    internal: bool,
    listen: Vec<SocketAddr>,
    /// By container id; names lower case, without a final dot.
    members: HashMap<String, Member>,
    tasks: Vec<AbortHandle>,
}

struct Shared {
    upstreams: forward::UpstreamSource,
    limits: forward::Limits,
    ttl: u32,
    tcp_idle: Duration,
    inflight: Arc<Semaphore>,
    tcp_conns: Arc<Semaphore>,
    /// By network id. Held only for short, synchronous reads and changes.
    nets: RwLock<HashMap<String, Net>>,
}

/// The daemon's resolver. Dropping it stops every listener.
pub struct Resolver {
    shared: Arc<Shared>,
    /// The runtime its listeners run on: [`Resolver::add_network`] may then
    /// be called from any thread (berthd calls it from blocking tasks).
    runtime: tokio::runtime::Handle,
}

impl Resolver {
    /// Made inside the tokio runtime its listeners are to run on.
    pub fn new(config: Config) -> Result<Self, DnsError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DnsError::NoRuntime)?;
        Ok(Self {
            runtime,
            shared: Arc::new(Shared {
                upstreams: forward::UpstreamSource::new(config.upstreams),
                limits: forward::Limits {
                    attempt: config.attempt_timeout,
                    deadline: config.forward_deadline,
                },
                ttl: config.ttl,
                tcp_idle: config.tcp_idle,
                inflight: Arc::new(Semaphore::new(config.max_inflight)),
                tcp_conns: Arc::new(Semaphore::new(config.max_tcp_conns)),
                nets: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// Serve a network (at its creation, or its restore when berthd starts).
    /// Again for a network already served: its name and `internal` are
    /// updated, its members kept, and its listeners moved if `listen`
    /// changed.
    ///
    /// The sockets are bound with `IP_FREEBIND`: the bridge may get its
    /// gateway address only when the first container joins, and the
    /// listener must be there before that.
    pub fn add_network(&self, id: &str, net: NetworkDns) -> Result<(), DnsError> {
        let same_listen = self
            .shared
            .read()
            .get(id)
            .is_some_and(|n| n.listen == net.listen);
        let tasks = if same_listen {
            None
        } else {
            Some(self.listen(id, &net.listen)?)
        };
        let mut nets = self.shared.write();
        let entry = nets.entry(id.to_string()).or_insert_with(|| Net {
            name: String::new(),
            internal: false,
            listen: Vec::new(),
            members: HashMap::new(),
            tasks: Vec::new(),
        });
        entry.name = normalize(&net.name);
        entry.internal = net.internal;
        if let Some(tasks) = tasks {
            for t in entry.tasks.drain(..) {
                t.abort();
            }
            entry.tasks = tasks;
            entry.listen = net.listen;
        }
        tracing::debug!(network = id, listen = ?entry.listen, "DNS serves the network");
        Ok(())
    }

    /// Stop serving a network (its removal): its listeners close and its
    /// members are forgotten.
    pub fn remove_network(&self, id: &str) {
        if let Some(net) = self.shared.write().remove(id) {
            for t in net.tasks {
                t.abort();
            }
            tracing::debug!(network = id, "DNS no longer serves the network");
        }
    }

    /// Whether the network is served.
    pub fn serves(&self, id: &str) -> bool {
        self.shared.read().contains_key(id)
    }

    /// The networks served, by id.
    pub fn networks(&self) -> Vec<String> {
        self.shared.read().keys().cloned().collect()
    }

    /// A container joins a network, or changes its names or addresses there
    /// (a rename): from the next question on, it resolves. `false` if the
    /// network is not served (the default bridge, say), which is not an
    /// error: such a network resolves no names.
    pub fn join(&self, network: &str, container: &str, member: Member) -> bool {
        let mut nets = self.shared.write();
        let Some(net) = nets.get_mut(network) else {
            return false;
        };
        let mut aliases: Vec<String> = member
            .aliases
            .iter()
            .map(|a| normalize(a))
            .filter(|a| !a.is_empty())
            .collect();
        aliases.sort();
        aliases.dedup();
        net.members.insert(
            container.to_string(),
            Member {
                name: normalize(&member.name),
                aliases,
                addrs: member.addrs,
            },
        );
        true
    }

    /// A container leaves a network (exit, rm, disconnect): from the next
    /// question on, it does not resolve there.
    pub fn leave(&self, network: &str, container: &str) {
        if let Some(net) = self.shared.write().get_mut(network) {
            net.members.remove(container);
        }
    }

    /// A container leaves every network it is on.
    pub fn leave_all(&self, container: &str) {
        for net in self.shared.write().values_mut() {
            net.members.remove(container);
        }
    }

    /// The members of a network, by container id (for `inspect` and tests).
    pub fn members(&self, network: &str) -> Vec<(String, Member)> {
        self.shared
            .read()
            .get(network)
            .map(|n| {
                n.members
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn listen(&self, id: &str, addrs: &[SocketAddr]) -> Result<Vec<AbortHandle>, DnsError> {
        // Registering a socket with the reactor needs the runtime entered.
        let _entered = self.runtime.enter();
        // Bind everything first, so a failure leaves nothing listening.
        let mut socks = Vec::new();
        for &addr in addrs {
            let udp = bind_udp(addr).map_err(|source| DnsError::Bind {
                addr,
                proto: "udp",
                source,
            })?;
            let tcp = bind_tcp(addr).map_err(|source| DnsError::Bind {
                addr,
                proto: "tcp",
                source,
            })?;
            socks.push((udp, tcp));
        }
        let mut tasks = Vec::new();
        for (udp, tcp) in socks {
            let key = id.to_string();
            tasks.push(
                self.runtime
                    .spawn(serve_udp(self.shared.clone(), key.clone(), Arc::new(udp)))
                    .abort_handle(),
            );
            tasks.push(
                self.runtime
                    .spawn(serve_tcp(self.shared.clone(), key, tcp))
                    .abort_handle(),
            );
        }
        Ok(tasks)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // The listener tasks hold the shared state: stop them, or they (and
        // their sockets) would outlive the resolver.
        for net in self.shared.write().values_mut() {
            for t in net.tasks.drain(..) {
                t.abort();
            }
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Net>> {
        // A panic while holding the lock cannot leave the table half-changed
        // (each change is one insert or remove), so a poisoned lock is used
        // as is.
        self.nets.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Net>> {
        self.nets.write().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, network: &str, bytes: &[u8], tcp: bool) -> Action {
        let nets = self.read();
        match nets.get(network) {
            Some(net) => answer::handle(net, bytes, tcp, self.ttl),
            // Removed while the listener was stopping.
            None => Action::Drop,
        }
    }

    async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let mut upstreams = self.upstreams.current();
        {
            // Never forward to one of our own listeners: a resolv.conf that
            // names a gateway would make a loop.
            let nets = self.read();
            upstreams.retain(|u| !nets.values().any(|n| n.listen.contains(u)));
        }
        forward::forward(query, &upstreams, tcp, &self.limits).await
    }

    fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.inflight.clone().try_acquire_owned().ok()
    }
}

impl Lookup for Net {
    fn find_name(&self, qname: &str) -> Found {
        let bare = qname
            .strip_suffix(self.name.as_str())
            .and_then(|s| s.strip_suffix('.'))
            .filter(|s| !s.is_empty() && !self.name.is_empty());
        let is = |n: &str| n == qname || Some(n) == bare;
        let mut addrs: Vec<IpAddr> = Vec::new();
        for m in self.members.values() {
            if is(&m.name) || m.aliases.iter().any(|a| is(a)) {
                for a in &m.addrs {
                    if !addrs.contains(a) {
                        addrs.push(*a);
                    }
                }
            }
        }
        if !addrs.is_empty() {
            // The same order for the same members, whatever the map's.
            addrs.sort();
            Found::Name(addrs)
        } else if !qname.is_empty() && !qname.contains('.') {
            // A single label can only be a container's name (no public name
            // is one label): answered at once, not after a trip upstream.
            // `X.NETWORK` is forwarded: a network may be named like a real
            // domain (`lan`, `corp`).
            Found::NoSuchName
        } else {
            Found::Foreign
        }
    }

    fn find_addr(&self, addr: IpAddr) -> Option<String> {
        // The lowest container name with that address: stable if (wrongly)
        // two claim it.
        self.members
            .values()
            .filter(|m| m.addrs.contains(&addr) && !m.name.is_empty())
            .map(|m| format!("{}.{}", m.name, self.name))
            .min()
    }

    fn internal(&self) -> bool {
        self.internal
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    // No SO_REUSEADDR: a second berthd (or anything) already on the address
    // must be an error, not a silent split of the traffic.
    let sock = socket(addr, Type::DGRAM, Protocol::UDP)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = socket(addr, Type::STREAM, Protocol::TCP)?;
    // For TCP it only allows a bind over connections in TIME_WAIT (a network
    // removed and made again), never two listeners.
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(64)?;
    TcpListener::from_std(sock.into())
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv4() {
        sock.set_freebind_v4(true)?;
    } else {
        sock.set_only_v6(true)?;
        sock.set_freebind_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.set_cloexec(true)?;
    Ok(sock)
}

/// A short pause after an error of the socket itself (EMFILE, ENOBUFS), so
/// that a persistent one does not spin a core.
async fn backoff() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn serve_udp(shared: Arc<Shared>, network: String, sock: Arc<UdpSocket>) {
    // Bigger datagrams are cut by the kernel and then fail to parse: dropped.
    let mut buf = vec![0u8; 4096];
    // Forwards in flight belong to the listener: stopping it stops them.
    let mut forwards = JoinSet::new();
    loop {
        tokio::select! {
            got = sock.recv_from(&mut buf) => {
                let (n, peer) = match got {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(network, error = %e, "DNS receive failed");
                        backoff().await;
                        continue;
                    }
                };
                match shared.handle(&network, &buf[..n], false) {
                    Action::Drop => {}
                    Action::Reply(answer) => {
                        let _ = sock.send_to(&answer, peer).await;
                    }
                    Action::Forward { servfail } => {
                        let Some(permit) = shared.permit() else {
                            tracing::debug!(network, "DNS: too many forwarded questions, SERVFAIL");
                            let _ = sock.send_to(&servfail, peer).await;
                            continue;
                        };
                        let question = buf[..n].to_vec();
                        let (shared, sock) = (shared.clone(), sock.clone());
                        forwards.spawn(async move {
                            let _permit = permit;
                            let answer = shared.forward(&question, false).await.unwrap_or(servfail);
                            let _ = sock.send_to(&answer, peer).await;
                        });
                    }
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
        }
    }
}

async fn serve_tcp(shared: Arc<Shared>, network: String, listener: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            got = listener.accept() => {
                let stream = match got {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(network, error = %e, "DNS accept failed");
                        backoff().await;
                        continue;
                    }
                };
                // Over the cap the connection is closed at once.
                if let Ok(permit) = shared.tcp_conns.clone().try_acquire_owned() {
                    conns.spawn(serve_conn(shared.clone(), network.clone(), stream, permit));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One TCP connection: length-prefixed questions, one after the other.
async fn serve_conn(
    shared: Arc<Shared>,
    network: String,
    mut stream: TcpStream,
    _permit: OwnedSemaphorePermit,
) {
    let idle = shared.tcp_idle;
    loop {
        let mut len = [0u8; 2];
        if !matches!(timeout(idle, stream.read_exact(&mut len)).await, Ok(Ok(_))) {
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 {
            return;
        }
        let mut question = vec![0u8; len];
        if !matches!(
            timeout(idle, stream.read_exact(&mut question)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let answer = match shared.handle(&network, &question, true) {
            // A stream that carried garbage cannot be trusted to be framed.
            Action::Drop => return,
            Action::Reply(answer) => answer,
            Action::Forward { servfail } => match shared.permit() {
                Some(_permit) => shared.forward(&question, true).await.unwrap_or(servfail),
                None => servfail,
            },
        };
        let Ok(n) = u16::try_from(answer.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(answer.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&answer);
        if !matches!(timeout(idle, stream.write_all(&out)).await, Ok(Ok(_))) {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
