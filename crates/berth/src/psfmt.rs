//! `ps --filter` and `ps --format` with Docker's Go-template placeholders.
//!
//! Only what Docker users script with: `{{.ID}}`, `{{.Names}}`, `{{.Image}}`,
//! `{{.Command}}`, `{{.CreatedAt}}`, `{{.RunningFor}}`, `{{.Status}}`,
//! `{{.State}}`, `{{.Ports}}`, `{{.Labels}}`, `{{.Label "k"}}`, plus the
//! `table` prefix (a header row and columns aligned as Docker's tabwriter:
//! at least 10 wide, 3 spaces between) and the `\t` / `\n` escapes. Not a
//! Go template engine: no pipelines, conditionals or functions.

use std::time::{Duration, SystemTime};

use berth_api::v1;

use crate::format::{container_image, human_duration, status_text};
use crate::Failure;

/// One placeholder.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Id,
    Names,
    Image,
    Command,
    CreatedAt,
    RunningFor,
    Status,
    State,
    Ports,
    Labels,
    Label(String),
    /// `0B (virtual 4.26MB)`: asks the daemon for sizes.
    Size,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// A parsed `--format` template.
#[derive(Debug)]
pub struct Template {
    table: bool,
    pieces: Vec<Piece>,
}

const FIELDS: &str = ".ID .Names .Image .Command .CreatedAt .RunningFor .Status .State .Ports .Labels .Label \"KEY\" .Size";

impl Template {
    pub fn parse(s: &str) -> Result<Template, Failure> {
        let (table, body) = match s.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, s),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut pieces = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                Failure::own(format!(
                    "invalid --format {s:?}: a {{{{ has no closing }}}}"
                ))
            })?;
            pieces.push(Piece::Field(field(after[..end].trim(), s)?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { table, pieces })
    }

    /// The template shows sizes: the daemon must compute them (as
    /// Docker's ps does for `{{.Size}}`).
    pub fn wants_size(&self) -> bool {
        self.pieces.contains(&Piece::Field(Field::Size))
    }

    fn header(&self) -> String {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Field(f) => match f {
                    Field::Id => "CONTAINER ID".into(),
                    Field::Names => "NAMES".into(),
                    Field::Image => "IMAGE".into(),
                    Field::Command => "COMMAND".into(),
                    Field::CreatedAt => "CREATED AT".into(),
                    Field::RunningFor => "CREATED".into(),
                    Field::Status => "STATUS".into(),
                    Field::State => "STATE".into(),
                    Field::Ports => "PORTS".into(),
                    Field::Labels => "LABELS".into(),
                    Field::Label(_) => "LABEL".into(),
                    Field::Size => "SIZE".into(),
                },
            })
            .collect()
    }

    fn render(&self, c: &v1::Container, no_trunc: bool, now: SystemTime) -> String {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Field(f) => value(f, c, no_trunc, now),
            })
            .collect()
    }

    /// The whole output for `list`.
    pub fn output(&self, list: &[v1::Container], no_trunc: bool) -> String {
        let now = SystemTime::now();
        let mut lines: Vec<String> = Vec::new();
        if self.table {
            lines.push(self.header());
        }
        lines.extend(list.iter().map(|c| self.render(c, no_trunc, now)));
        let mut out = String::new();
        if self.table {
            out = tabwrite(&lines);
        } else {
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
        out
    }
}

fn field(expr: &str, whole: &str) -> Result<Field, Failure> {
    let f = match expr {
        ".ID" => Field::Id,
        ".Names" => Field::Names,
        ".Image" => Field::Image,
        ".Command" => Field::Command,
        ".CreatedAt" => Field::CreatedAt,
        ".RunningFor" => Field::RunningFor,
        ".Status" => Field::Status,
        ".State" => Field::State,
        ".Ports" => Field::Ports,
        ".Labels" => Field::Labels,
        ".Size" => Field::Size,
        _ => match expr.strip_prefix(".Label ") {
            Some(k) => {
                let k = k.trim();
                let key = k
                    .strip_prefix('"')
                    .and_then(|k| k.strip_suffix('"'))
                    .ok_or_else(|| {
                        Failure::own(format!(
                            "invalid --format {whole:?}: write {{{{.Label \"KEY\"}}}} with the key in double quotes"
                        ))
                    })?;
                Field::Label(key.to_string())
            }
            None => {
                return Err(Failure::own(format!(
                    "invalid --format {whole:?}: unknown placeholder {{{{{expr}}}}}; use {FIELDS}"
                )))
            }
        },
    };
    Ok(f)
}

