//! A bridge network wired in berthd's own process over netlink (the
//! `rtnetlink` crate), without a plugin process per container: the bridge
//! with its gateway address, and per container a veth pair whose peer is
//! made directly inside the container's namespace, named `eth0` (or
//! `ethN`), up, with its address and the default route.
//!
//! A netlink socket belongs to the network namespace its opener was in
//! when it was opened: a thread of its own opens one in berthd's
//! namespace, then joins the container's (setns moves only the calling
//! thread) and opens a second one there; the thread ends with the work, so
//! no thread of berthd's stays in a container's namespace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::links::LinkError;

/// How long the netlink exchanges of one call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The prefix of the host-side veths berth makes (`berthv` + 8 hex).
pub const VETH_PREFIX: &str = "berthv";

fn err(what: &str) -> impl Fn(rtnetlink::Error) -> LinkError + '_ {
    move |e| LinkError::new(format!("{what}: {e}"))
}

fn code(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// Runs `f` with a netlink handle of berthd's namespace and, if `netns`
/// is given, one of that namespace, on a thread of its own.
fn run<T, Fut>(
    netns: Option<&Path>,
    f: impl FnOnce(rtnetlink::Handle, Option<rtnetlink::Handle>) -> Fut + Send + 'static,
) -> Result<T, LinkError>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let ns = netns
        .map(|p| {
            std::fs::File::open(p)
                .map_err(|e| LinkError::new(format!("cannot open {}: {e}", p.display())))
        })
        .transpose()?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| LinkError::new(format!("cannot start a runtime: {e}")))?;
        rt.block_on(async move {
            let open = || {
                rtnetlink::new_connection()
                    .map_err(|e| LinkError::new(format!("cannot open a netlink socket: {e}")))
            };
            let (conn, host, _) = open()?;
            tokio::spawn(conn);
            let inner = match &ns {
                Some(file) => {
                    // This thread only: it ends when the work is done.
                    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                        LinkError::new(format!("cannot join the network namespace: {e}"))
                    })?;
                    let (conn, h, _) = open()?;
                    tokio::spawn(conn);
                    Some(h)
                }
                None => None,
            };
            tokio::time::timeout(TIMEOUT, f(host, inner))
                .await
                .map_err(|_| LinkError::new("no answer from the kernel in time"))?
        })
    })
    .join()
    .map_err(|_| LinkError::new("the netlink thread panicked"))?
}

async fn index_of(h: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, LinkError> {
    let mut s = Box::pin(h.link().get().match_name(name.to_string()).execute());
    match s.try_next().await {
        Ok(m) => Ok(m.map(|m| m.header.index)),
        Err(e) if code(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(LinkError::new(format!("cannot look up {name}: {e}"))),
    }
}

/// Makes the bridge `name` with `gateway/prefix` unless it is there (and
/// gives an existing one its address), up, and turns on IPv4 forwarding
/// in berthd's namespace (what the bridge plugin's isGateway did).
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), LinkError> {
    let name = name.to_string();
    run(None, move |h, _| async move {
        let index = match index_of(&h, &name).await? {
            Some(i) => i,
            None => {
                match h.link().add(LinkBridge::new(&name).build()).execute().await {
                    Ok(()) => {}
                    // Made meanwhile by another join.
                    Err(e) if code(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(err("cannot make the bridge")(e)),
                }
                index_of(&h, &name)
                    .await?
                    .ok_or_else(|| LinkError::new(format!("the bridge {name} vanished")))?
            }
        };
        match h
            .address()
            .add(index, IpAddr::V4(gateway), prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if code(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(err("cannot give the bridge its address")(e)),
        }
        // A MAC of its own, set: a bridge without one takes the lowest of
        // its ports' and changes it as veths come and go, and the
        // containers' ARP entries for the gateway then point nowhere.
        h.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(mac_of(gateway).to_vec())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(err("cannot bring the bridge up"))?;
        Ok(())
    })?;
    set_ip_forward()
}

/// `net.ipv4.ip_forward = 1` in berthd's namespace (a /proc/sys/net file
/// is the opener's namespace's).
fn set_ip_forward() -> Result<(), LinkError> {
    const P: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(P).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(P, "1").map_err(|e| LinkError::new(format!("cannot write {P}: {e}")))
}

/// One container's end of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The namespace file of the container.
    pub netns: std::path::PathBuf,
    pub bridge: String,
    /// The host-side veth (a name of [`veth_name`]).
    pub host: String,
    /// The interface inside the container.
    pub ifname: String,
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// The default route's gateway (none on an internal network).
    pub gateway: Option<Ipv4Addr>,
}

/// A fresh host-side veth name: `berthv` and 8 random hex digits, so that
/// a deferred deletion of an earlier run's veth never meets a new one.
pub fn veth_name() -> Result<String, LinkError> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|e| LinkError::new(format!("no randomness: {e}")))?;
    Ok(format!(
        "{VETH_PREFIX}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3]
    ))
}

