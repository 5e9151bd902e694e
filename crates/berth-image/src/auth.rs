//! Registry credentials: `berth login` / `logout`, and their lookup.
//!
//! berth keeps credentials in `$XDG_CONFIG_HOME/berth/auth.json` (default
//! `~/.config/berth/auth.json`), mode 0600, in Docker's format
//! `{"auths":{"host":{"auth":"base64(user:pass)"}}}` so either tool can read
//! the other's. Lookup reads berth's file first, then Docker's
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`): its `auths`
//! entries with `auth` or `username`/`password`; credential helpers
//! (`credsStore`, `credHelpers`) are not run (berth would have to execute
//! arbitrary programs), which is logged.
//!
//! Docker Hub is keyed `https://index.docker.io/v1/` in Docker's files; any
//! of its spellings (`docker.io`, `index.docker.io`, ...) finds that entry.
//!
//! Everything here is synchronous file access: the CLI reads credentials on
//! the client side, as Docker's CLI does, and sends them with the request.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::reference::{normalize_registry, ReferenceError, DOCKER_HUB};

/// Docker Hub's key in Docker's (and berth's) credential files.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// `base64(user:password)`, as in a Basic `Authorization` header and the
    /// `auth` field of the files.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password))
    }

    fn decode(auth: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some(Self::new(u, p))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot find the user's config directory: neither XDG_CONFIG_HOME nor HOME is set")]
    NoConfigDir,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a credentials file ({msg}): fix or remove it", path.display())]
    Parse { path: PathBuf, msg: String },
    #[error(transparent)]
    Registry(#[from] ReferenceError),
    #[error("an empty user name cannot log in: give one with -u USER")]
    EmptyUsername,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `$XDG_CONFIG_HOME/berth/auth.json`, or `~/.config/berth/auth.json`.
pub fn berth_auth_path() -> Result<PathBuf, AuthError> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(x) = nonempty("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("berth/auth.json"));
    }
    nonempty("HOME")
        .map(|h| PathBuf::from(h).join(".config/berth/auth.json"))
        .ok_or(AuthError::NoConfigDir)
}

/// `$DOCKER_CONFIG/config.json`, or `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = nonempty("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    nonempty("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The key `registry` is stored under: Docker's for Docker Hub, the
/// normalized host otherwise.
pub fn file_key(registry: &str) -> Result<String, AuthError> {
    let r = normalize_registry(registry)?;
    Ok(if r == DOCKER_HUB {
        DOCKER_HUB_KEY.to_string()
    } else {
        r
    })
}

/// Stores `creds` for `registry` in berth's file; returns the file's path.
pub fn login(registry: &str, creds: &Credentials) -> Result<PathBuf, AuthError> {
    let path = berth_auth_path()?;
    save_to(&path, registry, creds)?;
    Ok(path)
}

/// Removes `registry`'s credentials from berth's file; false if there were
/// none.
pub fn logout(registry: &str) -> Result<bool, AuthError> {
    remove_from(&berth_auth_path()?, registry)
}

/// The credentials for `registry`: berth's file, then Docker's.
pub fn lookup(registry: &str) -> Result<Option<Credentials>, AuthError> {
    let mut paths = Vec::new();
    if let Ok(p) = berth_auth_path() {
        paths.push(p);
    }
    if let Some(p) = docker_config_path() {
        paths.push(p);
    }
    lookup_in(&paths, registry)
}

/// The first entry for `registry` in `paths` (missing files are skipped).
pub fn lookup_in(paths: &[PathBuf], registry: &str) -> Result<Option<Credentials>, AuthError> {
    let want = normalize_registry(registry)?;
    for path in paths {
        let Some(doc) = read(path)? else { continue };
        for helper in ["credsStore", "credHelpers"] {
            if doc.get(helper).is_some() {
                tracing::info!(
                    path = %path.display(),
                    "{helper} is set: berth does not run credential helpers; \
                     use `berth login` for registries stored there"
                );
            }
        }
        let Some(auths) = doc.get("auths").and_then(Value::as_object) else {
            continue;
        };
        for (key, entry) in auths {
            if normalize_registry(key).ok().as_deref() != Some(want.as_str()) {
                continue;
            }
            if let Some(c) = entry_credentials(entry) {
                return Ok(Some(c));
            }
            tracing::info!(path = %path.display(), key, "entry without auth or username/password skipped");
        }
    }
    Ok(None)
}

fn entry_credentials(entry: &Value) -> Option<Credentials> {
    let field = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(auth) = field("auth") {
        return Credentials::decode(auth);
    }
    match (field("username"), field("password")) {
        (Some(u), Some(p)) => Some(Credentials::new(u, p)),
        _ => None,
    }
}

/// Adds or replaces `registry`'s entry in the file at `path`, keeping the
/// rest of the file; written atomically with mode 0600.
pub fn save_to(path: &Path, registry: &str, creds: &Credentials) -> Result<(), AuthError> {
    if creds.username.is_empty() {
        return Err(AuthError::EmptyUsername);
    }
    let key = file_key(registry)?;
    let want = normalize_registry(registry)?;
    let mut doc = read(path)?.unwrap_or_default();
    let auths = auths_mut(&mut doc, path)?;
    // Drop other spellings of the same registry so lookup is unambiguous.
    auths.retain(|k, _| normalize_registry(k).ok().as_deref() != Some(want.as_str()));
    let mut entry = Map::new();
    entry.insert("auth".into(), Value::String(creds.encode()));
    auths.insert(key, Value::Object(entry));
    write(path, &doc)
}

/// Removes `registry`'s entries from the file at `path`; false if none.
pub fn remove_from(path: &Path, registry: &str) -> Result<bool, AuthError> {
    let want = normalize_registry(registry)?;
    let Some(mut doc) = read(path)? else {
        return Ok(false);
    };
    let auths = auths_mut(&mut doc, path)?;
    let before = auths.len();
    auths.retain(|k, _| normalize_registry(k).ok().as_deref() != Some(want.as_str()));
    if auths.len() == before {
        return Ok(false);
    }
    write(path, &doc)?;
    Ok(true)
}

/// The registries with credentials in the file at `path`, normalized.
pub fn registries_in(path: &Path) -> Result<Vec<String>, AuthError> {
    let Some(doc) = read(path)? else {
        return Ok(Vec::new());
    };
    let mut out: BTreeMap<String, ()> = BTreeMap::new();
    if let Some(auths) = doc.get("auths").and_then(Value::as_object) {
        for k in auths.keys() {
            if let Ok(r) = normalize_registry(k) {
                out.insert(r, ());
            }
        }
    }
    Ok(out.into_keys().collect())
}

fn auths_mut<'a>(
    doc: &'a mut Map<String, Value>,
    path: &Path,
) -> Result<&'a mut Map<String, Value>, AuthError> {
    doc.entry("auths")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| AuthError::Parse {
            path: path.to_path_buf(),
            msg: "\"auths\" is not an object".into(),
        })
}

