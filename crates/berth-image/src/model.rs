//! The image model: media types, manifests and indexes of both families
//! (OCI and Docker schema 2) in one form, platforms, chain ids.
//!
//! Documents are parsed with `oci_spec::image` types ([`ImageIndex`],
//! [`ImageManifest`], [`ImageConfiguration`]): Docker schema 2 manifests and
//! manifest lists have the same JSON shape, only their media types differ.
//! What is checked here, before anything is fetched or stored on the
//! strength of a document:
//!
//! - the document's own `mediaType` agrees with the Content-Type it came
//!   with (when both are there and the Content-Type is specific);
//! - it is an index or an image manifest (schema 1 and artifacts are
//!   refused with a clear error);
//! - every digest is sha256 ([`Digest`]), every layer has a known media type;
//! - [`check_config`]: the config's `rootfs.diff_ids` has one entry per layer.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};

/// Media type names, OCI and Docker.
pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_ND: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    pub const OCI_LAYER_ND_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const OCI_LAYER_ND_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    pub const OCI_LAYOUT_HEADER: &str = "application/vnd.oci.layout.header.v1+json";

    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// What a registry client sends as `Accept` for a manifest.
    pub const MANIFEST_ACCEPT: &[&str] = &[
        OCI_INDEX,
        DOCKER_MANIFEST_LIST,
        OCI_MANIFEST,
        DOCKER_MANIFEST,
    ];
}

/// Upper bound for a manifest, an index or a config read whole into memory
/// (containerd and the distribution spec use 4 MiB for manifests; configs
/// with long histories stay well under 8 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("manifest says its media type is {declared:?} but was served as {content_type:?}: refusing a document whose type is ambiguous")]
    MediaTypeMismatch {
        declared: String,
        content_type: String,
    },
    #[error("Docker schema 1 manifests ({0}) are not supported: the image must be pushed again with a current Docker or tool")]
    Schema1(String),
    #[error("unsupported manifest media type {0:?}: expected an OCI or Docker schema 2 image manifest or index")]
    UnknownManifestType(String),
    #[error("cannot tell what this document is: it has no mediaType and neither \"manifests\" nor \"config\" and \"layers\"")]
    UnknownDocument,
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("layer {digest} has unknown media type {media_type:?}: berth unpacks tar, tar+gzip and tar+zstd layers")]
    UnknownLayerType { digest: String, media_type: String },
    #[error("config {digest} has media type {media_type:?}: this is not a container image (an artifact?)")]
    NotAnImage { digest: String, media_type: String },
    #[error("unsupported digest {0:?}: berth verifies sha256 only")]
    Digest(String),
    #[error(
        "invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
    )]
    Platform(String),
    #[error("no image for platform {wanted} (available: {available}); choose one with --platform")]
    NoPlatform { wanted: String, available: String },
    #[error("image config lists {diff_ids} layer diff ids but the manifest has {layers} layers")]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("image config rootfs type is {0:?}, expected \"layers\"")]
    RootfsType(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer of media type `media_type`; an unknown
    /// type is an error (we would not know how to unpack it).
    pub fn of_media_type(media_type: &str) -> Option<Self> {
        use media::*;
        match media_type {
            OCI_LAYER | OCI_LAYER_ND | DOCKER_LAYER => Some(Self::None),
            OCI_LAYER_GZIP | OCI_LAYER_ND_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP => {
                Some(Self::Gzip)
            }
            OCI_LAYER_ZSTD | OCI_LAYER_ND_ZSTD | DOCKER_LAYER_ZSTD => Some(Self::Zstd),
            _ => None,
        }
    }

    /// Sniff the compression from a blob's first bytes (archives, whose
    /// layer files carry no media type). Anything not gzip or zstd is taken
    /// as a plain tar.
    pub fn detect(magic: &[u8]) -> Self {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::None => media::OCI_LAYER,
            Self::Gzip => media::OCI_LAYER_GZIP,
            Self::Zstd => media::OCI_LAYER_ZSTD,
        }
    }
}

