//! Random-input tests of what berth-image reads from untrusted sources:
//! image references (from the API and the CLI) and tar entries of layers
//! (from registries and archives). A stand-in for fuzzing on a stable
//! toolchain, as in berth-core's `tests/random_input.rs`: a fixed-seed
//! generator biased towards what matters (`..`, `/`, NUL, `@sha256:`, long
//! names, links), reproducible; a few thousand cases by default,
//! `BERTH_FUZZ_SECS=600` runs each target that long.
//!
//! The properties: no panic; errors are one line; an accepted reference
//! parses again from its full name; a layer, whatever its entries, writes
//! nothing outside the directory it is unpacked into.

use std::path::Path;

use berth_image::reference::Reference;
use berth_image::unpack::{unpack_layer, Compression, Whiteouts};
use berth_testkit::{assert_one_line, drive, listing};

#[track_caller]
fn one_line(e: &impl std::fmt::Display) {
    assert_one_line(&e.to_string());
}

const REF_PIECES: &[&str] = &[
    "a",
    "Z",
    "0",
    "9",
    "-",
    "_",
    "__",
    ".",
    "..",
    "/",
    "//",
    ":",
    "@",
    "sha256:",
    "sha512:",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "localhost",
    "localhost:5000",
    "docker.io",
    "library/",
    "busybox",
    "latest",
    "registry-1.docker.io",
    "[::1]",
    ":443",
    "\0",
    "\n",
    " ",
    "é",
    "%",
    "\\",
    "A",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "127.0.0.1",
    "-x",
    "x-",
];

#[test]
fn image_references() {
    drive("image_references", 7, 50_000, |rng| {
        let s = rng.string_of(REF_PIECES, 10);
        type Parse = fn(&str) -> Result<Reference, berth_image::reference::ReferenceError>;
        for parse in [Reference::parse as Parse, Reference::parse_named as Parse] {
            match parse(&s) {
                Ok(r) => {
                    // What is accepted prints as a name that parses back
                    // to the same reference.
                    let full = r.to_string();
                    let again = parse(&full)
                        .unwrap_or_else(|e| panic!("{s:?} -> {full:?} does not parse: {e}"));
                    assert!(again == r, "{s:?} -> {full:?} -> {again}");
                    one_line(&full);
                }
                Err(e) => one_line(&e),
            }
        }
    });
}

const PATH_PIECES: &[&str] = &[
    "a", "b", "etc", "passwd", "/", "//", ".", "..", "../", "/..", ".wh.", ".wh..wh..opq",
    "\0", "é", " ", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "out", "link",
];

/// A ustar header with `path` written raw (tar's builder refuses `..`).
fn raw_header(path: &str, kind: tar::EntryType, link: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    {
        let name = &mut h.as_old_mut().name;
        let b = path.as_bytes();
        let n = b.len().min(name.len());
        name[..n].copy_from_slice(&b[..n]);
    }
    {
        let l = &mut h.as_old_mut().linkname;
        let b = link.as_bytes();
        let n = b.len().min(l.len());
        l[..n].copy_from_slice(&b[..n]);
    }
    h.set_cksum();
    h
}

#[test]
fn layer_entry_paths_stay_inside() {
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("out");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("sentinel"), "keep").unwrap();
    let before = listing(base.path());
    let kinds = [
        tar::EntryType::Regular,
        tar::EntryType::Directory,
        tar::EntryType::Symlink,
        tar::EntryType::Link,
    ];
    let mut n = 0;
    drive("layer_entry_paths", 11, 500, |rng| {
        n += 1;
        let root = base.path().join(format!("root{n}"));
        std::fs::create_dir(&root).unwrap();
        let mut tar = Vec::new();
        let mut entries = Vec::new();
        for _ in 0..rng.below(6) + 1 {
            let kind = *rng.pick(&kinds);
            let path = rng.string_of(PATH_PIECES, 5);
            let link = match rng.below(4) {
                0 => "../out".to_string(),
                1 => outside.display().to_string(),
                2 => "/out/sentinel".to_string(),
                _ => rng.string_of(PATH_PIECES, 4),
            };
            let data: &[u8] = if kind == tar::EntryType::Regular {
                b"payload"
            } else {
                b""
            };
            entries.push(format!("{kind:?} {path:?} -> {link:?}"));
            let h = raw_header(&path, kind, &link, data.len() as u64);
            tar.extend_from_slice(h.as_bytes());
            tar.extend_from_slice(data);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        tar.resize(tar.len() + 1024, 0);
        let w = if rng.pick(&[true, false]) == &true {
            Whiteouts::Overlay
        } else {
            Whiteouts::Apply
        };
        let res = unpack_layer(&tar[..], Compression::None, &root, w);
        if let Err(e) = &res {
            one_line(e);
        }
        // Nothing outside the root changed.
        assert_eq!(
            std::fs::read_to_string(outside.join("sentinel"))
                .ok()
                .as_deref(),
            Some("keep"),
            "{w:?} {entries:#?} -> {:?}",
            res.map(drop)
        );
        let now: Vec<String> = listing(base.path())
            .into_iter()
            .filter(|p| !Path::new(p).starts_with(&root))
            .filter(|p| !p.contains("/root"))
            .collect();
        assert_eq!(now, before, "a layer wrote outside its root");
        std::fs::remove_dir_all(&root).unwrap();
    });
}
