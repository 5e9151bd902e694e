//! Output formats: tables for people, JSON for scripts.

use std::time::{Duration, SystemTime};

use berth_api::v1;
use serde_json::{json, Value};

/// "3 seconds", "2 minutes", "About an hour", as Docker prints them.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

fn since(ts: &str) -> Option<Duration> {
    let t = humantime::parse_rfc3339(ts).ok()?;
    SystemTime::now().duration_since(t).ok()
}

fn ago(ts: &str) -> String {
    since(ts).map_or_else(String::new, |d| format!("{} ago", human_duration(d)))
}

/// The exit code to show: the code, 128+N, or -1 when unknown; None before
/// the first exit.
pub fn exit_code(c: &v1::Container) -> Option<i32> {
    c.exit.as_ref().map(|e| e.exit_code)
}

pub fn status_text(c: &v1::Container) -> String {
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

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

pub fn ps_table(cs: &[v1::Container]) -> String {
    let rows: Vec<[String; 6]> = cs
        .iter()
        .map(|c| {
            [
                c.id.chars().take(12).collect(),
                c.name.clone(),
                format!("\"{}\"", truncate(&c.command.join(" "), 20)),
                ago(&c.created_at),
                status_text(c),
                if c.pid > 0 {
                    c.pid.to_string()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    table(
        &[
            "CONTAINER ID",
            "NAME",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PID",
        ],
        &rows,
    )
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

/// The `ps --format json` object.
pub fn ps_json(c: &v1::Container) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "state": c.state,
        "pid": c.pid,
        "exit_code": exit_code(c),
        "created_at": c.created_at,
        "started_at": opt_str(&c.started_at),
        "finished_at": opt_str(&c.finished_at),
        "command": c.command,
        "status": status_text(c),
    })
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
        m.insert("log_path".into(), json!(c.log_path));
        let config: Value = serde_json::from_str(&c.config_json).unwrap_or(Value::Null);
        m.insert("config".into(), config);
    }
    v
}

pub fn event_json(e: &v1::Event) -> Value {
    let mut v = json!({
        "seq": e.seq,
        "time": e.time,
        "type": e.r#type,
        "container": e.container,
    });
    if let Value::Object(m) = &mut v {
        if !e.name.is_empty() {
            m.insert("name".into(), json!(e.name));
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
