//! Container networking (docs/networking.md): the `bridge` (default),
//! `none`, `host` and `container:ID` modes, and the per-container
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
//!
//! A container on a network gets it from the CNI plugins (crate
//! `berth-net`) in its own namespace file: [`Net::join`] and [`Net::leave`]
//! are the one place where a container joins or leaves a network, before
//! each run and when the run is over (its exit, a failed start, `rm`).
//!
//! berthd owns a container's network namespace: for `none` it creates one
//! before the shim runs the init, brings its loopback up and keeps it as a
//! bind-mounted nsfs file `<root>/netns/<id>`; the spec names that file, so
//! the runtime joins a namespace instead of making one (no extra cost) and
//! `container:ID` can join it too, across restarts of either container. The
//! file goes when the container is removed; on restore, files of containers
//! the store does not know are removed.
//!
//! What a container's files hold is decided at create and kept in
//! `<root>/netns/<id>.json`; they are written into the container's
//! directory before each run (the directory is made anew by then).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use berth_api::v1;
use berth_core::event::{EventType, ObjectKind};
use berth_net::dns::{Member, NetworkDns, Resolver, DNS_PORT};
use berth_net::ports::clash;
use berth_net::{
    firewall, links, sweep, AttachOptions, Attachment, Cidr, Cni, Driver, Network, PortMapping,
};
use berth_shim_proto::netns::{loopback_up, loopback_up_in};
use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, Spec};
use serde::{Deserialize, Serialize};
use tonic::Status;
use tracing::{debug, warn};

use crate::objevents::Recorder;
use crate::shim::{Prepared, RootfsProvider};

/// The network mode asked for, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A namespace of the container's own with loopback only.
    None,
    /// A namespace of the container's own on this network.
    Network(String),
    /// The daemon's namespace.
    Host,
    /// Join this namespace file (another container's).
    Join(PathBuf),
}

/// Parses `--network`; `container:` targets are returned as the key to look up.
pub fn parse_mode(s: &str) -> Result<ParsedMode, Status> {
    match s {
        "" => Ok(ParsedMode::Default),
        "none" => Ok(ParsedMode::None),
        "host" => Ok(ParsedMode::Host),
        _ => match s.strip_prefix("container:") {
            Some(k) if !k.is_empty() => Ok(ParsedMode::Container(k.to_string())),
            Some(_) => Err(Status::invalid_argument(format!(
                "invalid --network {s:?}: use bridge, none, host or container:ID"
            ))),
            None => Ok(ParsedMode::Network(s.to_string())),
        },
    }
}

/// `--network` before the other container or the network is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedMode {
    /// No `--network`: berthd's `default-network`.
    Default,
    None,
    Host,
    Container(String),
    Network(String),
}

/// A network a container's plan puts it on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanNetwork {
    pub name: String,
    /// The container's names on it (its name, its aliases).
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub options: AttachOptions,
}

/// berthd's network settings (config.toml).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `bridge` or `none`.
    pub default_network: String,
    pub bridge_subnet: Cidr,
    pub plugin_dir: PathBuf,
    /// Where user networks without `--subnet` get a /24.
    pub pool: Cidr,
}

/// Why a network operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Failed(String),
}

impl From<NetError> for Status {
    fn from(e: NetError) -> Status {
        crate::networks_api::net_status(e)
    }
}

/// Where user networks and the containers' plans are kept (berthd's redb
/// store).
pub trait NetworkStore: Send + Sync {
    fn load_networks(&self) -> Result<Vec<Network>, String>;
    fn save_network(&self, n: &Network) -> Result<(), String>;
    fn remove_network(&self, name: &str) -> Result<(), String>;
    /// Every container's plan (id, JSON).
    fn load_plans(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        Ok(Vec::new())
    }
    /// Queue a plan's write (`None`: its removal) without waiting: it is
    /// durable once any write queued after it is. A create's plan rides on
    /// the create's own record, written after it; a plan no record knows
    /// of after a crash is removed by [`Net::reconcile`].
    fn queue_plan(&self, _id: &str, _plan: Option<Vec<u8>>) {}
    /// Write a plan (`None`: remove it) durably before returning.
    fn write_plan(&self, _id: &str, _plan: Option<Vec<u8>>) -> Result<(), String> {
        Ok(())
    }
}

/// A container on a network, as inspect shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub container_id: String,
    pub network: String,
    /// Empty while the container does not run.
    pub ifname: String,
    /// `ADDR/PREFIX`; empty while the container does not run.
    pub ipv4: String,
    pub gateway: String,
    pub mac: String,
    pub aliases: Vec<String>,
}

/// Docker's rule for network names (and no `container:` prefix).
fn valid_network_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `aa:bb:cc:dd:ee:ff`, unicast.
fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// What berthd keeps for a container's network between create and its runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    /// Whether berthd makes (and owns) the container's namespace file.
    pub own_netns: bool,
    /// A namespace file of another container this one joins; it must still
    /// be there when this one runs.
    #[serde(default)]
    pub join: Option<PathBuf>,
    pub hosts: String,
    pub hostname: String,
    pub resolv_conf: String,
    /// `--userns=auto`: the namespace berthd makes belongs to a user
    /// namespace of this range that berthd makes too (userns::make_namespaces).
    #[serde(default)]
    pub userns: Option<berth_core::spec::IdRange>,
    /// The networks the container joins at each run, in order (the first
    /// is eth0).
    #[serde(default)]
    pub networks: Vec<PlanNetwork>,
    /// The directory of the container's `hosts`, `hostname` and
    /// `resolv.conf`, the bind sources its spec names: its directory under
    /// the run root. None: under the root (plans from before the run root).
    #[serde(default)]
    pub files: Option<PathBuf>,
}

/// How long a network stays idle (no container on it) before its bridge
/// and its firewall rules are removed: runs a few seconds apart (a script
/// of `run --rm` with work between them) reuse the bridge instead of making
/// it anew (the bridge and up to six `iptables` processes, 50-300 ms on a
/// loaded machine). An idle bridge costs nothing but its place in `ip
/// link`; 5 s keeps it for such scripts and still leaves nothing of berth's
/// soon after the last container goes.
const IDLE_GRACE: Duration = Duration::from_secs(5);

/// The network resources of berthd's containers under `<root>`.
pub struct Net {
    root: PathBuf,
    /// berthd's run root (`shim::Dirs`): the containers' `/etc` files.
    run: PathBuf,
    driver: Driver,
    default_bridge: Network,
    default_is_bridge: bool,
    /// Joins hold it shared; the teardown of idle networks holds it alone,
    /// so a bridge is never deleted under a join that is making or using it.
    gate: Arc<RwLock<()>>,
    /// A teardown of idle networks is scheduled (one at a time).
    idle_pending: Arc<AtomicBool>,
    /// The plugins' shared chains (CNI-FORWARD, CNI-ADMIN, ...) may not
    /// exist: none was made since berthd started or since the last idle
    /// teardown. The firewall plugin makes them check-then-create, so two
    /// first ADDs at once race ("chain CNI-ADMIN exists"): while this is
    /// set, a join holds the gate alone.
    cold: Arc<AtomicBool>,
    /// The bridges made (over netlink, with their gateway address) and
    /// given their firewall rules (masquerade, FORWARD accepts) since
    /// berthd started: before a bridge's first join; forgotten when the
    /// bridge goes (idle teardown, network removal, sweep).
    ruled: Arc<Mutex<std::collections::HashSet<String>>>,
    pool: Cidr,
    store: Arc<dyn NetworkStore>,
    /// The user networks by name (the store's, loaded at start).
    user: Mutex<BTreeMap<String, Network>>,
    /// Held while plans and attachments change (a run's join and leave,
    /// connect, disconnect, a network's removal), so they never interleave.
    lock: Mutex<()>,
    /// Every container's plan, as the store keeps it (loaded at start):
    /// `ps` reads the published ports of every running container here.
    plans: Mutex<BTreeMap<String, Plan>>,
    /// Held from the choice of a create's host ports to its plan being
    /// saved, so two creates never pick (or both pass the check of) the
    /// same host port.
    publishing: Mutex<()>,
    /// berthd's DNS resolver: the networks it serves (user networks)
    /// resolve their members' names.
    dns: Option<Arc<Resolver>>,
    /// One lock per container, held by its run's join (`ensure`), the
    /// leave when the run is over (`stopped`) and its removal: the leave of
    /// a run that just ended runs on a blocking task of its own and would
    /// otherwise interleave with the next run's join (a `stop` then `start`
    /// at once), taking the new run's name out of the DNS table.
    runs: Mutex<std::collections::HashMap<String, Arc<Mutex<()>>>>,
    /// Network creates and removals, and the explicit connects and
    /// disconnects (not a run's join and leave: see docs/docker-api.md).
    pub events: Recorder,
}

