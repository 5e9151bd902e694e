//! What berth made in its namespace's network that nothing owns any more:
//! veths on berth's bridges without an attachment, host-local leases of
//! attachments that are gone, bridges of removed networks (and `berth0`
//! while no container is on it), and the base chains the CNI plugins make
//! once and never remove (`CNI-FORWARD`, `CNI-ADMIN`, `CNI-HOSTPORT-*`),
//! when no container of any CNI user has a rule in them.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use tracing::{debug, warn};

use crate::firewall::words;
use crate::links;
use crate::network::{Attachment, Driver};

/// The prefix of the bridges berth names (`berth0`, `berth<id>`).
pub const BRIDGE_PREFIX: &str = "berth";

/// The host-side veths of kept attachments.
fn attached_veths(all: &[Attachment]) -> HashSet<String> {
    all.iter()
        .filter_map(|a| a.parsed())
        .flat_map(|r| r.interfaces)
        .filter(|i| i.sandbox.is_empty())
        .map(|i| i.name)
        .collect()
}

/// Removes host-local leases whose container has no attachment to that
/// network. A lease file is named by its address and holds the container
/// id on its first line.
pub fn sweep_leases(driver: &Driver, all: &[Attachment]) {
    let Ok(nets) = std::fs::read_dir(driver.ipam_dir()) else {
        return;
    };
    for n in nets.flatten() {
        let network = n.file_name().to_string_lossy().into_owned();
        let owners: HashSet<&str> = all
            .iter()
            .filter(|a| a.network == network)
            .map(|a| a.container_id.as_str())
            .collect();
        for f in std::fs::read_dir(n.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_err() {
                continue;
            }
            let owner = std::fs::read_to_string(f.path()).unwrap_or_default();
            let owner = owner.lines().next().unwrap_or("").trim();
            if !owners.contains(owner) {
                debug!(lease = %f.path().display(), "removing a lease no container holds");
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

/// Deletes veths on berth's bridges that no attachment holds, and berth's
/// bridges not in `keep`.
pub fn sweep_links(all: &[Attachment], keep: &HashSet<String>) {
    let list = match links::list() {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot list the links");
            return;
        }
    };
    let berth_bridges: HashSet<u32> = list
        .iter()
        .filter(|l| l.kind == "bridge" && l.name.starts_with(BRIDGE_PREFIX))
        .map(|l| l.index)
        .collect();
    let veths = attached_veths(all);
    for l in &list {
        // On a bridge of berth's, or named by berth and not on a bridge
        // yet (a crash between the pair's making and its wiring).
        let stray_veth = l.kind == "veth"
            && (l.master.is_some_and(|m| berth_bridges.contains(&m))
                || l.name.starts_with(crate::bridge::VETH_PREFIX))
            && !veths.contains(&l.name);
        let stray_bridge = berth_bridges.contains(&l.index) && !keep.contains(&l.name);
        if stray_veth || stray_bridge {
            debug!(link = %l.name, "deleting a link nothing of berth's holds");
            if let Err(e) = links::delete(&l.name) {
                warn!(link = %l.name, error = %e, "cannot delete a link");
            }
        }
    }
}

/// The CNI plugins' base chains, by table, and the built-in chains that
/// jump to them.
const BASE: &[(&str, &[&str], &[&str])] = &[
    ("filter", &["CNI-FORWARD", "CNI-ADMIN"], &["FORWARD"]),
    (
        "nat",
        &[
            "CNI-HOSTPORT-DNAT",
            "CNI-HOSTPORT-SETMARK",
            "CNI-HOSTPORT-MASQ",
        ],
        &["PREROUTING", "OUTPUT", "POSTROUTING"],
    ),
];

fn iptables(args: &[&str]) -> Option<String> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg("5")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the plugins' base chains when no container has a rule in them
/// (a per-container rule of the firewall plugin in CNI-FORWARD, a
/// portmap DNAT chain in CNI-HOSTPORT-DNAT): nothing of berth's stays in
/// the firewall once its last container is gone, and another CNI user's
/// rules are never touched.
pub fn sweep_base_chains() {
    let base: Vec<&str> = BASE
        .iter()
        .flat_map(|(_, c, _)| c.iter().copied())
        .collect();
    let rules = |table: &str, chain: &str| -> Option<Vec<Vec<String>>> {
        let out = iptables(&["-t", table, "-S", chain])?;
        Some(
            out.lines()
                .map(words)
                .filter(|w| w.first().is_some_and(|a| a == "-A"))
                .collect(),
        )
    };
    let target = |w: &Vec<String>| {
        w.iter()
            .position(|a| a == "-j")
            .and_then(|i| w.get(i + 1).cloned())
            .unwrap_or_default()
    };
    // Busy: a rule in CNI-FORWARD other than the jump to CNI-ADMIN, any in
    // CNI-ADMIN (the admin's), any in CNI-HOSTPORT-DNAT.
    for (table, chain) in [
        ("filter", "CNI-FORWARD"),
        ("filter", "CNI-ADMIN"),
        ("nat", "CNI-HOSTPORT-DNAT"),
    ] {
        if let Some(r) = rules(table, chain) {
            if r.iter().any(|w| target(w) != "CNI-ADMIN") {
                return;
            }
        }
    }
    for (table, chains, builtins) in BASE {
        for b in *builtins {
            for w in rules(table, b).unwrap_or_default() {
                if base.contains(&target(&w).as_str()) {
                    let mut args: Vec<&str> = vec!["-t", table, "-D"];
                    args.extend(w.iter().skip(1).map(String::as_str));
                    let _ = iptables(&args);
                }
            }
        }
        for c in *chains {
            let _ = iptables(&["-t", table, "-F", c]);
        }
        for c in *chains {
            let _ = iptables(&["-t", table, "-X", c]);
        }
    }
}

/// Whether `p` is inside `dir` (a guard before removing under it).
pub fn is_under(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir) && p != dir && !p.components().any(|c| c.as_os_str() == "..")
}