/// Docker's `State`: created, running, paused, restarting, exited.
fn state(c: &v1::Container) -> &'static str {
    match c.state.as_str() {
        "created" => "created",
        "running" => "running",
        "paused" => "paused",
        "stopped" if c.restarting => "restarting",
        _ => "exited",
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

/// Go's `time.Time.String()` of a UTC time: `2026-12-01 21:36:06 +0000 UTC`.
fn go_time(ts: &str) -> String {
    match humantime::parse_rfc3339(ts) {
        Ok(t) => {
            let s = humantime::format_rfc3339_seconds(t).to_string();
            format!(
                "{} +0000 UTC",
                s.trim_end_matches('Z').replacen('T', " ", 1)
            )
        }
        Err(_) => String::new(),
    }
}

fn value(f: &Field, c: &v1::Container, no_trunc: bool, now: SystemTime) -> String {
    match f {
        Field::Id if no_trunc => c.id.clone(),
        Field::Id => c.id.chars().take(12).collect(),
        Field::Names => c.name.clone(),
        Field::Image => container_image(c),
        Field::Command => {
            let cmd = c.command.join(" ");
            if no_trunc {
                format!("\"{cmd}\"")
            } else {
                format!("\"{}\"", truncate(&cmd, 20))
            }
        }
        Field::CreatedAt => go_time(&c.created_at),
        Field::RunningFor => humantime::parse_rfc3339(&c.created_at)
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .map(|d: Duration| format!("{} ago", human_duration(d)))
            .unwrap_or_default(),
        Field::Status => status_text(c),
        Field::State => state(c).into(),
        Field::Ports => c.ports.join(", "),
        Field::Labels => {
            let mut kv: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            kv.sort();
            kv.join(",")
        }
        Field::Label(k) => c.labels.get(k).cloned().unwrap_or_default(),
        Field::Size => crate::format::ps_size(c),
    }
}

/// Align tab-separated cells as Go's tabwriter with Docker's settings
/// (minimum width 10, padding 3, spaces); the last cell of a line is not
/// padded.
fn tabwrite(lines: &[String]) -> String {
    tabwrite_min(lines, 10)
}

/// [`tabwrite`] with another minimum width (`top` uses 20, as Docker's).
pub fn tabwrite_min(lines: &[String], min: usize) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            if i + 1 < r.len() {
                widths[i] = widths[i].max(cell.chars().count() + 3).max(min);
            }
        }
    }
    let mut out = String::new();
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < r.len() {
                let pad = widths[i] - cell.chars().count();
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

/// `--filter KEY=VALUE` (repeatable): the same key ORs, different keys AND.
#[derive(Debug, Default)]
pub struct Filters(Vec<(String, String)>);

const KEYS: &str = "id, name, label, status, exited, ancestor, health";

impl Filters {
    pub fn parse(args: &[String]) -> Result<Filters, Failure> {
        let mut v = Vec::new();
        for a in args {
            let (k, val) = a.split_once('=').ok_or_else(|| {
                Failure::own(format!(
                    "invalid --filter {a:?}: use KEY=VALUE with KEY one of {KEYS}"
                ))
            })?;
            match k {
                "id" | "name" | "label" | "ancestor" => {}
                "status" => {
                    const S: [&str; 7] = [
                        "created",
                        "restarting",
                        "running",
                        "removing",
                        "paused",
                        "exited",
                        "dead",
                    ];
                    if !S.contains(&val) {
                        return Err(Failure::own(format!(
                            "invalid --filter status={val:?}: use one of {}",
                            S.join(", ")
                        )));
                    }
                }
                "exited" => {
                    val.parse::<i32>().map_err(|_| {
                        Failure::own(format!(
                            "invalid --filter exited={val:?}: give an exit code such as 0 or 137"
                        ))
                    })?;
                }
                "health" => {
                    if !["starting", "healthy", "unhealthy", "none"].contains(&val) {
                        return Err(Failure::own(format!(
                            "invalid --filter health={val:?}: use starting, healthy, unhealthy or none"
                        )));
                    }
                }
                _ => {
                    return Err(Failure::own(format!(
                        "invalid --filter key {k:?}: use one of {KEYS}"
                    )))
                }
            }
            v.push((k.to_string(), val.to_string()));
        }
        Ok(Filters(v))
    }

    /// `exited=` and `status=exited` look at stopped containers, so they
    /// imply `-a` (as Docker).
    pub fn wants_all(&self) -> bool {
        self.0
            .iter()
            .any(|(k, v)| k == "exited" || (k == "status" && v != "running" && v != "paused"))
    }

    fn one(k: &str, v: &str, c: &v1::Container) -> bool {
        match k {
            "id" => c.id.starts_with(v),
            "name" => c.name.contains(v),
            "label" => match v.split_once('=') {
                Some((lk, lv)) => c.labels.get(lk).is_some_and(|x| x == lv),
                None => c.labels.contains_key(v),
            },
            "status" => state(c) == v,
            "exited" => {
                c.state == "stopped"
                    && c.exit
                        .as_ref()
                        .is_some_and(|e| e.exit_code.to_string() == v)
            }
            "ancestor" => {
                !c.image.is_empty()
                    && (c.image == v
                        || container_image(c) == v
                        || container_image(c) == format!("{v}:latest")
                        || c.image_id
                            .strip_prefix("sha256:")
                            .unwrap_or(&c.image_id)
                            .starts_with(v.strip_prefix("sha256:").unwrap_or(v))
                            && v.len() >= 4)
            }
            "health" => match v {
                "none" => c.health.is_empty(),
                other => c.health == other,
            },
            _ => false,
        }
    }

    pub fn keep(&self, c: &v1::Container) -> bool {
        let mut keys: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
        keys.dedup();
        keys.iter().all(|k| {
            self.0
                .iter()
                .filter(|(fk, _)| fk == k)
                .any(|(_, v)| Self::one(k, v, c))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(name: &str, state: &str) -> v1::Container {
        v1::Container {
            id: format!("{name:0<64}").replace(|c: char| !c.is_ascii_hexdigit(), "a"),
            name: name.into(),
            state: state.into(),
            command: vec!["sleep".into(), "100".into()],
            created_at: "2026-12-01T21:36:06.123456789Z".into(),
            ..Default::default()
        }
    }

    #[test]
    fn placeholders_render_as_docker() {
        let mut c = ctr("web", "created");
        c.labels.insert("tier".into(), "front".into());
        c.labels.insert("app".into(), "shop".into());
        let t =
            Template::parse(r#"{{.Names}} {{.Status}} {{.State}} {{.Label "tier"}} {{.Labels}}"#)
                .unwrap();
        assert_eq!(
            t.output(&[c.clone()], false),
            "web Created created front app=shop,tier=front\n"
        );
        let t = Template::parse("{{.CreatedAt}}|{{.Command}}|{{.Ports}}").unwrap();
        assert_eq!(
            t.output(&[c], false),
            "2026-12-01 21:36:06 +0000 UTC|\"sleep 100\"|\n"
        );
        for bad in ["{{.Nope}}", "{{.Names", "{{.Label tier}}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn table_prefix_aligns_like_tabwriter() {
        let a = ctr("a", "created");
        let b = ctr("longer-name-here", "created");
        let t = Template::parse(r"table {{.Names}}\t{{.Status}}").unwrap();
        assert_eq!(
            t.output(&[a, b], false),
            "NAMES              STATUS\na                  Created\nlonger-name-here   Created\n"
        );
        let t = Template::parse(r"table {{.ID}}").unwrap();
        assert_eq!(t.output(&[], false), "CONTAINER ID\n");
    }

    #[test]
    fn filters_or_within_a_key_and_across_keys() {
        let mut web = ctr("web", "running");
        web.labels.insert("app".into(), "shop".into());
        let mut db = ctr("db", "stopped");
        db.exit = Some(v1::ExitStatus {
            exit_code: 3,
            ..Default::default()
        });
        let f = |a: &[&str]| {
            Filters::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        assert!(f(&["name=we"]).keep(&web));
        assert!(!f(&["name=we"]).keep(&db));
        assert!(f(&["name=web", "name=db"]).keep(&db));
        assert!(!f(&["name=db", "status=running"]).keep(&db));
        assert!(f(&["status=exited", "exited=3"]).keep(&db));
        assert!(!f(&["exited=0"]).keep(&db));
        assert!(f(&["label=app"]).keep(&web));
        assert!(f(&["label=app=shop"]).keep(&web));
        assert!(!f(&["label=app=other"]).keep(&web));
        assert!(f(&["health=none"]).keep(&web));
        assert!(f(&["exited=3"]).wants_all());
        for bad in ["nokey", "color=red", "status=sleeping", "exited=x"] {
            assert!(Filters::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
