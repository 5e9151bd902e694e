//! berthd's config file: every key takes effect, flags win over the file,
//! mistakes are one line naming the file, line and key, and SIGHUP reloads
//! what can change live.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_e2e::*;

/// The log files of a container: (name, size).
fn log_files(d: &Daemon, id: &str) -> Vec<(String, u64)> {
    let dir = d.state_dir().join("containers").join(id);
    let mut v: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .expect("container dir")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().map(|m| m.len()).unwrap_or(0),
            )
        })
        .filter(|(n, _)| n.starts_with("container.log"))
        .collect();
    v.sort();
    v
}

const CHATTY: &str = "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done";

/// A container that writes ~20 KB of log, waited for; its log files.
fn chatty(d: &Daemon) -> Vec<(String, u64)> {
    let id = d.run(&["-d"], &["sh", "-c", CHATTY]).ok();
    assert_eq!(d.berth(&["wait", &id]).ok(), "0");
    let files = log_files(d, &id);
    d.berth(&["rm", &id]).ok();
    files
}

fn gid_of(group: &str) -> u32 {
    std::fs::read_to_string("/etc/group")
        .expect("/etc/group")
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&group)).then(|| f[2].parse().expect("gid"))
        })
        .expect("group exists")
}

/// Every key, set only in the file, changes what berthd does.
#[test]
fn every_key_in_the_file_takes_effect() {
    // A copy of the shim elsewhere: containers must run under this one.
    let shim_dir = std::env::temp_dir().join(format!("be2e-shim-{}", std::process::id()));
    std::fs::create_dir_all(&shim_dir).unwrap();
    let shim = shim_dir.join("berth-shim");
    std::fs::copy(bin_dir().join("berth-shim"), &shim).unwrap();
    struct Rm<'a>(&'a Path);
    impl Drop for Rm<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _rm = Rm(&shim_dir);

    let settings = format!(
        "log-level = \"warn\"\ngroup = \"nogroup\"\nshim = {shim:?}\nevents-max = 6\nlog-max-size = \"4k\"\nlog-max-files = 1\nstop-containers-on-exit = true\n"
    );
    // runc, not the default: `berth version` shows it. root and socket
    // come from the file too (config_text).
    let mut d = Daemon::start_configured(Rt::Runc, &settings, &[]);
    assert!(d.state_dir().join("berth.redb").exists(), "root");
    let meta = std::fs::metadata(&d.socket).expect("socket from the file");
    assert_eq!(meta.gid(), gid_of("nogroup"), "group");
    assert_eq!(meta.mode() & 0o777, 0o660);
    let v = d.berth(&["version"]).ok();
    assert!(v.contains("runtime: /") && v.contains("runc"), "{v}");
    let info = d.berth(&["info"]).ok();
    assert!(info.contains("\n events-max = 6 # file\n"), "{info}");
    assert!(
        info.contains("\n events-max-age = \"7d\" # default\n"),
        "{info}"
    );

    // shim: the container's init is a child of the copied shim.
    let id = d.run(&["-d"], &["sleep", "600"]).ok();
    let pid = d.inspect(&id)["pid"].as_i64().unwrap();
    let shim_pid = ppid_of(pid);
    let exe = std::fs::read_link(format!("/proc/{shim_pid}/exe")).unwrap();
    assert_eq!(exe, shim, "shim");

    // log-max-size 4k, log-max-files 1: the live file plus one rotated.
    let files = chatty(&d);
    assert!(files.len() <= 2, "{files:?}");
    assert!(files.iter().all(|(_, n)| *n <= 4096 + 256), "{files:?}");

    // log-level warn: not even "berthd ready".
    let log = d.daemon_log();
    assert!(!log.contains("INFO"), "log-level: {log}");

    // events-max 6: the log holds no more.
    let n = d
        .events_json(&[])
        .iter()
        .filter(|e| e["type"] != "missed")
        .count();
    assert!((1..=6).contains(&n), "{n} events kept");

    // stop-containers-on-exit: SIGTERM stops the sleeper.
    assert_eq!(d.terminate(Duration::from_secs(30)), Some(0));
    poll(
        "the container to be stopped",
        Duration::from_secs(20),
        || (!pid_alive(pid)).then_some(()),
    );
}

