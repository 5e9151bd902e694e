//! `commit`'s image config: the base image's config (as JSON, so fields
//! berth does not model survive) with the new layer, a history entry and
//! the `-c` changes (Dockerfile instructions, as `docker commit -c`).

use serde_json::{json, Map, Value};

/// One `-c` instruction, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    Env(String, String),
    Workdir(String),
    User(String),
    Label(String, String),
    Expose(String),
    StopSignal(String),
    Volume(Vec<String>),
}

const KNOWN: &str = "CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL, VOLUME";

/// `["a", "b"]` (JSON) or the shell form (`/bin/sh -c "…"`), as a
/// Dockerfile reads CMD and ENTRYPOINT.
fn command(arg: &str) -> Vec<String> {
    if arg.trim_start().starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(arg) {
            return v;
        }
    }
    vec!["/bin/sh".into(), "-c".into(), arg.to_string()]
}

/// KEY=VALUE or KEY VALUE; quotes around a value dropped.
fn pair(arg: &str, what: &str) -> Result<(String, String), String> {
    let (k, v) = arg
        .split_once('=')
        .or_else(|| arg.split_once(' '))
        .ok_or_else(|| format!("commit -c {what} {arg:?}: give {what} KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("commit -c {what} {arg:?}: the key is empty"));
    }
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    Ok((k.to_string(), v.to_string()))
}

/// Parses one `-c` instruction; a bad one is a one-line error.
pub fn parse_change(s: &str) -> Result<ConfigChange, String> {
    let s = s.trim();
    let (word, arg) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(format!(
            "commit -c {s:?}: an instruction and its argument, e.g. -c 'CMD [\"sh\"]' (one of {KNOWN})"
        ));
    }
    Ok(match word.to_ascii_uppercase().as_str() {
        "CMD" => ConfigChange::Cmd(command(arg)),
        "ENTRYPOINT" => ConfigChange::Entrypoint(command(arg)),
        "ENV" => {
            let (k, v) = pair(arg, "ENV")?;
            ConfigChange::Env(k, v)
        }
        "LABEL" => {
            let (k, v) = pair(arg, "LABEL")?;
            ConfigChange::Label(k, v)
        }
        "WORKDIR" => ConfigChange::Workdir(arg.to_string()),
        "USER" => ConfigChange::User(arg.to_string()),
        "EXPOSE" => {
            let port = if arg.contains('/') {
                arg.to_string()
            } else {
                format!("{arg}/tcp")
            };
            ConfigChange::Expose(port)
        }
        "STOPSIGNAL" => ConfigChange::StopSignal(arg.to_string()),
        "VOLUME" => ConfigChange::Volume(
            serde_json::from_str::<Vec<String>>(arg)
                .unwrap_or_else(|_| arg.split_whitespace().map(String::from).collect()),
        ),
        other => {
            return Err(format!(
                "commit -c: {other} cannot be changed by commit: use one of {KNOWN}"
            ))
        }
    })
}

/// What a commit records.
pub struct Commit<'a> {
    pub diff_id: &'a str,
    pub created: &'a str,
    pub created_by: &'a str,
    pub author: &'a str,
    pub message: &'a str,
    pub changes: &'a [ConfigChange],
}

fn object<'v>(v: &'v mut Value, key: &str) -> &'v mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    // Just made an object if it was not one.
    match v.get_mut(key) {
        Some(Value::Object(m)) => m,
        _ => unreachable!("{key} was just set to an object"),
    }
}

