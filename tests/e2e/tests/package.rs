//! The Debian package: scripts/package.sh builds it (here from the binaries
//! of this test run, uncompressed: the release build and xz are the same
//! script's other path); its metadata, file list and maintainer scripts
//! are what they should be; `dpkg --root` installs it into a scratch root
//! (maintainer scripts run chrootless with groupadd and systemctl stubbed,
//! so the host is untouched), the installed berthd runs containers with
//! the installed shim, and remove/purge keep and drop what they should.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use berth_e2e::*;

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Removes a directory tree when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.0.starts_with("/tmp/") {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A scratch root for `dpkg --root`, and stubs for the commands the
/// maintainer scripts run on the host (they log their arguments).
struct Scratch {
    root: PathBuf,
    stubs: PathBuf,
}

impl Scratch {
    fn new(base: &Path, name: &str) -> Scratch {
        let root = base.join(name);
        for d in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
        let stubs = base.join(format!("{name}-stubs"));
        std::fs::create_dir_all(&stubs).unwrap();
        for tool in [
            "groupadd",
            "systemctl",
            "deb-systemd-helper",
            "deb-systemd-invoke",
        ] {
            let p = stubs.join(tool);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho \"{tool} $*\" >>{}/calls\n",
                    stubs.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        Scratch { root, stubs }
    }

    /// `dpkg --root ROOT ARGS`, scripts chrootless, with the stubs first on
    /// PATH; `systemd`: as if systemd were the running init (a private
    /// mount namespace with /run/systemd/system on a tmpfs /run).
    fn dpkg(&self, systemd: bool, args: &[&str]) -> String {
        let path = format!(
            "{}:{}",
            self.stubs.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = if systemd {
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec \"$@\"",
                "sh",
                "dpkg",
            ]);
            c
        } else {
            Command::new("dpkg")
        };
        c.arg(format!("--root={}", self.root.display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args)
            .env("PATH", path);
        let out = c.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "dpkg {args:?}: {text}");
        text
    }

    /// The stubbed commands run so far, and forget them.
    fn calls(&self) -> Vec<String> {
        let p = self.stubs.join("calls");
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        text.lines().map(String::from).collect()
    }
}

#[test]
fn the_debian_package() {
    for tool in ["dpkg-deb", "dpkg"] {
        if !have(tool) {
            eprintln!(
                "SKIP: {tool} is missing (Debian's dpkg package): the package cannot be built"
            );
            return;
        }
    }
    let tmp = TempDir(PathBuf::from(format!(
        "/tmp/be2e-deb-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let started = std::time::Instant::now();
    let out = ok(
        Command::new("bash")
            .arg(workspace().join("scripts/package.sh"))
            .arg("--bin-dir")
            .arg(bin_dir())
            .arg("--out")
            .arg(&tmp.0)
            .args(["--compress", "none"])
            .output()
            .unwrap(),
        "package.sh",
    );
    eprintln!("package.sh took {:?}", started.elapsed());
    let arch = ok(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .unwrap(),
        "arch",
    );
    let version = env!("CARGO_PKG_VERSION");
    let deb = PathBuf::from(out.trim().lines().last().unwrap());
    assert_eq!(
        deb,
        tmp.0.join(format!("berth_{version}_{}.deb", arch.trim()))
    );

    check_metadata(&deb, version, arch.trim());
    check_files(&deb);
    install_and_remove(&tmp.0, &deb, version);
    systemd_paths(&tmp.0, &deb);
}

fn info(deb: &Path, part: &str) -> String {
    ok(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(deb)
            .arg(part)
            .output()
            .unwrap(),
        part,
    )
}

fn check_metadata(deb: &Path, version: &str, arch: &str) {
    let control = info(deb, "control");
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {control}"))
            .to_string()
    };
    assert_eq!(field("Package"), "berth");
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), arch);
    let depends = field("Depends");
    // From what the binaries link, versioned by dpkg-shlibdeps where it is
    // installed (setup.sh installs dpkg-dev).
    for lib in ["libc6", "libseccomp2"] {
        assert!(depends.contains(lib), "{lib} not in Depends: {depends}");
    }
    if have("dpkg-shlibdeps") {
        assert!(depends.contains("libseccomp2 (>= "), "{depends}");
    }
    assert!(depends.contains("passwd"), "{depends}");
    assert_eq!(info(deb, "conffiles").trim(), "/etc/berth/berthd.toml");
    let postinst = info(deb, "postinst");
    assert!(
        postinst.contains("groupadd --system -f berth"),
        "{postinst}"
    );
    assert!(
        postinst.contains("if [ -d /run/systemd/system ]; then"),
        "{postinst}"
    );
    let prerm = info(deb, "prerm");
    assert!(
        prerm.contains("systemctl stop berth.socket berth.service"),
        "{prerm}"
    );
    let postrm = info(deb, "postrm");
    assert!(postrm.contains("purge)"), "{postrm}");
    assert!(
        !postrm.contains("var/lib/berth\""),
        "purge must keep /var/lib/berth: {postrm}"
    );
}

fn check_files(deb: &Path) {
    let list = ok(
        Command::new("dpkg-deb")
            .arg("-c")
            .arg(deb)
            .output()
            .unwrap(),
        "dpkg-deb -c",
    );
    // mode and path of each entry
    let entries: Vec<(String, String)> = list
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                f.last()?.trim_start_matches('.').to_string(),
            ))
        })
        .collect();
    let mode_of = |path: &str| {
        entries
            .iter()
            .find(|(_, p)| p == path)
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{list}"))
    };
    for bin in [
        "/usr/bin/berth",
        "/usr/bin/berthd",
        "/usr/libexec/berth/berth-shim",
    ] {
        assert_eq!(mode_of(bin), "-rwxr-xr-x", "{bin}");
    }
    for f in [
        "/usr/lib/systemd/system/berth.service",
        "/usr/lib/systemd/system/berth.socket",
        "/etc/berth/berthd.toml",
        "/usr/share/bash-completion/completions/berth",
        "/usr/share/zsh/vendor-completions/_berth",
        "/usr/share/fish/vendor_completions.d/berth.fish",
        "/usr/share/man/man1/berth.1.gz",
        "/usr/share/man/man1/berth-run.1.gz",
        "/usr/share/man/man1/berth-rm.1.gz",
        "/usr/share/man/man1/berth-completion.1.gz",
        "/usr/share/man/man8/berthd.8.gz",
        "/usr/share/doc/berth/copyright",
        "/usr/share/doc/berth/README.md",
        "/usr/share/doc/berth/install.md",
        "/usr/share/doc/berth/cli.md",
    ] {
        assert_eq!(mode_of(f), "-rw-r--r--", "{f}");
    }
    // Nothing in /var/lib/berth: dpkg must not own (and remove) it.
    assert!(
        !entries.iter().any(|(_, p)| p.starts_with("/var")),
        "{list}"
    );
}