impl Net {
    pub fn new(
        root: &Path,
        run: &Path,
        settings: &Settings,
        store: Arc<dyn NetworkStore>,
    ) -> Result<Self, NetError> {
        let default_bridge = Network::default_bridge(settings.bridge_subnet)
            .map_err(|e| NetError::Invalid(e.to_string()))?;
        let user = store
            .load_networks()
            .map_err(|e| NetError::Failed(format!("cannot load the networks: {e}")))?
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        let plans = load_plans(store.as_ref(), &root.join("netns"))?;
        let cni = Cni::new(&settings.plugin_dir).with_lock(root.join("net/plugins.lock"));
        // The plugins a SIGKILLed berthd left running finish before this
        // one reconciles what they touch (Cni::with_lock says why).
        if !cni.wait_for_orphans(berth_net::cni::PLUGIN_TIMEOUT) {
            warn!(
                "CNI plugins of an earlier berthd still run after {}s; going on without them",
                berth_net::cni::PLUGIN_TIMEOUT.as_secs()
            );
        }
        Ok(Self {
            root: root.to_path_buf(),
            run: run.to_path_buf(),
            driver: Driver::new(cni, root.join("net")),
            default_bridge,
            default_is_bridge: settings.default_network == "bridge",
            gate: Arc::new(RwLock::new(())),
            idle_pending: Arc::new(AtomicBool::new(false)),
            cold: Arc::new(AtomicBool::new(true)),
            ruled: Arc::new(Mutex::new(std::collections::HashSet::new())),
            pool: settings.pool,
            store,
            user: Mutex::new(user),
            lock: Mutex::new(()),
            plans: Mutex::new(plans),
            publishing: Mutex::new(()),
            dns: None,
            runs: Mutex::new(std::collections::HashMap::new()),
            events: Recorder::default(),
        })
    }

