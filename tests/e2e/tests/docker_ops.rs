//! The rest of the container endpoints through the real docker CLI
//! (docs/docker-api.md): `top`, `stats --no-stream`, `rename`, `restart`,
//! `update`, `cp` both ways, `diff`, `export`, `container prune`; what
//! follows a `run --rm` at once (its snapshot is deleted after the removal
//! answered).

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_e2e::{mount_leftovers, poll, Daemon, Rt};

#[test]
fn docker_top_stats_rename_restart_update() {
    let d = Daemon::start_docker(Rt::Embedded);
    d.load_busybox();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "a",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 0.1; done",
    ])
    .ok();
    // top: ps's rows of the container's processes only.
    let top = d.docker(&["top", "a"]).ok();
    assert!(top.starts_with("UID") && top.contains("PID"), "{top}");
    assert!(top.contains("while true"), "{top}");
    let top = d.docker(&["top", "a", "-o", "pid,comm"]).ok();
    assert!(top.lines().any(|l| l.ends_with(" sh")), "{top}");

    // stats --no-stream: real numbers.
    let stats = d
        .docker(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}",
            "a",
        ])
        .ok();
    let f: Vec<&str> = stats.split('|').collect();
    assert_eq!(f.len(), 4, "{stats}");
    assert_eq!(f[0], "a");
    assert!(f[1].ends_with('%'), "{stats}");
    assert!(!f[2].starts_with("0B"), "{stats}");
    let pids: u32 = f[3].parse().unwrap_or(0);
    assert!(pids >= 1, "{stats}");

    // rename.
    d.docker(&["rename", "a", "b"]).ok();
    assert_eq!(d.docker(&["ps", "--format", "{{.Names}}"]).ok(), "b");
    let r = d.docker(&["rename", "nosuch", "c"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("No such container"), "{r:?}");

    // restart: a new init.
    let pid = d
        .docker(&["inspect", "--format", "{{.State.Pid}}", "b"])
        .ok();
    d.docker(&["restart", "-t", "5", "b"]).ok();
    let after = d
        .docker(&[
            "inspect",
            "--format",
            "{{.State.Pid}} {{.State.Status}}",
            "b",
        ])
        .ok();
    assert!(after.ends_with(" running"), "{after}");
    assert_ne!(after.split(' ').next(), Some(pid.as_str()), "{after}");

    // update: live limits, and the restart policy.
    d.docker(&["update", "--memory", "64m", "--restart", "always", "b"])
        .ok();
    let hc = d
        .docker(&[
            "inspect",
            "--format",
            "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}",
            "b",
        ])
        .ok();
    assert_eq!(hc, "67108864 always");
    d.docker(&["rm", "-f", "b"]).ok();
}

#[test]
fn docker_cp_diff_export_prune() {
    let d = Daemon::start_docker(Rt::Embedded);
    d.load_busybox();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "f",
        "busybox",
        "sh",
        "-c",
        "echo made >/tmp/made; mkdir -p /tmp/dir/sub; echo deep >/tmp/dir/sub/x; trap 'exit 0' TERM; while true; do sleep 0.1; done",
    ])
    .ok();
    poll("the files", Duration::from_secs(10), || {
        (d.docker(&["exec", "f", "cat", "/tmp/dir/sub/x"]).stdout == "deep\n").then_some(())
    });
    // Out of the container: a file, a directory.
    let out = d.root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = out.to_str().unwrap();
    d.docker(&["cp", "f:/tmp/made", o]).ok();
    assert_eq!(std::fs::read_to_string(out.join("made")).unwrap(), "made\n");
    d.docker(&["cp", "f:/tmp/dir", o]).ok();
    assert_eq!(
        std::fs::read_to_string(out.join("dir/sub/x")).unwrap(),
        "deep\n"
    );
    // Into it: a file under a new name, a directory.
    let src = d.root.join("host.txt");
    std::fs::write(&src, "from the host\n").unwrap();
    d.docker(&["cp", src.to_str().unwrap(), "f:/tmp/renamed.txt"])
        .ok();
    assert_eq!(
        d.docker(&["exec", "f", "cat", "/tmp/renamed.txt"]).ok(),
        "from the host"
    );
    d.docker(&["cp", out.join("dir").to_str().unwrap(), "f:/"])
        .ok();
    assert_eq!(d.docker(&["exec", "f", "cat", "/dir/sub/x"]).ok(), "deep");
    // A missing path: Docker's words.
    let r = d.docker(&["cp", "f:/nope", o]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Could not find the file /nope"), "{r:?}");

    // diff: what the container added.
    let diff = d.docker(&["diff", "f"]).ok();
    assert!(diff.lines().any(|l| l == "A /tmp/made"), "{diff}");
    assert!(diff.lines().any(|l| l == "A /dir"), "{diff}");

    // export: the whole tree.
    let tar = d.root.join("f.tar");
    d.docker(&["export", "-o", tar.to_str().unwrap(), "f"]).ok();
    let list = std::process::Command::new("tar")
        .arg("tf")
        .arg(&tar)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "tmp/made"),
        "{names}"
    );
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "bin/busybox"),
        "{names}"
    );

    // container prune: the stopped ones only.
    d.docker(&["run", "--name", "done", "busybox", "true"]).ok();
    let id = d.docker(&["inspect", "--format", "{{.Id}}", "done"]).ok();
    // ps filters before/since (creation order) and -s (sizes).
    let names = |filter: &str| {
        d.docker(&["ps", "-a", "--filter", filter, "--format", "{{.Names}}"])
            .ok()
    };
    assert_eq!(names("since=f"), "done");
    assert_eq!(names("before=done"), "f");
    let sizes = d
        .docker(&["ps", "-s", "--format", "{{.Names}} {{.Size}}"])
        .ok();
    assert!(
        sizes.starts_with("f ") && sizes.contains("virtual"),
        "{sizes}"
    );
    let out = d.docker(&["container", "prune", "-f"]).ok();
    assert!(out.contains(&id), "{out}");
    assert_eq!(d.docker(&["ps", "-a", "--format", "{{.Names}}"]).ok(), "f");
    d.docker(&["rm", "-f", "f"]).ok();
}

