//! berthd: the berth daemon. Serves the `berth.v1` API on a unix socket,
//! keeps state in `<root>/berth.redb`, and runs each container through its
//! own `berth-shim`. It can be killed at any moment: on start it reconnects
//! to the live shims and collects the exits that happened meanwhile.

mod attach;
mod cgroup;
mod chunks;
mod commit;
mod config;
mod docker;
mod files;
mod files_api;
mod health;
mod images;
mod images_api;
mod logs;
mod mounts;
mod net;
mod networks_api;
mod objevents;
mod pull;
#[cfg(test)]
mod random_input;
mod resources;
mod service;
mod shim;
mod stats;
mod store;
mod system;
mod systemd;
mod userns;
mod validate;
mod volumes;
mod volumes_api;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_api::{ContainersServer, FilesServer, ImagesServer, NetworksServer, VolumesServer};
use berth_shim_proto::RuntimeKind;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
    // Beside berthd (a build tree, /usr/bin), then where the Debian package
    // puts it (/usr/libexec/berth beside /usr/bin).
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let candidates = [
            dir.join("berth-shim"),
            dir.join("../libexec/berth/berth-shim"),
        ];
        if let Some(p) = candidates.into_iter().find(|p| is_executable(p)) {
            return Ok(p);
        }
    }
    find_in_path("berth-shim").context(
        "cannot find berth-shim: install it next to berthd, in ../libexec/berth/ or on PATH, or pass --shim PATH",
    )
}

/// Hold an exclusive lock on `<root>/berthd.lock` for the daemon's life, so
/// two daemons never share a root (`flag`: `root` or `run-root`).
fn lock_root(root: &Path, flag: &str) -> Result<nix::fcntl::Flock<std::fs::File>> {
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
                "another berthd is using the {flag} {}: stop it, or give this one its own --{flag}",
                root.display()
            )
        })?;
    Ok(lock)
}

/// The group that owns the API socket: None leaves it root's (the default
/// group does not exist on this machine).
fn socket_group(cfg: &config::Config) -> Result<Option<nix::unistd::Gid>> {
    let name = &cfg.args.group;
    let group = nix::unistd::Group::from_name(name)
        .with_context(|| format!("cannot look up the group {name:?}"))?;
    match group {
        Some(g) => Ok(Some(g.gid)),
        None if cfg.in_force().iter().any(|s| s.key == "group" && s.source == config::Source::Default) => {
            info!(group = %name, "the socket's group does not exist: the socket stays root's (create the group, e.g. with the berth package, to let its members use berth)");
            Ok(None)
        }
        None => bail!("the group {name:?} does not exist: create it (groupadd --system {name}) or set another --group"),
    }
}

async fn bind_socket(path: &Path, group: Option<nix::unistd::Gid>) -> Result<UnixListener> {
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
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
    }
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

/// What a reload (SIGHUP) can change in the running daemon.
struct Live {
    log: LogHandle,
    runtime: Arc<shim::ShimRuntime>,
    store: Arc<store::DbStore>,
    stop_containers: Arc<AtomicBool>,
    notify: Option<Arc<systemd::Notifier>>,
    /// What `berth info` shows.
    in_force: Arc<std::sync::RwLock<String>>,
}

impl Live {
    /// Apply the live settings of `cfg`.
    fn apply(&self, key: &str, cfg: &config::Config) -> Result<()> {
        let a = &cfg.args;
        match key {
            "log-level" => {
                let filter = config::log_filter(&a.log_level).map_err(anyhow::Error::msg)?;
                self.log
                    .reload(filter)
                    .context("cannot change the log level")?;
            }
            "log-max-size" | "log-max-files" => self
                .runtime
                .set_log_defaults(a.log_max_size, a.log_max_files),
            "events-max" | "events-max-age" => self.store.set_retention(store::EventRetention {
                max_events: a.events_max,
                max_age: a.events_max_age,
            }),
            "stop-containers-on-exit" => self
                .stop_containers
                .store(a.stop_containers_on_exit, Ordering::Relaxed),
            other => bail!("{other} cannot change while berthd runs"),
        }
        Ok(())
    }
}

/// Re-read the config file on SIGHUP: apply what can change live, say what
/// waits for a restart. A file that does not load changes nothing.
async fn reload_on_hangup(argv: Vec<std::ffi::OsString>, started: config::Config, live: Live) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot handle SIGHUP: config reloads are off");
        return;
    };
    // The live settings follow each reload; the others stay as started.
    let mut applied_from = started.clone();
    while hup.recv().await.is_some() {
        if let Some(n) = &live.notify {
            n.reloading();
        }
        if let Some(new) = reload_once(&argv, &started, &applied_from, &live) {
            applied_from = new;
        }
        if let Some(n) = &live.notify {
            n.send("READY=1");
        }
    }
}