/// Which family a document belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Oci,
    Docker,
}

/// A content reference: what a descriptor points at, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A layer of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub compression: Compression,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The effective media type (declared, or from the Content-Type).
    pub media_type: String,
    pub family: Family,
    pub config: BlobRef,
    pub layers: Vec<Layer>,
    /// The parsed document, for annotations and anything else.
    pub inner: ImageManifest,
}

/// One entry of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub blob: BlobRef,
    pub platform: Option<Platform>,
    pub annotations: HashMap<String, String>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub media_type: String,
    pub family: Family,
    pub manifests: Vec<IndexEntry>,
    pub inner: ImageIndex,
}

/// What a manifest request (or an archive's `index.json` entry) yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Index(Box<Index>),
    Manifest(Box<Manifest>),
}

/// Media type of a Content-Type header value, or None for the generic
/// ones that say nothing about the document.
fn specific_content_type(ct: &str) -> Option<String> {
    let base = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match base.as_str() {
        "" | "application/json" | "application/octet-stream" | "text/plain" => None,
        _ => Some(base),
    }
}

fn is_index_type(mt: &str) -> bool {
    mt == media::OCI_INDEX || mt == media::DOCKER_MANIFEST_LIST
}

fn is_manifest_type(mt: &str) -> bool {
    mt == media::OCI_MANIFEST || mt == media::DOCKER_MANIFEST
}

fn family_of(mt: &str) -> Family {
    if mt.starts_with("application/vnd.docker.") {
        Family::Docker
    } else {
        Family::Oci
    }
}

/// Parse a manifest or index. `content_type` is the HTTP Content-Type it was
/// served with, if any (archives and the store have none).
pub fn parse_document(bytes: &[u8], content_type: Option<&str>) -> Result<Document> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<serde_json::Value>,
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
        layers: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| ModelError::Invalid {
        what: "manifest JSON",
        reason: e.to_string(),
    })?;
    let ct = content_type.and_then(specific_content_type);
    if let (Some(declared), Some(ct)) = (&probe.media_type, &ct) {
        if declared != ct {
            return Err(ModelError::MediaTypeMismatch {
                declared: declared.clone(),
                content_type: ct.clone(),
            });
        }
    }
    if probe.schema_version.as_ref().and_then(|v| v.as_u64()) == Some(1) {
        return Err(ModelError::Schema1(
            probe
                .media_type
                .clone()
                .unwrap_or_else(|| media::DOCKER_SCHEMA1.into()),
        ));
    }
    let effective = match probe.media_type.clone().or(ct) {
        Some(mt) => mt,
        // OCI allows documents without mediaType: go by their shape.
        None if probe.manifests.is_some() && probe.config.is_none() => media::OCI_INDEX.into(),
        None if probe.config.is_some() && probe.layers.is_some() => media::OCI_MANIFEST.into(),
        None => return Err(ModelError::UnknownDocument),
    };
    if effective == media::DOCKER_SCHEMA1 || effective == media::DOCKER_SCHEMA1_SIGNED {
        return Err(ModelError::Schema1(effective));
    }
    if is_index_type(&effective) {
        if probe.manifests.is_none() {
            return Err(ModelError::Invalid {
                what: "index",
                reason: format!("media type {effective} but no \"manifests\""),
            });
        }
        parse_index(bytes, effective).map(|i| Document::Index(Box::new(i)))
    } else if is_manifest_type(&effective) {
        if probe.manifests.is_some() {
            return Err(ModelError::Invalid {
                what: "manifest",
                reason: format!("media type {effective} but it has \"manifests\", like an index"),
            });
        }
        parse_manifest_as(bytes, effective).map(|m| Document::Manifest(Box::new(m)))
    } else {
        Err(ModelError::UnknownManifestType(effective))
    }
}

