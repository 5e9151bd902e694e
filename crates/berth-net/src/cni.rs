//! The CNI driver (CNI spec 1.0): a network is a conflist of plugins, each
//! run as an executable from the plugin directory with its config on stdin
//! and `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_PATH` in the environment. ADD runs the plugins in order, each given
//! the previous one's result (`prevResult`); DEL runs them in reverse with
//! the result ADD returned; CHECK in order with it.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{debug, warn};

/// `flock(2)` on `file`'s open file description.
fn flock(file: &std::fs::File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor `file` owns for the whole call.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The version of the spec berth speaks to the plugins.
pub const CNI_VERSION: &str = "1.0.0";

/// Where Debian's containernetworking-plugins live.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";

/// How long one plugin may run (it takes iptables' lock, which another
/// engine may hold for a while).
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("the CNI plugin {plugin:?} is not in {dir}: install containernetworking-plugins (scripts/setup.sh), or set cni-plugin-dir in berthd's config")]
    Missing { plugin: String, dir: PathBuf },
    #[error("CNI plugin {plugin} ({command}) failed: {msg}")]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u32,
        msg: String,
    },
    #[error("CNI plugin {plugin} ({command}) did not finish within {secs}s")]
    Timeout {
        plugin: String,
        command: &'static str,
        secs: u64,
    },
    #[error("cannot run CNI plugin {plugin}: {source}")]
    Io {
        plugin: String,
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} returned an unreadable result: {why}")]
    BadResult { plugin: String, why: String },
    #[error("bad network config: {0}")]
    Config(String),
    /// berth's own wiring (netlink, addresses) failed.
    #[error("{0}")]
    Net(String),
}

/// One interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The namespace path for an interface inside the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// One address of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The index of its interface in `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// `ADDR/PREFIX`.
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gw: String,
}

/// What ADD returns (the parts berth uses; the whole is kept as JSON for
/// DEL and CHECK).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

impl CniResult {
    /// The interface inside the container (the one with a sandbox).
    pub fn container_interface(&self) -> Option<&Interface> {
        self.interfaces.iter().find(|i| !i.sandbox.is_empty())
    }

    /// The container's first address (without its prefix) and gateway.
    pub fn address(&self) -> Option<(String, u8, String)> {
        let ip = self.ips.first()?;
        let (a, p) = ip.address.split_once('/')?;
        Some((a.to_string(), p.parse().ok()?, ip.gateway.clone()))
    }
}

/// The error object a failing plugin prints.
#[derive(Debug, Deserialize)]
struct ErrorObject {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Who a plugin acts for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// The runtime's capability arguments (`portMappings`, `ips`, `mac`,
    /// ...): given in `runtimeConfig` to the plugins that declare them.
    #[serde(default)]
    pub capabilities: Map<String, Value>,
}

/// A network config list: `{cniVersion, name, plugins: [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfList(pub Value);

impl ConfList {
    /// Whether the list has no plugin (berth wires the bridge itself and
    /// nothing else is asked for).
    pub fn is_empty(&self) -> bool {
        self.0
            .get("plugins")
            .and_then(Value::as_array)
            .is_none_or(|p| p.is_empty())
    }

    pub fn name(&self) -> &str {
        self.0.get("name").and_then(Value::as_str).unwrap_or("")
    }

