//! IPv4 subnets: parsing, membership, overlap and the addresses a network
//! hands out. Small enough not to need a crate of its own.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 subnet, `ADDR/PREFIX`, with the host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

/// Why a subnet does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not an IPv4 subnet: give ADDRESS/PREFIX with the host bits zero, e.g. 10.89.3.0/24"
)]
pub struct BadCidr(pub String);

impl Cidr {
    /// The subnet `addr/prefix`; `None` if the prefix is over 32 or host
    /// bits are set.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        let c = Cidr { addr, prefix };
        (prefix <= 32 && u32::from(addr) & !c.mask() == 0).then_some(c)
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The `n`th address of the subnet (0 is the network's own address).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        (u64::from(n) < self.size()).then(|| Ipv4Addr::from(u32::from(self.addr) + n))
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` can be given to a host: inside, neither the network's
    /// address nor the broadcast (a /31 or /32 has no such reserve).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (self.prefix >= 31 || (ip != self.addr && ip != self.broadcast()))
    }

    /// The first host address: the default gateway of a network.
    pub fn first_host(&self) -> Option<Ipv4Addr> {
        if self.prefix >= 31 {
            return None;
        }
        self.nth(1)
    }

    /// The last host address (before the broadcast).
    pub fn last_host(&self) -> Option<Ipv4Addr> {
        if self.prefix >= 31 {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.broadcast()) - 1))
    }

    /// The subnets of `prefix` bits inside this one, in order.
    pub fn subnets(&self, prefix: u8) -> impl Iterator<Item = Cidr> + '_ {
        let count = if prefix < self.prefix || prefix > 32 {
            0
        } else {
            1u64 << (prefix - self.prefix)
        };
        let step = if prefix > 32 {
            0
        } else {
            1u64 << (32 - u32::from(prefix))
        };
        (0..count).filter_map(move |i| {
            let a = u64::from(u32::from(self.addr)) + i * step;
            u32::try_from(a).ok().map(|a| Cidr {
                addr: Ipv4Addr::from(a),
                prefix,
            })
        })
    }
}

impl FromStr for Cidr {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCidr(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Cidr::new(addr, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_members() {
        let c: Cidr = "10.87.0.0/16".parse().unwrap();
        assert!(c.contains("10.87.255.1".parse().unwrap()));
        assert!(!c.contains("10.88.0.1".parse().unwrap()));
        assert_eq!(c.first_host(), Some("10.87.0.1".parse().unwrap()));
        assert_eq!(c.broadcast(), "10.87.255.255".parse::<Ipv4Addr>().unwrap());
        assert!(!c.is_host("10.87.0.0".parse().unwrap()));
        assert!(c.is_host("10.87.0.2".parse().unwrap()));
        assert!("10.87.0.1/16".parse::<Cidr>().is_err());
        assert!("10.87.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        assert_eq!(c.to_string(), "10.87.0.0/16");
    }

    #[test]
    fn overlap_and_subnets() {
        let a: Cidr = "10.89.0.0/16".parse().unwrap();
        let b: Cidr = "10.89.4.0/24".parse().unwrap();
        let c: Cidr = "10.90.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        let subs: Vec<_> = a.subnets(24).take(3).map(|s| s.to_string()).collect();
        assert_eq!(subs, ["10.89.0.0/24", "10.89.1.0/24", "10.89.2.0/24"]);
        assert_eq!(a.subnets(24).count(), 256);
        assert_eq!(a.subnets(8).count(), 0);
    }
}