/// One reload: the new settings in force, or None when the file does not
/// load (nothing changed).
fn reload_once(
    argv: &[std::ffi::OsString],
    started: &config::Config,
    applied_from: &config::Config,
    live: &Live,
) -> Option<config::Config> {
    let new = match config::load(argv) {
        Ok(c) => c,
        Err(config::LoadError::File(e)) => {
            error!("config not reloaded, nothing changed: {e}");
            return None;
        }
        Err(config::LoadError::Cli(e)) => {
            let msg = e.to_string();
            error!("config not reloaded, nothing changed: {}", msg.trim());
            return None;
        }
    };
    let mut applied = Vec::new();
    for key in applied_from.changed_keys(&new) {
        if !config::LIVE.contains(&key.as_str()) {
            continue;
        }
        match live.apply(&key, &new) {
            Ok(()) => {
                let value = new.value_of(&key);
                info!(key = %key, value = %value, "setting reloaded");
                applied.push(key);
            }
            Err(e) => error!(key = %key, "setting not reloaded: {e:#}"),
        }
    }
    let pending: Vec<String> = started
        .changed_keys(&new)
        .into_iter()
        .filter(|k| !config::LIVE.contains(&k.as_str()))
        .collect();
    if !pending.is_empty() {
        warn!(keys = %pending.join(","), "changed but not reloaded: restart berthd to apply");
    }
    let file = new
        .file
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "none".into());
    info!(file = %file, applied = applied.len(), not_applied = pending.len(), "config reloaded");
    let text = started.with_live_of(&new);
    *live.in_force.write().unwrap_or_else(|p| p.into_inner()) = text;
    Some(new)
}