/// events-max-age from the file: the first compaction, right at start,
/// drops events older than it.
#[test]
fn events_max_age_from_the_file() {
    let mut d = Daemon::start_configured(Rt::Embedded, "", &[]);
    d.run(&["--rm"], &["true"]).ok();
    let first = d.events_json(&[]);
    assert!(!first.is_empty());
    let last = rfc3339_secs(first.last().unwrap()["time"].as_str().unwrap());
    d.kill9();
    std::fs::write(d.config_path(), d.config_text("events-max-age = \"1s\"\n")).unwrap();
    poll("the events to be 1 s old", Duration::from_secs(5), || {
        (now_secs() - last > 1.2).then_some(())
    });
    d.restart();
    // What is left is at most the marker of the gap.
    poll("old events to be dropped", Duration::from_secs(20), || {
        let left = d.events_json(&[]);
        left.iter().all(|e| e["type"] == "missed").then_some(())
    });
}

/// A flag (or its environment variable) wins over the file.
#[test]
fn a_flag_overrides_the_file() {
    let d = Daemon::start_configured(
        Rt::Runc,
        "log-max-files = 5\n",
        &[
            "--runtime",
            "embedded",
            "--log-max-files",
            "1",
            "--log-max-size",
            "4k",
        ],
    );
    let v = d.berth(&["version"]).ok();
    assert!(v.contains("runtime: embedded"), "{v}");
    let files = chatty(&d);
    assert!(files.len() <= 2, "{files:?}");

    let out = Command::new(bin_dir().join("berthd"))
        .arg("--config")
        .arg(d.config_path())
        .args(["--log-max-files", "3", "--print-config"])
        .env("BERTH_RUNTIME", "crun")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("log-max-files = 3 # flag"), "{text}");
    assert!(text.contains("runtime = \"crun\" # environment"), "{text}");
    assert!(text.contains("log-level = \"debug\" # file"), "{text}");
    assert!(text.contains("events-max = 100000 # default"), "{text}");
}

