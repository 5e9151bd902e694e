//! Bounds on API input, checked before a request reaches the supervisor:
//! other clients than the berth CLI call the API, so nothing the CLI checks
//! can be assumed. Each check gives one line saying what is wrong and the
//! limit; values are quoted truncated, so a huge field never makes a huge
//! error. The meaning of each field (paths, users, signals, security flags)
//! is checked where it is used (berth_core::spec and the service); here
//! only what no meaning can excuse: sizes, counts, NUL bytes.

use berth_api::v1;
use tonic::Status;

/// The largest request message (4 MiB): a 1 MiB seccomp profile, 1 MiB of
/// command and environment and 256 KiB of labels fit, with room.
pub const MAX_REQUEST: usize = 4 << 20;
/// Linux' limit for one argument or environment string (MAX_ARG_STRLEN).
pub const MAX_ARG: usize = 128 << 10;
/// All arguments and environment strings of one process together: well
/// under the usual ARG_MAX (a quarter of an 8 MiB stack).
pub const MAX_ARGS_TOTAL: usize = 1 << 20;
/// Most arguments or environment entries.
pub const MAX_ARG_COUNT: usize = 16384;
/// A path (PATH_MAX) and any other short string field.
pub const MAX_PATH: usize = 4096;
/// Labels: most entries, longest key and value, all of them together.
pub const MAX_LABELS: usize = 1024;
pub const MAX_LABEL_KEY: usize = 256;
pub const MAX_LABEL_VALUE: usize = 4096;
pub const MAX_LABELS_TOTAL: usize = 256 << 10;
/// Most rotated log files to keep.
pub const MAX_LOG_FILES: u32 = 1000;
/// A seccomp profile's JSON, as `--security-opt seccomp=…` carries it.
const MAX_SECURITY_OPT: usize = 1 << 20;

fn bad(msg: String) -> Status {
    Status::invalid_argument(msg)
}

/// At most 40 characters of a value, for an error message.
pub fn shown(s: &str) -> String {
    if s.chars().count() <= 40 {
        format!("{s:?}")
    } else {
        format!("{:?}…", s.chars().take(40).collect::<String>())
    }
}

fn short(field: &str, s: &str, max: usize) -> Result<(), Status> {
    if s.len() > max {
        return Err(bad(format!("{field} is {} bytes: at most {max}", s.len())));
    }
    if s.contains('\0') {
        return Err(bad(format!("{field} {} contains a NUL byte", shown(s))));
    }
    Ok(())
}

/// The command and environment of one process.
pub fn process(args: &[String], env: &[String]) -> Result<(), Status> {
    for (what, list) in [("arguments", args), ("environment entries", env)] {
        if list.len() > MAX_ARG_COUNT {
            return Err(bad(format!(
                "{} {what}: at most {MAX_ARG_COUNT}",
                list.len()
            )));
        }
    }
    let mut total = 0usize;
    for a in args {
        if a.len() > MAX_ARG {
            return Err(bad(format!(
                "argument {} is {} bytes: Linux takes at most {MAX_ARG} per argument",
                shown(a),
                a.len()
            )));
        }
        total += a.len() + 1;
    }
    for e in env {
        if e.len() > MAX_ARG {
            let name = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
            return Err(bad(format!(
                "environment variable {} is {} bytes: Linux takes at most {MAX_ARG} per variable",
                shown(name),
                e.len()
            )));
        }
        total += e.len() + 1;
    }
    if total > MAX_ARGS_TOTAL {
        return Err(bad(format!(
            "the command and environment are {total} bytes together: at most {MAX_ARGS_TOTAL}"
        )));
    }
    Ok(())
}

/// Labels: counts and sizes, no NUL, no empty key.
pub fn labels<'a>(labels: impl Iterator<Item = (&'a String, &'a String)>) -> Result<(), Status> {
    let mut n = 0usize;
    let mut total = 0usize;
    for (k, v) in labels {
        n += 1;
        if n > MAX_LABELS {
            return Err(bad(format!("more than {MAX_LABELS} labels")));
        }
        if k.is_empty() {
            return Err(bad("a label has an empty key: use KEY=VALUE".into()));
        }
        short("label key", k, MAX_LABEL_KEY)?;
        short(&format!("label {}", shown(k)), v, MAX_LABEL_VALUE)?;
        total += k.len() + v.len();
    }
    if total > MAX_LABELS_TOTAL {
        return Err(bad(format!(
            "the labels are {total} bytes together: at most {MAX_LABELS_TOTAL}"
        )));
    }
    Ok(())
}

