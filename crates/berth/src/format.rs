//! Output formats: tables for people, JSON for scripts.

use std::time::{Duration, SystemTime};

use berth_api::v1;
use serde_json::{json, Value};

/// "3 seconds", "2 minutes", "About an hour", as Docker prints them.
pub fn human_duration(d: Duration) -> String {
    berth_api::display::human_duration(d.as_secs())
}

fn since(ts: &str) -> Option<Duration> {
    let t = humantime::parse_rfc3339(ts).ok()?;
    SystemTime::now().duration_since(t).ok()
}

pub fn ago(ts: &str) -> String {
    since(ts).map_or_else(String::new, |d| format!("{} ago", human_duration(d)))
}

/// The exit code to show: the code, 128+N, or -1 when unknown; None before
/// the first exit.
pub fn exit_code(c: &v1::Container) -> Option<i32> {
    c.exit.as_ref().map(|e| e.exit_code)
}

pub fn status_text(c: &v1::Container) -> String {
    let health = match c.health.as_str() {
        "" => String::new(),
        "starting" => " (health: starting)".into(),
        other => format!(" ({other})"),
    };
    let s = status_base(c);
    if c.state == "running" {
        s + &health
    } else {
        s
    }
}

fn status_base(c: &v1::Container) -> String {
    match c.state.as_str() {
        "running" => format!(
            "Up {}",
            since(&c.started_at).map(human_duration).unwrap_or_default()
        ),
        "paused" => format!(
            "Up {} (Paused)",
            since(&c.started_at).map(human_duration).unwrap_or_default()
        ),
        "created" => "Created".into(),
        "stopped" if c.restarting => match &c.exit {
            Some(e) => format!("Restarting ({}) {}", e.exit_code, ago(&c.finished_at)),
            None => "Restarting".into(),
        },
        "stopped" => match &c.exit {
            Some(e) => format!("Exited ({}) {}", e.exit_code, ago(&c.finished_at)),
            None => "Exited".into(),
        },
        other => other.to_string(),
    }
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn ps_row(c: &v1::Container) -> [String; 7] {
    [
        c.id.chars().take(12).collect(),
        c.name.clone(),
        container_image(c),
        format!("\"{}\"", truncate(&c.command.join(" "), 20)),
        ago(&c.created_at),
        status_text(c),
        if c.pid > 0 {
            c.pid.to_string()
        } else {
            String::new()
        },
    ]
}

const PS_HEADER: [&str; 7] = [
    "CONTAINER ID",
    "NAME",
    "IMAGE",
    "COMMAND",
    "CREATED",
    "STATUS",
    "PID",
];

pub fn ps_table(cs: &[v1::Container]) -> String {
    let rows: Vec<[String; 7]> = cs.iter().map(ps_row).collect();
    table(&PS_HEADER, &rows)
}

/// `ps -s`: the table with Docker's SIZE column last.
pub fn ps_table_sized(cs: &[v1::Container]) -> String {
    let rows: Vec<[String; 8]> = cs
        .iter()
        .map(|c| {
            let [a, b, c2, d, e, f, g] = ps_row(c);
            [a, b, c2, d, e, f, g, ps_size(c)]
        })
        .collect();
    let [a, b, c, d, e, f, g] = PS_HEADER;
    table(&[a, b, c, d, e, f, g, "SIZE"], &rows)
}

/// Docker's SIZE: the writable layer, and with the image ("virtual").
pub fn ps_size(c: &v1::Container) -> String {
    let rw = human_size(c.size_rw.unwrap_or(0).max(0) as u64);
    match c.size_root_fs {
        Some(v) if v > 0 => format!("{rw} (virtual {})", human_size(v as u64)),
        _ => rw,
    }
}

pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn opt_str(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

pub fn exit_json(e: &v1::ExitStatus) -> Value {
    let kind = match v1::exit_status::Kind::try_from(e.kind) {
        Ok(v1::exit_status::Kind::Exited) => "exited",
        Ok(v1::exit_status::Kind::Signaled) => "signaled",
        _ => "unknown",
    };
    json!({
        "kind": kind,
        "exit_code": e.exit_code,
        "signal": if e.signal > 0 { json!(e.signal) } else { Value::Null },
        "reason": opt_str(&e.reason),
        "exited_at": opt_str(&e.exited_at),
    })
}

/// What ps shows in its IMAGE column: the image as named at create, in
/// Docker's short form; empty for --rootfs and --bundle containers.
pub fn container_image(c: &v1::Container) -> String {
    if c.image.is_empty() {
        String::new()
    } else {
        familiar(&c.image)
    }
}

/// The `ps --format json` object.
pub fn ps_json(c: &v1::Container) -> Value {
    let mut v = json!({
        "id": c.id,
        "name": c.name,
        "image": opt_str(&container_image(c)),
        "image_id": opt_str(&c.image_id),
        "state": c.state,
        "pid": c.pid,
        "exit_code": exit_code(c),
        "created_at": c.created_at,
        "started_at": opt_str(&c.started_at),
        "finished_at": opt_str(&c.finished_at),
        "command": c.command,
        "status": status_text(c),
        "health": opt_str(&c.health),
    });
    if let (Value::Object(m), Some(rw)) = (&mut v, c.size_rw) {
        m.insert("size_rw".into(), json!(rw));
        m.insert("size_root_fs".into(), json!(c.size_root_fs.unwrap_or(rw)));
    }
    v
}

/// The `inspect` object: the ps fields plus the rest.
pub fn inspect_json(c: &v1::Container) -> Value {
    let mut v = ps_json(c);
    if let Value::Object(m) = &mut v {
        m.remove("status");
        m.insert(
            "exit".into(),
            c.exit.as_ref().map_or(Value::Null, exit_json),
        );
        m.insert("oom_killed".into(), json!(c.oom_killed));
        m.insert("restart_count".into(), json!(c.restart_count));
        m.insert("restarting".into(), json!(c.restarting));
        m.insert("auto_remove".into(), json!(c.auto_remove));
        m.insert("labels".into(), json!(c.labels));
        let resources: Value =
            serde_json::from_str(&c.resources_json).unwrap_or_else(|_| json!({}));
        m.insert("resources".into(), resources);
        let health: Value = serde_json::from_str(&c.health_json).unwrap_or(Value::Null);
        m.insert("health".into(), health);
        m.insert("log_path".into(), json!(c.log_path));
        let network: Value = serde_json::from_str(&c.network_json).unwrap_or(Value::Null);
        m.insert("network_settings".into(), network);
        let config: Value = serde_json::from_str(&c.config_json).unwrap_or(Value::Null);
        m.insert("config".into(), config);
    }
    v
}

pub use berth_api::display::familiar;

/// The repository of a reference in Docker's short form (no tag or digest).
pub fn familiar_repository(reference: &str) -> String {
    let f = familiar(reference);
    let f = f.split_once('@').map_or(f.as_str(), |(n, _)| n);
    match f.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name.to_string(),
        _ => f.to_string(),
    }
}

/// "4.26MB", "212B", as Docker prints image, history and container sizes
/// (decimal units, 3 significant digits).
pub fn human_size(n: u64) -> String {
    size_with_precision(n, 3)
}

/// Docker's `units.HumanSizeWithPrecision`: decimal units and Go's `%.Ng`
/// (N significant digits, trailing zeros dropped). Totals (`system df`,
/// prune's reclaimed space) use 4 digits, single items 3.
pub fn size_with_precision(n: u64, digits: usize) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    let before = if v >= 100.0 {
        3
    } else if v >= 10.0 {
        2
    } else {
        1
    };
    let s = format!("{:.*}", digits.saturating_sub(before), v);
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[u])
}

