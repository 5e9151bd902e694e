//! Image references, parsed and normalized the way Docker does.
//!
//! The grammar is the one of the distribution project's `reference`
//! package (what `docker pull` accepts):
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path
//! domain     := host [ ":" port ]          host: DNS name, IPv4 or "[" IPv6 "]"
//! path       := component ( "/" component )*
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! ```
//!
//! Normalization follows Docker: the first `/`-separated component is a
//! registry only if it contains `.` or `:`, is `localhost`, or has an
//! uppercase letter; otherwise the registry is `docker.io`, and a one-component
//! Docker Hub path gets `library/` in front. A reference with neither tag nor
//! digest gets `:latest`. So `busybox` is `docker.io/library/busybox:latest`,
//! printed back to users as `busybox:latest` ([`Reference::familiar`]).
//!
//! Digests are [`Digest`]s: sha256 only, as the store verifies nothing else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::{Digest, DigestError};

/// Docker Hub's canonical name, as references spell it.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's distribution API actually answers.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// The tag a reference without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";

/// Longest `registry/repository` Docker accepts.
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A normalized image reference: registry, repository, and a tag, a digest,
/// or both (at least one of them).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format: empty reference: give an image name such as busybox or registry.example.com/app:1.0")]
    Empty,
    #[error("invalid reference format: repository name must be lowercase (got {0:?})")]
    Uppercase(String),
    #[error("invalid reference format: repository name must not be more than {NAME_MAX} characters (got {0})")]
    NameTooLong(usize),
    #[error("invalid reference format: invalid tag {0:?} (a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-')")]
    Tag(String),
    #[error("invalid reference format: invalid digest {0:?} (expected sha256:<64 lowercase hex characters>)")]
    Digest(String),
    #[error("invalid reference format: unsupported digest algorithm in {0:?} (berth verifies sha256 only)")]
    DigestAlgorithm(String),
    #[error("invalid reference format: invalid registry {0:?} (expected a host name, IPv4 address or [IPv6] address with an optional :port)")]
    Registry(String),
    #[error("invalid reference format: invalid repository name {0:?} (lowercase letters and digits, separated by '/', '.', '_', '__' or '-')")]
    Repository(String),
    #[error("invalid repository name {0:?}: a 64-character hexadecimal string is an image id, not a name")]
    HexName(String),
}

impl Reference {
    /// Parses and normalizes `s` as `docker pull` does, adding `:latest`
    /// when it has neither tag nor digest.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let mut r = Self::parse_named(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Parses and normalizes `s` without adding a default tag: `busybox` has
    /// neither tag nor digest (for matching "any tag of this repository").
    pub fn parse_named(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::HexName(s.to_string()));
        }
        // A name never contains '@': the first one starts the digest.
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(parse_digest(d)?)),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|sl| colon > sl) => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(ReferenceError::Tag(t.to_string()));
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (registry, repository) = split_registry(name);
        if let Some(reg) = &registry {
            if !valid_domain(reg) {
                return Err(ReferenceError::Registry(reg.to_string()));
            }
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(repository.to_string()));
        }
        if !repository.split('/').all(valid_component) {
            return Err(ReferenceError::Repository(repository.to_string()));
        }
        let registry = match registry {
            None | Some("index.docker.io") => DOCKER_HUB.to_string(),
            Some(r) => r.to_string(),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        let total = registry.len() + 1 + repository.len();
        if total > NAME_MAX {
            return Err(ReferenceError::NameTooLong(total));
        }
        Ok(Self {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The registry as references name it: `docker.io`, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) the distribution API is reached at:
    /// `registry-1.docker.io` for Docker Hub, the registry itself otherwise.
    pub fn endpoint(&self) -> &str {
        registry_endpoint(&self.registry)
    }

    /// The repository path inside the registry: `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest when
    /// there is one (it pins the content), else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The same repository with another tag (the digest is dropped).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::Tag(tag.to_string()));
        }
        Ok(Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The short form Docker prints: `busybox:latest`, `user/app:1`,
    /// `localhost:5000/app@sha256:…`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        self.push_suffix(&mut s);
        s
    }

    /// The short form of the name alone: `busybox`, `user/app`,
    /// `127.0.0.1:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

/// The host the distribution API of `registry` answers at (Docker Hub's
/// API is not at `docker.io`).
pub fn registry_endpoint(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_ENDPOINT
    } else {
        registry
    }
}

