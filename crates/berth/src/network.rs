//! `berth network create|ls|inspect|rm|connect|disconnect|prune`.

use std::collections::HashMap;
use std::io::Write;

use berth_api::{v1, NetworksClient};
use clap::Subcommand;
use tonic::transport::Channel;

use crate::cmd::{for_each_name, print_json_array};
use crate::CmdResult;

pub type NetworkClient = NetworksClient<Channel>;

#[derive(Subcommand, Debug, Clone)]
pub enum NetworkCmd {
    /// Make a bridge network. Prints its id.
    Create {
        /// Its IPv4 subnet (CIDR); default: the next free /24 of berthd's
        /// network-pool. It must not overlap another network's.
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// The gateway (default: the subnet's first address).
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
        /// No route out and no masquerade: containers reach only each
        /// other.
        #[arg(long)]
        internal: bool,
        /// A label (K=V, repeatable).
        #[arg(long, value_name = "K=V")]
        label: Vec<String>,
        /// Accepted for Docker's scripts: only `bridge` is built.
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
        /// table (default) or json (one object a line).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Describe networks as JSON (with their containers' addresses).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while a container is on one).
    #[command(alias = "remove")]
    Rm {
        /// A missing network is no error.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Put a container on a network (at once if it runs).
    Connect {
        /// Another name of the container on the network (repeatable).
        #[arg(long, value_name = "NAME")]
        alias: Vec<String>,
        /// A fixed IPv4 address inside the network's subnet.
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
        network: String,
        container: String,
    },
    /// Take a container off a network.
    Disconnect {
        /// A container not on the network is no error.
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
    /// Remove every user network no container is on.
    Prune {
        /// Do not ask (berth never asks; accepted for Docker's scripts).
        #[arg(short, long)]
        force: bool,
    },
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn json(n: &v1::Network) -> serde_json::Value {
    let containers: serde_json::Map<String, serde_json::Value> = n
        .containers
        .iter()
        .map(|e| {
            (
                e.container_id.clone(),
                serde_json::json!({
                    "Name": e.container_name,
                    "IPv4Address": e.ipv4,
                    "Gateway": e.gateway,
                    "MacAddress": e.mac,
                    "Aliases": e.aliases,
                    "Interface": e.interface,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created,
        "Driver": n.driver,
        "Bridge": n.bridge,
        "Internal": n.internal,
        "IPAM": {"Config": [{"Subnet": n.subnet, "Gateway": n.gateway}]},
        "Labels": n.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "Containers": containers,
    })
}

pub async fn network_cmd(c: &mut NetworkClient, cmd: NetworkCmd) -> CmdResult {
    match cmd {
        NetworkCmd::Create {
            subnet,
            gateway,
            internal,
            label,
            driver,
            name,
        } => {
            if driver != "bridge" {
                return Err(crate::Failure::own(format!(
                    "network driver {driver:?} is not supported: berth has bridge networks only"
                )));
            }
            let mut labels = HashMap::new();
            for l in &label {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                labels.insert(k.to_string(), v.to_string());
            }
            let n = c
                .create(v1::CreateNetworkRequest {
                    name,
                    subnet: subnet.unwrap_or_default(),
                    gateway: gateway.unwrap_or_default(),
                    internal,
                    labels,
                })
                .await?
                .into_inner();
            println!("{}", n.id);
            Ok(0)
        }
        NetworkCmd::Ls { quiet, format } => {
            crate::cmd::check_format(&format)?;
            let nets = c
                .list(v1::ListNetworksRequest {})
                .await?
                .into_inner()
                .networks;
            let mut out = std::io::stdout().lock();
            if quiet {
                for n in &nets {
                    let _ = writeln!(out, "{}", n.name);
                }
            } else if format == "json" {
                for n in &nets {
                    let _ = writeln!(out, "{}", json(n));
                }
            } else {
                let _ = writeln!(
                    out,
                    "{:<14}{:<20}{:<10}{:<20}{:<10}",
                    "NETWORK ID", "NAME", "DRIVER", "SUBNET", "INTERNAL"
                );
                for n in &nets {
                    let _ = writeln!(
                        out,
                        "{:<14}{:<20}{:<10}{:<20}{:<10}",
                        short(&n.id),
                        n.name,
                        n.driver,
                        n.subnet,
                        n.internal
                    );
                }
            }
            Ok(0)
        }
        NetworkCmd::Inspect { names } => {
            let (docs, code) = for_each_name(names, |name| {
                let mut c = c.clone();
                async move {
                    let r = c.inspect(v1::InspectNetworkRequest { name }).await?;
                    Ok(json(&r.into_inner()))
                }
            })
            .await;
            print_json_array(&docs);
            Ok(code)
        }
        NetworkCmd::Rm { force, names } => {
            let (_, code) = for_each_name(names, |name| {
                let mut c = c.clone();
                async move {
                    c.remove(v1::RemoveNetworkRequest {
                        name: name.clone(),
                        force,
                    })
                    .await?;
                    println!("{name}");
                    Ok(())
                }
            })
            .await;
            Ok(code)
        }
        NetworkCmd::Connect {
            alias,
            ip,
            network,
            container,
        } => {
            c.connect_container(v1::ConnectNetworkRequest {
                network,
                container,
                aliases: alias,
                ip: ip.unwrap_or_default(),
            })
            .await?;
            Ok(0)
        }
        NetworkCmd::Disconnect {
            force,
            network,
            container,
        } => {
            c.disconnect_container(v1::DisconnectNetworkRequest {
                network,
                container,
                force,
            })
            .await?;
            Ok(0)
        }
        NetworkCmd::Prune { force: _ } => {
            let r = c.prune(v1::PruneNetworksRequest {}).await?.into_inner();
            if !r.removed.is_empty() {
                println!("Deleted Networks:");
                for n in &r.removed {
                    println!("{n}");
                }
            }
            Ok(0)
        }
    }
}
