//! Images and volumes through the Docker Engine API, end to end: the real
//! docker CLI against berthd's `--docker-socket` (docs/docker-api.md):
//! `load`, `images`, `tag`, `image inspect`, `history`, `save`, `rmi`,
//! `volume create/ls/inspect/rm/prune`.

use berth_e2e::image::{busybox_layer, Compression, Config, Image};
use berth_e2e::{Daemon, Rt};

#[test]
fn docker_load_images_tag_inspect_history_save_rmi() {
    let d = Daemon::start_docker(Rt::Embedded);
    let img = Image::build(&[busybox_layer()], Compression::Gzip, &Config::default());
    let archive = d.root.join("bb.tar");
    std::fs::write(&archive, img.oci_archive("docker.io/library/bb:1")).unwrap();
    let a = archive.to_str().unwrap();
    let out = d.docker(&["load", "-i", a]).ok();
    assert_eq!(out, "Loaded image: bb:1");

    let list = d
        .docker(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
        .ok();
    assert!(list.starts_with("bb:1 "), "{list}");
    assert_eq!(d.docker(&["tag", "bb:1", "bb:2"]).ok(), "");
    let list = d
        .docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    let mut names: Vec<&str> = list.lines().collect();
    names.sort();
    assert_eq!(names, ["bb:1", "bb:2"], "{list}");
    let id = d
        .docker(&["image", "inspect", "--format", "{{.Id}}", "bb:2"])
        .ok();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let inspect = d
        .docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Os}} {{.RootFS.Type}}",
            "bb:1",
        ])
        .ok();
    assert_eq!(inspect, "linux layers");
    let hist = d.docker(&["history", "bb:1"]);
    assert_eq!(hist.code, 0, "{hist:?}");
    assert!(hist.stdout.starts_with("IMAGE"), "{hist:?}");

    // save, remove, load back.
    let saved = d.root.join("saved.tar");
    let s = saved.to_str().unwrap();
    d.docker(&["save", "-o", s, "bb:1"]).ok();
    assert!(std::fs::metadata(&saved).unwrap().len() > 100_000);
    assert_eq!(d.docker(&["rmi", "bb:2"]).ok(), "Untagged: bb:2");
    let out = d.docker(&["rmi", "bb:1"]).ok();
    assert!(out.starts_with("Untagged: bb:1\nDeleted: sha256:"), "{out}");
    assert_eq!(d.docker(&["images", "-q"]).ok(), "");
    let out = d.docker(&["load", "-i", s]).ok();
    assert_eq!(out, "Loaded image: bb:1");
    assert_eq!(
        d.docker(&["image", "inspect", "--format", "{{.Id}}", "bb:1"])
            .ok(),
        id
    );

    // Errors are Docker's: exit 1, "No such image".
    let r = d.docker(&["rmi", "nosuch:1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("No such image"), "{r:?}");
    let r = d.docker(&["image", "inspect", "nosuch:1"]);
    assert_eq!(r.code, 1, "{r:?}");
    // berth sees what docker did.
    assert!(d.berth(&["images"]).ok().contains("bb "));
}

#[test]
fn docker_volume_create_ls_inspect_rm_prune() {
    let d = Daemon::start_docker(Rt::Embedded);
    assert_eq!(
        d.docker(&["volume", "create", "--label", "k=v", "data"])
            .ok(),
        "data"
    );
    assert_eq!(d.docker(&["volume", "ls", "-q"]).ok(), "data");
    assert_eq!(
        d.docker(&["volume", "ls", "-q", "--filter", "label=k=v"])
            .ok(),
        "data"
    );
    assert_eq!(
        d.docker(&["volume", "ls", "-q", "--filter", "label=k=w"])
            .ok(),
        ""
    );
    let out = d
        .docker(&[
            "volume",
            "inspect",
            "--format",
            "{{.Name}} {{.Driver}} {{.Scope}} {{.Labels.k}}",
            "data",
        ])
        .ok();
    assert_eq!(out, "data local local v");
    let r = d.docker(&["volume", "create", "--driver", "nfs", "x"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("only the local driver"), "{r:?}");
    // Named volumes stay on prune without --all, as Docker 23+.
    let out = d.docker(&["volume", "prune", "-f"]).ok();
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(d.docker(&["volume", "ls", "-q"]).ok(), "data");
    assert_eq!(d.docker(&["volume", "rm", "data"]).ok(), "data");
    let r = d.docker(&["volume", "rm", "data"]);
    assert_eq!(r.code, 1, "{r:?}");
    let r = d.docker(&["volume", "inspect", "data"]);
    assert_eq!(r.code, 1, "{r:?}");
    d.docker(&["volume", "create", "gone"]).ok();
    let out = d.docker(&["volume", "prune", "-a", "-f"]).ok();
    assert!(out.contains("gone"), "{out}");
    assert_eq!(d.docker(&["volume", "ls", "-q"]).ok(), "");
}