/// Normalizes what a user types as a registry for `login`/`logout`:
/// Docker Hub's many spellings (`docker.io`, `index.docker.io`,
/// `registry-1.docker.io`, `https://index.docker.io/v1/`) become
/// `docker.io`; a scheme and a trailing path are dropped elsewhere
/// (`https://reg.example:5000/v2/` is `reg.example:5000`). Host names are
/// case-insensitive and come back lowercased.
pub fn normalize_registry(s: &str) -> Result<String, ReferenceError> {
    let t = s.trim();
    let t = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .unwrap_or(t);
    let host = t.split('/').next().unwrap_or("").to_ascii_lowercase();
    if host.is_empty() || !valid_domain(&host) {
        return Err(ReferenceError::Registry(s.to_string()));
    }
    Ok(match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => host,
    })
}

impl fmt::Display for Reference {
    /// The full normalized form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_named(&s).map_err(serde::de::Error::custom)
    }
}

fn parse_digest(d: &str) -> Result<Digest, ReferenceError> {
    d.parse().map_err(|e| match e {
        DigestError::Algorithm(_) => ReferenceError::DigestAlgorithm(d.to_string()),
        DigestError::Invalid(_) => ReferenceError::Digest(d.to_string()),
    })
}

/// Docker's `splitDockerDomain`: is the first component a registry?
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `host[:port]`, host a DNS name (components of letters, digits and inner
/// '-', joined by '.'), an IPv4 address (a DNS name by this grammar), or
/// `[IPv6]`.
fn valid_domain(d: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        let ok = !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        match after {
            "" => return ok,
            a => match a.strip_prefix(':') {
                Some(port) => (ok, Some(port)),
                None => return false,
            },
        }
    } else {
        let (host, port) = match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        (host.split('.').all(valid_domain_component), port)
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        Reference::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    #[test]
    fn docker_hub_normalization() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/repo"), "docker.io/user/repo:latest");
        assert_eq!(norm("user/repo/sub:t"), "docker.io/user/repo/sub:t");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("docker.io/library/busybox:latest"),
            "docker.io/library/busybox:latest"
        );
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.endpoint(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.name(), "docker.io/library/busybox");
    }

    #[test]
    fn registries_with_hosts_and_ports() {
        let r = Reference::parse("127.0.0.1:5000/a/b:t").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.endpoint(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.familiar(), "127.0.0.1:5000/a/b:t");

        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(norm("host:5000/path"), "host:5000/path:latest");
        assert_eq!(norm("host:5000/path:tag"), "host:5000/path:tag");
        assert_eq!(norm("quay.io/org/app:v1.2"), "quay.io/org/app:v1.2");
        assert_eq!(norm("[::1]:5000/app"), "[::1]:5000/app:latest");
        assert_eq!(norm("[::1]/app"), "[::1]/app:latest");
        // A single component is never a registry: this is docker.io's
        // "localhost" repository with tag 5000, as in Docker.
        assert_eq!(norm("localhost:5000"), "docker.io/library/localhost:5000");
        // Without '.', ':' or "localhost", the first component is a path.
        assert_eq!(norm("myhost/app"), "docker.io/myhost/app:latest");
        // An uppercase first component is a registry (host names are not
        // case-sensitive), as Docker decides.
        assert_eq!(norm("MyHost/app"), "MyHost/app:latest");
        // No library/ prefix outside Docker Hub.
        assert_eq!(
            Reference::parse("localhost/x").unwrap().familiar(),
            "localhost/x:latest"
        );
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{HEX}");
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag(), None, "a digest reference gets no default tag");
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(r.familiar(), format!("busybox@{d}"));
        assert_eq!(r.manifest_ref(), d);

        let r = Reference::parse(&format!("busybox:1.36@{d}")).unwrap();
        assert_eq!(r.tag(), Some("1.36"));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1.36@{d}"));
        assert_eq!(r.familiar(), format!("busybox:1.36@{d}"));
        assert_eq!(r.manifest_ref(), d, "the digest pins the content");

        let r = Reference::parse(&format!("127.0.0.1:5000/a@{d}")).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "a");

        assert_eq!(
            Reference::parse("busybox@sha256:abc"),
            Err(ReferenceError::Digest("sha256:abc".into()))
        );
        assert_eq!(
            Reference::parse(&format!("busybox@sha512:{HEX}{HEX}")),
            Err(ReferenceError::DigestAlgorithm(format!(
                "sha512:{HEX}{HEX}"
            )))
        );
        assert!(Reference::parse(&format!("busybox@{d}@{d}")).is_err());
    }

    #[test]
    fn tags() {
        assert!(Reference::parse("a:_x").is_ok());
        assert!(Reference::parse("a:X.y-Z_1").is_ok());
        let long = "a".repeat(128);
        assert!(Reference::parse(&format!("a:{long}")).is_ok());
        for bad in [
            "a:",
            "a:.x",
            "a:-x",
            "a:x/y", // "a:x" is a registry with a bad port, as in Docker
            "a:x+y",
            &format!("a:{long}b"),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Reference::parse("busybox:-x"),
            Err(ReferenceError::Tag("-x".into()))
        );
    }

    #[test]
    fn lowercase_rule() {
        let e = Reference::parse("Busybox").unwrap_err();
        assert_eq!(e, ReferenceError::Uppercase("Busybox".into()));
        assert!(e
            .to_string()
            .starts_with("invalid reference format: repository name must be lowercase"));
        assert_eq!(
            Reference::parse("user/Repo"),
            Err(ReferenceError::Uppercase("user/Repo".into()))
        );
        assert_eq!(
            Reference::parse("localhost:5000/App:v1"),
            Err(ReferenceError::Uppercase("App".into()))
        );
        // Tags may have uppercase letters.
        assert_eq!(norm("busybox:V1"), "docker.io/library/busybox:V1");
    }

    #[test]
    fn invalid_names() {
        for bad in [
            "",
            ":tag",
            "/busybox",
            "busybox/",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "a._b",
            "a b",
            "a/.b",
            "example.com/",
            "exa_mple.com/a",
            "-example.com/a",
            "example.com:/a",
            "example.com:port/a",
            "[zz]/a",
            "[::1/a",
            "@sha256:abc",
        ] {
            let r = Reference::parse(bad);
            assert!(r.is_err(), "{bad:?} accepted as {}", r.unwrap());
            let msg = r.unwrap_err().to_string();
            assert!(!msg.contains('\n'), "one-line error: {msg}");
        }
        // Separators Docker accepts.
        for good in ["a.b", "a_b", "a__b", "a-b", "a---b", "a0/b-c_d.e__f"] {
            assert!(Reference::parse(good).is_ok(), "{good:?} refused");
        }
        assert_eq!(
            Reference::parse(HEX),
            Err(ReferenceError::HexName(HEX.into()))
        );
        let long = format!("example.com/{}", "a".repeat(250));
        assert!(matches!(
            Reference::parse(&long),
            Err(ReferenceError::NameTooLong(262))
        ));
        assert!(Reference::parse(&format!("example.com/{}", "a".repeat(243))).is_ok());
    }

    #[test]
    fn named_without_default_tag() {
        let r = Reference::parse_named("busybox").unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), "docker.io/library/busybox");
        assert_eq!(r.manifest_ref(), "latest");
        let t = r.with_tag("1.0").unwrap();
        assert_eq!(t.familiar(), "busybox:1.0");
        assert!(r.with_tag("bad/tag").is_err());
        let d = r.with_digest(Digest::of(b""));
        assert_eq!(d.familiar(), format!("busybox@sha256:{HEX}"));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "busybox",
            "user/repo:t",
            "127.0.0.1:5000/a/b:t",
            &format!("localhost/x:y@sha256:{HEX}"),
            "[::1]:5000/app",
        ] {
            let r = Reference::parse(s).unwrap();
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
            assert_eq!(Reference::parse(&r.familiar()).unwrap(), r);
            let j = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Reference>(&j).unwrap(), r);
        }
    }

    #[test]
    fn registry_names_for_login() {
        for hub in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
            "Docker.IO",
        ] {
            assert_eq!(normalize_registry(hub).unwrap(), "docker.io", "{hub}");
        }
        assert_eq!(
            normalize_registry("https://reg.example:5000/v2/").unwrap(),
            "reg.example:5000"
        );
        assert_eq!(
            normalize_registry("127.0.0.1:5000").unwrap(),
            "127.0.0.1:5000"
        );
        assert!(normalize_registry("").is_err());
        assert!(normalize_registry("bad host").is_err());
        assert_eq!(registry_endpoint("docker.io"), "registry-1.docker.io");
        assert_eq!(registry_endpoint("quay.io"), "quay.io");
    }
}
