//! The persisted record of a container.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exit::Exit;

/// The states a user sees. A container is `Running` from a successful start
/// until its init's exit has been handled; `Paused` is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Created,
    Running,
    Paused,
    Stopped,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
        }
    }

    /// Has a live init (created, running or paused).
    pub fn is_live(&self) -> bool {
        !matches!(self, State::Stopped)
    }
}

/// Where the container's filesystem and spec came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum Source {
    Rootfs(PathBuf),
    Bundle(PathBuf),
    /// A snapshot of an image (berthd's image store) mounted at `rootfs`,
    /// owned by the container and released with it.
    Image(ImageSource),
}

/// The image a container was created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSource {
    /// The reference as the user gave it, normalized
    /// (`docker.io/library/busybox:latest`), or the image id when given by id.
    pub reference: String,
    /// The image id (`sha256:` + the config's digest).
    pub id: String,
    /// Where the container's root is mounted.
    pub rootfs: PathBuf,
}

impl Source {
    /// The image of an image container.
    pub fn image(&self) -> Option<&ImageSource> {
        match self {
            Source::Image(i) => Some(i),
            _ => None,
        }
    }
}

/// Options that are berth's, not the OCI spec's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub source: Source,
    #[serde(default)]
    pub auto_remove: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Signal number sent by stop.
    pub stop_signal: i32,
    /// Seconds stop waits before SIGKILL.
    pub stop_timeout: u32,
    #[serde(default)]
    pub log_max_size: u64,
    #[serde(default)]
    pub log_max_files: u32,
    #[serde(default)]
    pub restart: crate::restart::RestartPolicy,
    /// The init's stdin stays open for attached clients (`-i`).
    #[serde(default)]
    pub open_stdin: bool,
    /// The health check (`--health-*` flags, or the image's `Healthcheck`).
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// Ports the image declares (`80/tcp`), kept for networking (`-P`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
}

/// A health check, as Docker's `HealthConfig` (and an image config's
/// `Healthcheck`, which has the same fields): durations in nanoseconds, 0
/// meaning the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["CMD", prog, args...]`, `["CMD-SHELL", "command"]` (run by
    /// `/bin/sh -c`), or `["NONE"]` (no check, also the image's).
    pub test: Vec<String>,
    #[serde(default)]
    pub interval: u64,
    #[serde(default)]
    pub timeout: u64,
    #[serde(default)]
    pub start_period: u64,
    /// Consecutive failures that make the container unhealthy (0: 3).
    #[serde(default)]
    pub retries: u32,
}

impl HealthConfig {
    pub const DEFAULT_INTERVAL: u64 = 30_000_000_000;
    pub const DEFAULT_TIMEOUT: u64 = 30_000_000_000;
    pub const DEFAULT_RETRIES: u32 = 3;

    /// The command to exec, or None for `NONE` (or an empty test).
    pub fn command(&self) -> Option<Vec<String>> {
        match self.test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
            Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
                Some(vec!["/bin/sh".into(), "-c".into(), rest.join(" ")])
            }
            _ => None,
        }
    }

    fn or(v: u64, d: u64) -> std::time::Duration {
        std::time::Duration::from_nanos(if v == 0 { d } else { v })
    }

    pub fn interval(&self) -> std::time::Duration {
        Self::or(self.interval, Self::DEFAULT_INTERVAL)
    }

    pub fn timeout(&self) -> std::time::Duration {
        Self::or(self.timeout, Self::DEFAULT_TIMEOUT)
    }

    pub fn start_period(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.start_period)
    }

    pub fn retries(&self) -> u32 {
        if self.retries == 0 {
            Self::DEFAULT_RETRIES
        } else {
            self.retries
        }
    }
}

/// A container's health, as `ps` and `inspect` show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One run of the health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    pub start: String,
    pub end: String,
    /// The check's exit code; -1 when it timed out or could not run.
    pub exit_code: i32,
    /// Its output, at most [`HEALTH_OUTPUT_MAX`] bytes.
    pub output: String,
}

/// Results kept per container (Docker's: the last 5).
pub const HEALTH_LOG_MAX: usize = 5;
/// Output kept per result (Docker's: 4 KiB).
pub const HEALTH_OUTPUT_MAX: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    pub log: Vec<HealthResult>,
}

pub const DEFAULT_STOP_TIMEOUT: u32 = 10;
pub const DEFAULT_STOP_SIGNAL: i32 = 15;

/// An exec'd process while it runs or after it exited (until the container
/// stops or is removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRecord {
    pub id: String,
    pub pid: i32,
    pub args: Vec<String>,
    pub running: bool,
    #[serde(default)]
    pub exit: Option<Exit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub config: ContainerConfig,
    /// Shared, not copied: a record is held twice (the container's own and
    /// the snapshot readers see) and copied at every state change, and the
    /// spec is most of it (~25 KB with the seccomp filter); one copy per
    /// container, replaced whole when `update` changes it.
    pub spec: std::sync::Arc<oci_spec::runtime::Spec>,
    pub state: State,
    /// Pid of the init (host pid namespace); 0 when stopped.
    pub pid: i32,
    /// The last exit of the init.
    #[serde(default)]
    pub exit: Option<Exit>,
    pub created_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub restart_count: u32,
    /// Stopped or killed by the user: no restart policy undoes that (and
    /// `unless-stopped` keeps it stopped across daemon restarts).
    #[serde(default)]
    pub manually_stopped: bool,
    /// Stopped, and the restart policy will start it after its backoff.
    #[serde(default)]
    pub restarting: bool,
    #[serde(default)]
    pub execs: BTreeMap<String, ExecRecord>,
    /// Health of the current run, when the container has a health check.
    #[serde(default)]
    pub health: Option<Health>,
}

impl ContainerRecord {
    /// The command the init runs.
    pub fn command(&self) -> Vec<String> {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default()
    }

    /// The exec'd processes still running: (exec id, pid).
    pub fn running_execs(&self) -> Vec<(String, i32)> {
        self.execs
            .values()
            .filter(|e| e.running)
            .map(|e| (e.id.clone(), e.pid))
            .collect()
    }
}
