//! `--init`: a small init as the container's pid 1 (Debian's static `tini`),
//! bind-mounted read-only at `/sbin/docker-init` as Docker does, running the
//! command as its child. The kernel gives a namespace's pid 1 no default
//! signal actions, so a command that is pid 1 itself (`sleep`, `sh`)
//! ignores SIGTERM unless it handles it, and nobody reaps orphaned zombies;
//! tini forwards signals to its child and reaps every zombie.

use std::path::Path;

use oci_spec::runtime::Spec;

use super::{mount, SpecError};

/// Where the init is mounted in the container (Docker's path).
pub const INIT_TARGET: &str = "/sbin/docker-init";

/// Make `spec` run its command under the init at host path `init`.
pub fn apply_init(spec: &mut Spec, init: &Path) -> Result<(), SpecError> {
    let source = init
        .to_str()
        .ok_or_else(|| SpecError::InvalidLimit(format!("--init: {init:?} is not a UTF-8 path")))?;
    let mut process = spec.process().clone().ok_or(SpecError::BundleNoProcess)?;
    let mut args = vec![INIT_TARGET.to_string(), "--".to_string()];
    args.extend(process.args().clone().unwrap_or_default());
    process.set_args(Some(args));
    spec.set_process(Some(process));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(mount(
        INIT_TARGET,
        "bind",
        source,
        &["rbind", "ro", "nosuid", "nodev"],
    )?);
    spec.set_mounts(Some(mounts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{generate, SpecOptions};
    use std::path::PathBuf;

    #[test]
    fn init_wraps_the_command() {
        let opts = SpecOptions {
            rootfs: PathBuf::from("/r"),
            args: vec!["sleep".into(), "9".into()],
            id: "0123456789abcdef".into(),
            ..Default::default()
        };
        let mut spec = generate(&opts, None, None).unwrap();
        apply_init(&mut spec, Path::new("/usr/bin/tini-static")).unwrap();
        assert_eq!(
            spec.process().as_ref().unwrap().args().clone().unwrap(),
            vec!["/sbin/docker-init", "--", "sleep", "9"]
        );
        let m = spec.mounts().as_ref().unwrap().last().unwrap().clone();
        assert_eq!(m.destination(), Path::new(INIT_TARGET));
        assert_eq!(
            m.source().as_deref(),
            Some(Path::new("/usr/bin/tini-static"))
        );
        assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
    }
}