/// `images`: one row per name (an untagged image is `<none>`).
pub fn images_table(images: &[v1::Image], no_trunc: bool) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for i in images {
        let id = if no_trunc {
            i.id.clone()
        } else {
            i.id.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect()
        };
        let created = if i.created.is_empty() {
            "N/A".to_string()
        } else {
            ago(&i.created)
        };
        let names: Vec<(String, String)> = if i.repo_tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.repo_tags
                .iter()
                .map(|t| {
                    let repo = familiar_repository(t);
                    let tag = familiar(t)
                        .strip_prefix(&repo)
                        .and_then(|r| r.strip_prefix(':'))
                        .unwrap_or("<none>")
                        .to_string();
                    (repo, tag)
                })
                .collect()
        };
        for (repo, tag) in names {
            rows.push([repo, tag, id.clone(), created.clone(), human_size(i.size)]);
        }
    }
    table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows)
}

/// The `images --format json` object.
pub fn image_json(i: &v1::Image) -> Value {
    json!({
        "id": i.id,
        "repo_tags": i.repo_tags,
        "repo_digests": i.repo_digests,
        "created": opt_str(&i.created),
        "size": i.size,
        "platform": i.platform,
        "containers": i.containers,
    })
}

pub fn history_table(entries: &[v1::HistoryEntry], no_trunc: bool) -> String {
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            let id = if e.id.starts_with("sha256:") && !no_trunc {
                e.id.trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect()
            } else {
                e.id.clone()
            };
            let by = if no_trunc {
                e.created_by.clone()
            } else {
                truncate(&e.created_by, 45)
            };
            let created = if e.created.is_empty() {
                "N/A".into()
            } else {
                ago(&e.created)
            };
            [id, created, by, human_size(e.size), e.comment.clone()]
        })
        .collect();
    table(
        &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &rows,
    )
}

pub fn history_json(e: &v1::HistoryEntry) -> Value {
    json!({
        "id": e.id,
        "created": opt_str(&e.created),
        "created_by": e.created_by,
        "size": e.size,
        "comment": e.comment,
        "empty_layer": e.empty_layer,
    })
}

