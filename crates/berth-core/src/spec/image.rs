//! What an image's config contributes to a container, merged with the
//! `run` flags as Docker merges them (moby's `merge` of the user's and the
//! image's config).

use std::collections::BTreeMap;

/// The parts of an image config (`config` in the OCI image config) that
/// become container defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`, applied before the user's `-e`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `80/tcp`-style ports the image declares (recorded for networking).
    pub exposed_ports: Vec<String>,
    /// The image's `Healthcheck` (a Docker extension of the config).
    pub healthcheck: Option<crate::container::HealthConfig>,
}

/// The process arguments: the entrypoint followed by the command.
///
/// - no `--entrypoint`: the image's entrypoint, then the user's command or
///   else the image's `Cmd`;
/// - `--entrypoint X`: `X`, then the user's command only (the image's
///   `Cmd` belongs to its entrypoint and is dropped, as Docker does);
/// - `--entrypoint ""`: no entrypoint, then the user's command or else the
///   image's `Cmd`.
pub fn command(img: &ImageDefaults, entrypoint: Option<&str>, args: &[String]) -> Vec<String> {
    let user_cmd = (!args.is_empty()).then(|| args.to_vec());
    let (entry, cmd) = match entrypoint {
        None => (
            img.entrypoint.clone(),
            user_cmd.unwrap_or_else(|| img.cmd.clone()),
        ),
        Some("") => (Vec::new(), user_cmd.unwrap_or_else(|| img.cmd.clone())),
        Some(e) => (vec![e.to_string()], user_cmd.unwrap_or_default()),
    };
    entry.into_iter().chain(cmd).collect()
}

/// The environment: the image's, then the user's entries over it (a later
/// `KEY=` wins, so order is enough).
pub fn env(img: &ImageDefaults, user: &[String]) -> Vec<String> {
    img.env.iter().chain(user).cloned().collect()
}

/// The labels: the image's, with the user's over them.
pub fn labels(
    img: &ImageDefaults,
    user: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    let mut all = img.labels.clone();
    all.extend(user);
    all
}

/// A flag's value when given (non-empty), else the image's.
pub fn or_image(flag: &str, image: &Option<String>) -> Option<String> {
    if flag.is_empty() {
        image.clone().filter(|s| !s.is_empty())
    } else {
        Some(flag.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn img() -> ImageDefaults {
        ImageDefaults {
            entrypoint: v(&["/entry.sh"]),
            cmd: v(&["serve", "--port", "80"]),
            env: v(&["PATH=/img/bin", "A=1"]),
            workdir: Some("/srv".into()),
            user: Some("app".into()),
            ..Default::default()
        }
    }

    #[test]
    fn command_as_docker_merges_it() {
        let i = img();
        assert_eq!(
            command(&i, None, &[]),
            v(&["/entry.sh", "serve", "--port", "80"])
        );
        assert_eq!(command(&i, None, &v(&["sh"])), v(&["/entry.sh", "sh"]));
        assert_eq!(command(&i, Some("/bin/sh"), &[]), v(&["/bin/sh"]));
        assert_eq!(
            command(&i, Some("/bin/sh"), &v(&["-c", "x"])),
            v(&["/bin/sh", "-c", "x"])
        );
        assert_eq!(command(&i, Some(""), &[]), v(&["serve", "--port", "80"]));
        assert_eq!(command(&i, Some(""), &v(&["ls"])), v(&["ls"]));
        assert!(command(&ImageDefaults::default(), None, &[]).is_empty());
    }

    #[test]
    fn env_labels_and_flags() {
        let i = img();
        assert_eq!(env(&i, &v(&["A=2"])), v(&["PATH=/img/bin", "A=1", "A=2"]));
        let mut i2 = i.clone();
        i2.labels.insert("k".into(), "image".into());
        i2.labels.insert("only".into(), "image".into());
        let l = labels(&i2, [("k".to_string(), "user".to_string())]);
        assert_eq!(l["k"], "user");
        assert_eq!(l["only"], "image");
        assert_eq!(or_image("", &i.workdir).as_deref(), Some("/srv"));
        assert_eq!(or_image("/tmp", &i.workdir).as_deref(), Some("/tmp"));
        assert_eq!(or_image("", &Some(String::new())), None);
    }
}
