//! The Docker Engine API end to end: the real docker CLI against berthd's
//! `--docker-socket` (docs/docker-api.md).

use berth_e2e::{Daemon, Rt};

/// `docker version` negotiates (HEAD /_ping) and shows berth as the
/// server; `docker info` reads the counts.
#[test]
fn docker_version_and_info() {
    let d = Daemon::start_docker(Rt::Embedded);
    let out = d.docker(&[
        "version",
        "--format",
        "{{.Server.Version}} {{.Server.APIVersion}} {{.Server.MinAPIVersion}} {{.Server.Os}}",
    ]);
    let text = out.ok();
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{text}");
    assert_eq!(fields[0], env!("CARGO_PKG_VERSION"));
    assert!(fields[1].starts_with("1."), "{text}");
    assert_eq!(fields[2], "1.24");
    assert_eq!(fields[3], "linux");
    let info = d
        .docker(&[
            "info",
            "--format",
            "{{.Containers}} {{.OSType}} {{.DockerRootDir}}",
        ])
        .ok();
    assert_eq!(
        info,
        format!("0 linux {}", d.state_dir().display()),
        "docker info"
    );
}
