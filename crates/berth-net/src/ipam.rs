//! berthd's address allocation for its bridge networks, in memory: the
//! addresses in use on each network and by whom. The kept attachment
//! records hold the addresses (each written before its container is wired),
//! so the table is rebuilt from them when berthd starts; an address is
//! given back when its container leaves the network, at once.
//!
//! Addresses are handed out in turn from a cursor (as host-local did), not
//! lowest-first, so an address just given back is not the next one given:
//! the neighbours' ARP caches have time to forget it.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::cidr::Cidr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error(
        "--ip {addr} is in use on network {network} by container {owner}: give another address"
    )]
    InUse {
        addr: Ipv4Addr,
        network: String,
        owner: String,
    },
    #[error("no free address left on network {network} ({subnet}): remove containers from it, or give it a larger subnet")]
    Full { network: String, subnet: Cidr },
}

#[derive(Debug, Default)]
struct Pool {
    used: BTreeMap<Ipv4Addr, String>,
    /// The last address handed out.
    cursor: u32,
}

/// The addresses in use, by network.
#[derive(Debug, Default)]
pub struct Ipam {
    pools: Mutex<HashMap<String, Pool>>,
}

impl Ipam {
    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pool>> {
        // The table stays whole whatever panicked while it was held.
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `addr` as `owner`'s (at start, from the kept records).
    pub fn restore(&self, network: &str, owner: &str, addr: Ipv4Addr) {
        let mut pools = self.pools();
        let p = pools.entry(network.to_string()).or_default();
        p.used.insert(addr, owner.to_string());
        p.cursor = p.cursor.max(u32::from(addr));
    }

    /// An address for `owner` on `network`: `fixed` if it is free (or
    /// `owner`'s already), else the next free host address after the
    /// cursor that is neither the gateway nor in `avoid` (the fixed
    /// addresses other containers of the network ask for).
    pub fn reserve(
        &self,
        network: &str,
        subnet: Cidr,
        gateway: Ipv4Addr,
        owner: &str,
        fixed: Option<Ipv4Addr>,
        avoid: &[Ipv4Addr],
    ) -> Result<Ipv4Addr, IpamError> {
        let mut pools = self.pools();
        let p = pools.entry(network.to_string()).or_default();
        if let Some(addr) = fixed {
            match p.used.get(&addr) {
                Some(o) if o != owner => {
                    return Err(IpamError::InUse {
                        addr,
                        network: network.to_string(),
                        owner: o.get(..12).unwrap_or(o).to_string(),
                    })
                }
                _ => {
                    p.used.insert(addr, owner.to_string());
                    return Ok(addr);
                }
            }
        }
        let (first, last) = match (subnet.first_host(), subnet.last_host()) {
            (Some(f), Some(l)) => (u32::from(f), u32::from(l)),
            _ => {
                return Err(IpamError::Full {
                    network: network.to_string(),
                    subnet,
                })
            }
        };
        let n = last - first + 1;
        let start = if (first..=last).contains(&p.cursor) {
            p.cursor - first + 1
        } else {
            0
        };
        for k in 0..n {
            let a = Ipv4Addr::from(first + (start + k) % n);
            if a == gateway || avoid.contains(&a) || p.used.contains_key(&a) {
                continue;
            }
            p.used.insert(a, owner.to_string());
            p.cursor = u32::from(a);
            return Ok(a);
        }
        Err(IpamError::Full {
            network: network.to_string(),
            subnet,
        })
    }

    /// Gives `addr` back if `owner` holds it.
    pub fn release(&self, network: &str, owner: &str, addr: Ipv4Addr) {
        if let Some(p) = self.pools().get_mut(network) {
            if p.used.get(&addr).is_some_and(|o| o == owner) {
                p.used.remove(&addr);
            }
        }
    }

    /// The addresses in use on `network`.
    pub fn used(&self, network: &str) -> Vec<Ipv4Addr> {
        self.pools()
            .get(network)
            .map(|p| p.used.keys().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_turn_fixed_and_full() {
        let ipam = Ipam::default();
        let s: Cidr = "10.9.0.0/29".parse().unwrap();
        let gw: Ipv4Addr = "10.9.0.1".parse().unwrap();
        let r = |o: &str, f: Option<&str>| {
            ipam.reserve("n", s, gw, o, f.map(|f| f.parse().unwrap()), &[])
        };
        assert_eq!(r("a", None).unwrap().to_string(), "10.9.0.2");
        assert_eq!(r("b", None).unwrap().to_string(), "10.9.0.3");
        // Given back, not handed out again next.
        ipam.release("n", "a", "10.9.0.2".parse().unwrap());
        assert_eq!(r("c", None).unwrap().to_string(), "10.9.0.4");
        // A fixed one: free, the owner's again, another's.
        assert_eq!(r("d", Some("10.9.0.6")).unwrap().to_string(), "10.9.0.6");
        assert_eq!(r("d", Some("10.9.0.6")).unwrap().to_string(), "10.9.0.6");
        assert!(matches!(
            r("e", Some("10.9.0.6")),
            Err(IpamError::InUse { .. })
        ));
        assert_eq!(r("e", None).unwrap().to_string(), "10.9.0.5");
        // 10.9.0.6 is the last host (.7 the broadcast): it wraps to .2.
        assert_eq!(r("f", None).unwrap().to_string(), "10.9.0.2");
        assert!(matches!(r("h", None), Err(IpamError::Full { .. })));
        // Releasing another's address does nothing.
        ipam.release("n", "x", "10.9.0.2".parse().unwrap());
        assert_eq!(ipam.used("n").len(), 5);
        // Rebuilt from records: the cursor follows.
        let again = Ipam::default();
        again.restore("n", "a", "10.9.0.3".parse().unwrap());
        let avoid = ["10.9.0.4".parse().unwrap()];
        assert_eq!(
            again
                .reserve("n", s, gw, "b", None, &avoid)
                .unwrap()
                .to_string(),
            "10.9.0.5"
        );
    }
}