/// A whole create request.
pub fn create(r: &v1::CreateRequest) -> Result<(), Status> {
    short("the name", &r.name, MAX_PATH)?;
    match &r.source {
        Some(v1::create_request::Source::Rootfs(p)) => path("rootfs", p)?,
        Some(v1::create_request::Source::Bundle(p)) => path("bundle", p)?,
        // References are bounded by their grammar (255 bytes of name); this
        // only keeps a huge one out of the error message.
        Some(v1::create_request::Source::Image(i)) => short("the image", i, MAX_PATH)?,
        None => {}
    }
    if let Some(e) = &r.entrypoint {
        short("the entrypoint", e, MAX_PATH)?;
    }
    short("the platform", &r.platform, MAX_PATH)?;
    process(&r.args, &r.env)?;
    for (field, v) in [
        ("workdir", &r.workdir),
        ("user", &r.user),
        ("hostname", &r.hostname),
        ("stop signal", &r.stop_signal),
        ("restart policy", &r.restart),
        ("network", &r.network),
    ] {
        short(field, v, MAX_PATH)?;
    }
    labels(r.labels.iter())?;
    short(
        "entrypoint",
        r.entrypoint.as_deref().unwrap_or_default(),
        MAX_ARG,
    )?;
    short("platform", &r.platform, MAX_PATH)?;
    if let Some(h) = &r.health {
        // The health command runs as an exec: the same bounds as a command.
        process(&h.test, &[])?;
    }
    if r.log_max_files > MAX_LOG_FILES {
        return Err(bad(format!(
            "log_max_files {}: keep at most {MAX_LOG_FILES} rotated files",
            r.log_max_files
        )));
    }
    for (field, list, max) in [
        ("cap_add", &r.cap_add, MAX_PATH),
        ("cap_drop", &r.cap_drop, MAX_PATH),
        ("devices", &r.devices, MAX_PATH),
        ("group_add", &r.group_add, MAX_PATH),
        ("ulimits", &r.ulimits, MAX_PATH),
        ("security_opt", &r.security_opt, MAX_SECURITY_OPT),
        ("dns", &r.dns, MAX_PATH),
        ("dns_search", &r.dns_search, MAX_PATH),
        ("dns_option", &r.dns_option, MAX_PATH),
        ("add_host", &r.add_host, MAX_PATH),
    ] {
        for v in list {
            short(field, v, max)?;
        }
    }
    for (k, v) in &r.sysctls {
        short("sysctl name", k, MAX_PATH)?;
        short("sysctl value", v, MAX_PATH)?;
    }
    Ok(())
}

/// A path the daemon will use: absolute, bounded, no NUL.
pub fn path(field: &str, p: &str) -> Result<(), Status> {
    short(field, p, MAX_PATH)?;
    if !p.starts_with('/') {
        return Err(bad(format!(
            "{field} {} is not an absolute path: give the full path, e.g. /srv/rootfs",
            shown(p)
        )));
    }
    Ok(())
}

/// A process of a container as the API names it: empty or `init` for the
/// init, else an exec id (hex, as berth makes them). Anything else could
/// never name a process, and an exec id becomes a file name in the
/// container's directory, so it must not carry a path.
pub fn process_id(p: &str) -> Result<(), Status> {
    let ok = p.is_empty()
        || p == berth_core::runtime::INIT_PROCESS
        || (p.len() <= 64 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "no process {}: give \"init\" or an exec id (hex) as berth exec printed it",
            shown(p)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(process(&["sh".into()], &["A=1".into()]).is_ok());
        let big = format!("A={}", "x".repeat(MAX_ARG));
        let e = process(&["sh".into()], &[big]).unwrap_err();
        assert!(e.message().contains("environment variable \"A\""), "{e:?}");
        let many: Vec<String> = (0..20).map(|_| "x".repeat(MAX_ARG - 10)).collect();
        assert!(process(&many, &[])
            .unwrap_err()
            .message()
            .contains("together"));
        assert!(path("rootfs", "rel/x").is_err());
        assert!(path("rootfs", "/a\0b").is_err());
        assert!(path("rootfs", "/srv/r").is_ok());
        assert!(process_id("../../etc/passwd").is_err());
        assert!(process_id("init").is_ok());
        assert!(process_id("0123abcd0123abcd").is_ok());
        let huge = "y".repeat(10_000);
        let e = short("user", &huge, MAX_PATH).unwrap_err();
        assert!(e.message().len() < 100, "{e:?}");
    }
}