/// Parse a document that must be an image manifest.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest> {
    match parse_document(bytes, content_type)? {
        Document::Manifest(m) => Ok(*m),
        Document::Index(i) => Err(ModelError::Invalid {
            what: "manifest",
            reason: format!(
                "expected an image manifest, got an index ({})",
                i.media_type
            ),
        }),
    }
}

fn blob_ref(d: &Descriptor) -> Result<BlobRef> {
    let s = d.digest().to_string();
    let digest = Digest::from_str(&s).map_err(|_| ModelError::Digest(s))?;
    Ok(BlobRef {
        digest,
        size: d.size(),
        media_type: d.media_type().to_string(),
    })
}

fn parse_index(bytes: &[u8], media_type: String) -> Result<Index> {
    let inner: ImageIndex = serde_json::from_slice(bytes).map_err(|e| ModelError::Invalid {
        what: "index",
        reason: e.to_string(),
    })?;
    let mut manifests = Vec::with_capacity(inner.manifests().len());
    for d in inner.manifests() {
        let platform = d.platform().as_ref().map(|p| {
            Platform::new(
                &p.os().to_string(),
                &p.architecture().to_string(),
                p.variant().as_deref(),
            )
        });
        manifests.push(IndexEntry {
            blob: blob_ref(d)?,
            platform,
            annotations: d.annotations().clone().unwrap_or_default(),
        });
    }
    Ok(Index {
        family: family_of(&media_type),
        media_type,
        manifests,
        inner,
    })
}

fn parse_manifest_as(bytes: &[u8], media_type: String) -> Result<Manifest> {
    let inner: ImageManifest = serde_json::from_slice(bytes).map_err(|e| ModelError::Invalid {
        what: "manifest",
        reason: e.to_string(),
    })?;
    let config = blob_ref(inner.config())?;
    if config.media_type != media::OCI_CONFIG && config.media_type != media::DOCKER_CONFIG {
        return Err(ModelError::NotAnImage {
            digest: config.digest.to_string(),
            media_type: config.media_type,
        });
    }
    let mut layers = Vec::with_capacity(inner.layers().len());
    for d in inner.layers() {
        let b = blob_ref(d)?;
        let compression = Compression::of_media_type(&b.media_type).ok_or_else(|| {
            ModelError::UnknownLayerType {
                digest: b.digest.to_string(),
                media_type: b.media_type.clone(),
            }
        })?;
        layers.push(Layer {
            digest: b.digest,
            size: b.size,
            media_type: b.media_type,
            compression,
        });
    }
    Ok(Manifest {
        family: family_of(&media_type),
        media_type,
        config,
        layers,
        inner,
    })
}

impl Index {
    /// The manifest for `want`, by containerd's rules: an exact match of the
    /// normalized platform first, then the compatible ones in order (arm64
    /// runs arm/v8..v5, amd64/v3 runs v2 and v1), then an entry with no
    /// platform at all.
    pub fn select(&self, want: &Platform) -> Result<&IndexEntry> {
        for candidate in want.compatible() {
            if let Some(e) = self
                .manifests
                .iter()
                .find(|e| e.platform.as_ref() == Some(&candidate))
            {
                return Ok(e);
            }
        }
        if let Some(e) = self.manifests.iter().find(|e| e.platform.is_none()) {
            return Ok(e);
        }
        let mut available: Vec<String> = self
            .manifests
            .iter()
            .filter_map(|e| e.platform.as_ref())
            .filter(|p| p.os != "unknown")
            .map(|p| p.to_string())
            .collect();
        available.dedup();
        Err(ModelError::NoPlatform {
            wanted: want.to_string(),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        })
    }
}

