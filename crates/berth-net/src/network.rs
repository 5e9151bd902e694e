//! berth's bridge networks and the attachments of containers to them. A
//! container is wired to its bridge in berthd's process (`bridge`, over
//! netlink, addresses from `ipam`); what it asks beyond that (published
//! ports: CNI's portmap) is a CNI conflist. Each attachment is kept under
//! berth's root before it is made, so that it can always be undone: after a
//! crash, after the container is gone, after the network was changed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::{debug, warn};

use crate::bridge;
use crate::cidr::Cidr;
use crate::cni::{Cni, CniError, CniResult, ConfList, RuntimeConf, CNI_VERSION};
use crate::ipam::Ipam;

/// The name of the default network.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The bridge of the default network.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// The default network's subnet unless berthd's config sets another.
pub const DEFAULT_SUBNET: &str = "10.87.0.0/16";
/// The interface name of a container's first network.
pub const FIRST_IFNAME: &str = "eth0";

/// A bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    /// The host-side Linux bridge.
    pub bridge: String,
    pub subnet: Cidr,
    pub gateway: Ipv4Addr,
    /// No route out and no masquerade: containers reach only each other.
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub created: String,
}

/// One published port, as portmap's `portMappings` capability takes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Empty: every address of the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// What a container asks of one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachOptions {
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// A fixed address (inside the subnet).
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// A fixed MAC address of the container's interface.
    #[serde(default)]
    pub mac: Option<String>,
}

impl Network {
    /// The default network from its subnet.
    pub fn default_bridge(subnet: Cidr) -> Result<Network, CniError> {
        let gateway = subnet.first_host().ok_or_else(|| {
            CniError::Config(format!(
                "the default subnet {subnet} is too small: give a /30 or larger"
            ))
        })?;
        Ok(Network {
            name: DEFAULT_NETWORK.into(),
            id: DEFAULT_NETWORK.into(),
            bridge: DEFAULT_BRIDGE.into(),
            subnet,
            gateway,
            internal: false,
            labels: BTreeMap::new(),
            created: String::new(),
        })
    }

    /// The CNI plugins of one container's attachment beyond berth's own
    /// wiring: portmap for published ports, only when asked (an empty list
    /// otherwise: no plugin process at all).
    pub fn conflist(&self, opts: &AttachOptions) -> ConfList {
        let mut plugins = Vec::new();
        if !opts.ports.is_empty() {
            plugins.push(json!({
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            }));
        }
        ConfList(json!({
            "cniVersion": CNI_VERSION,
            "name": self.name,
            "plugins": plugins,
        }))
    }

    /// The bridge's firewall rules (see `firewall`).
    pub fn rules(&self) -> Vec<crate::firewall::Rule> {
        crate::firewall::bridge_rules(&self.bridge, self.subnet, self.internal)
    }

    /// The capability arguments of `opts` for this network.
    pub fn capabilities(&self, opts: &AttachOptions) -> Map<String, Value> {
        let mut caps = Map::new();
        if !opts.ports.is_empty() {
            caps.insert("portMappings".into(), json!(opts.ports));
        }
        if let Some(ip) = opts.ip {
            caps.insert(
                "ips".into(),
                json!([format!("{ip}/{}", self.subnet.prefix())]),
            );
        }
        if let Some(mac) = &opts.mac {
            caps.insert("mac".into(), json!(mac));
        }
        caps
    }
}

/// A container on a network: everything DEL needs, and ADD's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub network: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub conflist: ConfList,
    #[serde(default)]
    pub capabilities: Map<String, Value>,
    /// The names the container has on the network (its name, aliases).
    #[serde(default)]
    pub names: Vec<String>,
    /// The attachment as a CNI result (the bridge, the host veth, the
    /// container's interface; its address and gateway): written before the
    /// wiring, so it is the address's lease; portmap's `prevResult`.
    #[serde(default)]
    pub result: Option<Value>,
    /// The host-side veth berth made (none for an attachment an older
    /// berth made with the bridge plugin: its DEL takes the veth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veth: Option<String>,
}

impl Attachment {
    fn runtime(&self) -> RuntimeConf {
        RuntimeConf {
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: self.ifname.clone(),
            capabilities: self.capabilities.clone(),
        }
    }

