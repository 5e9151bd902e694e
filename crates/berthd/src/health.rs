//! Health checks, run by berthd as execs on a schedule.
//!
//! Why berthd and not the shim: a check is an ordinary exec (the same path
//! as `berth exec`: the shim starts it, reaps it and logs its output), and
//! the schedule, the timeout, the status and its durable `health_status`
//! event belong with the rest of the container's state in the supervisor.
//! The shim stays an idle process with no timers of its own.
//!
//! One task per running container with a check: it waits `interval`, execs
//! the check, waits at most `timeout` for its exit (SIGKILL at the
//! timeout), reads at most 4 KiB of its output from its log, removes the
//! exec's files and reports the result to the supervisor. The task follows
//! one run (its `started_at`) and ends with it; a `start` event (or berthd's
//! own start, for containers already running) begins the next.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::container::{HealthResult, State, HEALTH_OUTPUT_MAX};
use berth_core::event::EventType;
use berth_core::spec;
use berth_core::Supervisor;
use tracing::debug;

/// How long a killed check may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Checker {
    sup: Supervisor,
    root: PathBuf,
    /// (container id, started_at) of the runs being checked.
    running: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Checker {
    /// Start checking every running container that has a check, and every
    /// one that starts from now on.
    pub fn spawn(sup: Supervisor, root: PathBuf) {
        let c = Checker {
            sup,
            root,
            running: Arc::default(),
        };
        let mut sub = c.sup.events().subscribe(c.sup.events().last_seq());
        for rec in c.sup.list(false) {
            c.maybe_start(&rec.id);
        }
        tokio::spawn(async move {
            while let Some(ev) = sub.next().await {
                if ev.kind == EventType::Start && ev.object.is_container() {
                    c.maybe_start(&ev.container);
                }
            }
        });
    }

    fn maybe_start(&self, id: &str) {
        let Ok(rec) = self.sup.inspect(id) else {
            return;
        };
        let Some(cfg) = rec.config.health.clone() else {
            return;
        };
        if cfg.command().is_none() || rec.state != State::Running {
            return;
        }
        let Some(started_at) = rec.started_at.clone() else {
            return;
        };
        let key = (rec.id.clone(), started_at.clone());
        if !self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.run(&key.0, &key.1, cfg).await;
            this.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }

    async fn run(&self, id: &str, started_at: &str, cfg: berth_core::container::HealthConfig) {
        let Some(args) = cfg.command() else { return };
        match self.sup.health_begin(id, started_at).await {
            Ok(true) => {}
            _ => return,
        }
        let began = Instant::now();
        loop {
            tokio::time::sleep(cfg.interval()).await;
            let counts = began.elapsed() >= cfg.start_period();
            let Some((exec_id, result)) = self.check_once(id, &args, cfg.timeout()).await else {
                return; // the container is gone or stopped
            };
            match self
                .sup
                .health_result(id, started_at, &exec_id, result, cfg.retries(), counts)
                .await
            {
                Ok(true) => {}
                _ => return,
            }
        }
    }

    /// Run the check once; None when it could not be started because the
    /// container no longer runs.
    async fn check_once(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> Option<(String, HealthResult)> {
        let rec = self.sup.inspect(id).ok()?;
        if rec.state != State::Running {
            return None;
        }
        let start = now();
        let base = rec.spec.process().clone().unwrap_or_default();
        let process = match spec::exec_process(
            &base,
            &spec::ExecOptions {
                args: args.to_vec(),
                ..Default::default()
            },
            None,
            None,
        ) {
            Ok(p) => p,
            Err(e) => return Some((String::new(), failed(start, e.to_string()))),
        };
        let (exec_id, _pid) = match self.sup.exec(id, process).await {
            Ok(x) => x,
            Err(e) => {
                let rec = self.sup.inspect(id).ok()?;
                if rec.state != State::Running {
                    return None;
                }
                return Some((String::new(), failed(start, e.to_string())));
            }
        };
        let (exit_code, timed_out) =
            match tokio::time::timeout(timeout, self.sup.wait_exec(id, &exec_id)).await {
                Ok(Ok(exit)) => (exit.status.code(), false),
                Ok(Err(_)) => (-1, false),
                Err(_) => {
                    debug!(container = %id, exec = %exec_id, "health check timed out: killing it");
                    let _ = self.sup.kill_exec(id, &exec_id, 9).await;
                    let _ = tokio::time::timeout(KILL_WAIT, self.sup.wait_exec(id, &exec_id)).await;
                    (-1, true)
                }
            };
        let log = crate::shim::process_log(&self.root, &rec.id, &exec_id);
        let mut output = tokio::task::spawn_blocking({
            let log = log.clone();
            move || read_output(&log)
        })
        .await
        .unwrap_or_default();
        if timed_out {
            output = format!(
                "Health check exceeded timeout ({})",
                humantime::format_duration(timeout)
            );
        }
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(crate::shim::exec_exit_path(&self.root, &rec.id, &exec_id));
        Some((
            exec_id,
            HealthResult {
                start,
                end: now(),
                exit_code,
                output,
            },
        ))
    }
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

fn failed(start: String, output: String) -> HealthResult {
    HealthResult {
        start,
        end: now(),
        exit_code: -1,
        output,
    }
}

/// The check's output from its CRI log (`TIME STREAM P|F TEXT` lines),
/// at most [`HEALTH_OUTPUT_MAX`] bytes.
fn read_output(path: &std::path::Path) -> String {
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(64 * 1024).read_to_string(&mut text);
    }
    let mut out = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag, body) = (parts.next(), parts.next(), parts.next(), parts.next());
        out.push_str(body.unwrap_or(""));
        if tag == Some("F") {
            out.push('\n');
        }
        if out.len() >= HEALTH_OUTPUT_MAX {
            break;
        }
    }
    if out.len() > HEALTH_OUTPUT_MAX {
        let mut end = HEALTH_OUTPUT_MAX;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn output_from_a_cri_log() {
        let dir = std::env::temp_dir().join(format!("berthd-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.log");
        std::fs::write(
            &p,
            "2026-01-01T00:00:00Z stdout P par\n2026-01-01T00:00:00Z stdout F tial\n2026-01-01T00:00:00Z stderr F err\n",
        )
        .unwrap();
        assert_eq!(super::read_output(&p), "partial\nerr\n");
        std::fs::write(&p, format!("t stdout F {}\n", "x".repeat(10_000))).unwrap();
        assert_eq!(super::read_output(&p).len(), super::HEALTH_OUTPUT_MAX);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
