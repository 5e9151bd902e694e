//! Restart policies, as Docker's: `no`, `always`, `on-failure[:N]`,
//! `unless-stopped`, with exponential backoff.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exit::ExitStatus;

/// The first delay before a restart.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest delay between restarts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the backoff: the container was steady.
pub const STEADY_RUN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart whatever the exit; an explicit stop holds until the daemon
    /// restarts or the container is started again.
    Always,
    /// Restart after an exit other than 0, at most `max_retries` times in a
    /// row (0: no limit).
    OnFailure { max_retries: u32 },
    /// As `always`, but an explicit stop holds across daemon restarts too.
    UnlessStopped,
}

impl RestartPolicy {
    /// Whether an exit calls for a restart. `restarts` counts the restarts
    /// so far; `manually_stopped` is an explicit stop or kill by the user,
    /// which no policy undoes.
    pub fn should_restart(&self, exit: &ExitStatus, restarts: u32, manually_stopped: bool) -> bool {
        if manually_stopped {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                !exit.success() && (*max_retries == 0 || restarts < *max_retries)
            }
        }
    }

    /// Whether the daemon starts a stopped container when it comes up.
    pub fn start_with_daemon(&self, manually_stopped: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !manually_stopped,
            _ => false,
        }
    }

    pub fn is_no(&self) -> bool {
        matches!(self, RestartPolicy::No)
    }
}

/// The delay before the next restart: double the last one (from
/// [`BACKOFF_START`], capped at [`BACKOFF_MAX`]), or start over after a
/// steady run.
pub fn next_delay(last: Option<Duration>, ran_for: Duration) -> Duration {
    match last {
        Some(d) if ran_for < STEADY_RUN => (d * 2).min(BACKOFF_MAX),
        _ => BACKOFF_START,
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::OnFailure { max_retries: 0 } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max_retries } => write!(f, "on-failure:{max_retries}"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid restart policy {s:?}: use no, always, on-failure[:MAX-RETRIES] or unless-stopped"
            )
        };
        match s {
            "" | "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: 0 }),
            _ => {
                let n = s.strip_prefix("on-failure:").ok_or_else(bad)?;
                let max_retries = n.parse::<u32>().map_err(|_| bad())?;
                Ok(RestartPolicy::OnFailure { max_retries })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        for s in [
            "no",
            "always",
            "unless-stopped",
            "on-failure",
            "on-failure:3",
        ] {
            assert_eq!(s.parse::<RestartPolicy>().unwrap().to_string(), s);
        }
        assert!("sometimes".parse::<RestartPolicy>().is_err());
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
        assert!("on-failure:-1".parse::<RestartPolicy>().is_err());
    }

    #[test]
    fn decisions() {
        let ok = ExitStatus::Exited { code: 0 };
        let bad = ExitStatus::Exited { code: 3 };
        let unknown = ExitStatus::unknown("lost");
        let of2 = RestartPolicy::OnFailure { max_retries: 2 };
        assert!(!RestartPolicy::No.should_restart(&bad, 0, false));
        assert!(RestartPolicy::Always.should_restart(&ok, 99, false));
        assert!(!RestartPolicy::Always.should_restart(&ok, 0, true));
        assert!(of2.should_restart(&bad, 1, false));
        assert!(!of2.should_restart(&bad, 2, false));
        assert!(!of2.should_restart(&ok, 0, false));
        // Unknown is a failure, never a success.
        assert!(of2.should_restart(&unknown, 0, false));
        assert!(RestartPolicy::Always.start_with_daemon(true));
        assert!(!RestartPolicy::UnlessStopped.start_with_daemon(true));
        assert!(RestartPolicy::UnlessStopped.start_with_daemon(false));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let short = Duration::from_secs(1);
        let mut d = next_delay(None, short);
        assert_eq!(d, BACKOFF_START);
        for _ in 0..20 {
            d = next_delay(Some(d), short);
        }
        assert_eq!(d, BACKOFF_MAX);
        assert_eq!(next_delay(Some(d), STEADY_RUN), BACKOFF_START);
    }
}