fn read(path: &Path) -> Result<Option<Map<String, Value>>, AuthError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(AuthError::Parse {
            path: path.to_path_buf(),
            msg: "not a JSON object".into(),
        }),
        Err(e) => Err(AuthError::Parse {
            path: path.to_path_buf(),
            msg: e.to_string(),
        }),
    }
}

/// Temp file of mode 0600 beside `path`, fsync, rename: a reader sees the
/// old or the new file, never a torn one, and never a readable secret.
fn write(path: &Path, doc: &Map<String, Value>) -> Result<(), AuthError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| AuthError::Parse {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    bytes.push(b'\n');
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("auth.json"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode given to open() only applies to a new file.
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn login_lookup_logout() {
        let d = tempdir("cycle");
        let f = d.join("cfg/berth/auth.json");
        let c = Credentials::new("alice", "s3cr:et");
        save_to(&f, "127.0.0.1:5000", &c).unwrap();
        save_to(&f, "docker.io", &Credentials::new("bob", "pw")).unwrap();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let doc: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(
            doc["auths"]["127.0.0.1:5000"]["auth"],
            base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et")
        );
        assert!(doc["auths"][DOCKER_HUB_KEY]["auth"].is_string());
        let paths = [f.clone()];
        assert_eq!(
            lookup_in(&paths, "127.0.0.1:5000").unwrap(),
            Some(c.clone())
        );
        assert_eq!(
            lookup_in(&paths, "index.docker.io")
                .unwrap()
                .unwrap()
                .username,
            "bob"
        );
        assert_eq!(lookup_in(&paths, "quay.io").unwrap(), None);
        assert_eq!(
            registries_in(&f).unwrap(),
            vec!["127.0.0.1:5000".to_string(), "docker.io".to_string()]
        );
        // Replacing keeps one entry per registry.
        save_to(
            &f,
            "https://127.0.0.1:5000/v2/",
            &Credentials::new("carol", "x"),
        )
        .unwrap();
        assert_eq!(
            lookup_in(&paths, "127.0.0.1:5000")
                .unwrap()
                .unwrap()
                .username,
            "carol"
        );
        assert!(remove_from(&f, "127.0.0.1:5000").unwrap());
        assert!(!remove_from(&f, "127.0.0.1:5000").unwrap());
        assert_eq!(lookup_in(&paths, "127.0.0.1:5000").unwrap(), None);
        assert!(remove_from(&f, "docker.io").unwrap());
        assert!(!remove_from(&d.join("missing.json"), "docker.io").unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reads_dockers_file() {
        let d = tempdir("docker");
        let f = d.join("config.json");
        std::fs::write(
            &f,
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
                "reg.example:5000":{"username":"u2","password":"p2"},
                "helper.example":{}
              },
              "credsStore":"desktop","other":1}"#,
        )
        .unwrap();
        let paths = [d.join("absent.json"), f.clone()];
        assert_eq!(
            lookup_in(&paths, "docker.io").unwrap(),
            Some(Credentials::new("user", "pass"))
        );
        assert_eq!(
            lookup_in(&paths, "reg.example:5000").unwrap(),
            Some(Credentials::new("u2", "p2"))
        );
        assert_eq!(lookup_in(&paths, "helper.example").unwrap(), None);
        // Saving keeps what berth does not know about.
        save_to(&f, "x.example", &Credentials::new("a", "b")).unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(doc["other"], 1);
        assert_eq!(doc["credsStore"], "desktop");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_input() {
        let d = tempdir("bad");
        let f = d.join("auth.json");
        std::fs::write(&f, "not json").unwrap();
        let e = lookup_in(std::slice::from_ref(&f), "docker.io").unwrap_err();
        assert!(e.to_string().contains("not a credentials file"), "{e}");
        assert!(matches!(
            save_to(&d.join("a.json"), "docker.io", &Credentials::new("", "x")),
            Err(AuthError::EmptyUsername)
        ));
        assert!(matches!(
            save_to(&d.join("a.json"), "bad host", &Credentials::new("u", "x")),
            Err(AuthError::Registry(_))
        ));
        assert!(format!("{:?}", Credentials::new("u", "hunter2")).contains("redacted"));
        assert!(!format!("{:?}", Credentials::new("u", "hunter2")).contains("hunter2"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