    /// ADD's result, parsed.
    pub fn parsed(&self) -> Option<CniResult> {
        self.result
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// Wires containers to bridges, runs CNI for what else they ask, and keeps
/// the attachments under `<dir>`: `attachments/<container>/<network>.json`.
#[derive(Debug, Clone)]
pub struct Driver {
    cni: Cni,
    dir: PathBuf,
    ipam: Arc<Ipam>,
}

/// The CNI result of berth's wiring of a container.
fn wired_result(net: &Network, a: &Attachment, addr: Ipv4Addr, mac: &str, host: &str) -> Value {
    let mut routes = Vec::new();
    if !net.internal {
        routes.push(json!({"dst": "0.0.0.0/0", "gw": net.gateway.to_string()}));
    }
    json!({
        "cniVersion": CNI_VERSION,
        "interfaces": [
            {"name": net.bridge},
            {"name": host},
            {"name": a.ifname, "mac": mac, "sandbox": a.netns},
        ],
        "ips": [{
            "interface": 2,
            "address": format!("{addr}/{}", net.subnet.prefix()),
            "gateway": net.gateway.to_string(),
        }],
        "routes": routes,
    })
}

fn safe_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

impl Driver {
    /// The driver of the attachments under `dir`; the addresses they hold
    /// are in use from the start.
    pub fn new(cni: Cni, dir: impl Into<PathBuf>) -> Driver {
        let d = Driver {
            cni,
            dir: dir.into(),
            ipam: Arc::new(Ipam::default()),
        };
        for id in d.containers() {
            for a in d.attachments(&id) {
                if let Some((ip, _, _)) = a.parsed().and_then(|r| r.address()) {
                    if let Ok(ip) = ip.parse() {
                        d.ipam.restore(&a.network, &id, ip);
                    }
                }
            }
        }
        d
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    pub fn cni(&self) -> &Cni {
        &self.cni
    }

    /// host-local's `dataDir`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join("attachments").join(id)
    }

    fn record_path(&self, id: &str, network: &str) -> PathBuf {
        self.container_dir(id).join(format!("{network}.json"))
    }

    fn save(&self, a: &Attachment) -> Result<(), CniError> {
        if !safe_component(&a.container_id) || !safe_component(&a.network) {
            return Err(CniError::Config(format!(
                "bad container or network name {:?}/{:?}",
                a.container_id, a.network
            )));
        }
        let dir = self.container_dir(&a.container_id);
        let io = |source| CniError::Io {
            plugin: "(berth)".into(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let data = serde_json::to_vec(a).map_err(|e| CniError::Config(e.to_string()))?;
        let path = self.record_path(&a.container_id, &a.network);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, data)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io)
    }

    /// Attaches `a` to `net`: an address (`opts.ip`, or the next free one
    /// not in `avoid`), the record kept with it before anything is made (so
    /// a crash in the middle leaves what undoes it), the veth pair wired
    /// over netlink, then the CNI plugins of the record's conflist (portmap)
    /// given the wiring as `prevResult`. A failure undoes it all.
    pub fn attach(
        &self,
        net: &Network,
        mut a: Attachment,
        opts: &AttachOptions,
        avoid: &[Ipv4Addr],
    ) -> Result<Attachment, CniError> {
        self.cni.check_installed(&a.conflist)?;
        let addr = self
            .ipam
            .reserve(
                &net.name,
                net.subnet,
                net.gateway,
                &a.container_id,
                opts.ip,
                avoid,
            )
            .map_err(|e| CniError::Net(e.to_string()))?;
        let undo = |a: &Attachment| {
            self.ipam.release(&net.name, &a.container_id, addr);
            let _ = std::fs::remove_file(self.record_path(&a.container_id, &a.network));
            let _ = std::fs::remove_dir(self.container_dir(&a.container_id));
        };
        let mac = match opts.mac.as_deref().map(bridge::parse_mac) {
            Some(Some(m)) => m,
            Some(None) => {
                self.ipam.release(&net.name, &a.container_id, addr);
                return Err(CniError::Config("bad MAC address".into()));
            }
            None => bridge::mac_of(addr),
        };
        let host = match bridge::veth_name() {
            Ok(h) => h,
            Err(e) => {
                self.ipam.release(&net.name, &a.container_id, addr);
                return Err(CniError::Net(e.to_string()));
            }
        };
        a.result = Some(wired_result(
            net,
            &a,
            addr,
            &bridge::format_mac(&mac),
            &host,
        ));
        a.veth = Some(host.clone());
        if let Err(e) = self.save(&a) {
            undo(&a);
            return Err(e);
        }
        let port = bridge::Port {
            netns: a.netns.clone(),
            bridge: net.bridge.clone(),
            host,
            ifname: a.ifname.clone(),
            mac,
            address: addr,
            prefix: net.subnet.prefix(),
            gateway: (!net.internal).then_some(net.gateway),
        };
        if let Err(e) = bridge::attach(&port) {
            undo(&a);
            return Err(CniError::Net(e.to_string()));
        }
        if !a.conflist.is_empty() {
            if let Err(e) = self
                .cni
                .add_after(&a.conflist, &a.runtime(), a.result.clone())
            {
                self.detach(&a.container_id, &a.network);
                return Err(e);
            }
        }
        Ok(a)
    }

    /// Detaches (CNI DEL of the kept conflist, if it has plugins), gives
    /// the address back at once and forgets the attachment; a failing DEL
    /// is logged: what can go has gone. The veth is deleted on a thread of
    /// its own, off the exit and `rm` paths (the kernel's deletion of a
    /// device waits for a grace period); when the namespace goes first it
    /// takes the pair with it, and the sweep at start is the backstop.
    pub fn detach(&self, id: &str, network: &str) {
        self.detach_with(id, network, true)
    }

    /// As [`Driver::detach`]; `defer`: whether the veth goes on a thread of
    /// its own (a `network disconnect` of a running container wants it
    /// gone when it returns).
    pub fn detach_with(&self, id: &str, network: &str, defer: bool) {
        let path = self.record_path(id, network);
        let Some(a) = read_record(&path) else {
            return;
        };
        if !a.conflist.is_empty() {
            if let Err(e) = self.cni.del(&a.conflist, &a.runtime(), a.result.as_ref()) {
                warn!(container = id, network, error = %e, "CNI DEL failed; retrying off this path");
                self.retry_del(&a);
            }
        }
        if let Some((ip, _, _)) = a.parsed().and_then(|r| r.address()) {
            if let Ok(ip) = ip.parse() {
                self.ipam.release(network, id, ip);
            }
        }
        if let Some(veth) = a.veth.clone().filter(|_| !defer) {
            if let Err(e) = bridge::delete_veth(&veth) {
                warn!(veth, error = %e, "cannot delete a veth");
            }
        } else if let Some(veth) = a.veth.clone() {
            let spawned = std::thread::Builder::new()
                .name("net-veth-del".into())
                .spawn(move || {
                    if let Err(e) = bridge::delete_veth(&veth) {
                        warn!(veth, error = %e, "cannot delete a veth");
                    }
                });
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start a thread to delete a veth; the sweep at start will");
            }
        }
        let _ = std::fs::remove_file(&path);
        // The directory goes once it is empty.
        let _ = std::fs::remove_dir(self.container_dir(id));
    }

    /// Retries a failed DEL a few times, a second apart, on a thread of its
    /// own. A DEL fails when a plugin is still changing the same rules: after
    /// berthd was SIGKILLed mid-create, the killed daemon's `portmap` ADD
    /// can still be running when the next start's reconcile DELs it
    /// ("CHAIN_DEL failed (Device or resource busy)"), and would leave a
    /// DNAT chain no container owns. DEL is idempotent, so a later one
    /// removes what the late ADD made.
    fn retry_del(&self, a: &Attachment) {
        const TRIES: u32 = 5;
        let (cni, list, rt, prev) = (
            self.cni.clone(),
            a.conflist.clone(),
            a.runtime(),
            a.result.clone(),
        );
        let (id, network) = (a.container_id.clone(), a.network.clone());
        // A new run of the container on this network (its record is written
        // before its ADD) owns the same rules: a retry then stops.
        let record = self.record_path(&id, &network);
        let spawned = std::thread::Builder::new()
            .name("cni-del-retry".into())
            .spawn(move || {
                for n in 1..=TRIES {
                    std::thread::sleep(Duration::from_secs(1));
                    if record.exists() {
                        debug!(container = %id, network = %network, "attached again: no DEL retry");
                        return;
                    }
                    match cni.del(&list, &rt, prev.as_ref()) {
                        Ok(()) => {
                            debug!(container = %id, network = %network, tries = n, "CNI DEL done on a retry");
                            return;
                        }
                        Err(e) if n == TRIES => {
                            warn!(container = %id, network = %network, error = %e, "CNI DEL failed again; the rules stay until the sweep at start");
                        }
                        Err(_) => {}
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a thread to retry a CNI DEL");
        }
    }

    /// Detaches a container from every network.
    pub fn detach_all(&self, id: &str) {
        for a in self.attachments(id) {
            self.detach(id, &a.network);
        }
        let _ = std::fs::remove_dir(self.container_dir(id));
    }

    /// A container's attachments.
    pub fn attachments(&self, id: &str) -> Vec<Attachment> {
        if !safe_component(id) {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir(self.container_dir(id)) else {
            return Vec::new();
        };
        let mut v: Vec<Attachment> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| read_record(&e.path()))
            .collect();
        v.sort_by(|a, b| a.ifname.cmp(&b.ifname));
        v
    }

    /// The ids of every container with an attachment.
    pub fn containers(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("attachments")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Whether any container has an attachment to `network` (a stat per
    /// container, no record read: it runs at every leave).
    pub fn has_attachments_to(&self, network: &str) -> bool {
        if !safe_component(network) {
            return false;
        }
        self.containers()
            .iter()
            .any(|c| self.record_path(c, network).exists())
    }

    /// Every attachment to `network`.
    pub fn on_network(&self, network: &str) -> Vec<Attachment> {
        self.containers()
            .iter()
            .flat_map(|c| self.attachments(c))
            .filter(|a| a.network == network)
            .collect()
    }
}

fn read_record(path: &Path) -> Option<Attachment> {
    let data = std::fs::read(path).ok()?;
    match serde_json::from_slice(&data) {
        Ok(a) => Some(a),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "unreadable attachment record; removing it");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        Network::default_bridge("10.87.0.0/16".parse().unwrap()).unwrap()
    }

    #[test]
    fn conflist_only_for_ports() {
        let mut n = net();
        assert!(n.conflist(&AttachOptions::default()).is_empty());
        n.internal = true;
        let opts = AttachOptions {
            ports: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            ip: Some("10.87.0.9".parse().unwrap()),
            mac: Some("02:42:ac:11:00:09".into()),
        };
        let l = n.conflist(&opts);
        let p = l.0["plugins"].as_array().unwrap();
        let types: Vec<_> = p.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["portmap"]);
        assert_eq!(l.name(), "bridge");
        let caps = n.capabilities(&opts);
        assert_eq!(caps["portMappings"][0]["hostPort"], 8080);
        assert_eq!(caps["portMappings"][0]["containerPort"], 80);
    }

    #[test]
    fn wired_result_reads_as_a_cni_result() {
        let n = net();
        let a = Attachment {
            container_id: "c".into(),
            network: "bridge".into(),
            ifname: "eth0".into(),
            netns: PathBuf::from("/r/netns/c"),
            conflist: n.conflist(&AttachOptions::default()),
            capabilities: Map::new(),
            names: vec![],
            result: None,
            veth: None,
        };
        let v = wired_result(
            &n,
            &a,
            "10.87.0.5".parse().unwrap(),
            "02:42:0a:57:00:05",
            "berthv01020304",
        );
        let r: CniResult = serde_json::from_value(v).unwrap();
        assert_eq!(
            r.address().unwrap(),
            ("10.87.0.5".to_string(), 16, "10.87.0.1".to_string())
        );
        assert_eq!(r.container_interface().unwrap().mac, "02:42:0a:57:00:05");
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
    }

    #[test]
    fn records_refuse_bad_names() {
        let d = Driver::new(Cni::new("/nonexistent"), "/nonexistent-root");
        assert!(d.attachments("../x").is_empty());
        let a = Attachment {
            container_id: "../x".into(),
            network: "n".into(),
            ifname: "eth0".into(),
            netns: PathBuf::new(),
            conflist: ConfList(json!({"name": "n", "plugins": [{"type": "bridge"}]})),
            capabilities: Map::new(),
            names: vec![],
            result: None,
            veth: None,
        };
        assert!(d.save(&a).is_err());
    }
}