/// A MAC from the address (`02:42` and the four bytes of the IPv4
/// address, as Docker's): locally administered, unicast, and unique on the
/// subnet as the address is.
pub fn mac_of(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 2))
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// Wires a container to its bridge: the veth pair with its peer made in
/// the container's namespace (named, with its MAC), the host end on
/// the bridge, up, in hairpin mode (a container reaching its own published
/// port through the host); then inside: up, the address, the default route.
/// A stale interface of the same name inside (an earlier run's, whose
/// deletion had not run yet) is deleted first. On failure what was made
/// is deleted.
pub fn attach(p: &Port) -> Result<(), LinkError> {
    let p = p.clone();
    let netns = p.netns.clone();
    run(Some(&netns), move |h, inner| async move {
        let c = inner.ok_or_else(|| LinkError::new("no handle in the container's namespace"))?;
        let bridge = index_of(&h, &p.bridge)
            .await?
            .ok_or_else(|| LinkError::new(format!("the bridge {} is gone", p.bridge)))?;
        if let Some(stale) = index_of(&c, &p.ifname).await? {
            c.link()
                .del(stale)
                .execute()
                .await
                .map_err(err("cannot delete a stale interface"))?;
        }
        let ns = std::fs::File::open(&p.netns)
            .map_err(|e| LinkError::new(format!("cannot open {}: {e}", p.netns.display())))?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(p.ifname.clone())
            .address(p.mac.to_vec())
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(p.host.clone())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(bridge)
            .up()
            .build();
        h.link()
            .add(veth)
            .execute()
            .await
            .map_err(err("cannot make the veth pair"))?;
        let res = async {
            let host = index_of(&h, &p.host)
                .await?
                .ok_or_else(|| LinkError::new("the host veth vanished"))?;
            h.link()
                .set_port(LinkBridgePort::new(host).hairpin(true).build())
                .execute()
                .await
                .map_err(err("cannot set hairpin mode"))?;
            let inside = index_of(&c, &p.ifname)
                .await?
                .ok_or_else(|| LinkError::new("the container's interface vanished"))?;
            // Not at its making: a veth cannot open before its peer is
            // linked to it (ENOTCONN), and the peer is made first.
            c.link()
                .set(LinkUnspec::new_with_index(inside).up().build())
                .execute()
                .await
                .map_err(err("cannot bring the container's interface up"))?;
            c.address()
                .add(inside, IpAddr::V4(p.address), p.prefix)
                .execute()
                .await
                .map_err(err("cannot give the container its address"))?;
            if let Some(gw) = p.gateway {
                let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gw)
                    .output_interface(inside)
                    .build();
                match c.route().add(route).execute().await {
                    Ok(()) => {}
                    // The container's first network has it (a second
                    // network adds none, as the bridge plugin did).
                    Err(e) if code(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(err("cannot add the default route")(e)),
                }
            }
            Ok::<(), LinkError>(())
        }
        .await;
        if res.is_err() {
            if let Ok(Some(i)) = index_of(&h, &p.host).await {
                let _ = h.link().del(i).execute().await;
            }
        }
        res
    })
}

/// Deletes a host-side veth (and so its peer) by name; gone already is
/// fine.
pub fn delete_veth(name: &str) -> Result<(), LinkError> {
    let name = name.to_string();
    run(None, move |h, _| async move {
        let Some(i) = index_of(&h, &name).await? else {
            return Ok(());
        };
        match h.link().del(i).execute().await {
            Ok(()) => Ok(()),
            Err(e) if code(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(err("cannot delete the veth")(e)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs() {
        let n = veth_name().unwrap();
        assert!(n.starts_with(VETH_PREFIX) && n.len() == 14, "{n}");
        assert_ne!(n, veth_name().unwrap());
        let m = mac_of("10.87.0.2".parse().unwrap());
        assert_eq!(format_mac(&m), "02:42:0a:57:00:02");
        assert_eq!(parse_mac("02:42:0a:57:00:02"), Some(m));
        assert_eq!(parse_mac("02:42:0a:57:00"), None);
        assert_eq!(parse_mac("02:42:0a:57:00:2"), None);
    }
}