fn install_and_remove(base: &Path, deb: &Path, version: &str) {
    let s = Scratch::new(base, "root");
    let r = &s.root;
    let out = s.dpkg(false, &["-i", deb.to_str().unwrap()]);
    // No systemd: the group is made, nothing enabled or started.
    assert_eq!(
        s.calls(),
        vec![format!(
            "groupadd --prefix {} --system -f berth",
            r.display()
        )]
    );
    assert!(
        out.contains("systemd is not running: start berthd yourself"),
        "{out}"
    );

    let v = ok(
        Command::new(r.join("usr/bin/berthd"))
            .arg("--version")
            .output()
            .unwrap(),
        "installed berthd --version",
    );
    assert_eq!(v.trim(), format!("berthd {version}"));
    let v = ok(
        Command::new(r.join("usr/bin/berth"))
            .arg("--version")
            .output()
            .unwrap(),
        "installed berth --version",
    );
    assert_eq!(v.trim(), format!("berth {version}"));

    // The installed daemon, with the packaged default config, finds the
    // installed shim in /usr/libexec/berth and runs a container.
    let berthd = r.join("usr/bin/berthd");
    let config = r.join("etc/berth/berthd.toml");
    let launch: Launch = Arc::new(move |_: &Path, args: &[std::ffi::OsString]| {
        let mut c = Command::new(&berthd);
        c.arg("--config").arg(&config).args(args);
        c
    });
    {
        let d = Daemon::start_launched(Rt::Embedded, &[], launch);
        let id = d.run(&["-d"], &["sleep", "600"]).ok();
        let shim = ppid_of(d.inspect(&id)["pid"].as_i64().unwrap());
        let exe = std::fs::read_link(format!("/proc/{shim}/exe")).unwrap();
        assert_eq!(exe, r.join("usr/libexec/berth/berth-shim"));
        assert_eq!(
            d.berth(&[
                "run",
                "--rm",
                "--rootfs",
                rootfs().to_str().unwrap(),
                "echo",
                "hi"
            ])
            .ok(),
            "hi"
        );
    }

    // The installed units pass systemd-analyze verify, man pages included
    // (Documentation=man:berthd(8) is looked up in the scratch root).
    if have("systemd-analyze") {
        let units = base.join("units");
        std::fs::create_dir_all(&units).unwrap();
        let service = std::fs::read_to_string(r.join("usr/lib/systemd/system/berth.service"))
            .unwrap()
            .replace(
                "\nExecStart=/usr/bin/berthd\n",
                &format!("\nExecStart={}\n", r.join("usr/bin/berthd").display()),
            );
        std::fs::write(units.join("berth.service"), service).unwrap();
        std::fs::copy(
            r.join("usr/lib/systemd/system/berth.socket"),
            units.join("berth.socket"),
        )
        .unwrap();
        // verify looks the man pages up with man(1), when there is one.
        let man = if have("man") { "--man=yes" } else { "--man=no" };
        let out = Command::new("systemd-analyze")
            .args(["verify", man])
            .arg(units.join("berth.socket"))
            .arg(units.join("berth.service"))
            .env("MANPATH", r.join("usr/share/man"))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The installed bash completion registers itself.
    let spec = ok(
        Command::new("bash")
            .args(["--norc", "-c", "source \"$1\" && complete -p berth", "bash"])
            .arg(r.join("usr/share/bash-completion/completions/berth"))
            .output()
            .unwrap(),
        "bash completion",
    );
    assert!(spec.contains("-F _berth_names"), "{spec}");

    // remove keeps the config and berth's data; purge drops the config
    // and still keeps the data (as Docker's purge keeps /var/lib/docker).
    std::fs::create_dir_all(r.join("var/lib/berth/containers")).unwrap();
    std::fs::write(r.join("var/lib/berth/berth.redb"), "state").unwrap();
    let edited = "# edited by the admin\nlog-level = \"debug\"\n";
    std::fs::write(r.join("etc/berth/berthd.toml"), edited).unwrap();
    s.dpkg(false, &["-r", "berth"]);
    assert!(s.calls().is_empty(), "no systemd: nothing to stop");
    assert!(!r.join("usr/bin/berthd").exists());
    assert!(!r.join("usr/libexec/berth").exists());
    assert_eq!(
        std::fs::read_to_string(r.join("etc/berth/berthd.toml")).unwrap(),
        edited
    );
    assert!(r.join("var/lib/berth/berth.redb").exists());
    s.dpkg(false, &["-P", "berth"]);
    assert!(!r.join("etc/berth").exists(), "purge left /etc/berth");
    assert!(
        r.join("var/lib/berth/berth.redb").exists(),
        "purge removed /var/lib/berth"
    );
}

/// Where systemd runs: postinst enables and starts the units, prerm stops
/// them, postrm reloads systemd.
fn systemd_paths(base: &Path, deb: &Path) {
    let s = Scratch::new(base, "sd-root");
    s.dpkg(true, &["-i", deb.to_str().unwrap()]);
    let calls = s.calls();
    assert_eq!(
        calls,
        vec![
            format!("groupadd --prefix {} --system -f berth", s.root.display()),
            "systemctl daemon-reload".to_string(),
            "systemctl enable berth.socket berth.service".to_string(),
            "systemctl is-enabled --quiet berth.service".to_string(),
            "systemctl start berth.socket".to_string(),
            "systemctl restart berth.service".to_string(),
        ]
    );
    // An upgrade (the same version again) does not enable again.
    s.dpkg(true, &["-i", deb.to_str().unwrap()]);
    let calls = s.calls();
    assert!(
        !calls.iter().any(|c| c.contains("enable berth")),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"systemctl restart berth.service".to_string()),
        "{calls:?}"
    );
    s.dpkg(true, &["-r", "berth"]);
    assert_eq!(
        s.calls(),
        vec![
            "systemctl stop berth.socket berth.service".to_string(),
            "systemctl daemon-reload".to_string(),
        ]
    );
    s.dpkg(true, &["-P", "berth"]);
    assert_eq!(s.calls(), vec!["systemctl daemon-reload".to_string()]);
}
