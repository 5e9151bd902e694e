//! docker-py (the Python SDK) against berthd's Docker API: the script
//! tests/e2e/py/docker_py.py does what a Python user of Docker does
//! (`containers.run`, logs, exec, kill, wait, remove, errors, images.load,
//! volumes, networks) and prints "ok".

use berth_e2e::image::{busybox_layer, Compression, Config, Image};
use berth_e2e::{workspace, Daemon, Rt};

#[test]
fn docker_py_runs_against_berthd() {
    let d = Daemon::start_docker(Rt::Embedded);
    d.load_busybox();
    let img = Image::build(&[busybox_layer()], Compression::Gzip, &Config::default());
    let archive = d.root.join("pyimg.tar");
    std::fs::write(&archive, img.oci_archive("docker.io/library/pyimg:1")).unwrap();
    let script = workspace().join("tests/e2e/py/docker_py.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", d.docker_socket().display()),
        )
        .env("DOCKER_CONFIG", d.root.join("docker-config"))
        .env("BERTH_PY_IMAGE", &archive)
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .output()
        .expect("run python3 (scripts/setup.sh installs docker-py)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "docker-py: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    // Nothing left behind by the script.
    assert_eq!(d.docker(&["ps", "-aq"]).ok(), "");
}