    fn users(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Network>> {
        // The map stays whole whatever panicked while it was held.
        self.user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock of container `id`'s runs (see `runs`).
    fn run_lock(&self, id: &str) -> Arc<Mutex<()>> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every network, the default one first.
    pub fn list_networks(&self) -> Vec<Network> {
        let mut v = vec![self.default_bridge.clone()];
        v.extend(self.users().values().cloned());
        v
    }

    /// A network by name, id or unique id prefix.
    pub fn get_network(&self, key: &str) -> Result<Network, NetError> {
        if key == self.default_bridge.name {
            return Ok(self.default_bridge.clone());
        }
        let users = self.users();
        if let Some(n) = users.get(key) {
            return Ok(n.clone());
        }
        let by_id: Vec<&Network> = if key.len() >= 3 {
            users.values().filter(|n| n.id.starts_with(key)).collect()
        } else {
            Vec::new()
        };
        match by_id.as_slice() {
            [n] => Ok((*n).clone()),
            [] => Err(NetError::NotFound(format!(
                "network {key} not found: see berth network ls, or create it with berth network create {key}"
            ))),
            _ => Err(NetError::Invalid(format!(
                "network id prefix {key} is ambiguous: give more of it or the name"
            ))),
        }
    }

    /// Makes a user network: `subnet` empty takes the next free /24 of
    /// the pool; `gateway` empty the subnet's first address.
    pub fn create_network(
        &self,
        name: &str,
        subnet: &str,
        gateway: &str,
        internal: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<Network, NetError> {
        if !valid_network_name(name) {
            return Err(NetError::Invalid(format!(
                "invalid network name {name:?}: use 1 to 64 of [a-zA-Z0-9_.-], starting with a letter or digit"
            )));
        }
        if ["bridge", "none", "host", "default"].contains(&name) {
            return Err(NetError::Invalid(format!(
                "network name {name} is reserved: choose another"
            )));
        }
        if labels.keys().any(|k| k.is_empty()) {
            return Err(NetError::Invalid(
                "a network label needs a key: --label KEY=VALUE".into(),
            ));
        }
        let mut users = self.users();
        if users.contains_key(name) {
            return Err(NetError::Exists(format!("network {name} already exists")));
        }
        let taken: Vec<(String, Cidr)> = std::iter::once(&self.default_bridge)
            .chain(users.values())
            .map(|n| (n.name.clone(), n.subnet))
            .collect();
        let subnet = if subnet.is_empty() {
            self.pool
                .subnets(24.max(self.pool.prefix()))
                .find(|c| taken.iter().all(|(_, t)| !t.overlaps(c)))
                .ok_or_else(|| {
                    NetError::Failed(format!(
                        "no free /24 left in the network pool {}: give --subnet, or widen network-pool in berthd's config",
                        self.pool
                    ))
                })?
        } else {
            let c: Cidr = subnet.parse().map_err(|e: berth_net::cidr::BadCidr| {
                NetError::Invalid(format!("--subnet: {e}"))
            })?;
            if c.prefix() > 30 {
                return Err(NetError::Invalid(format!(
                    "--subnet {c} is too small: give a /30 or larger"
                )));
            }
            if let Some((other, t)) = taken.iter().find(|(_, t)| t.overlaps(&c)) {
                return Err(NetError::Invalid(format!(
                    "--subnet {c} overlaps network {other}'s subnet {t}: choose another"
                )));
            }
            c
        };
        let gateway = if gateway.is_empty() {
            subnet.first_host().ok_or_else(|| {
                NetError::Invalid(format!("--subnet {subnet} has no host addresses"))
            })?
        } else {
            let g: Ipv4Addr = gateway.parse().map_err(|_| {
                NetError::Invalid(format!(
                    "invalid --gateway {gateway:?}: give an IPv4 address"
                ))
            })?;
            if !subnet.is_host(g) {
                return Err(NetError::Invalid(format!(
                    "--gateway {g} is not a host address of the subnet {subnet}"
                )));
            }
            g
        };
        let id = berth_core::id::generate_id().map_err(|e| NetError::Failed(e.to_string()))?;
        let n = Network {
            name: name.to_string(),
            // A bridge name has at most 15 bytes.
            bridge: format!("berth{}", &id[..10]),
            id,
            subnet,
            gateway,
            internal,
            labels,
            created: now_rfc3339(),
        };
        // Its DNS listener first: a gateway address whose port 53 is taken
        // refuses the network before anything is kept.
        self.serve_dns(&n).map_err(NetError::Failed)?;
        if let Err(e) = self.store.save_network(&n) {
            self.stop_dns(&n.name);
            return Err(NetError::Failed(format!("cannot keep network {name}: {e}")));
        }
        users.insert(n.name.clone(), n.clone());
        drop(users);
        self.record(EventType::Create, &n.id, &n.name, None);
        Ok(n)
    }

    /// A network event, with Docker's `type` (every berth network is a
    /// bridge) and the container of a connect or disconnect.
    fn record(&self, kind: EventType, id: &str, name: &str, container: Option<&str>) {
        let mut attrs = vec![("type", "bridge")];
        if let Some(c) = container {
            attrs.push(("container", c));
        }
        self.events
            .record(ObjectKind::Network, kind, id, name, &attrs);
    }

    /// Every container's plan (any state), with its id.
    fn plans(&self) -> impl Iterator<Item = (String, Plan)> + '_ {
        self.plan_map()
            .iter()
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn plan_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Plan>> {
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The containers (any state) whose plan puts them on `network`.
    fn members(&self, network: &str) -> Vec<(String, PlanNetwork)> {
        let mut v: Vec<(String, PlanNetwork)> = self
            .plans()
            .flat_map(|(id, plan)| {
                plan.networks
                    .into_iter()
                    .filter(|n| n.name == network)
                    .map(move |n| (id.clone(), n))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The containers on a network, with their addresses while they run.
    pub fn endpoints(&self, network: &str) -> Vec<Endpoint> {
        self.members(network)
            .into_iter()
            .map(|(id, n)| self.endpoint(&id, &n))
            .collect()
    }

    fn endpoint(&self, id: &str, n: &PlanNetwork) -> Endpoint {
        let mut e = Endpoint {
            container_id: id.to_string(),
            network: n.name.clone(),
            aliases: n.names.clone(),
            ..Endpoint::default()
        };
        if let Some(a) = self
            .driver
            .attachments(id)
            .into_iter()
            .find(|a| a.network == n.name)
        {
            e.ifname = a.ifname.clone();
            if let Some(r) = a.parsed() {
                if let Some((ip, prefix, gw)) = r.address() {
                    e.ipv4 = format!("{ip}/{prefix}");
                    e.gateway = gw;
                }
                e.mac = r
                    .container_interface()
                    .map(|i| i.mac.clone())
                    .unwrap_or_default();
            }
        }
        e
    }

    /// A container's networks (for inspect): its plan's, in order.
    pub fn container_endpoints(&self, id: &str) -> Vec<Endpoint> {
        self.load_plan(id)
            .map(|p| p.networks.iter().map(|n| self.endpoint(id, n)).collect())
            .unwrap_or_default()
    }

    /// Removes a user network no container is on, and its bridge.
    pub fn remove_network(&self, key: &str) -> Result<(), NetError> {
        let n = self.get_network(key)?;
        if n.name == self.default_bridge.name {
            return Err(NetError::InUse(
                "the default network bridge cannot be removed".into(),
            ));
        }
        let _g = self.locked();
        let members = self.members(&n.name);
        if !members.is_empty() {
            let ids: Vec<&str> = members
                .iter()
                .map(|(id, _)| &id[..12.min(id.len())])
                .collect();
            return Err(NetError::InUse(format!(
                "network {} has containers ({}): remove them or disconnect them first",
                n.name,
                ids.join(", ")
            )));
        }
        self.store
            .remove_network(&n.name)
            .map_err(|e| NetError::Failed(format!("cannot remove network {}: {e}", n.name)))?;
        self.users().remove(&n.name);
        self.stop_dns(&n.name);
        self.forget_network(&n);
        self.record(EventType::Delete, &n.id, &n.name, None);
        Ok(())
    }

    /// What a removed network leaves on the host: its leases directory
    /// and its bridge.
    fn forget_network(&self, n: &Network) {
        let ipam = self.driver.ipam_dir().join(&n.name);
        if berth_net::sweep::is_under(&ipam, &self.driver.ipam_dir()) {
            let _ = std::fs::remove_dir_all(&ipam);
        }
        if let Err(e) = berth_net::links::delete(&n.bridge) {
            warn!(bridge = %n.bridge, error = %e, "cannot delete the bridge of a removed network");
        }
        unrule(&self.ruled, n);
        self.sweep();
    }

    /// Removes every user network no container is on; their names.
    pub fn prune_networks(&self) -> Vec<String> {
        let names: Vec<String> = self.users().keys().cloned().collect();
        names
            .into_iter()
            .filter(|n| self.remove_network(n).is_ok())
            .collect()
    }

    /// What a container asks of `net`: checked against the network.
    fn options_for(
        &self,
        net: &Network,
        id: &str,
        aliases: &[String],
        ip: &str,
        mac: &str,
    ) -> Result<AttachOptions, NetError> {
        let user = net.name != self.default_bridge.name;
        if !user && (!aliases.is_empty() || !ip.is_empty()) {
            return Err(NetError::Invalid(
                "--ip and --network-alias apply to user networks only: create one with berth network create".into(),
            ));
        }
        for a in aliases {
            if a.is_empty()
                || a.len() > 253
                || !a
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            {
                return Err(NetError::Invalid(format!(
                    "invalid --network-alias {a:?}: use letters, digits, '-', '.' and '_'"
                )));
            }
        }
        let ip = if ip.is_empty() {
            None
        } else {
            let addr: Ipv4Addr = ip.parse().map_err(|_| {
                NetError::Invalid(format!("invalid --ip {ip:?}: give an IPv4 address"))
            })?;
            if !net.subnet.is_host(addr) || addr == net.gateway {
                return Err(NetError::Invalid(format!(
                    "--ip {addr} is outside network {}'s subnet {} (or is its gateway): give a free address inside it",
                    net.name, net.subnet
                )));
            }
            if let Some((other, _)) = self
                .members(&net.name)
                .into_iter()
                .find(|(o, n)| o != id && n.options.ip == Some(addr))
            {
                return Err(NetError::Invalid(format!(
                    "--ip {addr} is taken on network {} by container {}",
                    net.name,
                    &other[..12.min(other.len())]
                )));
            }
            Some(addr)
        };
        let mac = if mac.is_empty() {
            None
        } else if valid_mac(mac) {
            Some(mac.to_ascii_lowercase())
        } else {
            return Err(NetError::Invalid(format!(
                "invalid --mac-address {mac:?}: give a unicast address such as 02:42:ac:11:00:02"
            )));
        };
        Ok(AttachOptions {
            ports: Vec::new(),
            ip,
            mac,
        })
    }

    /// Puts a container on a network: now (CNI ADD) if it runs, and at
    /// every run from now on.
    pub fn connect(
        &self,
        id: &str,
        name: &str,
        network: &str,
        aliases: &[String],
        ip: &str,
        running: Option<i32>,
    ) -> Result<(), NetError> {
        let net = self.get_network(network)?;
        let _g = self.locked();
        let mut plan = self.load_plan(id).ok_or_else(|| {
            NetError::Invalid(format!(
                "container {} has no network settings of berth's (a --bundle): it cannot join networks",
                &id[..12.min(id.len())]
            ))
        })?;
        if !plan.own_netns {
            return Err(NetError::Invalid(
                "the container shares another's network namespace (--network host or container:): it cannot join networks".into(),
            ));
        }
        if plan.networks.iter().any(|n| n.name == net.name) {
            return Err(NetError::Exists(format!(
                "the container is already on network {}",
                net.name
            )));
        }
        let options = self.options_for(&net, id, aliases, ip, "")?;
        let mut names: Vec<String> = [name.to_string(), plan.hostname.trim().to_string()]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect();
        names.extend(aliases.iter().cloned());
        names.dedup();
        let pn = PlanNetwork {
            name: net.name.clone(),
            names,
            options,
        };
        if let Some(pid) = running {
            // A `none` container's namespace is its runtime's until now.
            self.pin_netns(id, pid).map_err(NetError::Failed)?;
            let used: Vec<String> = self
                .driver
                .attachments(id)
                .into_iter()
                .map(|a| a.ifname)
                .collect();
            let ifname = (0..)
                .map(|i| format!("eth{i}"))
                .find(|n| !used.contains(n))
                .unwrap_or_default();
            self.join(id, &ifname, &pn).map_err(NetError::Failed)?;
        }
        plan.networks.push(pn);
        if let Err(e) = self.save(id, &plan) {
            self.leave(id, &net.name);
            return Err(NetError::Failed(e.message().to_string()));
        }
        self.record(EventType::Connect, &net.id, &net.name, Some(id));
        Ok(())
    }

    /// Takes a container off a network, now and for its next runs.
    pub fn disconnect(&self, id: &str, network: &str, force: bool) -> Result<(), NetError> {
        let (net_id, name) = match self.get_network(network) {
            Ok(n) => (n.id, n.name),
            Err(_) if force => (String::new(), network.to_string()),
            Err(e) => return Err(e),
        };
        let _g = self.locked();
        let Some(mut plan) = self.load_plan(id) else {
            return if force {
                Ok(())
            } else {
                Err(NetError::NotFound(format!(
                    "the container is not on network {name}"
                )))
            };
        };
        let before = plan.networks.len();
        plan.networks.retain(|n| n.name != name);
        if plan.networks.len() == before {
            return if force {
                Ok(())
            } else {
                Err(NetError::NotFound(format!(
                    "the container is not on network {name}"
                )))
            };
        }
        self.save(id, &plan)
            .map_err(|e| NetError::Failed(e.message().to_string()))?;
        // The interface is gone when disconnect returns.
        self.leave_with(id, &name, false);
        self.record(EventType::Disconnect, &net_id, &name, Some(id));
        Ok(())
    }

    /// The host ports of `-p` and `-P`, free ones chosen: a host port
    /// another container publishes, or one in use on the host, is refused.
    fn publish(
        &self,
        id: &str,
        r: &v1::CreateRequest,
        exposed: &[String],
    ) -> Result<Vec<PortMapping>, Status> {
        let mut wanted = Vec::new();
        for p in &r.publish {
            wanted.extend(
                berth_net::ports::parse(p).map_err(|e| Status::invalid_argument(e.to_string()))?,
            );
        }
        if r.publish_all {
            for w in exposed.iter().filter_map(|e| berth_net::ports::exposed(e)) {
                if !wanted
                    .iter()
                    .any(|x| x.container_port == w.container_port && x.protocol == w.protocol)
                {
                    wanted.push(w);
                }
            }
        }
        if wanted.is_empty() {
            return Ok(wanted);
        }
        let taken = self.published(id);
        let mut out: Vec<PortMapping> = Vec::new();
        for mut w in wanted {
            if w.host_port == 0 {
                w.host_port = (EPHEMERAL_FIRST..=EPHEMERAL_LAST)
                    .find(|p| {
                        let c = PortMapping {
                            host_port: *p,
                            ..w.clone()
                        };
                        !taken.iter().any(|(_, t)| clash(t, &c))
                            && !out.iter().any(|o| clash(o, &c))
                            && host_port_free(&c)
                    })
                    .ok_or_else(|| {
                        Status::resource_exhausted("no free host port left to publish on")
                    })?;
            } else if let Some((other, _)) = taken.iter().find(|(_, t)| clash(t, &w)) {
                return Err(Status::invalid_argument(format!(
                    "host port {}/{} is already published by container {}: choose another host port",
                    w.host_port,
                    w.protocol,
                    &other[..12.min(other.len())]
                )));
            } else if out.iter().any(|o| clash(o, &w)) {
                return Err(Status::invalid_argument(format!(
                    "host port {}/{} is published twice: give each -p its own host port",
                    w.host_port, w.protocol
                )));
            } else if !host_port_free(&w) {
                return Err(Status::invalid_argument(format!(
                    "host port {}/{} is in use on the host: choose another host port",
                    w.host_port, w.protocol
                )));
            }
            out.push(w);
        }
        Ok(out)
    }

    /// The published ports of every container but `except` (any state).
    fn published(&self, except: &str) -> Vec<(String, PortMapping)> {
        self.plans()
            .filter(|(id, _)| id != except)
            .flat_map(|(id, plan)| plan_ports(&plan).into_iter().map(move |p| (id.clone(), p)))
            .collect()
    }

    /// A container's published ports (`berth port`, `ps`).
    pub fn ports_of(&self, id: &str) -> Vec<PortMapping> {
        self.plan_map().get(id).map(plan_ports).unwrap_or_default()
    }

    /// What inspect shows of a container's networks: each network's
    /// address, gateway, MAC and names, and the published ports.
    pub fn settings_json(&self, id: &str) -> String {
        let mut nets = serde_json::Map::new();
        for e in self.container_endpoints(id) {
            let (ip, prefix) = e.ipv4.split_once('/').unwrap_or(("", ""));
            nets.insert(
                e.network.clone(),
                serde_json::json!({
                    "IPAddress": ip,
                    "IPPrefixLen": prefix.parse::<u8>().unwrap_or(0),
                    "Gateway": e.gateway,
                    "MacAddress": e.mac,
                    "Aliases": e.aliases,
                    "Interface": e.ifname,
                }),
            );
        }
        let ports: Vec<serde_json::Value> = self
            .ports_of(id)
            .iter()
            .map(|p| {
                serde_json::json!({
                    "ContainerPort": p.container_port,
                    "Protocol": p.protocol,
                    "HostIp": if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip },
                    "HostPort": p.host_port,
                })
            })
            .collect();
        serde_json::json!({"Networks": nets, "Ports": ports}).to_string()
    }

    fn load_plan(&self, id: &str) -> Option<Plan> {
        self.plan_map().get(id).cloned()
    }

    /// The mode of a container created without `--network`.
    pub fn default_mode(&self) -> Mode {
        if self.default_is_bridge {
            Mode::Network(self.default_bridge.name.clone())
        } else {
            Mode::None
        }
    }

    /// A network by name (for `--network`).
    pub fn network(&self, name: &str) -> Result<Network, Status> {
        self.get_network(name).map_err(|e| match e {
            NetError::NotFound(_) => Status::invalid_argument(format!(
                "network {name} not found: use --network bridge, none, host, container:ID or a network of berth network ls"
            )),
            e => e.into(),
        })
    }

    /// Puts a container on a network (CNI ADD); the one place a container
    /// joins one. A stale attachment of an earlier run (a berthd that died
    /// before the run was over) is released first.
    pub fn join(&self, id: &str, ifname: &str, n: &PlanNetwork) -> Result<Attachment, String> {
        let net = self.network(&n.name).map_err(|e| e.message().to_string())?;
        // A poisoned gate guards nothing but ordering: go on. The first
        // join after a cold start or a teardown runs alone (see `cold`).
        let (_shared, _alone);
        let cold = self.cold.load(Ordering::Acquire);
        if cold {
            _alone = Some(self.gate.write().unwrap_or_else(|e| e.into_inner()));
            _shared = None;
        } else {
            _shared = Some(self.gate.read().unwrap_or_else(|e| e.into_inner()));
            _alone = None;
        }
        self.driver.detach(id, &n.name);
        let failed =
            |e: &dyn std::fmt::Display| format!("cannot connect to network {}: {e}", n.name);
        // The fixed addresses other containers of a user network ask for
        // are not handed out (--ip is for user networks only).
        let avoid: Vec<Ipv4Addr> = if net.name == self.default_bridge.name {
            Vec::new()
        } else {
            self.members(&net.name)
                .into_iter()
                .filter(|(o, _)| o != id)
                .filter_map(|(_, m)| m.options.ip)
                .collect()
        };
        let a = Attachment {
            container_id: id.to_string(),
            network: n.name.clone(),
            ifname: ifname.to_string(),
            netns: self.netns_path(id),
            conflist: net.conflist(&n.options),
            capabilities: net.capabilities(&n.options),
            names: n.names.clone(),
            result: None,
            veth: None,
        };
        self.ready(&net).map_err(|e| failed(&e))?;
        let a = match self.driver.attach(&net, a.clone(), &n.options, &avoid) {
            Ok(a) => a,
            // The bridge went behind berthd's back (an admin's `ip link
            // del`): made again, once.
            Err(e) if e.to_string().contains("is gone") => {
                self.unready(&net);
                self.ready(&net).map_err(|e| failed(&e))?;
                self.driver
                    .attach(&net, a, &n.options, &avoid)
                    .map_err(|e| failed(&e))?
            }
            Err(e) => return Err(failed(&e)),
        };
        if cold {
            self.cold.store(false, Ordering::Release);
        }
        self.dns_join(id, &a);
        Ok(a)
    }

    /// Takes a container off a network (CNI DEL with the kept config); the
    /// one place a container leaves one.
    pub fn leave(&self, id: &str, network: &str) {
        self.leave_with(id, network, true)
    }

    /// As [`Net::leave`]; `defer`: the veth is deleted off this path.
    fn leave_with(&self, id: &str, network: &str, defer: bool) {
        // The name goes before the address is given back.
        if let Some(dns) = &self.dns {
            dns.leave(network, id);
        }
        self.driver.detach_with(id, network, defer);
        if !self.driver.has_attachments_to(network) {
            self.schedule_idle_teardown();
        }
    }

    /// The networks whose bridge goes once no container is on them.
    fn bridges(&self) -> Vec<Network> {
        vec![self.default_bridge.clone()]
    }

    /// Makes `net`'s bridge (over netlink, with its gateway address) and
    /// its firewall rules unless made already (once per bridge: before its
    /// first container, and after an idle teardown). Held alone, so two
    /// first joins do not both make them.
    fn ready(&self, net: &Network) -> Result<(), String> {
        let mut ruled = self.ruled.lock().unwrap_or_else(|p| p.into_inner());
        if ruled.contains(&net.bridge) {
            return Ok(());
        }
        berth_net::bridge::ensure_bridge(&net.bridge, net.gateway, net.subnet.prefix())
            .map_err(|e| e.to_string())?;
        firewall::ensure(&net.rules()).map_err(|e| e.to_string())?;
        ruled.insert(net.bridge.clone());
        Ok(())
    }

    /// Forgets that `net`'s bridge is made (it is not there any more).
    fn unready(&self, net: &Network) {
        self.ruled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&net.bridge);
    }

    /// Removes, after [`IDLE_GRACE`] and on a thread of its own (off the
    /// exit and rm paths), what the plugins leave once no container is on a
    /// network: its bridge, and the base chains (CNI-FORWARD, ...) once no
    /// container is on any.
    fn schedule_idle_teardown(&self) {
        if self.idle_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let (driver, gate, pending, cold, ruled, bridges) = (
            self.driver.clone(),
            self.gate.clone(),
            self.idle_pending.clone(),
            self.cold.clone(),
            self.ruled.clone(),
            self.bridges(),
        );
        let spawned = std::thread::Builder::new()
            .name("net-idle".into())
            .spawn(move || {
                std::thread::sleep(IDLE_GRACE);
                let _gate = gate.write().unwrap_or_else(|e| e.into_inner());
                // A leave from now on schedules a teardown of its own.
                pending.store(false, Ordering::Release);
                teardown_idle(&driver, &ruled, &bridges);
                cold.store(true, Ordering::Release);
            });
        if let Err(e) = spawned {
            self.idle_pending.store(false, Ordering::Release);
            warn!(error = %e, "cannot start the idle network teardown");
        }
    }

    /// Takes a container off every network it is on.
    pub fn leave_all(&self, id: &str) {
        debug!(id, "leaving every network");
        for a in self.driver.attachments(id) {
            self.leave(id, &a.network);
        }
        self.driver.detach_all(id);
        if let Some(dns) = &self.dns {
            dns.leave_all(id);
        }
    }

    /// Uses `dns` for the user networks.
    pub fn with_dns(mut self, dns: Arc<Resolver>) -> Self {
        self.dns = Some(dns);
        self
    }

    /// Serves DNS on a user network: a listener on its gateway, port 53
    /// (at its creation, and when berthd starts). The default bridge is
    /// never served (Docker's habit: it resolves no names).
    pub fn serve_dns(&self, net: &Network) -> Result<(), String> {
        let Some(dns) = &self.dns else {
            return Ok(());
        };
        dns.add_network(
            &net.name,
            NetworkDns {
                name: net.name.clone(),
                listen: vec![std::net::SocketAddr::new(IpAddr::V4(net.gateway), DNS_PORT)],
                internal: net.internal,
            },
        )
        .map_err(|e| format!("network {}: {e}", net.name))
    }

    /// Stops serving DNS on a network (its removal).
    pub fn stop_dns(&self, network: &str) {
        if let Some(dns) = &self.dns {
            dns.remove_network(network);
        }
    }

    /// The gateway a container on `network` asks for names, if the
    /// network is served.
    fn dns_server(&self, network: &str) -> Option<String> {
        let dns = self.dns.as_ref()?;
        if !dns.serves(network) {
            return None;
        }
        self.network(network).ok().map(|n| n.gateway.to_string())
    }

    /// Puts an attached container in its network's DNS table: its name,
    /// its other names (hostname, aliases) and its short id, with its
    /// addresses there. Nothing for a network that is not served.
    fn dns_join(&self, id: &str, a: &Attachment) {
        let Some(dns) = &self.dns else {
            return;
        };
        let addrs: Vec<IpAddr> = a
            .parsed()
            .map(|r| {
                r.ips
                    .iter()
                    .filter_map(|ip| ip.address.split('/').next()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if addrs.is_empty() {
            return;
        }
        let short = id.get(..12).unwrap_or(id).to_string();
        let mut names = a.names.iter().filter(|n| !n.is_empty());
        let name = names.next().cloned().unwrap_or_else(|| short.clone());
        let mut aliases: Vec<String> = names.cloned().collect();
        aliases.push(short);
        debug!(id, network = %a.network, "joining the network's DNS table");
        dns.join(
            &a.network,
            id,
            Member {
                name,
                aliases,
                addrs,
            },
        );
    }

    /// A container was renamed: its name on its networks changes at once
    /// (in the DNS tables), and its next runs attach under the new name.
    /// The hostname stays, as in Docker.
    pub fn rename(&self, id: &str, old: &str, new: &str) {
        let swap = |names: &mut Vec<String>| {
            if names.first().is_some_and(|n| n == old) {
                names[0] = new.to_string();
            }
        };
        for mut a in self.driver.attachments(id) {
            swap(&mut a.names);
            self.dns_join(id, &a);
        }
        let Some(mut plan) = self.load_plan(id) else {
            return;
        };
        for n in &mut plan.networks {
            swap(&mut n.names);
        }
        if let Err(e) = self.save(id, &plan) {
            warn!(id, error = %e.message(), "cannot keep the new name in the network settings");
        }
    }

    /// After berthd starts (and [`Net::reconcile`] took the stopped
    /// containers off their networks): the DNS tables of the served
    /// networks from the attachments the running containers kept.
    pub fn restore_dns(&self) {
        let users: Vec<Network> = self.users().values().cloned().collect();
        for n in &users {
            if let Err(e) = self.serve_dns(n) {
                warn!(network = %n.name, error = %e, "cannot serve DNS on the network: its containers resolve no names");
            }
        }
        for id in self.driver.containers() {
            // The plan has the names as they are now (a rename updates it,
            // not the attachment's record).
            let plan = self.load_plan(&id);
            for mut a in self.driver.attachments(&id) {
                if let Some(n) = plan
                    .iter()
                    .flat_map(|p| &p.networks)
                    .find(|n| n.name == a.network)
                {
                    a.names = n.names.clone();
                }
                self.dns_join(&id, &a);
            }
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join("netns")
    }

    /// The namespace file berthd makes for a container of its own network.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.dir().join(id)
    }

    /// The user namespace file berthd makes with the network namespace of
    /// a `--userns=auto` container.
    fn userns_path(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}.user"))
    }

    /// Checks the DNS and hosts flags and builds the plan and the spec
    /// changes for `mode`: the namespace entry and the three bind mounts.
    pub fn apply(
        &self,
        id: &str,
        mode: &Mode,
        r: &v1::CreateRequest,
        exposed: &[String],
        spec: &mut Spec,
    ) -> Result<Plan, Status> {
        if !matches!(mode, Mode::Network(_)) && (!r.publish.is_empty() || r.publish_all) {
            return Err(Status::invalid_argument(
                "-p and -P need a network: --network bridge or NAME",
            ));
        }
        if !matches!(mode, Mode::Network(_))
            && (!r.network_aliases.is_empty() || !r.ip.is_empty() || !r.mac_address.is_empty())
        {
            return Err(Status::invalid_argument(
                "--ip, --network-alias and --mac-address need a network: --network bridge or NAME",
            ));
        }
        for d in &r.dns {
            d.parse::<IpAddr>().map_err(|_| {
                Status::invalid_argument(format!(
                    "invalid --dns {d:?}: give a nameserver's IP address, e.g. 192.0.2.53"
                ))
            })?;
        }
        for s in r.dns_search.iter().chain(&r.dns_option) {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Status::invalid_argument(format!(
                    "invalid --dns-search or --dns-option {s:?}: it must be one word without spaces"
                )));
            }
        }
        let mut extra = String::new();
        for h in &r.add_host {
            let (name, ip) = parse_add_host(h)?;
            extra.push_str(&format!("{ip}\t{name}\n"));
        }
        let hostname = spec.hostname().clone().unwrap_or_default();
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        // On a served (user) network the gateway is the nameserver, unless
        // --dns names others (they win, as in Docker's).
        let servers = match mode {
            Mode::Network(name) if r.dns.is_empty() => self.dns_server(name).map(|g| vec![g]),
            _ => None,
        };
        let resolv_conf = resolv_conf(
            &host_resolv,
            *mode == Mode::Host,
            servers.as_deref().unwrap_or(&r.dns),
            &r.dns_search,
            &r.dns_option,
        );
        let hosts = hosts_file(&hostname, &extra);
        let range = berth_core::spec::IdRange::of_spec(spec);

        let linux = spec
            .linux_mut()
            .as_mut()
            .ok_or_else(|| Status::internal("the generated spec has no linux section"))?;
        let mut namespaces: Vec<_> = linux
            .namespaces()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.typ() != LinuxNamespaceType::Network)
            .collect();
        let mut networks = Vec::new();
        let (own_netns, join) = match mode {
            Mode::Host => (false, None),
            Mode::None => (true, Some(self.netns_path(id))),
            Mode::Network(name) => {
                let net = self.network(name)?;
                let mut options =
                    self.options_for(&net, id, &r.network_aliases, &r.ip, &r.mac_address)?;
                options.ports = self.publish(id, r, exposed)?;
                let list = net.conflist(&options);
                self.driver
                    .cni()
                    .check_installed(&list)
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                let mut names: Vec<String> = [r.name.clone(), hostname.clone()]
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .collect();
                names.extend(r.network_aliases.iter().cloned());
                networks.push(PlanNetwork {
                    name: net.name.clone(),
                    names,
                    options,
                });
                (true, Some(self.netns_path(id)))
            }
            Mode::Join(p) => (false, Some(p.clone())),
        };
        let userns = range.filter(|_| own_netns);
        if userns.is_some() {
            // The runtime joins the user namespace made with the network
            // namespace instead of making one.
            for n in namespaces.iter_mut() {
                if n.typ() == LinuxNamespaceType::User {
                    n.set_path(Some(self.userns_path(id)));
                }
            }
        }
        if let Some(path) = &join {
            let ns = LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()
                .map_err(|e| Status::internal(e.to_string()))?;
            namespaces.push(ns);
        }
        linux.set_namespaces(Some(namespaces));
        if range.is_some() && !own_netns {
            // Another user namespace owns the network namespace joined: the
            // kernel refuses this one a sysfs mount.
            berth_core::spec::bind_host_sys(spec).map_err(|e| Status::internal(e.to_string()))?;
        }

        let dir = crate::shim::container_files(&self.run, id);
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for (file, dest) in [
            ("hosts", "/etc/hosts"),
            ("hostname", "/etc/hostname"),
            ("resolv.conf", "/etc/resolv.conf"),
        ] {
            let m = MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(dir.join(file))
                .options(vec!["rbind".to_string(), "rprivate".to_string()])
                .build()
                .map_err(|e| Status::internal(e.to_string()))?;
            mounts.push(m);
        }
        spec.set_mounts(Some(mounts));
        Ok(Plan {
            own_netns,
            join: if own_netns { None } else { join },
            hosts,
            hostname: format!("{hostname}\n"),
            resolv_conf,
            userns,
            networks,
            files: Some(dir),
        })
    }

    /// [`Net::apply`] then [`Net::save`], with the host ports chosen and
    /// kept under one lock (see `publishing`).
    pub fn apply_and_save(
        &self,
        id: &str,
        mode: &Mode,
        r: &v1::CreateRequest,
        exposed: &[String],
        spec: &mut Spec,
    ) -> Result<Plan, Status> {
        let _g = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let plan = self.apply(id, mode, r, exposed, spec)?;
        // Queued, not waited for: the create's record, written after it,
        // makes it durable (two fsyncs less per create than a file of its
        // own had).
        self.keep(id, &plan, false)?;
        Ok(plan)
    }

    /// Keeps a changed plan of an existing container, durably.
    pub fn save(&self, id: &str, plan: &Plan) -> Result<(), Status> {
        self.keep(id, plan, true)
    }

    fn keep(&self, id: &str, plan: &Plan, durable: bool) -> Result<(), Status> {
        let data = serde_json::to_vec(plan)
            .map_err(|e| Status::internal(format!("cannot keep the network settings: {e}")))?;
        self.plan_map().insert(id.to_string(), plan.clone());
        if durable {
            self.store
                .write_plan(id, Some(data))
                .map_err(|e| Status::internal(format!("cannot keep the network settings: {e}")))
        } else {
            self.store.queue_plan(id, Some(data));
            Ok(())
        }
    }

    /// Takes a container off its networks, removes its namespace files
    /// (network, and user with --userns) and its plan.
    ///
    /// The unmount waits for an RCU grace period in the kernel (3.7 ms on
    /// average, up to 12 ms, measured on a loaded 2-core machine), and it
    /// sat on the path of every `rm` and `run --rm`. Nothing uses the
    /// namespace once its container is removed, so a thread of its own
    /// unmounts it and removes the file; a daemon that dies first leaves
    /// the file to [`Net::reconcile`] at the next start.
    pub fn remove(&self, id: &str) {
        self.remove_with(id, true)
    }

    /// As [`Net::remove`]; `defer`: unmount in a thread of its own. A
    /// create that failed unmounts at once, as a retry of the same
    /// container binds the same paths again.
    fn remove_with(&self, id: &str, defer: bool) {
        // CNI DEL runs in the namespace: before it is unbound.
        self.leave_all(id);
        // The `/etc` files of a container made under another run root are
        // not in its directories of this one, which the runtime removes.
        if let Some(dir) = self.load_plan(id).and_then(|p| p.files) {
            if dir != crate::shim::container_files(&self.run, id) {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        if self.plan_map().remove(id).is_some() {
            self.store.queue_plan(id, None);
        }
        let mut bound = Vec::new();
        for p in [self.netns_path(id), self.userns_path(id)] {
            if is_nsfs(&p) {
                bound.push(p);
            } else {
                remove_quietly(&p);
            }
        }
        if bound.is_empty() {
            return;
        }
        if !defer {
            bound.iter().for_each(|p| unbind(p));
            return;
        }
        let paths = bound.clone();
        let spawned = std::thread::Builder::new()
            .name("netns-unbind".into())
            .spawn(move || paths.iter().for_each(|p| unbind(p)));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a thread to unmount a container's namespaces; unmounting here");
            bound.iter().for_each(|p| unbind(p));
        }
    }

    /// Removes the namespace files and plans of containers not in `known`
    /// (a daemon killed during a create, or before a removal finished).
    /// Containers in `known` but not in `live` are taken off their
    /// networks (their run ended while no berthd watched).
    pub fn reconcile(&self, known: &[String], live: &[String]) {
        for id in self.driver.containers() {
            if !known.contains(&id) {
                self.remove(&id);
            } else if !live.contains(&id) {
                self.leave_all(&id);
            }
        }
        let planned: Vec<String> = self.plan_map().keys().cloned().collect();
        for id in planned {
            if !known.contains(&id) {
                self.remove(&id);
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".user").unwrap_or(&name).to_string();
                if !known.contains(&id) {
                    self.remove(&id);
                }
            }
        }
        self.sweep();
    }

    /// What a berthd killed in the middle of a join or leave can leave in
    /// the kernel and under `<root>/net` without a record that owns it:
    /// leases, veths on berth's bridges, idle bridges and base chains.
    fn sweep(&self) {
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let all: Vec<Attachment> = self
            .driver
            .containers()
            .iter()
            .flat_map(|c| self.driver.attachments(c))
            .collect();
        sweep::sweep_leases(&self.driver, &all);
        // The bridges of user networks stay while the network exists;
        // berth0 while a container is on it.
        let mut keep: std::collections::HashSet<String> =
            self.users().values().map(|n| n.bridge.clone()).collect();
        keep.extend(
            self.bridges()
                .into_iter()
                .filter(|n| all.iter().any(|a| a.network == n.name))
                .map(|n| n.bridge),
        );
        sweep::sweep_links(&all, &keep);
        firewall::sweep(&keep);
        self.ruled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|b| keep.contains(b));
        if all.is_empty() {
            sweep::sweep_base_chains();
        }
    }

    /// Binds the network namespace of a running container whose runtime
    /// made it (a `none` container's) to the container's namespace file, as
    /// if berthd had made it: another container is about to join it, or a
    /// network to be wired into it. From then on it is kept as berthd's own
    /// are, across the container's restarts, until it is removed.
    pub fn pin_netns(&self, id: &str, pid: i32) -> Result<(), String> {
        let run = self.run_lock(id);
        let _run = run.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.netns_path(id);
        if is_nsfs(&path) {
            return Ok(());
        }
        let from = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let bound = std::fs::create_dir_all(self.dir())
            .and_then(|()| std::fs::File::create(&path).map(drop))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
            .and_then(|()| {
                nix::mount::mount(
                    Some(&from),
                    &path,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| {
                    format!(
                        "cannot bind the container's network namespace to {}: {e}",
                        path.display()
                    )
                })
            });
        if bound.is_err() {
            remove_quietly(&path);
        }
        bound
    }

    fn ensure_netns(
        &self,
        id: &str,
        userns: Option<berth_core::spec::IdRange>,
    ) -> Result<(), String> {
        let path = self.netns_path(id);
        if is_nsfs(&path) {
            return Ok(());
        }
        std::fs::create_dir_all(self.dir())
            .and_then(|()| std::fs::File::create(&path).map(drop))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        if let Some(range) = userns {
            let user = self.userns_path(id);
            let res = std::fs::File::create(&user)
                .map_err(|e| format!("cannot create {}: {e}", user.display()))
                .and_then(|_| crate::userns::make_namespaces(range, &user, &path))
                .and_then(|()| {
                    loopback_up_in(&path).map_err(|e| format!("cannot bring the loopback up: {e}"))
                });
            if res.is_err() {
                self.remove_with(id, false);
            }
            return res;
        }
        // unshare(CLONE_NEWNET) moves only the calling thread: a thread of
        // its own, which ends after its namespace is bound to the file.
        let p = path.clone();
        let res = std::thread::spawn(move || -> Result<(), String> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot create a network namespace: {e}"))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("cannot bind the network namespace to {}: {e}", p.display()))?;
            loopback_up().map_err(|e| format!("cannot bring the loopback up: {e}"))
        })
        .join()
        .map_err(|_| "the network namespace thread panicked".to_string())?;
        if res.is_err() {
            self.remove_with(id, false);
        }
        res
    }
}

impl RootfsProvider for Net {
    fn ensure(&self, id: &str) -> Result<Prepared, String> {
        let run = self.run_lock(id);
        let _run = run.lock().unwrap_or_else(|p| p.into_inner());
        // A container without a plan (a bundle) keeps its spec's network.
        let Some(plan) = self.load_plan(id) else {
            return Ok(Prepared::default());
        };
        let mut prepared = Prepared::default();
        if plan.own_netns {
            if plan.networks.is_empty() && plan.userns.is_none() && !is_nsfs(&self.netns_path(id)) {
                // Only `lo` in it, and nothing bound to join: the runtime
                // makes it (see "Who owns the namespace").
                prepared.fresh_netns = true;
            } else {
                self.ensure_netns(id, plan.userns)?;
            }
        }
        let mut hosts = plan.hosts.clone();
        for (i, n) in plan.networks.iter().enumerate() {
            let a = match self.join(id, &format!("eth{i}"), n) {
                Ok(a) => a,
                Err(e) => {
                    self.leave_all(id);
                    return Err(e);
                }
            };
            // The hostname names the first network's address, as Docker's.
            if i == 0 {
                if let Some((ip, _, _)) = a.parsed().and_then(|r| r.address()) {
                    let name = plan.hostname.trim();
                    if !name.is_empty() {
                        hosts = hosts
                            .replace(&format!("127.0.0.1\t{name}\n"), &format!("{ip}\t{name}\n"));
                    }
                }
            }
        }
        if let Some(p) = &plan.join {
            if !is_nsfs(p) {
                return Err(format!(
                    "the network namespace to join ({}) is gone: its container was removed; recreate this one",
                    p.display()
                ));
            }
        }
        let dir = plan
            .files
            .clone()
            .unwrap_or_else(|| crate::shim::container_files(&self.root, id));
        // Made by the runtime before this (a run root changed since the
        // create is the exception).
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for (file, data) in [
            ("hosts", &hosts),
            ("hostname", &plan.hostname),
            ("resolv.conf", &plan.resolv_conf),
        ] {
            let p = dir.join(file);
            std::fs::write(&p, data).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        }
        Ok(prepared)
    }

    fn release(&self, id: &str) {
        let run = self.run_lock(id);
        {
            let _run = run.lock().unwrap_or_else(|p| p.into_inner());
            self.remove(id);
        }
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn stopped(&self, id: &str) {
        let run = self.run_lock(id);
        let _run = run.lock().unwrap_or_else(|p| p.into_inner());
        self.leave_all(id);
    }
}

/// The plans the store keeps, and those of a berthd from before they were
/// kept there (`<root>/netns/<id>.json`, one file each): moved into the
/// store, durably, and their files removed.
fn load_plans(store: &dyn NetworkStore, dir: &Path) -> Result<BTreeMap<String, Plan>, NetError> {
    let mut plans = BTreeMap::new();
    let stored = store
        .load_plans()
        .map_err(|e| NetError::Failed(format!("cannot load the network plans: {e}")))?;
    for (id, data) in stored {
        match serde_json::from_slice::<Plan>(&data) {
            Ok(p) => {
                plans.insert(id, p);
            }
            Err(e) => warn!(id = %id, error = %e, "unreadable network plan, skipped"),
        }
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        let Ok(data) = std::fs::read(e.path()) else {
            continue;
        };
        // One that does not parse (torn, or stray) is dropped, as the file
        // itself was read as no plan; the reconcile then removes the rest of
        // what no container owns.
        if let Ok(p) = serde_json::from_slice::<Plan>(&data) {
            store.write_plan(id, Some(data)).map_err(|e| {
                NetError::Failed(format!(
                    "cannot move the network plan of {id} into the store: {e}"
                ))
            })?;
            plans.insert(id.to_string(), p);
        }
        remove_quietly(&e.path());
    }
    Ok(plans)
}

/// The published ports of a plan, of all its networks.
fn plan_ports(plan: &Plan) -> Vec<PortMapping> {
    plan.networks
        .iter()
        .flat_map(|n| n.options.ports.iter().cloned())
        .collect()
}

/// Where a free host port is looked for (Linux's default ephemeral range).
const EPHEMERAL_FIRST: u16 = 32768;
const EPHEMERAL_LAST: u16 = 60999;

/// Whether nothing on the host listens on the mapping's host port (portmap
/// forwards with DNAT, so a listener there would never see its traffic).
fn host_port_free(m: &PortMapping) -> bool {
    let ip: Ipv4Addr = m.host_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
    if m.protocol == "udp" {
        std::net::UdpSocket::bind((ip, m.host_port)).is_ok()
    } else {
        std::net::TcpListener::bind((ip, m.host_port)).is_ok()
    }
}

/// Unmounts a container's namespace file and removes it.
fn unbind(ns: &Path) {
    if let Err(e) = nix::mount::umount2(ns, nix::mount::MntFlags::MNT_DETACH) {
        warn!(path = %ns.display(), error = %e, "cannot unmount a network namespace");
    }
    remove_quietly(ns);
}

fn remove_quietly(p: &Path) {
    match std::fs::remove_file(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(path = %p.display(), error = %e, "cannot remove"),
    }
}

/// Removes a bridge's firewall rules (its bridge is gone or going).
fn unrule(ruled: &Mutex<std::collections::HashSet<String>>, n: &Network) {
    let mut r = ruled.lock().unwrap_or_else(|p| p.into_inner());
    firewall::remove(&n.rules());
    r.remove(&n.bridge);
}

/// Deletes the bridges of `bridges` no container is on, with their rules,
/// and the plugins' base chains once no container is on any.
/// Called with the gate held alone.
fn teardown_idle(
    driver: &Driver,
    ruled: &Mutex<std::collections::HashSet<String>>,
    bridges: &[Network],
) {
    for n in bridges {
        if !driver.has_attachments_to(&n.name) {
            let bridge = &n.bridge;
            match links::delete(bridge) {
                Ok(true) => debug!(bridge, "deleted the bridge of an idle network"),
                Ok(false) => {}
                Err(e) => warn!(bridge, error = %e, "cannot delete an idle network's bridge"),
            }
            unrule(ruled, n);
        }
    }
    if driver.containers().is_empty() {
        sweep::sweep_base_chains();
    }
}

/// Whether `path` is a bound namespace (and not the empty file under it).
fn is_nsfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// `NAME:IP` of `--add-host` (the IP may be IPv6, so split at the first colon).
fn parse_add_host(h: &str) -> Result<(String, IpAddr), Status> {
    let bad = || {
        Status::invalid_argument(format!(
            "invalid --add-host {h:?}: use NAME:IP, e.g. db:192.0.2.10"
        ))
    };
    let (name, ip) = h.split_once(':').ok_or_else(bad)?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err(bad());
    }
    Ok((name.to_string(), ip.parse().map_err(|_| bad())?))
}

fn hosts_file(hostname: &str, extra: &str) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    s.push_str(extra);
    if !hostname.is_empty() {
        s.push_str(&format!("127.0.0.1\t{hostname}\n"));
    }
    s
}

fn is_loopback(ns: &str) -> bool {
    ns.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The container's resolv.conf from the host's: loopback nameservers are
/// dropped unless the container shares the host's namespace (they would
/// be the container's own loopback); the flags replace what they name.
fn resolv_conf(
    host: &str,
    host_net: bool,
    dns: &[String],
    search: &[String],
    options: &[String],
) -> String {
    let mut servers = Vec::new();
    let mut host_search = Vec::new();
    let mut host_options = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ns) = words.next() {
                    if host_net || !is_loopback(ns) {
                        servers.push(ns.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => host_search = words.map(String::from).collect(),
            Some("options") => host_options.extend(words.map(String::from)),
            _ => {}
        }
    }
    let pick = |flag: &[String], host: Vec<String>| {
        if flag.is_empty() {
            host
        } else {
            flag.to_vec()
        }
    };
    let mut out = String::new();
    for ns in pick(dns, servers) {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    let search = pick(search, host_search);
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    let options = pick(options, host_options);
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Both of berthd's per-container providers: the root, then the network.
pub struct Providers(pub Vec<std::sync::Arc<dyn RootfsProvider>>);

impl RootfsProvider for Providers {
    fn ensure(&self, id: &str) -> Result<Prepared, String> {
        self.0.iter().try_fold(Prepared::default(), |all, p| {
            let one = p.ensure(id)?;
            Ok(Prepared {
                fresh_netns: all.fresh_netns || one.fresh_netns,
            })
        })
    }
    fn release(&self, id: &str) {
        self.0.iter().for_each(|p| p.release(id));
    }
    fn stopped(&self, id: &str) {
        self.0.iter().for_each(|p| p.stopped(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DNS table follows the attachments: names, aliases, short id and
    /// addresses from the CNI result; leave; back from the kept records
    /// after a restart; the default bridge is never served.
    #[tokio::test]
    async fn dns_members_follow_attachments() {
        let root = std::env::temp_dir().join(format!("berthd-net-dns-{}", std::process::id()));
        assert!(root.starts_with(std::env::temp_dir()));
        let _ = std::fs::remove_dir_all(&root);
        let settings = Settings {
            default_network: "bridge".into(),
            bridge_subnet: "10.87.0.0/16".parse().unwrap(),
            plugin_dir: root.join("no-plugins"),
            pool: "10.89.0.0/16".parse().unwrap(),
        };
        let dns = Arc::new(
            Resolver::new(berth_net::dns::Config::new(
                berth_net::dns::Upstreams::Fixed(vec![]),
            ))
            .unwrap(),
        );
        let net = Net::new(
            &root,
            &root.join("run"),
            &settings,
            Arc::new(crate::random_input::NoNetworks),
        )
        .unwrap()
        .with_dns(dns.clone());
        // A user network, as the bridge's config with a loopback gateway
        // (the listener binds it, port 53).
        let mut user = net.network("bridge").unwrap();
        user.name = "un1".into();
        let run = u8::try_from(std::process::id() % 200).unwrap() + 20;
        user.gateway = std::net::Ipv4Addr::new(127, 54, run, 1);
        net.serve_dns(&user).unwrap();
        assert!(dns.serves("un1"));
        assert!(!dns.serves("bridge"));
        assert_eq!(net.dns_server("bridge"), None);

        let id = format!("0123456789ab{}", "c".repeat(52));
        let a = Attachment {
            container_id: id.clone(),
            network: "un1".into(),
            ifname: "eth0".into(),
            netns: root.join("ns"),
            conflist: berth_net::ConfList(serde_json::json!({})),
            capabilities: Default::default(),
            names: vec!["Web".into(), "webhost".into(), "www".into()],
            veth: None,
            result: Some(serde_json::json!({
                "cniVersion": "1.0.0",
                "ips": [{"address": "10.89.0.2/24", "gateway": "10.89.0.1"}],
            })),
        };
        net.dns_join(&id, &a);
        let members = dns.members("un1");
        assert_eq!(members.len(), 1);
        let (cid, m) = &members[0];
        assert_eq!(cid, &id);
        assert_eq!(m.name, "web");
        assert_eq!(m.aliases, ["0123456789ab", "webhost", "www"]);
        assert_eq!(m.addrs, [IpAddr::from([10, 89, 0, 2])]);
        // On a network that is not served: nothing.
        let mut b = a.clone();
        b.network = "bridge".into();
        net.dns_join(&id, &b);
        assert!(dns.members("bridge").is_empty());

        // A rename: the new name at once (the attachment's kept record
        // is what the table is made from).
        let dir = root.join("net/attachments").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("un1.json"), serde_json::to_vec(&a).unwrap()).unwrap();
        net.rename(&id, "Web", "front");
        let m = &dns.members("un1")[0].1;
        assert_eq!(m.name, "front");
        assert_eq!(m.aliases, ["0123456789ab", "webhost", "www"]);
        std::fs::remove_file(dir.join("un1.json")).unwrap();

        net.leave(&id, "un1");
        assert!(dns.members("un1").is_empty());

        // berthd's start: the kept record puts it back.
        std::fs::write(dir.join("un1.json"), serde_json::to_vec(&a).unwrap()).unwrap();
        net.restore_dns();
        assert_eq!(dns.members("un1").len(), 1);

        net.stop_dns("un1");
        assert!(!dns.serves("un1"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn resolv_drops_loopback_and_flags_replace() {
        let host =
            "nameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch a.example\noptions ndots:1\n";
        assert_eq!(
            resolv_conf(host, false, &[], &[], &[]),
            "nameserver 192.0.2.1\nsearch a.example\noptions ndots:1\n"
        );
        assert!(resolv_conf(host, true, &[], &[], &[]).contains("127.0.0.53"));
        let s = resolv_conf(
            host,
            false,
            &["192.0.2.9".into()],
            &["b.example".into()],
            &["ndots:3".into()],
        );
        assert_eq!(
            s,
            "nameserver 192.0.2.9\nsearch b.example\noptions ndots:3\n"
        );
    }

    #[test]
    fn add_host_forms() {
        assert_eq!(
            parse_add_host("db:192.0.2.10").unwrap(),
            ("db".into(), "192.0.2.10".parse().unwrap())
        );
        assert_eq!(
            parse_add_host("v6:::1").unwrap().1,
            "::1".parse::<IpAddr>().unwrap()
        );
        assert!(parse_add_host("db").is_err());
        assert!(parse_add_host(":1.2.3.4").is_err());
        assert!(parse_add_host("db:nope").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("").unwrap(), ParsedMode::Default);
        assert_eq!(parse_mode("none").unwrap(), ParsedMode::None);
        assert_eq!(
            parse_mode("bridge").unwrap(),
            ParsedMode::Network("bridge".into())
        );
        assert_eq!(parse_mode("host").unwrap(), ParsedMode::Host);
        assert_eq!(
            parse_mode("container:abc").unwrap(),
            ParsedMode::Container("abc".into())
        );
        assert!(parse_mode("container:").is_err());
    }
}
