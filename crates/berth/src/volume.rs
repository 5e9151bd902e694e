//! `berth volume create|ls|inspect|rm|prune`.

use std::collections::HashMap;
use std::io::Write;

use berth_api::{v1, VolumesClient};
use clap::Subcommand;
use tonic::transport::Channel;

use crate::cmd::{for_each_name, print_json_array};
use crate::{CmdResult, Failure};

pub type VolumeClient = VolumesClient<Channel>;

#[derive(Subcommand, Debug, Clone)]
pub enum VolumeCmd {
    /// Make a volume (a random name unless NAME); an existing NAME is
    /// left as it is. Prints the name.
    Create {
        /// A label (K=V, repeatable).
        #[arg(long, value_name = "K=V")]
        label: Vec<String>,
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
        /// table (default) or json (one object a line).
        #[arg(long, default_value = "table")]
        format: String,
        /// dangling=true: only volumes no container uses.
        #[arg(short, long = "filter", value_name = "FILTER")]
        filters: Vec<String>,
    },
    /// Describe volumes as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a container uses one).
    #[command(alias = "remove")]
    Rm {
        /// A missing volume is no error.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune {
        /// Do not ask (berth never asks; accepted for Docker's scripts).
        #[arg(short, long)]
        force: bool,
    },
}

fn json(v: &v1::Volume) -> serde_json::Value {
    serde_json::json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": v.mountpoint,
        "CreatedAt": v.created,
        "Labels": v.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "Scope": "local",
        "Anonymous": v.anonymous,
        "Containers": v.containers,
    })
}

fn dangling_filter(filters: &[String]) -> Result<bool, Failure> {
    let mut dangling = false;
    for f in filters {
        match f.as_str() {
            "dangling=true" | "dangling=1" => dangling = true,
            "dangling=false" | "dangling=0" => dangling = false,
            _ => {
                return Err(Failure::own(format!(
                    "invalid --filter {f:?}: berth knows dangling=true|false"
                )))
            }
        }
    }
    Ok(dangling)
}

pub async fn volume_cmd(c: &mut VolumeClient, cmd: VolumeCmd) -> CmdResult {
    match cmd {
        VolumeCmd::Create { label, name } => {
            let mut labels = HashMap::new();
            for l in &label {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                labels.insert(k.to_string(), v.to_string());
            }
            let v = c
                .create(v1::CreateVolumeRequest {
                    name: name.unwrap_or_default(),
                    labels,
                })
                .await?
                .into_inner();
            println!("{}", v.name);
            Ok(0)
        }
        VolumeCmd::Ls {
            quiet,
            format,
            filters,
        } => {
            crate::cmd::check_format(&format)?;
            let dangling = dangling_filter(&filters)?;
            let vols = c
                .list(v1::ListVolumesRequest { dangling })
                .await?
                .into_inner()
                .volumes;
            let mut out = std::io::stdout().lock();
            for v in &vols {
                let _ = if quiet {
                    writeln!(out, "{}", v.name)
                } else if format == "json" {
                    writeln!(out, "{}", json(v))
                } else {
                    Ok(())
                };
            }
            if !quiet && format != "json" {
                let _ = writeln!(out, "DRIVER    VOLUME NAME");
                for v in &vols {
                    let _ = writeln!(out, "{:<10}{}", v.driver, v.name);
                }
            }
            Ok(0)
        }
        VolumeCmd::Inspect { names } => {
            let (docs, code) = for_each_name(names, |name| {
                let mut c = c.clone();
                async move {
                    let r = c.inspect(v1::InspectVolumeRequest { name }).await?;
                    Ok(json(&r.into_inner()))
                }
            })
            .await;
            print_json_array(&docs);
            Ok(code)
        }
        VolumeCmd::Rm { force, names } => {
            let (_, code) = for_each_name(names, |name| {
                let mut c = c.clone();
                async move {
                    c.remove(v1::RemoveVolumeRequest {
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
        VolumeCmd::Prune { force: _ } => {
            let r = c.prune(v1::PruneVolumesRequest {}).await?.into_inner();
            if !r.removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &r.removed {
                    println!("{n}");
                }
            }
            println!("Total reclaimed: {} volume(s)", r.removed.len());
            Ok(0)
        }
    }
}