    fn plugins(&self) -> Result<&Vec<Value>, CniError> {
        self.0
            .get("plugins")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| CniError::Config("the conflist has no plugins".into()))
    }

    /// One plugin's stdin: its config with the list's version and name,
    /// the capability arguments it asks for, and the previous result.
    fn plugin_conf(
        &self,
        plugin: &Value,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<(String, Value), CniError> {
        let mut conf = plugin
            .as_object()
            .cloned()
            .ok_or_else(|| CniError::Config("a plugin entry is not an object".into()))?;
        let ty = conf
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && !t.contains('/'))
            .ok_or_else(|| CniError::Config("a plugin has no valid type".into()))?
            .to_string();
        conf.insert("cniVersion".into(), CNI_VERSION.into());
        conf.insert("name".into(), self.name().into());
        let wanted: Vec<String> = conf
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|c| {
                c.iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let runtime: Map<String, Value> = rt
            .capabilities
            .iter()
            .filter(|(k, _)| wanted.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        Ok((ty, Value::Object(conf)))
    }
}

/// Runs plugins from one directory.
#[derive(Debug, Clone)]
pub struct Cni {
    plugin_dir: PathBuf,
    timeout: Duration,
    /// The file each running plugin holds a shared lock on (`with_lock`).
    lock: Option<PathBuf>,
}

impl Cni {
    pub fn new(plugin_dir: impl Into<PathBuf>) -> Cni {
        Cni {
            plugin_dir: plugin_dir.into(),
            timeout: PLUGIN_TIMEOUT,
            lock: None,
        }
    }

    /// Every plugin this runs holds a shared `flock` on `path` for as long
    /// as it runs, on an open file of its own that outlives its parent.
    ///
    /// Why: a plugin keeps running when berthd is SIGKILLed. A `portmap`
    /// ADD that was under way then finishes after the next berthd's
    /// reconcile has DELed its container, and leaves a DNAT chain that no
    /// container owns; a DEL that succeeds before the late ADD is no
    /// retry's cue. [`Cni::wait_for_orphans`] lets the next berthd wait
    /// for them before it reconciles.
    pub fn with_lock(mut self, path: impl Into<PathBuf>) -> Cni {
        self.lock = Some(path.into());
        self
    }

    /// Waits up to `timeout` for the plugins that an earlier berthd
    /// started and did not see finish (see [`Cni::with_lock`]): whether
    /// none runs now. Called once at start, before the reconcile.
    pub fn wait_for_orphans(&self, timeout: Duration) -> bool {
        let Some(file) = self.open_lock() else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        loop {
            match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
                // Closing the file (the return) lets the lock go.
                Ok(()) => return true,
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    warn!(error = %e, "cannot lock the CNI plugins' lock file");
                    return true;
                }
            }
        }
    }

    fn open_lock(&self) -> Option<std::fs::File> {
        let path = self.lock.as_ref()?;
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => Some(f),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot open the CNI plugins' lock file");
                None
            }
        }
    }

    /// A share-locked open file of the lock for `cmd`'s child, which
    /// inherits it; the caller drops its copy once the child runs (the
    /// lock stays while any copy of that open file is open).
    fn hold_lock(&self, cmd: &mut Command) -> Option<std::fs::File> {
        let file = self.open_lock()?;
        if let Err(e) = flock(&file, libc::LOCK_SH) {
            warn!(error = %e, "cannot lock the CNI plugins' lock file");
            return None;
        }
        let fd = file.as_raw_fd();
        // SAFETY: runs between fork and exec and calls only fcntl, which is
        // async-signal-safe and allocates nothing, on the child's copy of a
        // descriptor the parent keeps open until the spawn returns; clearing
        // its close-on-exec flag lets that copy live on in the plugin.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Some(file)
    }

    pub fn plugin_dir(&self) -> &Path {
        &self.plugin_dir
    }

    /// Whether every plugin of `list` is installed (checked before
    /// anything is made, so a missing one is a clear error).
    pub fn check_installed(&self, list: &ConfList) -> Result<(), CniError> {
        if list.is_empty() {
            return Ok(());
        }
        for p in list.plugins()? {
            let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
            if !self.plugin_dir.join(ty).is_file() {
                return Err(CniError::Missing {
                    plugin: ty.to_string(),
                    dir: self.plugin_dir.clone(),
                });
            }
        }
        Ok(())
    }

    /// ADD: attaches the container; the result is the last plugin's.
    pub fn add(&self, list: &ConfList, rt: &RuntimeConf) -> Result<Value, CniError> {
        self.add_after(list, rt, None)
    }

    /// ADD after an attachment made elsewhere (berth's own wiring of the
    /// bridge): `prev` is given to the first plugin as its `prevResult`.
    pub fn add_after(
        &self,
        list: &ConfList,
        rt: &RuntimeConf,
        prev: Option<Value>,
    ) -> Result<Value, CniError> {
        self.check_installed(list)?;
        let mut prev = prev;
        for p in list.plugins()? {
            let (ty, conf) = list.plugin_conf(p, rt, prev.as_ref())?;
            let out = self.exec(&ty, "ADD", &conf, rt)?;
            let v: Value = serde_json::from_slice(&out).map_err(|e| CniError::BadResult {
                plugin: ty.clone(),
                why: e.to_string(),
            })?;
            prev = Some(v);
        }
        prev.ok_or_else(|| CniError::Config("the conflist has no plugins".into()))
    }

    /// DEL: detaches the container, the plugins in reverse order, each
    /// given `prev` (ADD's result, if it got that far). Every plugin runs
    /// even if one fails (so what the others made still goes); the first
    /// error is returned.
    pub fn del(
        &self,
        list: &ConfList,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first = None;
        for p in list.plugins()?.iter().rev() {
            let res = list
                .plugin_conf(p, rt, prev)
                .and_then(|(ty, conf)| self.exec(&ty, "DEL", &conf, rt).map(drop));
            if let Err(e) = res {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// CHECK: whether the attachment is still as ADD made it.
    pub fn check(&self, list: &ConfList, rt: &RuntimeConf, prev: &Value) -> Result<(), CniError> {
        for p in list.plugins()? {
            let (ty, conf) = list.plugin_conf(p, rt, Some(prev))?;
            self.exec(&ty, "CHECK", &conf, rt)?;
        }
        Ok(())
    }

    fn exec(
        &self,
        plugin: &str,
        command: &'static str,
        conf: &Value,
        rt: &RuntimeConf,
    ) -> Result<Vec<u8>, CniError> {
        let io = |source| CniError::Io {
            plugin: plugin.to_string(),
            source,
        };
        let bin = self.plugin_dir.join(plugin);
        if !bin.is_file() {
            return Err(CniError::Missing {
                plugin: plugin.to_string(),
                dir: self.plugin_dir.clone(),
            });
        }
        let input = serde_json::to_vec(conf).map_err(|e| CniError::Config(e.to_string()))?;
        let started = Instant::now();
        // The environment stays: the plugins run iptables from PATH.
        let mut cmd = Command::new(&bin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &rt.container_id)
            .env("CNI_NETNS", &rt.netns)
            .env("CNI_IFNAME", &rt.ifname)
            .env("CNI_PATH", &self.plugin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let lock = self.hold_lock(&mut cmd);
        let mut child = cmd.spawn().map_err(io)?;
        drop(lock);
        let mut stdin = child.stdin.take();
        let writer = std::thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&input);
            }
        });
        let mut stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut buf);
            }
            buf
        });
        let mut stderr = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut buf);
            }
            buf
        });
        let deadline = started + self.timeout;
        let mut pause = Duration::from_micros(200);
        let status = loop {
            if let Some(st) = child.try_wait().map_err(io)? {
                break st;
            }
            if Instant::now() >= deadline {
                // The child is ours and not yet reaped: its pid is ours.
                let _ = child.kill();
                let _ = child.wait();
                return Err(CniError::Timeout {
                    plugin: plugin.to_string(),
                    command,
                    secs: self.timeout.as_secs(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        };
        let _ = writer.join();
        let out = reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        debug!(
            plugin,
            command,
            container = %rt.container_id,
            ms = started.elapsed().as_millis() as u64,
            "CNI plugin ran"
        );
        if status.success() {
            return Ok(out);
        }
        let msg = match serde_json::from_slice::<ErrorObject>(&out) {
            Ok(e) => {
                let mut m = e.msg;
                if !e.details.is_empty() {
                    m.push_str(": ");
                    m.push_str(&e.details);
                }
                return Err(CniError::Plugin {
                    plugin: plugin.to_string(),
                    command,
                    code: e.code,
                    msg: m,
                });
            }
            Err(_) => {
                let text = String::from_utf8_lossy(if err.is_empty() { &out } else { &err });
                format!("{} ({status})", text.trim())
            }
        };
        Err(CniError::Plugin {
            plugin: plugin.to_string(),
            command,
            code: 0,
            msg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_lock_stays_while_a_child_runs_and_goes_with_it() {
        let tmp = berth_testkit::TempDir::new("berth-cni-lock");
        let cni = Cni::new("/nonexistent").with_lock(tmp.path().join("plugins.lock"));
        assert!(cni.wait_for_orphans(Duration::ZERO), "no child yet");
        // A child that outlives its parent's copy of the file: the parent
        // side is dropped at once, as exec does.
        let mut cmd = Command::new("sleep");
        cmd.arg("0.3");
        let lock = cni.hold_lock(&mut cmd);
        assert!(lock.is_some());
        let mut child = cmd.spawn().unwrap();
        drop(lock);
        assert!(!cni.wait_for_orphans(Duration::ZERO), "the child holds it");
        assert!(
            cni.wait_for_orphans(Duration::from_secs(10)),
            "its exit frees it"
        );
        child.wait().unwrap();
        // A child spawned without it does not hold it.
        let mut other = Command::new("sleep").arg("0.3").spawn().unwrap();
        assert!(cni.wait_for_orphans(Duration::ZERO));
        other.wait().unwrap();
    }

    #[test]
    fn plugin_conf_gets_name_version_caps_and_prev() {
        let list = ConfList(json!({
            "cniVersion": "1.0.0",
            "name": "n1",
            "plugins": [
                {"type": "bridge"},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        }));
        let mut rt = RuntimeConf::default();
        rt.capabilities
            .insert("portMappings".into(), json!([{"hostPort": 8080}]));
        rt.capabilities
            .insert("mac".into(), json!("02:00:00:00:00:01"));
        let plugins = list.plugins().unwrap();
        let (ty, c) = list.plugin_conf(&plugins[0], &rt, None).unwrap();
        assert_eq!(ty, "bridge");
        assert_eq!(c["name"], "n1");
        assert_eq!(c["cniVersion"], CNI_VERSION);
        assert!(c.get("runtimeConfig").is_none());
        assert!(c.get("prevResult").is_none());
        let prev = json!({"ips": []});
        let (_, c) = list.plugin_conf(&plugins[1], &rt, Some(&prev)).unwrap();
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(c["runtimeConfig"].get("mac").is_none());
        assert_eq!(c["prevResult"], prev);
    }

    #[test]
    fn bad_types_refused() {
        let list = ConfList(json!({"name": "n", "plugins": [{"type": "../sh"}]}));
        let p = list.plugins().unwrap()[0].clone();
        assert!(list.plugin_conf(&p, &RuntimeConf::default(), None).is_err());
        let empty = ConfList(json!({"name": "n", "plugins": []}));
        assert!(empty.plugins().is_err());
    }

    #[test]
    fn result_parses() {
        let r: CniResult = serde_json::from_value(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "b0", "mac": "aa"}, {"name": "eth0", "mac": "bb", "sandbox": "/x"}],
            "ips": [{"interface": 1, "address": "10.87.0.2/16", "gateway": "10.87.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        }))
        .unwrap();
        assert_eq!(r.container_interface().unwrap().mac, "bb");
        assert_eq!(
            r.address().unwrap(),
            ("10.87.0.2".to_string(), 16, "10.87.0.1".to_string())
        );
    }

    #[test]
    fn missing_plugin_is_clear() {
        let cni = Cni::new("/nonexistent-cni-dir");
        let list = ConfList(json!({"name": "n", "plugins": [{"type": "bridge"}]}));
        let e = cni.add(&list, &RuntimeConf::default()).unwrap_err();
        assert!(e.to_string().contains("containernetworking-plugins"), "{e}");
    }
}
