//! What the front ends print the way Docker prints it: the CLI's tables and
//! the Docker API's fields say the same words, from one place.

/// A span of `secs` seconds as Docker prints it in a status ("Up 3
/// minutes", "Exited (0) About an hour ago"): "Less than a second", "1
/// second", "N seconds", "About a minute", "N minutes", "About an hour", "N
/// hours", "N days".
pub fn human_duration(secs: u64) -> String {
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// A normalized reference in the short form Docker prints:
/// `docker.io/library/busybox:latest` → `busybox:latest`,
/// `docker.io/me/app:1` → `me/app:1`; other registries stay as they are.
pub fn familiar(reference: &str) -> String {
    reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("docker.io/"))
        .unwrap_or(reference)
        .to_string()
}

/// The 12 hex characters Docker shows for a digest or an id
/// (`sha256:` dropped).
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// A layer's pull status (berth.v1's `LayerProgress.status`) in Docker's
/// words.
pub fn pull_status(s: &str) -> &'static str {
    match s {
        "waiting" => "Waiting",
        "downloading" => "Downloading",
        "verifying" => "Verifying Checksum",
        "download-complete" => "Download complete",
        "extracting" => "Extracting",
        "pull-complete" => "Pull complete",
        "already-exists" => "Already exists",
        _ => "Working",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_docker_prints_them() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(familiar("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(familiar("docker.io/me/app:1"), "me/app:1");
        assert_eq!(familiar("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(pull_status("pull-complete"), "Pull complete");
    }
}