pub fn event_json(e: &v1::Event) -> Value {
    let mut v = json!({
        "seq": e.seq,
        "time": e.time,
        "type": e.r#type,
        "container": e.container,
    });
    if let Value::Object(m) = &mut v {
        if !e.object.is_empty() && e.object != "container" {
            // Not a container: its id under its own kind, not `container`.
            m.remove("container");
            m.insert("object".into(), json!(e.object));
            m.insert("id".into(), json!(e.container));
        }
        if !e.attributes.is_empty() {
            m.insert("attributes".into(), json!(e.attributes));
        }
        if !e.name.is_empty() {
            m.insert("name".into(), json!(e.name));
        }
        if !e.status.is_empty() {
            m.insert("status".into(), json!(e.status));
        }
        if !e.old_name.is_empty() {
            m.insert("old_name".into(), json!(e.old_name));
        }
        if !e.process.is_empty() {
            m.insert("process".into(), json!(e.process));
        }
        if e.pid > 0 {
            m.insert("pid".into(), json!(e.pid));
        }
        if let Some(code) = e.exit_code {
            m.insert("exit_code".into(), json!(code));
        }
        if e.r#type == "missed" {
            m.insert("missed".into(), json!(e.missed));
        }
    }
    v
}

pub fn event_line(e: &v1::Event) -> String {
    if e.r#type == "missed" {
        return format!(
            "{}  {:>6}  missed {} events (compacted from the log)",
            e.time, e.seq, e.missed
        );
    }
    if !e.object.is_empty() && e.object != "container" {
        // `image tag  sha256:1234… (busybox:latest)`: the kind first, the
        // id (a volume's is its name, so it is not repeated) and details.
        let id = e.container.strip_prefix("sha256:").unwrap_or(&e.container);
        let mut s = format!(
            "{}  {:>6}  {:<12}  {}",
            e.time,
            e.seq,
            format!("{} {}", e.object, e.r#type),
            id.chars().take(12).collect::<String>()
        );
        if !e.name.is_empty() && e.name != e.container {
            s.push_str(&format!(" ({})", e.name));
        }
        for (k, v) in &e.attributes {
            if k == "container" {
                s.push_str(&format!(" {k}={}", v.chars().take(12).collect::<String>()));
            } else if k != "driver" && k != "type" {
                s.push_str(&format!(" {k}={v}"));
            }
        }
        return s;
    }
    let mut s = format!(
        "{}  {:>6}  {:<12}  {}",
        e.time,
        e.seq,
        e.r#type,
        e.container.chars().take(12).collect::<String>()
    );
    if !e.name.is_empty() {
        s.push_str(&format!(" ({})", e.name));
    }
    if !e.old_name.is_empty() {
        s.push_str(&format!(" old_name={}", e.old_name));
    }
    if !e.process.is_empty() {
        s.push_str(&format!(" process={}", e.process));
    }
    if e.pid > 0 {
        s.push_str(&format!(" pid={}", e.pid));
    }
    if let Some(c) = e.exit_code {
        s.push_str(&format!(" exit_code={c}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_events_print_their_kind_and_id() {
        let e = v1::Event {
            seq: 12,
            time: "T".into(),
            r#type: "connect".into(),
            object: "network".into(),
            container: "0123456789abcdef".into(),
            name: "front".into(),
            attributes: [
                ("type".to_string(), "bridge".to_string()),
                ("container".to_string(), "c1c1c1c1c1c1c1c1".to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        assert_eq!(
            event_line(&e),
            "T      12  network connect  0123456789ab (front) container=c1c1c1c1c1c1"
        );
        let j = event_json(&e);
        assert_eq!(j["object"], "network");
        assert_eq!(j["id"], "0123456789abcdef");
        assert!(j.get("container").is_none());
        assert_eq!(j["attributes"]["container"], "c1c1c1c1c1c1c1c1");
        let v = v1::Event {
            r#type: "delete".into(),
            object: "volume".into(),
            container: "data".into(),
            name: "data".into(),
            ..Default::default()
        };
        assert!(event_line(&v).ends_with("volume delete  data"));
    }

    #[test]
    fn sizes_as_docker_units_print_them() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(212), "212B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(size_with_precision(16_425_000, 4), "16.43MB");
        assert_eq!(size_with_precision(123_456_789, 4), "123.5MB");
        assert_eq!(size_with_precision(5, 4), "5B");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(3 * 60)), "3 minutes");
        assert_eq!(human_duration(Duration::from_secs(5 * 3600)), "5 hours");
    }

    #[test]
    fn unknown_exit_is_minus_one() {
        let c = v1::Container {
            state: "stopped".into(),
            exit: Some(v1::ExitStatus {
                kind: v1::exit_status::Kind::Unknown as i32,
                exit_code: -1,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(ps_json(&c)["exit_code"], json!(-1));
        assert!(status_text(&c).starts_with("Exited (-1)"));
        let restarting = v1::Container {
            state: "stopped".into(),
            restarting: true,
            exit: Some(v1::ExitStatus {
                kind: v1::exit_status::Kind::Exited as i32,
                exit_code: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(status_text(&restarting).starts_with("Restarting (3)"));
        assert_eq!(inspect_json(&restarting)["restarting"], json!(true));
        let fresh = v1::Container {
            state: "created".into(),
            ..Default::default()
        };
        assert_eq!(ps_json(&fresh)["exit_code"], Value::Null);
    }
}