fn berthd_with(file: &Path, text: &str, extra: &[&str]) -> (i32, String) {
    std::fs::write(file, text).unwrap();
    let out = Command::new(bin_dir().join("berthd"))
        .arg("--config")
        .arg(file)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Mistakes stop berthd before it creates anything, in one line.
#[test]
fn mistakes_are_one_line_with_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("be2e-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Removed even when an assertion fails.
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let file = dir.join("berthd.toml");
    let root = dir.join("state");
    let head = format!("root = {root:?}\nsocket = {:?}\n", dir.join("s.sock"));
    let cases = [
        (
            "log-levl = \"debug\"\n",
            "berthd.toml:3: unknown key \"log-levl\" (did you mean \"log-level\"?)",
        ),
        (
            "\nlog-max-files = 0\n",
            "berthd.toml:4: key \"log-max-files\": invalid value \"0\"",
        ),
        (
            "events-max-age = \"soon\"\n",
            "berthd.toml:3: key \"events-max-age\": invalid value \"soon\"",
        ),
        (
            "stop-containers-on-exit = 1\n",
            "berthd.toml:3: key \"stop-containers-on-exit\": expects true or false",
        ),
        (
            "log-level = \"loud\"\n",
            "berthd.toml:3: key \"log-level\": invalid value \"loud\"",
        ),
        ("runtime = \n", "berthd.toml:3: not valid TOML"),
    ];
    for (bad, want) in cases {
        let (code, err) = berthd_with(&file, &format!("{head}{bad}"), &[]);
        assert_eq!(code, 1, "{bad}: {err}");
        assert!(
            err.starts_with("berthd: ") && err.contains(want),
            "{bad}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!root.exists(), "a bad config created the root");
    }
    // A group given explicitly must exist.
    let (code, err) = berthd_with(&file, &format!("{head}group = \"no-such-group-b\"\n"), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the group \"no-such-group-b\" does not exist"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // An explicit file that does not exist.
    let out = Command::new(bin_dir().join("berthd"))
        .args(["--config", "/nonexistent/b.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot read the config file /nonexistent/b.toml"),
        "{err}"
    );
}

/// SIGHUP applies the live settings at once, says which changed settings
/// wait for a restart, and ignores a broken file.
#[test]
fn sighup_reloads_what_can_change_live() {
    let d = Daemon::start_configured(
        Rt::Embedded,
        "log-max-files = 3\nlog-max-size = \"4k\"\n",
        &[],
    );
    let first = chatty(&d);
    assert_eq!(first.len(), 4, "3 rotated files allowed: {first:?}");
    assert!(first.iter().all(|(_, n)| *n <= 4096 + 256), "{first:?}");

    let text = d
        .config_text("log-max-files = 1\nlog-max-size = \"8k\"\n")
        .replace("log-level = \"debug\"", "log-level = \"warn,berthd=info\"")
        .replace("runtime = \"embedded\"", "runtime = \"runc\"");
    std::fs::write(d.config_path(), text).unwrap();
    let hup = |d: &Daemon| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.pid()),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    };
    hup(&d);
    poll("the reload", Duration::from_secs(10), || {
        d.daemon_log().contains("config reloaded").then_some(())
    });
    let log = d.daemon_log();
    for key in ["log-max-files", "log-max-size", "log-level"] {
        assert!(
            log.contains(&format!("setting reloaded key={key}")),
            "{key}: {log}"
        );
    }
    assert!(
        log.contains("changed but not reloaded: restart berthd to apply keys=runtime"),
        "{log}"
    );
    let v = d.berth(&["version"]).ok();
    assert!(v.contains("runtime: embedded"), "{v}");
    // berth info shows what is in force: the reloaded live settings, and
    // the runtime still as started.
    let info = d.berth(&["info"]).ok();
    assert!(info.contains("\n log-max-files = 1 # file\n"), "{info}");
    assert!(info.contains("\n log-max-size = \"8k\" # file\n"), "{info}");
    assert!(
        info.contains("\n runtime = \"embedded\" # file\n"),
        "{info}"
    );
    let debug_lines = log.matches("DEBUG").count();
    let after = chatty(&d);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|(_, n)| *n <= 8192 + 256), "{after:?}");
    assert!(after.iter().any(|(_, n)| *n > 4096 + 256), "{after:?}");
    // Debug logging is off now.
    assert_eq!(d.daemon_log().matches("DEBUG").count(), debug_lines);

    // A broken file changes nothing.
    std::fs::write(d.config_path(), d.config_text("log-max-filez = 9\n")).unwrap();
    hup(&d);
    poll("the failed reload", Duration::from_secs(10), || {
        d.daemon_log()
            .contains("config not reloaded, nothing changed")
            .then_some(())
    });
    assert!(d
        .daemon_log()
        .contains("berthd.toml:5: unknown key \"log-max-filez\""));
    let still = chatty(&d);
    assert_eq!(still.len(), 2, "{still:?}");
}

/// log-format = "json": one JSON object a line; a line about a container
/// carries its id.
#[test]
fn json_log_lines_carry_the_container_id() {
    let d = Daemon::start_configured(Rt::Embedded, "log-format = \"json\"\n", &[]);
    assert_eq!(d.run(&["--rm"], &["true"]).code, 0);
    let created = d.events_json(&["--filter", "type=create"]);
    let id = created[0]["container"].as_str().unwrap().to_string();
    poll(
        "the removal to be logged",
        std::time::Duration::from_secs(10),
        || d.daemon_log().contains("removed").then_some(()),
    );
    let log = d.daemon_log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "berthd ready"),
        "{log}"
    );
    let about: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "berth_core::supervisor")
        .collect();
    assert!(!about.is_empty(), "{log}");
    for l in about {
        assert_eq!(l["span"]["id"], id.as_str(), "{l}");
    }
}
