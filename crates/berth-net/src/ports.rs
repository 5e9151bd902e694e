//! Published ports: `-p [IP:][HOSTPORT:]CTRPORT[/tcp|/udp]` (ranges as
//! `8000-8009:80-89`), parsed into portmap's mappings.

use std::net::Ipv4Addr;

use crate::network::PortMapping;

/// Why a `-p` does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid -p {spec:?}: {why}; use [IP:][HOSTPORT:]CTRPORT[/tcp|/udp], e.g. 8080:80 or 127.0.0.1:5353:53/udp")]
pub struct BadPort {
    pub spec: String,
    pub why: String,
}

/// One `-p` before host ports are chosen: `host_port` 0 means "any free".
pub type Wanted = PortMapping;

fn range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => {
            let p = s.parse().ok()?;
            (p, p)
        }
    };
    (a > 0 && a <= b).then_some((a, b))
}

/// The mappings of one `-p`.
pub fn parse(spec: &str) -> Result<Vec<Wanted>, BadPort> {
    let bad = |why: &str| BadPort {
        spec: spec.to_string(),
        why: why.to_string(),
    };
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(bad("the protocol must be tcp or udp"));
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [i, h, c] => (*i, *h, *c),
        _ => return Err(bad("too many colons")),
    };
    if !ip.is_empty() {
        ip.parse::<Ipv4Addr>()
            .map_err(|_| bad("the host address must be IPv4"))?;
    }
    let (c0, c1) =
        range(ctr).ok_or_else(|| bad("the container port must be 1-65535 or a range"))?;
    let n = c1 - c0;
    let hosts: Vec<u16> = if host.is_empty() {
        vec![0; usize::from(n) + 1]
    } else {
        let (h0, h1) =
            range(host).ok_or_else(|| bad("the host port must be 1-65535 or a range"))?;
        if h1 - h0 != n {
            return Err(bad("the host and container ranges differ in size"));
        }
        (h0..=h1).collect()
    };
    Ok((c0..=c1)
        .zip(hosts)
        .map(|(c, h)| PortMapping {
            host_port: h,
            container_port: c,
            protocol: proto.clone(),
            host_ip: ip.to_string(),
        })
        .collect())
}

/// An image's `ExposedPorts` key (`80/tcp`, `53/udp`, `8080`) as a wanted
/// mapping on any free host port.
pub fn exposed(key: &str) -> Option<Wanted> {
    let (p, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let port: u16 = p.parse().ok().filter(|p| *p > 0)?;
    let proto = proto.to_ascii_lowercase();
    (proto == "tcp" || proto == "udp").then(|| PortMapping {
        host_port: 0,
        container_port: port,
        protocol: proto,
        host_ip: String::new(),
    })
}

/// Whether two mappings take the same host port (an empty address is
/// every address).
pub fn clash(a: &PortMapping, b: &PortMapping) -> bool {
    a.host_port == b.host_port
        && a.protocol == b.protocol
        && (a.host_ip.is_empty() || b.host_ip.is_empty() || a.host_ip == b.host_ip)
}

/// `80/tcp -> 0.0.0.0:8080`, as `berth port` and `ps` show a mapping.
pub fn describe(m: &PortMapping) -> String {
    let ip = if m.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        &m.host_ip
    };
    format!(
        "{}/{} -> {ip}:{}",
        m.container_port, m.protocol, m.host_port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let m = parse("8080:80").unwrap();
        assert_eq!(
            (m[0].host_port, m[0].container_port, m[0].protocol.as_str()),
            (8080, 80, "tcp")
        );
        let m = parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(m[0].host_ip, "127.0.0.1");
        assert_eq!(m[0].protocol, "udp");
        let m = parse("80").unwrap();
        assert_eq!(m[0].host_port, 0);
        let m = parse("127.0.0.1::80").unwrap();
        assert_eq!((m[0].host_ip.as_str(), m[0].host_port), ("127.0.0.1", 0));
        let m = parse("8000-8002:80-82").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!((m[2].host_port, m[2].container_port), (8002, 82));
        assert_eq!(
            describe(&parse("9000:90/udp").unwrap()[0]),
            "90/udp -> 0.0.0.0:9000"
        );
    }

    #[test]
    fn bad_forms() {
        for s in [
            "",
            "0",
            "x:80",
            "80/sctp",
            "1:2:3:4",
            "8000-8001:80",
            "::1:80:80",
            "70000:80",
            "90-80",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn exposed_and_clash() {
        assert_eq!(exposed("80/tcp").unwrap().container_port, 80);
        assert_eq!(exposed("53/udp").unwrap().protocol, "udp");
        assert!(exposed("x/tcp").is_none());
        let a = parse("8080:80").unwrap().remove(0);
        let b = parse("127.0.0.1:8080:81").unwrap().remove(0);
        let c = parse("8080:80/udp").unwrap().remove(0);
        assert!(clash(&a, &b));
        assert!(!clash(&a, &c));
    }
}
