//! Shell completion and man pages, generated from the clap definitions:
//! bash completes subcommands and flags, and the names of existing
//! containers (asked of the daemon) where a subcommand takes a container.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::image::{busybox_layer, Compression, Config, Image};
use berth_e2e::*;

fn script(shell: &str, dir: &Path) -> PathBuf {
    let out = Command::new(bin_dir().join("berth"))
        .args(["completion", shell])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let p = dir.join(format!("berth.{shell}"));
    std::fs::write(&p, &out.stdout).unwrap();
    p
}

/// What bash's completion function offers for the command line `words`
/// (the last one is the word being completed), as `complete -F` calls it.
fn complete(script: &Path, env: &[(&str, &Path)], words: &[&str]) -> Vec<String> {
    let driver = r#"
source "$1"; shift
spec="$(complete -p berth)"
fn="${spec#*-F }"; fn="${fn%% *}"
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
"$fn" berth "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.args(["--norc", "--noprofile", "-c", driver, "bash"])
        .arg(script)
        .args(words)
        .env("PATH", path)
        .env_remove("BERTH_SOCKET");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    v.sort();
    v
}

#[test]
fn bash_completes_commands_flags_and_container_names() {
    let d = Daemon::start(Rt::Embedded);
    let dir = d.root.join("completion");
    std::fs::create_dir_all(&dir).unwrap();
    let bash = script("bash", &dir);
    let sock: &Path = &d.socket;
    let env = [("BERTH_SOCKET", sock)];

    assert_eq!(complete(&bash, &env, &["berth", "ru"]), vec!["run"]);
    // Hidden commands are not offered.
    let all = complete(&bash, &env, &["berth", ""]);
    assert!(all.contains(&"rm".to_string()) && all.contains(&"completion".to_string()));
    assert!(
        !all.iter().any(|w| w == "__complete" || w == "man"),
        "{all:?}"
    );

    // No containers yet: nothing (not file names).
    assert_eq!(
        complete(&bash, &env, &["berth", "rm", ""]),
        Vec::<String>::new()
    );

    d.run(&["-d", "--name", "alpha"], &["sleep", "600"]).ok();
    d.berth(&[
        "create",
        "--name",
        "beta",
        "--rootfs",
        rootfs().to_str().unwrap(),
        "true",
    ])
    .ok();
    let both = vec!["alpha".to_string(), "beta".to_string()];
    assert_eq!(complete(&bash, &env, &["berth", "rm", ""]), both);
    assert_eq!(complete(&bash, &env, &["berth", "rm", "al"]), vec!["alpha"]);
    // Several ids: every later word too.
    assert_eq!(
        complete(&bash, &env, &["berth", "stop", "alpha", "b"]),
        vec!["beta"]
    );
    // An option's value is not a container.
    assert_eq!(
        complete(&bash, &env, &["berth", "stop", "-t", "5", ""]),
        both
    );
    let value = complete(&bash, &env, &["berth", "stop", "-t", ""]);
    assert!(!value.contains(&"alpha".to_string()), "{value:?}");
    // One id: after it, none (exec's command, logs).
    assert_eq!(complete(&bash, &env, &["berth", "logs", ""]), both);
    let cmd = complete(&bash, &env, &["berth", "exec", "alpha", ""]);
    assert!(!cmd.contains(&"alpha".to_string()), "{cmd:?}");
    // Flags still come from clap.
    let flags = complete(&bash, &env, &["berth", "rm", "--f"]);
    assert_eq!(flags, vec!["--force"]);
    // --socket on the command line is the daemon asked.
    let s = d.socket.to_str().unwrap();
    assert_eq!(
        complete(&bash, &[], &["berth", "--socket", s, "rm", ""]),
        both
    );
    // Image names, as `berth images` shows them, where a command takes an
    // image (rmi, history, save); containers are not offered there.
    let img = Image::build(&[busybox_layer()], Compression::Gzip, &Config::default());
    let r = d.berth_input(&["load"], &img.oci_archive("docker.io/library/compl:1"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        complete(&bash, &env, &["berth", "rmi", ""]),
        vec!["compl:1"]
    );
    assert_eq!(
        complete(&bash, &env, &["berth", "history", "co"]),
        vec!["compl:1"]
    );
    assert_eq!(complete(&bash, &env, &["berth", "rm", ""]), both);
    // No daemon: nothing, no error.
    let gone = Path::new("/nonexistent/berth.sock");
    assert_eq!(
        complete(&bash, &[("BERTH_SOCKET", gone)], &["berth", "rm", ""]),
        Vec::<String>::new()
    );
}

#[test]
fn zsh_and_fish_scripts_ask_the_daemon_for_names() {
    let dir = std::env::temp_dir().join(format!("be2e-compl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let zsh = std::fs::read_to_string(script("zsh", &dir)).unwrap();
    let fish = std::fs::read_to_string(script("fish", &dir)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(zsh.starts_with("#compdef berth"), "{zsh}");
    assert!(zsh.contains("_berth_containers() {"));
    assert!(zsh.contains("_berth_images() {"));
    assert!(zsh.contains("'*::ids:_berth_containers'"));
    assert!(zsh.contains("':id:_berth_containers'"));
    assert!(!zsh.contains("__complete:"), "hidden command offered");
    for sub in ["rm", "stop", "logs", "exec", "inspect"] {
        assert!(
            fish.contains(&format!(
                "complete -c berth -n \"__fish_berth_using_subcommand {sub}\" -f -a \"(berth __complete containers 2>/dev/null)\""
            )),
            "{sub}: {fish}"
        );
    }
    assert!(fish.contains(
        "complete -c berth -n \"__fish_berth_using_subcommand rmi\" -f -a \"(berth __complete images 2>/dev/null)\""
    ));
    // Only where a subcommand takes a container.
    assert!(!fish.contains("__fish_berth_using_subcommand run\" -f -a \"(berth __complete"));
}

#[test]
fn man_pages_for_berth_its_commands_and_berthd() {
    let dir = std::env::temp_dir().join(format!("be2e-man-{}", std::process::id()));
    let out = Command::new(bin_dir().join("berth"))
        .arg("man")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for page in [
        "berth.1",
        "berth-run.1",
        "berth-rm.1",
        "berth-logs.1",
        "berth-completion.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(text.contains(".TH "), "{page}: {text}");
        assert!(
            text.contains(&format!("berth {}", env!("CARGO_PKG_VERSION"))),
            "{page}"
        );
    }
    let run = std::fs::read_to_string(dir.join("berth-run.1")).unwrap();
    assert!(run.contains("\\-\\-rootfs"), "{run}");
    assert!(!dir.join("berth-man.1").exists() && !dir.join("berth-__complete.1").exists());
    let _ = std::fs::remove_dir_all(&dir);

    let out = Command::new(bin_dir().join("berthd"))
        .arg("--print-man-page")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH berthd 8"), "{page}");
    assert!(page.contains("\\-\\-config") && page.contains("\\-\\-stop\\-containers\\-on\\-exit"));
    assert!(
        !page.contains("print\\-man\\-page"),
        "the hidden flag is listed"
    );
}