/// The new config: `base` (an image config JSON) with `c` applied.
pub fn new_config(base: &[u8], c: &Commit<'_>) -> Result<Vec<u8>, String> {
    let mut v: Value =
        serde_json::from_slice(base).map_err(|e| format!("the image's config is invalid: {e}"))?;
    if !v.is_object() {
        return Err("the image's config is not a JSON object".into());
    }
    v["created"] = json!(c.created);
    if !c.author.is_empty() {
        v["author"] = json!(c.author);
    }
    {
        let rootfs = object(&mut v, "rootfs");
        rootfs.insert("type".into(), json!("layers"));
        let ids = rootfs.entry("diff_ids").or_insert_with(|| json!([]));
        if !ids.is_array() {
            *ids = json!([]);
        }
        if let Value::Array(a) = ids {
            a.push(json!(c.diff_id));
        }
    }
    {
        let mut h = Map::new();
        h.insert("created".into(), json!(c.created));
        h.insert("created_by".into(), json!(c.created_by));
        if !c.author.is_empty() {
            h.insert("author".into(), json!(c.author));
        }
        if !c.message.is_empty() {
            h.insert("comment".into(), json!(c.message));
        }
        if !v.get("history").is_some_and(Value::is_array) {
            v["history"] = json!([]);
        }
        if let Some(Value::Array(a)) = v.get_mut("history") {
            a.push(Value::Object(h));
        }
    }
    let cfg = object(&mut v, "config");
    for ch in c.changes {
        match ch {
            ConfigChange::Cmd(a) => {
                cfg.insert("Cmd".into(), json!(a));
            }
            ConfigChange::Entrypoint(a) => {
                cfg.insert("Entrypoint".into(), json!(a));
                // As a Dockerfile: a new ENTRYPOINT drops the inherited CMD.
                cfg.remove("Cmd");
            }
            ConfigChange::Env(k, val) => {
                let env = cfg.entry("Env").or_insert_with(|| json!([]));
                if !env.is_array() {
                    *env = json!([]);
                }
                if let Value::Array(a) = env {
                    let prefix = format!("{k}=");
                    a.retain(|e| !e.as_str().is_some_and(|e| e.starts_with(&prefix)));
                    a.push(json!(format!("{k}={val}")));
                }
            }
            ConfigChange::Workdir(w) => {
                cfg.insert("WorkingDir".into(), json!(w));
            }
            ConfigChange::User(u) => {
                cfg.insert("User".into(), json!(u));
            }
            ConfigChange::Label(k, val) => {
                let labels = cfg.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                labels[k.as_str()] = json!(val);
            }
            ConfigChange::Expose(p) => {
                let ports = cfg.entry("ExposedPorts").or_insert_with(|| json!({}));
                if !ports.is_object() {
                    *ports = json!({});
                }
                ports[p.as_str()] = json!({});
            }
            ConfigChange::StopSignal(s) => {
                cfg.insert("StopSignal".into(), json!(s));
            }
            ConfigChange::Volume(vs) => {
                let vols = cfg.entry("Volumes").or_insert_with(|| json!({}));
                if !vols.is_object() {
                    *vols = json!({});
                }
                for p in vs {
                    vols[p.as_str()] = json!({});
                }
            }
        }
    }
    serde_json::to_vec(&v).map_err(|e| format!("cannot write the new config: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_as_dockerfile_instructions() {
        assert_eq!(
            parse_change(r#"CMD ["cat", "/f"]"#).unwrap(),
            ConfigChange::Cmd(vec!["cat".into(), "/f".into()])
        );
        assert_eq!(
            parse_change("cmd echo hi").unwrap(),
            ConfigChange::Cmd(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(
            parse_change("ENV A=b c").unwrap(),
            ConfigChange::Env("A".into(), "b c".into())
        );
        assert_eq!(
            parse_change("EXPOSE 80").unwrap(),
            ConfigChange::Expose("80/tcp".into())
        );
        assert!(parse_change("RUN ls").unwrap_err().contains("RUN"));
        assert!(parse_change("CMD").is_err());
    }

    #[test]
    fn config_gets_layer_history_and_changes() {
        let base = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1","PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"base"}],"x-unknown":1}"#;
        let changes = [
            parse_change("ENV A=2").unwrap(),
            parse_change(r#"CMD ["cat","/f"]"#).unwrap(),
        ];
        let out = new_config(
            base,
            &Commit {
                diff_id: "sha256:bb",
                created: "2026-01-01T00:00:00Z",
                created_by: "sh -c touch /f",
                author: "me",
                message: "msg",
                changes: &changes,
            },
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"], json!(["sha256:aa", "sha256:bb"]));
        assert_eq!(v["history"][1]["comment"], "msg");
        assert_eq!(v["config"]["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(v["config"]["Cmd"], json!(["cat", "/f"]));
        assert_eq!(v["author"], "me");
        assert_eq!(v["x-unknown"], 1);
    }
}
