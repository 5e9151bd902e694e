//! Typed exit status. `-1` ([`UNKNOWN_EXIT_CODE`]) is the one sentinel for
//! "the exit code could not be determined"; nothing turns it into success.

use serde::{Deserialize, Serialize};

/// The code reported when the real exit code is unknown.
pub const UNKNOWN_EXIT_CODE: i32 = -1;

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitStatus {
    /// It called exit(code).
    Exited { code: i32 },
    /// It was killed by a signal.
    Signaled { signal: i32 },
    /// The status could not be read (monitor lost, wait failed); says why.
    Unknown { reason: String },
}

impl ExitStatus {
    /// The conventional code: the exit code, 128+N for signal N, or -1.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited { code } => *code,
            ExitStatus::Signaled { signal } => 128 + signal,
            ExitStatus::Unknown { .. } => UNKNOWN_EXIT_CODE,
        }
    }

    /// True only for a real exit with code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited { code: 0 })
    }

    pub fn unknown(reason: impl Into<String>) -> Self {
        ExitStatus::Unknown {
            reason: reason.into(),
        }
    }

    /// A short human description: "exited with code 3", "killed by signal 9".
    pub fn describe(&self) -> String {
        match self {
            ExitStatus::Exited { code } => format!("exited with code {code}"),
            ExitStatus::Signaled { signal } => {
                format!(
                    "killed by {} (exit code {})",
                    signal_name(*signal),
                    128 + signal
                )
            }
            ExitStatus::Unknown { reason } => format!("exit status unknown: {reason}"),
        }
    }
}

/// An exit as recorded for a container or process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub status: ExitStatus,
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(default)]
    pub oom_killed: bool,
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// The name of signal `n` ("SIGKILL"), or "signal N".
pub fn signal_name(n: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == n)
        .map(|(name, _)| format!("SIG{name}"))
        .unwrap_or_else(|| format!("signal {n}"))
}

/// Parse a signal given as a number ("9"), a name ("KILL", "SIGKILL",
/// "sigterm") or a real-time signal ("RTMIN+3").
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = SIGNALS.iter().find(|(k, _)| *k == name) {
        return Some(*n);
    }
    // Linux: SIGRTMIN is 34 as seen by programs (glibc reserves 32 and 33).
    if name == "RTMIN" {
        return Some(34);
    }
    if name == "RTMAX" {
        return Some(64);
    }
    // The offset is a plain small number: "RTMIN+-5" is not SIGIO, and a
    // huge one must not overflow.
    let offset = |off: &str| {
        off.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| off.parse::<u8>().ok())
            .flatten()
            .map(i32::from)
    };
    if let Some(off) = name.strip_prefix("RTMIN+") {
        return offset(off).map(|o| 34 + o).filter(|n| *n <= 64);
    }
    if let Some(off) = name.strip_prefix("RTMAX-") {
        return offset(off).map(|o| 64 - o).filter(|n| *n >= 34);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_time_offsets_are_small_plain_numbers() {
        assert_eq!(parse_signal("RTMIN+2"), Some(36));
        assert_eq!(parse_signal("SIGRTMAX-3"), Some(61));
        // Found by tests/random_input.rs: a negative offset named another
        // signal, a huge one overflowed.
        assert_eq!(parse_signal("RTMIN+-5"), None);
        assert_eq!(parse_signal("RTMAX--2"), None);
        assert_eq!(parse_signal("RTMIN+2147483647"), None);
        assert_eq!(parse_signal("RTMAX--2147483648"), None);
        assert_eq!(parse_signal("RTMIN++1"), None);
    }

    #[test]
    fn codes() {
        assert_eq!(ExitStatus::Exited { code: 3 }.code(), 3);
        assert_eq!(ExitStatus::Signaled { signal: 9 }.code(), 137);
        assert_eq!(ExitStatus::unknown("lost").code(), -1);
        assert!(!ExitStatus::unknown("lost").success());
        assert!(ExitStatus::Exited { code: 0 }.success());
        assert!(!ExitStatus::Signaled { signal: 15 }.success());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("KILL"), Some(9));
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("sigusr1"), Some(10));
        assert_eq!(parse_signal("RTMIN+2"), Some(36));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(40), "signal 40");
    }

    #[test]
    fn describe_is_honest() {
        assert_eq!(
            ExitStatus::Signaled { signal: 9 }.describe(),
            "killed by SIGKILL (exit code 137)"
        );
        assert!(ExitStatus::unknown("shim lost")
            .describe()
            .contains("unknown"));
    }
}
