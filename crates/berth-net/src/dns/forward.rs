//! Forwarding a question the networks do not own to the host's nameservers.
//!
//! Each forwarded question gets a socket of its own (a random source port,
//! connected to the upstream, so only that upstream's datagrams arrive) and
//! a random message id; the answer is checked (id, QR bit, same question)
//! and passed back with the client's id, byte for byte. Every attempt is
//! bounded by a timeout, the whole by a deadline.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

/// Where the upstream nameservers come from.
#[derive(Debug, Clone)]
pub enum Upstreams {
    /// A fixed list (tests, or a daemon option).
    Fixed(Vec<SocketAddr>),
    /// The `nameserver` lines of a resolv.conf (the host's `/etc/resolv.conf`),
    /// read again whenever the file changes (DHCP, a VPN, resolvconf).
    ResolvConf(PathBuf),
}

/// A file's mtime and length: read again when either changes.
type Stamp = Option<(SystemTime, u64)>;

pub(crate) struct UpstreamSource {
    source: Upstreams,
    /// The file's stamp when last read, and what it said.
    cache: Mutex<(Stamp, Vec<SocketAddr>)>,
}

impl UpstreamSource {
    pub(crate) fn new(source: Upstreams) -> Self {
        Self {
            source,
            cache: Mutex::new((None, Vec::new())),
        }
    }

    pub(crate) fn current(&self) -> Vec<SocketAddr> {
        let path = match &self.source {
            Upstreams::Fixed(list) => return list.clone(),
            Upstreams::ResolvConf(path) => path,
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_none() || cache.0 != stamp {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            *cache = (stamp, parse_resolv_conf(&text));
            tracing::debug!(path = %path.display(), upstreams = ?cache.1, "DNS upstreams read");
        }
        cache.1.clone()
    }
}

/// The `nameserver` addresses of a resolv.conf, port 53. A zoned IPv6
/// address (`fe80::1%eth0`) is skipped: berth does not forward over
/// link-local scopes.
pub(crate) fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|w| w.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

pub(crate) struct Limits {
    pub attempt: Duration,
    pub deadline: Duration,
}

/// Ask each upstream in turn (UDP, or TCP for a client that asked over TCP)
/// until one answers; `None` if none did before the deadline.
pub(crate) async fn forward(
    query: &[u8],
    upstreams: &[SocketAddr],
    tcp: bool,
    limits: &Limits,
) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let Ok(asked) = Message::from_vec(query) else {
        return None;
    };
    let deadline = Instant::now() + limits.deadline;
    let client_id = [query[0], query[1]];
    let mut ours = query.to_vec();
    for upstream in upstreams {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let id = random_id();
        ours[..2].copy_from_slice(&id);
        let until = (now + limits.attempt).min(deadline);
        let got = if tcp {
            timeout_at(until, ask_tcp(*upstream, &ours)).await
        } else {
            timeout_at(until, ask_udp(*upstream, &ours, id, &asked)).await
        };
        match got {
            Ok(Ok(mut answer)) if answer_matches(&answer, id, &asked) => {
                answer[..2].copy_from_slice(&client_id);
                return Some(answer);
            }
            Ok(Ok(_)) => {
                tracing::debug!(%upstream, "DNS upstream answered another question");
            }
            Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "DNS upstream failed"),
            Err(_) => tracing::debug!(%upstream, "DNS upstream timed out"),
        }
    }
    None
}

fn random_id() -> [u8; 2] {
    let mut id = [0u8; 2];
    // Without the OS's randomness a fixed id still works: the random source
    // port of the connected socket is then the only guard against spoofing.
    let _ = getrandom::fill(&mut id);
    id
}

fn answer_matches(answer: &[u8], id: [u8; 2], asked: &Message) -> bool {
    if answer.len() < 12 || answer[..2] != id || answer[2] & 0x80 == 0 {
        return false;
    }
    let Ok(got) = Message::from_vec(answer) else {
        return false;
    };
    got.queries.len() == asked.queries.len()
        && got.queries.iter().zip(&asked.queries).all(|(a, b)| {
            a.query_type() == b.query_type()
                && a.query_class() == b.query_class()
                // hickory's Name equality ignores case, as DNS does.
                && a.name() == b.name()
        })
}

async fn ask_udp(
    upstream: SocketAddr,
    query: &[u8],
    id: [u8; 2],
    asked: &Message,
) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await?;
        // A stray or forged datagram is skipped; the caller's timeout bounds
        // the loop.
        if answer_matches(&buf[..n], id, asked) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn ask_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::other("a DNS question longer than 65535 bytes"))?;
    let mut conn = TcpStream::connect(upstream).await?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    conn.write_all(&out).await?;
    let mut len = [0u8; 2];
    conn.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    conn.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nnameserver 10.0.0.1\nsearch example.org\nnameserver ::1\n\
                    nameserver fe80::1%eth0\nnameserver\noptions ndots:2\n nameserver 127.0.0.53\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap(),
                "127.0.0.53:53".parse().unwrap(),
            ]
        );
    }
}