/// An os/arch[/variant] triple in Go's names, normalized as containerd does
/// (so `linux/aarch64`, `linux/arm64` and `linux/arm64/v8` are equal).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// A normalized platform.
    pub fn new(os: &str, arch: &str, variant: Option<&str>) -> Self {
        let os = match os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            o => o.to_string(),
        };
        let arch_l = arch.to_ascii_lowercase();
        let var_l = variant
            .map(str::to_ascii_lowercase)
            .filter(|v| !v.is_empty());
        let (architecture, variant): (&str, Option<String>) = match arch_l.as_str() {
            "i386" | "386" | "x86" => ("386", None),
            "x86_64" | "x86-64" | "amd64" => (
                "amd64",
                // v1 is every amd64: it is the same as saying nothing.
                var_l.filter(|v| v != "v1"),
            ),
            "aarch64" | "arm64" => (
                "arm64",
                Some(match var_l.as_deref() {
                    None | Some("8") | Some("v8") | Some("v8.0") => "v8".to_string(),
                    Some("9") | Some("9.0") | Some("v9.0") => "v9".to_string(),
                    Some(v) => v.to_string(),
                }),
            ),
            "armhf" => ("arm", Some("v7".into())),
            "armel" => ("arm", Some("v6".into())),
            "arm" => (
                "arm",
                Some(match var_l.as_deref() {
                    None | Some("7") => "v7".to_string(),
                    Some(v @ ("5" | "6" | "8")) => format!("v{v}"),
                    Some(v) => v.to_string(),
                }),
            ),
            "powerpc64le" => ("ppc64le", var_l),
            "loongarch64" => ("loong64", var_l),
            other => (other, var_l),
        };
        Self {
            os,
            architecture: architecture.to_string(),
            variant,
        }
    }

    /// The platform this program runs on (Rust's arch names mapped to Go's).
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            other => other,
        };
        Self::new(std::env::consts::OS, arch, None)
    }

    /// The platforms an image for which runs here, best first.
    pub fn compatible(&self) -> Vec<Platform> {
        let mut out = vec![self.clone()];
        let os = self.os.as_str();
        let v = self.variant.as_deref().unwrap_or("");
        let arm = |vs: &[&str]| -> Vec<Platform> {
            vs.iter()
                .map(|v| Platform::new(os, "arm", Some(v)))
                .collect()
        };
        match self.architecture.as_str() {
            "amd64" => {
                let level: u32 = v.trim_start_matches('v').parse().unwrap_or(1);
                for l in (1..level).rev() {
                    out.push(Platform::new(os, "amd64", Some(&format!("v{l}"))));
                }
            }
            "arm64" => out.extend(arm(&["v8", "v7", "v6", "v5"])),
            "arm" => {
                let level: u32 = v.trim_start_matches('v').parse().unwrap_or(7);
                for l in (5..level).rev() {
                    out.push(Platform::new(os, "arm", Some(&format!("v{l}"))));
                }
            }
            _ => {}
        }
        out
    }

    /// This platform, as `oci_spec` wants it for a descriptor.
    pub fn to_oci(&self) -> oci_spec::image::Platform {
        let mut p = oci_spec::image::Platform::default();
        p.set_os(self.os.as_str().into());
        p.set_architecture(self.architecture.as_str().into());
        p.set_variant(self.variant.clone());
        p
    }
}

