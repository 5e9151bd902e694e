//! berthd: the berth daemon. Serves the `berth.v1` API on a unix socket,
//! keeps state in `<root>/berth.redb`, and runs each container through its
//! own `berth-shim`. It can be killed at any moment: on start it reconnects
//! to the live shims and collects the exits that happened meanwhile.

mod attach;
mod logs;
mod service;
mod shim;
mod store;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_api::ContainersServer;
use berth_shim_proto::RuntimeKind;
use clap::Parser;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

/// The berth daemon: supervises containers, one berth-shim each.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Directory for everything berth keeps: database, bundles, logs, exit files.
    #[arg(long, env = "BERTH_ROOT", default_value = berth_api::DEFAULT_ROOT)]
    root: PathBuf,
    /// The API socket (created with mode 0660).
    #[arg(long, env = "BERTH_SOCKET", default_value = berth_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// OCI runtime: `embedded` (youki's libcontainer, in the shim), `runc`,
    /// `crun`, or the path of an OCI runtime binary.
    #[arg(long, env = "BERTH_RUNTIME", default_value = "embedded")]
    runtime: String,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log_level: String,
    /// The berth-shim binary (default: next to berthd, then PATH).
    #[arg(long, env = "BERTH_SHIM")]
    shim: Option<PathBuf>,
    /// Keep at most this many events in the event log.
    #[arg(long, default_value_t = 100_000)]
    events_max: u64,
    /// Drop events older than this from the event log (e.g. 7d, 12h).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    events_max_age: Duration,
    /// Default log rotation size of a container (`run --log-max-size`
    /// overrides it): e.g. 16m, 1g.
    #[arg(long, default_value = "16m", value_parser = parse_log_size)]
    log_max_size: u64,
    /// Default number of rotated log files kept beside the live one.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    log_max_files: u32,
    /// On SIGTERM or SIGINT, stop every running container (its stop signal,
    /// then SIGKILL after its stop timeout) before exiting. Without it they
    /// keep running and the next berthd adopts them (live restore).
    #[arg(long)]
    stop_containers_on_exit: bool,
}

fn parse_log_size(s: &str) -> Result<u64, String> {
    berth_api::parse_size(s)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size: use e.g. 16m or 1g"))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn runtime_kind(name: &str) -> Result<RuntimeKind> {
    if name == "embedded" {
        return Ok(RuntimeKind::Embedded);
    }
    let path = if name.contains('/') {
        PathBuf::from(name)
    } else {
        find_in_path(name).with_context(|| {
            format!("runtime {name:?} is not on PATH: install it, give its path, or use --runtime embedded")
        })?
    };
    if !is_executable(&path) {
        bail!(
            "runtime {} is not an executable file: give the path of an OCI runtime (runc, crun) or use --runtime embedded",
            path.display()
        );
    }
    let path = std::fs::canonicalize(&path)
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(RuntimeKind::Cli { path })
}

fn shim_binary(arg: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = arg {
        if !is_executable(&p) {
            bail!("--shim {} is not an executable file", p.display());
        }
        return Ok(p);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("berth-shim")));
    if let Some(p) = beside.filter(|p| is_executable(p)) {
        return Ok(p);
    }
    find_in_path("berth-shim").context(
        "cannot find berth-shim: install it next to berthd or on PATH, or pass --shim PATH",
    )
}

/// Hold an exclusive lock on `<root>/berthd.lock` for the daemon's life, so
/// two daemons never share a root.
fn lock_root(root: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = root.join("berthd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .with_context(|| {
            format!(
                "another berthd is using the root {}: stop it, or give this one its own --root",
                root.display()
            )
        })?;
    Ok(lock)
}

async fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "the socket {} is in use by another daemon: stop it, or give this one its own --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without handlers the default action still ends the process.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn run(args: Args) -> Result<()> {
    let root = std::path::absolute(&args.root)
        .with_context(|| format!("bad --root {}", args.root.display()))?;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot set the mode of {}", root.display()))?;
    let _lock = lock_root(&root)?;
    let kind = runtime_kind(&args.runtime)?;
    let shim = shim_binary(args.shim)?;

    let store = Arc::new(
        store::DbStore::open(
            &root.join("berth.redb"),
            store::EventRetention {
                max_events: args.events_max,
                max_age: args.events_max_age,
            },
        )
        .context("cannot open the state database")?,
    );
    let runtime_name = match &kind {
        RuntimeKind::Embedded => "embedded".to_string(),
        RuntimeKind::Cli { path } => path.display().to_string(),
    };
    let runtime = Arc::new(
        shim::ShimRuntime::new(root.clone(), shim, kind)
            .with_log_defaults(args.log_max_size, args.log_max_files),
    );
    runtime
        .forget_previous_boot()
        .context("cannot compare the boot id with the last run's")?;
    let sup = berth_core::Supervisor::new(runtime, store.clone())?;
    sup.restore().await.context("cannot restore containers")?;

    let compactor = store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match compactor.compact() {
                Ok(0) => {}
                Ok(n) => info!(dropped = n, "event log compacted"),
                Err(e) => warn!(error = %e, "event log compaction failed"),
            }
        }
    });

    let listener = bind_socket(&args.socket).await?;
    info!(root = %root.display(), socket = %args.socket.display(), runtime = %runtime_name, "berthd ready");
    let service = service::Service::new(sup.clone(), root, runtime_name);
    let stop_containers = args.stop_containers_on_exit;
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    // On SIGTERM: no more policy restarts; with --stop-containers-on-exit,
    // stop every container (clients still see their exits); then stop
    // serving.
    let shutdown = async move {
        shutdown_signal().await;
        info!(stop_containers, "shutting down");
        let n = sup.shutdown(stop_containers).await;
        if stop_containers {
            info!(stopped = n, "containers stopped");
        }
        let _ = drained_tx.send(());
    };
    let server = tonic::transport::Server::builder()
        .add_service(ContainersServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown);
    tokio::pin!(server);
    // Streams that never end by themselves (events -f, wait on a running
    // container, logs -f) would hold a graceful shutdown forever: give
    // them a moment once shutdown began, then go.
    let served = tokio::select! {
        r = &mut server => Some(r),
        () = async {
            let _ = drained_rx.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => None,
    };
    let _ = std::fs::remove_file(&args.socket);
    match served {
        Some(r) => r.context("the API server failed")?,
        None => warn!(
            grace = ?SHUTDOWN_GRACE,
            "clients still connected at shutdown; closing their streams"
        ),
    }
    // Unless stopped above, containers keep running under their shims;
    // the next berthd adopts them.
    info!("berthd stopped");
    Ok(())
}

/// How long a shutting-down daemon lets open API streams finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // A bare level applies to berth's own crates; libraries stay at warn.
    let level = args.log_level.as_str();
    let directives = if ["error", "warn", "info", "debug", "trace"].contains(&level) {
        format!("warn,berthd={level},berth_core={level}")
    } else {
        level.to_string()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
