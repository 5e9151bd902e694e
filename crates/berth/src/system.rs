//! `top`, `rename`, `container prune` and `system df`, printed as Docker
//! prints them.

use std::io::Write;

use berth_api::{v1, ContainersClient};
use clap::{Args, Subcommand};
use tonic::transport::Channel;

use crate::format::{self, size_with_precision};
use crate::CmdResult;

type Client = ContainersClient<Channel>;

#[derive(Subcommand, Debug)]
pub enum ContainerCmd {
    /// Remove every stopped container (and created ones never started);
    /// prints their ids and the space their writable layers took.
    ///
    ///   berth container prune
    ///
    ///   berth container prune --filter until=24h --filter label=ci
    #[command(verbatim_doc_comment)]
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask (berth never asks; accepted for Docker's scripts).
    #[arg(short, long)]
    pub force: bool,
    /// until=TIME (created before: RFC 3339, Unix seconds, or a duration
    /// ago like 10m or 24h), label=KEY[=VALUE], label!=KEY[=VALUE]
    /// (repeatable: all must hold).
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Disk usage of images, containers and volumes, as `docker system df`
    /// (berth has no build cache: always 0B).
    ///
    ///   berth system df
    ///
    ///   berth system df -v     one row per image, container and volume
    #[command(verbatim_doc_comment)]
    Df {
        /// One row per image, container and volume.
        #[arg(short, long)]
        verbose: bool,
    },
}

pub async fn top(client: &mut Client, id: String, ps_args: Vec<String>) -> CmdResult {
    let r = client
        .top(v1::TopRequest { id, ps_args })
        .await?
        .into_inner();
    let mut lines = vec![r.titles.join("\t")];
    lines.extend(r.processes.iter().map(|p| p.fields.join("\t")));
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", crate::psfmt::tabwrite_min(&lines, 20));
    Ok(0)
}

pub async fn rename(client: &mut Client, old: String, new: String) -> CmdResult {
    client
        .rename(v1::RenameRequest { id: old, name: new })
        .await?;
    Ok(0)
}

pub async fn container_cmd(client: &mut Client, cmd: ContainerCmd) -> CmdResult {
    match cmd {
        ContainerCmd::Prune(a) => {
            let r = client
                .prune(v1::PruneContainersRequest { filters: a.filters })
                .await?
                .into_inner();
            let mut out = std::io::stdout().lock();
            if !r.deleted.is_empty() {
                let _ = writeln!(out, "Deleted Containers:");
                for id in &r.deleted {
                    let _ = writeln!(out, "{id}");
                }
                let _ = writeln!(out);
            }
            let _ = writeln!(
                out,
                "Total reclaimed space: {}",
                size_with_precision(r.space_reclaimed, 4)
            );
            Ok(0)
        }
    }
}

pub async fn system_cmd(client: &mut Client, cmd: SystemCmd) -> CmdResult {
    match cmd {
        SystemCmd::Df { verbose } => {
            let u = client
                .disk_usage(v1::DiskUsageRequest {})
                .await?
                .into_inner();
            let text = if verbose {
                df_verbose(&u)
            } else {
                df_summary(&u)
            };
            print!("{text}");
            Ok(0)
        }
    }
}

fn size(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// "11.63MB (70%)", or the size alone when the total is 0 (Docker's
/// RECLAIMABLE).
fn reclaimable(reclaim: u64, total: u64) -> String {
    match (reclaim * 100).checked_div(total) {
        Some(pct) => format!("{} ({pct}%)", size_with_precision(reclaim, 4)),
        None => size_with_precision(reclaim, 4),
    }
}

fn live(c: &v1::Container) -> bool {
    matches!(c.state.as_str(), "running" | "paused") || c.restarting
}

/// The summary table of `docker system df`.
pub fn df_summary(u: &v1::DiskUsageResponse) -> String {
    let total = size(u.layers_size);
    let active_images = u.images.iter().filter(|i| i.containers > 0).count();
    // Docker's: what the images in use hold of their own is not reclaimable.
    let used: u64 = u
        .images
        .iter()
        .filter(|i| i.containers > 0)
        .map(|i| size(i.size).saturating_sub(size(i.shared_size)))
        .sum();
    let cs: Vec<&v1::Container> = u
        .containers
        .iter()
        .filter_map(|c| c.container.as_ref())
        .collect();
    let c_total: u64 = cs.iter().map(|c| size(c.size_rw.unwrap_or(0))).sum();
    let c_reclaim: u64 = cs
        .iter()
        .filter(|c| !live(c))
        .map(|c| size(c.size_rw.unwrap_or(0)))
        .sum();
    let v_total: u64 = u.volumes.iter().map(|v| size(v.size)).sum();
    let v_reclaim: u64 = u
        .volumes
        .iter()
        .filter(|v| v.links == 0)
        .map(|v| size(v.size))
        .sum();
    let rows = [
        "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE".to_string(),
        format!(
            "Images\t{}\t{}\t{}\t{}",
            u.images.len(),
            active_images,
            size_with_precision(total, 4),
            reclaimable(total.saturating_sub(used), total)
        ),
        format!(
            "Containers\t{}\t{}\t{}\t{}",
            cs.len(),
            cs.iter().filter(|c| live(c)).count(),
            size_with_precision(c_total, 4),
            reclaimable(c_reclaim, c_total)
        ),
        format!(
            "Local Volumes\t{}\t{}\t{}\t{}",
            u.volumes.len(),
            u.volumes.iter().filter(|v| v.links > 0).count(),
            size_with_precision(v_total, 4),
            reclaimable(v_reclaim, v_total)
        ),
        format!(
            "Build Cache\t0\t0\t{}\t{}",
            size_with_precision(size(u.build_cache_size), 4),
            size_with_precision(size(u.build_cache_size), 4)
        ),
    ];
    crate::psfmt::tabwrite_min(&rows, 10)
}

/// `docker system df -v`: a table per kind.
pub fn df_verbose(u: &v1::DiskUsageResponse) -> String {
    let mut out = String::from("Images space usage:\n\n");
    let mut rows = vec![
        "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tSHARED SIZE\tUNIQUE SIZE\tCONTAINERS"
            .to_string(),
    ];
    for i in &u.images {
        // Docker shows the first name only.
        let (repo, tag) = match i.repo_tags.first() {
            Some(t) => {
                let repo = format::familiar_repository(t);
                let tag = format::familiar(t)
                    .strip_prefix(&repo)
                    .and_then(|r| r.strip_prefix(':'))
                    .unwrap_or("<none>")
                    .to_string();
                (repo, tag)
            }
            None => ("<none>".to_string(), "<none>".to_string()),
        };
        let created = if i.created.is_empty() {
            "N/A".to_string()
        } else {
            format::ago(&i.created)
        };
        rows.push(format!(
            "{repo}\t{tag}\t{}\t{created}\t{}\t{}\t{}\t{}",
            i.id.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>(),
            format::human_size(size(i.size)),
            format::human_size(size(i.shared_size)),
            format::human_size(size(i.size).saturating_sub(size(i.shared_size))),
            i.containers
        ));
    }
    out.push_str(&crate::psfmt::tabwrite_min(&rows, 10));
    out.push_str("\nContainers space usage:\n\n");
    let mut rows = vec![
        "CONTAINER ID\tIMAGE\tCOMMAND\tLOCAL VOLUMES\tSIZE\tCREATED\tSTATUS\tNAMES".to_string(),
    ];
    for cu in &u.containers {
        let Some(c) = &cu.container else { continue };
        rows.push(format!(
            "{}\t{}\t\"{}\"\t{}\t{}\t{}\t{}\t{}",
            c.id.chars().take(12).collect::<String>(),
            format::container_image(c),
            format::truncate(&c.command.join(" "), 20),
            cu.local_volumes,
            format::human_size(size(c.size_rw.unwrap_or(0))),
            format::ago(&c.created_at),
            format::status_text(c),
            c.name
        ));
    }
    out.push_str(&crate::psfmt::tabwrite_min(&rows, 10));
    out.push_str("\nLocal Volumes space usage:\n\n");
    let mut rows = vec!["VOLUME NAME\tLINKS\tSIZE".to_string()];
    for v in &u.volumes {
        rows.push(format!(
            "{}\t{}\t{}",
            v.name,
            v.links,
            size_with_precision(size(v.size), 4)
        ));
    }
    out.push_str(&crate::psfmt::tabwrite_min(&rows, 10));
    out.push_str(&format!(
        "\nBuild cache usage: {}\n\n",
        size_with_precision(size(u.build_cache_size), 4)
    ));
    out.push_str(&crate::psfmt::tabwrite_min(
        &["CACHE ID\tCACHE TYPE\tSIZE\tCREATED\tLAST USED\tUSAGE\tSHARED".to_string()],
        10,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(state: &str, rw: i64) -> v1::ContainerUsage {
        v1::ContainerUsage {
            container: Some(v1::Container {
                id: "0123456789abcdef".into(),
                name: "web".into(),
                state: state.into(),
                command: vec!["sleep".into(), "100".into()],
                size_rw: Some(rw),
                size_root_fs: Some(rw + 4_261_000),
                ..Default::default()
            }),
            local_volumes: 0,
        }
    }

    #[test]
    fn df_summary_as_docker() {
        let u = v1::DiskUsageResponse {
            images: vec![
                v1::ImageUsage {
                    id: "sha256:aa".into(),
                    size: 4_261_000,
                    containers: 1,
                    ..Default::default()
                },
                v1::ImageUsage {
                    id: "sha256:bb".into(),
                    size: 12_000_000,
                    containers: 0,
                    ..Default::default()
                },
            ],
            containers: vec![ctr("running", 100), ctr("stopped", 112)],
            volumes: vec![
                v1::VolumeUsage {
                    name: "data".into(),
                    size: 36,
                    links: 1,
                },
                v1::VolumeUsage {
                    name: "old".into(),
                    size: 0,
                    links: 0,
                },
            ],
            layers_size: 16_261_000,
            build_cache_size: 0,
        };
        let t = df_summary(&u);
        let want = "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\n\
                    Images          2         1         16.26MB   12MB (73%)\n\
                    Containers      2         1         212B      112B (52%)\n\
                    Local Volumes   2         1         36B       0B (0%)\n\
                    Build Cache     0         0         0B        0B\n";
        assert_eq!(t, want);
    }
}