impl FromStr for Platform {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self::new(os, arch, None)),
            [os, arch, var] if ok(os) && ok(arch) && ok(var) => Ok(Self::new(os, arch, Some(var))),
            _ => Err(ModelError::Platform(s.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Parse an image config (OCI or Docker: the same JSON).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration> {
    serde_json::from_slice(bytes).map_err(|e| ModelError::Invalid {
        what: "image config",
        reason: e.to_string(),
    })
}

/// The platform an image config declares.
pub fn config_platform(config: &ImageConfiguration) -> Platform {
    Platform::new(
        &config.os().to_string(),
        &config.architecture().to_string(),
        config.variant().as_deref(),
    )
}

/// The config's `rootfs.diff_ids`, parsed.
pub fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>> {
    if config.rootfs().typ() != "layers" {
        return Err(ModelError::RootfsType(config.rootfs().typ().clone()));
    }
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|s| Digest::from_str(s).map_err(|_| ModelError::Digest(s.clone())))
        .collect()
}

/// Check that `config` fits `manifest` (one diff id per layer) and return
/// the diff ids.
pub fn check_config(manifest: &Manifest, config: &ImageConfiguration) -> Result<Vec<Digest>> {
    let ids = diff_ids(config)?;
    if ids.len() != manifest.layers.len() {
        return Err(ModelError::LayerCount {
            diff_ids: ids.len(),
            layers: manifest.layers.len(),
        });
    }
    Ok(ids)
}

/// Chain ids of a layer stack: ChainID(L0) = DiffID(L0),
/// ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)). A chain id names a
/// snapshot: the filesystem of layers 0..=n applied in order.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let mut h = Hasher::new();
                h.update(prev.to_string().as_bytes());
                h.update(b" ");
                h.update(d.to_string().as_bytes());
                h.finish()
            }
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn manifest_json(mt: Option<&str>, layer_mt: &str) -> String {
        let mt = mt
            .map(|m| format!("\"mediaType\":\"{m}\","))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"{}","digest":"{}","size":10}},
            "layers":[{{"mediaType":"{layer_mt}","digest":"{}","size":20}}]}}"#,
            media::OCI_CONFIG,
            d('a'),
            d('b')
        )
    }

    #[test]
    fn parses_oci_and_docker_manifests() {
        let m = parse_manifest(
            manifest_json(Some(media::OCI_MANIFEST), media::OCI_LAYER_GZIP).as_bytes(),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(m.family, Family::Oci);
        assert_eq!(m.layers[0].compression, Compression::Gzip);
        assert_eq!(m.config.size, 10);

        let m = parse_manifest(
            manifest_json(Some(media::DOCKER_MANIFEST), media::DOCKER_LAYER_GZIP).as_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(m.family, Family::Docker);
        // No mediaType: the Content-Type decides, or the shape.
        let m = parse_manifest(
            manifest_json(None, media::OCI_LAYER_ZSTD).as_bytes(),
            Some(media::DOCKER_MANIFEST),
        )
        .unwrap();
        assert_eq!(m.media_type, media::DOCKER_MANIFEST);
        assert_eq!(m.layers[0].compression, Compression::Zstd);
        let m = parse_manifest(manifest_json(None, media::OCI_LAYER).as_bytes(), None).unwrap();
        assert_eq!(m.media_type, media::OCI_MANIFEST);
    }

    #[test]
    fn refuses_contradictions_and_unknowns() {
        let e = parse_document(
            manifest_json(Some(media::OCI_MANIFEST), media::OCI_LAYER).as_bytes(),
            Some(media::DOCKER_MANIFEST),
        )
        .unwrap_err();
        assert!(matches!(e, ModelError::MediaTypeMismatch { .. }), "{e}");
        // A generic Content-Type is no contradiction.
        parse_document(
            manifest_json(Some(media::OCI_MANIFEST), media::OCI_LAYER).as_bytes(),
            Some("application/json"),
        )
        .unwrap();
        let e = parse_document(
            manifest_json(Some(media::OCI_MANIFEST), "application/x-foo").as_bytes(),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("application/x-foo"), "{e}");
        assert!(matches!(
            parse_document(br#"{"schemaVersion":1,"fsLayers":[]}"#, None),
            Err(ModelError::Schema1(_))
        ));
        assert!(matches!(
            parse_document(br#"{"schemaVersion":2}"#, None),
            Err(ModelError::UnknownDocument)
        ));
        let artifact = manifest_json(Some(media::OCI_MANIFEST), media::OCI_LAYER).replace(
            media::OCI_CONFIG,
            "application/vnd.cncf.helm.config.v1+json",
        );
        assert!(matches!(
            parse_document(artifact.as_bytes(), None),
            Err(ModelError::NotAnImage { .. })
        ));
        let md5 = manifest_json(Some(media::OCI_MANIFEST), media::OCI_LAYER)
            .replace(&d('b'), &format!("sha512:{}", "c".repeat(128)));
        assert!(parse_document(md5.as_bytes(), None).is_err());
    }

    fn index_json() -> String {
        let entry = |c: char, plat: &str| {
            format!(
                r#"{{"mediaType":"{}","digest":"{}","size":5,"platform":{plat}}}"#,
                media::DOCKER_MANIFEST,
                d(c)
            )
        };
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{},{},{},{},{}]}}"#,
            media::DOCKER_MANIFEST_LIST,
            entry('1', r#"{"os":"linux","architecture":"amd64"}"#),
            entry(
                '2',
                r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#
            ),
            entry('3', r#"{"os":"linux","architecture":"arm","variant":"v6"}"#),
            entry('4', r#"{"os":"unknown","architecture":"unknown"}"#),
            entry('5', r#"{"os":"windows","architecture":"amd64"}"#),
        )
    }

    #[test]
    fn platform_selection() {
        let Document::Index(idx) = parse_document(index_json().as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(idx.family, Family::Docker);
        let pick = |p: &str| {
            idx.select(&p.parse().unwrap())
                .map(|e| e.blob.digest.to_string())
        };
        assert_eq!(pick("linux/amd64").unwrap(), d('1'));
        assert_eq!(pick("linux/x86_64").unwrap(), d('1'));
        assert_eq!(pick("linux/amd64/v3").unwrap(), d('1'));
        assert_eq!(pick("linux/arm64").unwrap(), d('2'));
        assert_eq!(pick("linux/aarch64/8").unwrap(), d('2'));
        assert_eq!(pick("linux/arm/v7").unwrap(), d('3'));
        assert_eq!(pick("windows/amd64").unwrap(), d('5'));
        let e = pick("linux/s390x").unwrap_err();
        assert!(e.to_string().contains("linux/arm64/v8"), "{e}");
        assert!(!e.to_string().contains("unknown"), "{e}");
        assert!(pick("linux/arm/v5").is_err());
    }

    #[test]
    fn platform_parse_and_host() {
        assert_eq!(
            "linux/arm64".parse::<Platform>().unwrap(),
            "linux/arm64/v8".parse::<Platform>().unwrap()
        );
        assert_eq!(
            "linux/arm64".parse::<Platform>().unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(
            "Linux/AMD64/v1".parse::<Platform>().unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            "linux/arm".parse::<Platform>().unwrap().to_string(),
            "linux/arm/v7"
        );
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v3/x",
            "linux/am d64",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.to_string(), "linux/amd64");
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(h.to_string(), "linux/arm64/v8");
        }
        let oci = h.to_oci();
        assert_eq!(oci.os().to_string(), "linux");
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = Digest::of(b"c");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids[0], a);
        let ab = Digest::of(format!("{a} {b}").as_bytes());
        assert_eq!(ids[1], ab);
        assert_eq!(ids[2], Digest::of(format!("{ab} {c}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn config_layer_count_checked() {
        let m = parse_manifest(
            manifest_json(Some(media::OCI_MANIFEST), media::OCI_LAYER).as_bytes(),
            None,
        )
        .unwrap();
        let cfg = |ids: &[String]| {
            parse_config(
                format!(
                    r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":{}}}}}"#,
                    serde_json::to_string(ids).unwrap()
                )
                .as_bytes(),
            )
            .unwrap()
        };
        assert_eq!(check_config(&m, &cfg(&[d('c')])).unwrap().len(), 1);
        assert_eq!(
            check_config(&m, &cfg(&[d('c'), d('d')])),
            Err(ModelError::LayerCount {
                diff_ids: 2,
                layers: 1
            })
        );
        let c = cfg(&[d('c')]);
        assert_eq!(config_platform(&c).to_string(), "linux/amd64");
    }

    #[test]
    fn compression_detection() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"bin/"), Compression::None);
        assert_eq!(
            Compression::of_media_type(media::DOCKER_LAYER),
            Some(Compression::None)
        );
        assert_eq!(Compression::of_media_type("text/plain"), None);
    }
}