/// The entries of a directory (none when it is missing).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn snapshots(d: &Daemon) -> PathBuf {
    d.state_dir().join("images/snapshots")
}

/// `docker run --rm` answers once the record and the name are gone; the
/// snapshot's unmount and delete end after. Everything a client does next
/// behaves as if they were done: a new container of the same name and
/// host port, `system df`, and `rmi` of the image, whose layers go at once.
#[test]
fn docker_run_rm_then_at_once() {
    let d = Daemon::start_docker(Rt::Embedded);
    d.load_busybox();
    // Files in the root, so that there is something to delete.
    let write = "for i in $(seq 300); do echo $i >/f$i; done";
    for _ in 0..2 {
        let r = d.docker(&[
            "run", "--rm", "--name", "same", "-p", "18089:80", "busybox", "sh", "-c", write,
        ]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let df = d
        .docker(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"])
        .ok();
    assert!(df.lines().any(|l| l == "Containers 0"), "{df}");
    assert!(df.lines().any(|l| l == "Images 1"), "{df}");
    assert_eq!(d.docker(&["ps", "-aq"]).ok(), "");

    d.docker(&["run", "--rm", "busybox", "sh", "-c", write])
        .ok();
    d.docker(&["rmi", "busybox"]).ok();
    // The layers went with the image, not at a later prune.
    assert_eq!(entries(&snapshots(&d).join("layers")), Vec::<String>::new());
    let df = d
        .docker(&[
            "system",
            "df",
            "--format",
            "{{.Type}} {{.TotalCount}} {{.Size}}",
        ])
        .ok();
    assert!(df.lines().any(|l| l == "Images 0 0B"), "{df}");
    // And every snapshot is gone by now.
    poll(
        "the snapshots to be deleted",
        Duration::from_secs(10),
        || {
            (entries(&snapshots(&d)) == ["containers", "layers"]
                && entries(&snapshots(&d).join("containers")).is_empty())
            .then_some(())
        },
    );
}

/// Clears the immutable flag of everything under a dir when dropped, so
/// the harness can delete the root even when the test fails.
struct Mutable(PathBuf);

impl Drop for Mutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-R")
            .arg("-i")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A snapshot whose delete did not end before the daemon died (here: it
/// cannot end, a file in it is immutable) is finished by the next start;
/// meanwhile the container is gone for every client.
#[test]
fn docker_run_rm_snapshot_left_by_a_crash_is_removed_at_start() {
    let mut d = Daemon::start_docker(Rt::Embedded);
    let _mutable = Mutable(d.root.clone());
    d.load_busybox();
    let id = d
        .docker(&[
            "run",
            "-d",
            "--rm",
            "--name",
            "c",
            "busybox",
            "sh",
            "-c",
            "echo x >/keep; trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ])
        .ok();
    let keep = snapshots(&d)
        .join("containers")
        .join(&id)
        .join("upper/keep");
    poll("the container's file", Duration::from_secs(10), || {
        keep.exists().then_some(())
    });
    let st = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&keep)
        .status()
        .unwrap();
    assert!(st.success());
    d.docker(&["stop", "c"]).ok();
    poll("the removal", Duration::from_secs(10), || {
        d.docker(&["ps", "-aq"])
            .stdout
            .trim()
            .is_empty()
            .then_some(())
    });
    // Gone for clients, its name free; the snapshot's delete failed.
    let r = d.docker(&["run", "--rm", "--name", "c", "busybox", "true"]);
    assert_eq!(r.code, 0, "{r:?}");
    let prefix = format!("tmp-rm-{id}-");
    let left = poll(
        "the snapshot's delete to fail",
        Duration::from_secs(10),
        || {
            entries(&snapshots(&d))
                .into_iter()
                .find(|n| n.starts_with(&prefix))
        },
    );
    assert!(snapshots(&d).join(&left).join("upper/keep").exists());
    d.kill9();
    let st = std::process::Command::new("chattr")
        .arg("-i")
        .arg(snapshots(&d).join(&left).join("upper/keep"))
        .status()
        .unwrap();
    assert!(st.success());
    d.restart();
    poll("berthd back", Duration::from_secs(20), || {
        (d.docker(&["ps", "-aq"]).code == 0).then_some(())
    });
    assert_eq!(entries(&snapshots(&d)), ["containers", "layers"]);
    assert!(entries(&snapshots(&d).join("containers")).is_empty());
    assert_eq!(mount_leftovers(&id), Vec::<String>::new());
    // The image is whole: it still runs.
    assert_eq!(
        d.docker(&["run", "--rm", "busybox", "echo", "ok"]).ok(),
        "ok"
    );
}
