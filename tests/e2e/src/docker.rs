//! The real docker CLI against a private berthd's Docker API socket.
//!
//! The CLI is the newest on the machine: `BERTH_DOCKER_CLI`, else
//! `/usr/local/bin/docker` (28.x here), else Debian's `/usr/bin/docker`.
//! Every run sets `DOCKER_HOST` to the daemon's own socket and
//! `DOCKER_CONFIG` to a directory under its root, so `~/.docker` and the
//! system's dockerd are never touched.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{poll, Daemon, Rt, Run};

/// The docker CLI binary the tests drive.
pub fn cli() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_DOCKER_CLI") {
        return PathBuf::from(p);
    }
    ["/usr/local/bin/docker", "/usr/bin/docker"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("no docker CLI: install docker.io (scripts/setup.sh) or set BERTH_DOCKER_CLI")
}

fn wait_for_socket(sock: &std::path::Path) {
    poll("the Docker API socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(sock)
            .ok()
            .map(|_| ())
    });
}

impl Daemon {
    /// A daemon that also serves the Docker API (`--docker-socket`).
    pub fn start_docker(rt: Rt) -> Daemon {
        let mut d = Self::new(rt, &[]);
        let sock = d.docker_socket();
        d.extra
            .extend(["--docker-socket".to_string(), sock.display().to_string()]);
        d.spawn();
        wait_for_socket(&sock);
        d
    }

    /// The same in the host's network namespace (a registry on the host's
    /// loopback), its containers on `--network none` by default.
    pub fn start_docker_host_net(rt: Rt) -> Daemon {
        let mut d = Self::new(rt, &[]);
        d.netns = None;
        let sock = d.docker_socket();
        d.extra.extend([
            "--default-network".to_string(),
            "none".to_string(),
            "--docker-socket".to_string(),
            sock.display().to_string(),
        ]);
        d.spawn();
        wait_for_socket(&sock);
        d
    }

    pub fn docker_socket(&self) -> PathBuf {
        self.root.join("docker.sock")
    }

    /// A docker CLI command aimed at this daemon only.
    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cli());
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.docker_socket().display()),
        )
        .env("DOCKER_CONFIG", self.root.join("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .env_remove("DOCKER_TLS_VERIFY")
        .args(args);
        c
    }

    /// Run the docker CLI (stdin closed) and collect what it printed.
    pub fn docker(&self, args: &[&str]) -> Run {
        Run::from(
            self.docker_cmd(args)
                .stdin(Stdio::null())
                .output()
                .expect("run docker"),
        )
    }
}

impl Daemon {
    /// Load the harness's busybox image (the host's busybox-static, `sh`
    /// as its command) as `busybox:latest`, where Docker clients find it.
    pub fn load_busybox(&self) {
        use crate::image::{busybox_layer, Compression, Config, Image};
        let img = Image::build(
            &[busybox_layer()],
            Compression::None,
            &Config {
                cmd: vec!["sh".into()],
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ],
                ..Default::default()
            },
        );
        let r = self.berth_input(
            &["load"],
            &img.oci_archive("docker.io/library/busybox:latest"),
        );
        assert_eq!(r.code, 0, "load busybox: {r:?}");
    }
}