async fn run(
    cfg: config::Config,
    argv: Vec<std::ffi::OsString>,
    log: LogHandle,
    handover: systemd::Handover,
) -> Result<()> {
    let args = cfg.args.clone();
    let root = std::path::absolute(&args.root)
        .with_context(|| format!("bad --root {}", args.root.display()))?;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot set the mode of {}", root.display()))?;
    let _lock = lock_root(&root, "root")?;
    let run_root = match &args.run_root {
        Some(dir) => {
            std::path::absolute(dir).with_context(|| format!("bad --run-root {}", dir.display()))?
        }
        None => shim::Dirs::default_run(&root),
    };
    let dirs = shim::Dirs {
        root: root.clone(),
        run: run_root,
    };
    // Before the run root is made: a refused one is left as it was.
    dirs.adopt().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&dirs.run)
        .with_context(|| format!("cannot create {}", dirs.run.display()))?;
    std::fs::set_permissions(&dirs.run, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot set the mode of {}", dirs.run.display()))?;
    // (A second flock of the same file would fail against our own.)
    let _run_lock = match dirs.run != root {
        true => Some(lock_root(&dirs.run, "run-root")?),
        false => None,
    };
    let kind = runtime_kind(&args.runtime)?;
    let shim = shim_binary(args.shim.clone())?;
    // Under socket activation systemd made the socket (berth.socket sets
    // its group and mode).
    let group = match handover.listener {
        None => socket_group(&cfg)?,
        Some(_) => None,
    };
    let notify = handover.notify.map(Arc::new);

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
    let images = Arc::new(
        images::Images::open(
            &root,
            args.snapshotter.parse().context("bad --snapshotter")?,
        )
        .context("cannot open the image store")?,
    );
    let net = Arc::new(
        net::Net::new(
            &root,
            &dirs.run,
            &net::Settings {
                default_network: args.default_network.clone(),
                bridge_subnet: args
                    .bridge_subnet
                    .parse()
                    .map_err(|e| anyhow::anyhow!("bad bridge-subnet: {e}"))?,
                plugin_dir: args.cni_plugin_dir.clone(),
                pool: args
                    .network_pool
                    .parse()
                    .map_err(|e| anyhow::anyhow!("bad network-pool: {e}"))?,
            },
            store.clone(),
        )
        .context("bad network settings")?
        .with_dns(Arc::new(
            // Names other than the networks' go to the host's nameservers,
            // as the host's resolv.conf says now (it is read again when it
            // changes).
            berth_net::dns::Resolver::new(berth_net::dns::Config::new(
                berth_net::dns::Upstreams::ResolvConf("/etc/resolv.conf".into()),
            ))
            .context("cannot start the DNS resolver")?,
        )),
    );
    let runtime = Arc::new(
        shim::ShimRuntime::new(dirs.clone(), shim, kind)
            .with_log_defaults(args.log_max_size, args.log_max_files)
            .with_rootfs(Arc::new(net::Providers(vec![images.clone(), net.clone()]))),
    );
    runtime
        .forget_previous_boot()
        .context("cannot compare the boot id with the last run's")?;
    let sup = berth_core::Supervisor::new(runtime.clone(), store.clone())?;
    images.events.attach(sup.events().clone());
    net.events.attach(sup.events().clone());
    sup.restore().await.context("cannot restore containers")?;
    // Snapshots no container owns (a crash mid-create or mid-remove) go;
    // a stopped container keeps its own until it is removed.
    {
        let all = sup.list(true);
        // A container waiting to be restarted joins its networks again
        // itself: only the stopped ones lose theirs here.
        let live: Vec<String> = all
            .iter()
            .filter(|r| r.state.is_live() || r.restarting)
            .map(|r| r.id.clone())
            .collect();
        let known: std::collections::HashSet<String> = all.into_iter().map(|r| r.id).collect();
        let images = images.clone();
        let net = net.clone();
        tokio::task::spawn_blocking(move || {
            // Network namespaces, settings and attachments of containers
            // that are gone or stopped.
            net.reconcile(&known.iter().cloned().collect::<Vec<_>>(), &live);
            net.restore_dns();
            images.cleanup(&known)
        })
        .await
        .context("snapshot cleanup failed")?;
    }

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

    let (listener, socket_shown, activated) = match handover.listener {
        Some(l) => {
            let shown = systemd::listener_path(&l);
            let l = UnixListener::from_std(l).context("cannot serve the socket systemd passed")?;
            (l, shown, true)
        }
        None => (
            bind_socket(&args.socket, group).await?,
            args.socket.display().to_string(),
            false,
        ),
    };
    let stop_containers = Arc::new(AtomicBool::new(args.stop_containers_on_exit));
    let in_force = Arc::new(std::sync::RwLock::new(cfg.to_toml()));
    let flushed = store.clone();
    tokio::spawn(reload_on_hangup(
        argv,
        cfg.clone(),
        Live {
            log,
            runtime,
            store,
            stop_containers: stop_containers.clone(),
            notify: notify.clone(),
            in_force: in_force.clone(),
        },
    ));
    info!(root = %root.display(), run_root = %dirs.run.display(), socket = %socket_shown, activated, runtime = %runtime_name, config = %cfg.file.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()), "berthd ready");
    let cgroups = cgroup::host();
    info!(cgroups = %cgroups.describe(), controllers = ?cgroups.controllers(), "cgroups detected");
    let vols = Arc::new(
        volumes::Volumes::open(&root.join("volumes"))
            .with_context(|| format!("cannot open the volume store in {}", root.display()))?,
    );
    vols.events.attach(sup.events().clone());
    let volumes_api = Arc::new(volumes_api::VolumesApi::new(vols.clone(), sup.clone()));
    volumes_api::spawn_auto_remove_volumes(vols.clone(), sup.clone());
    let pool =
        userns::pool(args.userns_pool.as_deref(), Path::new("/etc")).map_err(anyhow::Error::msg)?;
    let userns_default = userns::parse_mode(&args.userns).map_err(anyhow::Error::msg)?;
    info!(default = %args.userns, pool = %format!("{}:{}", pool.host, pool.size), "user namespaces");
    let images_api = Arc::new(images_api::ImagesApi::new(images.clone(), sup.clone()));
    let networks_api = Arc::new(networks_api::NetworksApi::new(net.clone(), sup.clone()));
    let service = Arc::new(
        service::Service::new(sup.clone(), root, runtime_name, images.clone(), net, vols)
            .with_config(in_force)
            .with_userns(userns::Userns::new(pool, userns_default)),
    );
    let files_api = Arc::new(files_api::FilesApi::new(Arc::new(files::Files::new(
        sup.clone(),
        images.clone(),
    ))));
    // The Docker API: the same service layer, another protocol.
    let docker_socket = match &args.docker_socket {
        Some(path) => {
            if std::path::absolute(path).ok() == std::path::absolute(&args.socket).ok() {
                bail!(
                    "--docker-socket {} is the berth API's socket: give the Docker API a path of its own",
                    path.display()
                );
            }
            let listener = bind_socket(path, socket_group(&cfg)?).await?;
            let backend: Arc<dyn berth_docker::Backend> = Arc::new(docker::DockerBackend {
                containers: service.clone(),
                images: images_api.clone(),
                volumes: volumes_api.clone(),
                files: files_api.clone(),
                networks: networks_api.clone(),
            });
            let shown = path.display().to_string();
            tokio::spawn(async move {
                if let Err(e) = berth_docker::serve(listener, backend).await {
                    error!(socket = %shown, error = %e, "the Docker API server failed");
                }
            });
            info!(socket = %path.display(), "serving the Docker Engine API");
            Some(path.clone())
        }
        None => None,
    };
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    // On SIGTERM: no more policy restarts; with --stop-containers-on-exit,
    // stop every container (clients still see their exits); then stop
    // serving.
    let stopping = notify.clone();
    let shutdown = async move {
        shutdown_signal().await;
        if let Some(n) = &stopping {
            n.send("STOPPING=1\nSTATUS=stopping");
        }
        let stop_containers = stop_containers.load(Ordering::Relaxed);
        info!(stop_containers, "shutting down");
        let n = sup.shutdown(stop_containers).await;
        if stop_containers {
            info!(stopped = n, "containers stopped");
        }
        let _ = drained_tx.send(());
    };
    let server = tonic::transport::Server::builder()
        .add_service(
            // Explicit, not tonic's default by chance: the largest request
            // berthd takes (validate.rs bounds each field well under it).
            ContainersServer::from_arc(service).max_decoding_message_size(validate::MAX_REQUEST),
        )
        .add_service(ImagesServer::from_arc(images_api).max_decoding_message_size(4 << 20))
        .add_service(VolumesServer::from_arc(volumes_api))
        .add_service(FilesServer::from_arc(files_api))
        .add_service(NetworksServer::from_arc(networks_api))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown);
    tokio::pin!(server);
    // Restore is done and the socket listens: what a connection sends from
    // now on is served as soon as the server below is polled.
    if let Some(n) = &notify {
        n.send(&format!("READY=1\nSTATUS=serving on {socket_shown}"));
    }
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
    if !activated {
        // systemd owns an activated socket's file.
        let _ = std::fs::remove_file(&args.socket);
    }
    if let Some(path) = &docker_socket {
        let _ = std::fs::remove_file(path);
    }
    match served {
        Some(r) => r.context("the API server failed")?,
        None => warn!(
            grace = ?SHUTDOWN_GRACE,
            "clients still connected at shutdown; closing their streams"
        ),
    }
    // The snapshots of containers removed a moment ago (their unmount and
    // delete run after the removal answered): a clean stop leaves none.
    let settling = images.clone();
    let settled =
        tokio::task::spawn_blocking(move || settling.settle_removals(images::REMOVALS_WAIT))
            .await
            .unwrap_or(false);
    if !settled {
        warn!("snapshots of removed containers are still being deleted; the next start will");
    }
    // Writes queued without a writer waiting (a removed container's
    // network plan) are committed now rather than left to the next start's
    // reconcile.
    if let Err(e) = flushed.flush() {
        warn!(error = %e, "cannot commit the last queued writes");
    }
    // Unless stopped above, containers keep running under their shims;
    // the next berthd adopts them.
    info!("berthd stopped");
    Ok(())
}

/// How long a shutting-down daemon lets open API streams finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

type LogHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

fn main() -> std::process::ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cfg = match config::load(&argv) {
        Ok(c) => c,
        Err(config::LoadError::Cli(e)) => e.exit(),
        Err(config::LoadError::File(e)) => {
            eprintln!("berthd: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if cfg.args.print_man_page {
        return match config::man_page() {
            Ok(page) => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(&page);
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("berthd: cannot render the man page: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if cfg.args.print_config {
        print!("{}", cfg.to_toml());
        return std::process::ExitCode::SUCCESS;
    }
    // The value parser accepted the level, so this cannot fail; info is
    // the fallback anyway.
    let filter = config::log_filter(&cfg.args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, log) = tracing_subscriber::reload::Layer::new(filter);
    let json = cfg.args.log_format == config::LogFormat::Json;
    tracing_subscriber::registry()
        .with(filter)
        .with((!json).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour only for a person at a terminal, not for
                // journald or a log file.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        }))
        .with(json.then(|| {
            // The spans (container{id=...}) go with each line.
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
        }))
        .init();
    // Before any thread starts: this clears systemd's variables.
    let handover = match systemd::take() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg, argv, log, handover)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
