//! The commands.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use berth_api::{v1, ContainersClient};
use tonic::transport::Channel;

use crate::image::{self, ImageClient};
use crate::{format, tty};
use crate::{Cli, Cmd, CmdResult, CreateArgs, ExecArgs, Failure, RunArgs};

type Client = ContainersClient<Channel>;

pub async fn run(cli: Cli) -> CmdResult {
    // Check what can be checked before touching the daemon.
    if let Cmd::Events { format, .. } | Cmd::Stats { format, .. } = &cli.cmd {
        check_format(format)?;
    }
    if let Cmd::Ps {
        format, filters, ..
    } = &cli.cmd
    {
        if format != "table" && format != "json" {
            crate::psfmt::Template::parse(format)?;
        }
        crate::psfmt::Filters::parse(filters)?;
    }
    // Credentials live client side, as Docker's: no daemon needed.
    match &cli.cmd {
        Cmd::Login(a) => return image::login(a).await,
        Cmd::Logout { registry } => return image::logout(registry.as_deref()),
        _ => {}
    }
    // One connection per command, shared by the services' clients.
    let channel = berth_api::connect_channel(&cli.socket).await?;
    let mut client = ContainersClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let mut images = berth_api::images_client(channel.clone());
    match cli.cmd {
        Cmd::Run(args) => run_container(&mut client, &mut images, args).await,
        Cmd::Create(args) => {
            let id = create(&mut client, &mut images, &args).await?;
            println!("{id}");
            Ok(0)
        }
        Cmd::Pull(a) => image::pull(&mut images, &a).await,
        Cmd::Images(a) => image::list(&mut images, &a).await,
        Cmd::Rmi(a) => image::remove(&mut images, &a).await,
        Cmd::Tag(a) => image::tag(&mut images, &a).await,
        Cmd::History(a) => image::history(&mut images, &a).await,
        Cmd::Load(a) => image::load(&mut images, &a).await,
        Cmd::Save(a) => image::save(&mut images, &a).await,
        Cmd::Image(c) => image::image_cmd(&mut images, c).await,
        Cmd::Volume(c) => {
            let mut vc = berth_api::VolumesClient::new(channel);
            crate::volume::volume_cmd(&mut vc, c).await
        }
        Cmd::Cp(a) => crate::files::cp(&mut berth_api::FilesClient::new(channel), &a).await,
        Cmd::Diff(a) => crate::files::diff(&mut berth_api::FilesClient::new(channel), &a).await,
        Cmd::Export(a) => crate::files::export(&mut berth_api::FilesClient::new(channel), &a).await,
        Cmd::Commit(a) => crate::files::commit(&mut berth_api::FilesClient::new(channel), &a).await,
        Cmd::Network(c) => {
            let mut nc = berth_api::NetworksClient::new(channel);
            crate::network::network_cmd(&mut nc, c).await
        }
        Cmd::Login(_) | Cmd::Logout { .. } => Ok(0),
        Cmd::Start {
            attach,
            interactive,
            detach_keys,
            ids,
        } => start(&mut client, attach, interactive, &detach_keys, ids).await,
        Cmd::Exec(args) => exec(&mut client, args).await,
        Cmd::Attach {
            no_stdin,
            detach_keys,
            sig_proxy,
            id,
        } => attach_existing(&mut client, id, !no_stdin, &detach_keys, sig_proxy).await,
        Cmd::Ps {
            all,
            quiet,
            format,
            filters,
            no_trunc,
            last,
            size,
        } => {
            let opts = PsOptions {
                all,
                quiet,
                filters,
                no_trunc,
                last,
                size,
            };
            ps(&mut client, opts, &format).await
        }
        Cmd::Inspect { ids } => inspect(&mut client, ids).await,
        Cmd::Logs {
            follow,
            tail,
            since,
            until,
            timestamps,
            id,
        } => logs(&mut client, id, follow, tail, since, until, timestamps).await,
        Cmd::Kill { signal, ids } => {
            each(ids, |id| {
                let mut c = client.clone();
                let signal = signal.clone();
                async move {
                    c.kill(v1::KillRequest {
                        id,
                        signal,
                        all: false,
                        process: String::new(),
                    })
                    .await
                    .map(|_| ())
                }
            })
            .await
        }
        Cmd::Stop { time, ids } => {
            each(ids, |id| {
                let mut c = client.clone();
                async move {
                    c.stop(v1::StopRequest { id, timeout: time })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        Cmd::Restart { time, ids } => {
            each(ids, |id| {
                let mut c = client.clone();
                async move {
                    c.restart(v1::RestartRequest { id, timeout: time })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        Cmd::Rename { old, new } => crate::system::rename(&mut client, old, new).await,
        Cmd::Top { id, ps_args } => crate::system::top(&mut client, id, ps_args).await,
        Cmd::Container(c) => crate::system::container_cmd(&mut client, c).await,
        Cmd::System(c) => crate::system::system_cmd(&mut client, c).await,
        Cmd::Rm {
            force,
            volumes,
            ids,
        } => {
            each(ids, |id| {
                let mut c = client.clone();
                async move {
                    c.delete(v1::DeleteRequest { id, force, volumes })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        Cmd::Pause { ids } => {
            each(ids, |id| {
                let mut c = client.clone();
                async move { c.pause(v1::PauseRequest { id }).await.map(|_| ()) }
            })
            .await
        }
        Cmd::Unpause { ids } => {
            each(ids, |id| {
                let mut c = client.clone();
                async move { c.resume(v1::ResumeRequest { id }).await.map(|_| ()) }
            })
            .await
        }
        Cmd::Wait { ids } => wait(&mut client, ids).await,
        Cmd::Port { id, port } => port_cmd(&mut client, &id, port.as_deref()).await,
        Cmd::Events {
            since,
            until,
            filters,
            format,
        } => events(&mut client, since, until, filters, &format).await,
        Cmd::Stats {
            all,
            no_stream,
            format,
            containers,
        } => crate::resources::stats(&mut client, containers, all, no_stream, &format).await,
        Cmd::Info => crate::resources::info(&mut client).await,
        Cmd::Update(args) => crate::resources::update(&mut client, args).await,
        Cmd::Version => {
            let v = client.version(v1::VersionRequest {}).await?.into_inner();
            println!("berth   {}", env!("CARGO_PKG_VERSION"));
            println!(
                "berthd  {} (runtime: {}, root: {})",
                v.version, v.runtime, v.root
            );
            Ok(0)
        }
        // Handled in main, without a daemon.
        Cmd::Completion { .. } | Cmd::Man { .. } | Cmd::Complete { .. } => Ok(0),
    }
}

/// Calls `call` for each name in turn, as Docker does with several names:
/// a failure prints its one-line error and makes the exit code 1, and the
/// other names still go. Returns the successes' values and the exit code.
pub async fn for_each_name<T, F, Fut>(names: Vec<String>, mut call: F) -> (Vec<T>, u8)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut done = Vec::with_capacity(names.len());
    let mut code = 0;
    for name in names {
        match call(name).await {
            Ok(v) => done.push(v),
            Err(s) => {
                eprintln!("berth: {}", s.message());
                code = 1;
            }
        }
    }
    (done, code)
}

/// Prints `inspect`'s documents as one pretty JSON array.
pub fn print_json_array(docs: &[serde_json::Value]) {
    println!(
        "{}",
        serde_json::to_string_pretty(docs).unwrap_or_else(|_| "[]".into())
    );
}

pub fn check_format(f: &str) -> Result<(), Failure> {
    match f {
        "table" | "json" => Ok(()),
        other => Err(Failure::own(format!(
            "unknown format {other:?}: use --format table or --format json"
        ))),
    }
}

/// Apply an operation to each id, printing the id on success and one error
/// line per failure; exits 1 if any failed (as Docker).
async fn each<F, Fut>(ids: Vec<String>, op: F) -> CmdResult
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut code = 0;
    for id in ids {
        match op(id.clone()).await {
            Ok(()) => println!("{id}"),
            Err(s) => code = code.max(report(s)),
        }
    }
    Ok(code)
}

/// Print a failed management operation on one container; its exit code:
/// 1 when the daemon refused it (no such container, wrong state), as
/// Docker, and 125 for berth's own errors (bad input, daemon unreachable).
fn report(s: tonic::Status) -> u8 {
    let refused = matches!(
        s.code(),
        tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::DeadlineExceeded
    );
    let f = Failure::from(s);
    eprintln!("berth: {}", f.message);
    if refused {
        1
    } else {
        f.code
    }
}

fn parse_kv(s: &str, what: &str) -> Result<(String, String), Failure> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Failure::own(format!(
            "invalid {what} {s:?}: expected KEY=VALUE"
        ))),
    }
}

/// `-e K` takes K from this shell (and is dropped when unset), as Docker.
fn env_entry(e: &str) -> Option<String> {
    if e.contains('=') {
        Some(e.to_string())
    } else {
        std::env::var(e).ok().map(|v| format!("{e}={v}"))
    }
}

fn read_env_file(path: &Path) -> Result<Vec<String>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::own(format!("cannot read --env-file {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(env_entry)
        .collect())
}

fn absolute(p: &Path, flag: &str) -> Result<String, Failure> {
    let abs = std::fs::canonicalize(p).map_err(|e| {
        Failure::own(format!(
            "{flag} {}: {e}: give an existing directory",
            p.display()
        ))
    })?;
    if !abs.is_dir() {
        return Err(Failure::own(format!(
            "{flag} {} is not a directory",
            p.display()
        )));
    }
    Ok(abs.display().to_string())
}

async fn create(
    client: &mut Client,
    images: &mut ImageClient,
    a: &CreateArgs,
) -> Result<String, Failure> {
    let req = create_request(a)?;
    let resp = image::with_image(images, a, &req, || {
        let mut c = client.clone();
        let req = req.clone();
        async move { c.create(req).await }
    })
    .await?;
    Ok(resp.into_inner().id)
}

fn create_request(a: &CreateArgs) -> Result<v1::CreateRequest, Failure> {
    use v1::create_request::Source;
    let (source, args) = match (&a.rootfs, &a.bundle) {
        (Some(r), None) => (Source::Rootfs(absolute(r, "--rootfs")?), a.command.clone()),
        (None, Some(b)) => (Source::Bundle(absolute(b, "--bundle")?), a.command.clone()),
        (None, None) => match a.command.split_first() {
            Some((image, cmd)) => (Source::Image(image.clone()), cmd.to_vec()),
            None => {
                return Err(Failure::own(
                    "no image: give IMAGE [CMD...] (or --rootfs DIR, or --bundle DIR)",
                ))
            }
        },
        (Some(_), Some(_)) => {
            return Err(Failure::own(
                "--rootfs and --bundle exclude each other: give one",
            ))
        }
    };
    image::check_pull_policy(&a.pull)?;
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(read_env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| env_entry(e)));
    let mut labels = HashMap::new();
    for l in &a.label {
        let (k, v) = parse_kv(l, "--label")?;
        labels.insert(k, v);
    }
    let memory = match &a.memory {
        None => None,
        Some(s) => Some(
            berth_api::parse_size(s)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| {
                    Failure::own(format!("invalid --memory {s:?}: use a size like 64m or 1g"))
                })?,
        ),
    };
    let log_max_size = match &a.log_max_size {
        None => 0,
        Some(s) => berth_api::parse_size(s).filter(|n| *n > 0).ok_or_else(|| {
            Failure::own(format!(
                "invalid --log-max-size {s:?}: use a size like 10m or 1g"
            ))
        })?,
    };
    let shm_size = match &a.shm_size {
        None => None,
        Some(s) => Some(
            berth_api::parse_size(s)
                .and_then(|n| i64::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Failure::own(format!(
                        "invalid --shm-size {s:?}: use a size like 64m or 1g"
                    ))
                })?,
        ),
    };
    let mut sysctls = HashMap::new();
    for l in &a.sysctl {
        let (k, v) = parse_kv(l, "--sysctl")?;
        sysctls.insert(k, v);
    }
    let security_opt = a
        .security_opt
        .iter()
        .map(|o| security_opt(o))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(v1::CreateRequest {
        name: a.name.clone().unwrap_or_default(),
        source: Some(source),
        args,
        env,
        workdir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        auto_remove: a.rm,
        labels,
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        stop_timeout: a.stop_timeout,
        read_only: a.read_only,
        log_max_size,
        log_max_files: a.log_max_files.unwrap_or(0),
        restart: a.restart.clone().unwrap_or_default(),
        memory,
        cpus: a.cpus,
        pids_limit: a.pids_limit,
        interactive: a.interactive,
        tty: a.tty,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        security_opt,
        devices: a.device.clone(),
        group_add: a.group_add.clone(),
        sysctls,
        ulimits: a.ulimit.clone(),
        oom_score_adj: a.oom_score_adj,
        userns: a.userns.clone().unwrap_or_default(),
        resources: a.resources.request()?,
        init: a.init,
        entrypoint: a.entrypoint.clone(),
        platform: a.platform.clone().unwrap_or_default(),
        health: a.health.request(),
        network: a.network.clone().unwrap_or_default(),
        dns: a.dns.clone(),
        dns_search: a.dns_search.clone(),
        dns_option: a.dns_option.clone(),
        add_host: a.add_host.clone(),
        network_aliases: a.network_alias.clone(),
        ip: a.ip.clone().unwrap_or_default(),
        mac_address: a.mac_address.clone().unwrap_or_default(),
        publish: a.publish.clone(),
        publish_all: a.publish_all,
        binds: a.volume.clone(),
        mounts: a.mount.clone(),
        tmpfs: a.tmpfs.clone(),
        shm_size,
    })
}

/// Largest seccomp profile file the CLI sends (the daemon's limit too).
const MAX_SECCOMP_PROFILE: u64 = 1 << 20;

/// `seccomp=PATH` becomes `seccomp=<the file's JSON>`, as Docker's CLI
/// does: the daemon never reads a client's file.
fn security_opt(opt: &str) -> Result<String, Failure> {
    let Some(path) = opt
        .strip_prefix("seccomp=")
        .or_else(|| opt.strip_prefix("seccomp:"))
    else {
        return Ok(opt.to_string());
    };
    if path == "unconfined" || path.trim_start().starts_with('{') {
        return Ok(format!("seccomp={path}"));
    }
    let read = || -> std::io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(MAX_SECCOMP_PROFILE + 1)
            .read_to_string(&mut text)?;
        Ok(text)
    };
    let text = read().map_err(|e| {
        Failure::own(format!(
            "cannot read the seccomp profile {path}: {e}: give a JSON file in Docker's format, or seccomp=unconfined"
        ))
    })?;
    if text.len() as u64 > MAX_SECCOMP_PROFILE {
        return Err(Failure::own(format!(
            "seccomp profile {path} is larger than 1 MiB"
        )));
    }
    Ok(format!("seccomp={text}"))
}

/// Both our stdout and stderr go to /dev/null: there is nothing to stream.
fn output_discarded() -> bool {
    let null = |fd: u8| {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|p| p == Path::new("/dev/null"))
    };
    null(1) && null(2)
}

async fn run_container(client: &mut Client, images: &mut ImageClient, args: RunArgs) -> CmdResult {
    let detach_keys = tty::parse_detach_keys(&args.detach_keys).map_err(Failure::own)?;
    let c = &args.create;
    check_terminal(c.tty, c.interactive && !args.detach)?;
    if args.create.rm && !args.detach && !c.interactive && !c.tty && output_discarded() {
        // Nothing to show: let the daemon run it to completion, which also
        // tears it down however it ends (even if this CLI is killed).
        let req = create_request(&args.create)?;
        let resp = image::with_image(images, &args.create, &req, || {
            let mut c = client.clone();
            let req = req.clone();
            async move { c.run_to_completion(req).await }
        })
        .await?
        .into_inner();
        return exit_code_of(&resp.exit.unwrap_or_default());
    }
    let id = create(client, images, &args.create).await?;
    if args.detach {
        if let Err(e) = client.start(v1::StartRequest { id: id.clone() }).await {
            cleanup_failed(client, &id, args.create.rm).await;
            return Err(e.into());
        }
        println!("{id}");
        return Ok(0);
    }
    let spec = AttachSpec {
        setup: v1::AttachSetup {
            id: id.clone(),
            start: true,
            stdin: c.interactive,
            ..Default::default()
        },
        tty: c.tty,
        detach_keys,
        sig_proxy: true,
    };
    let code = attach(client, spec).await;
    if code.is_err() {
        cleanup_failed(client, &id, args.create.rm).await;
    }
    code
}

/// `-it` needs a terminal to read from, as Docker insists.
fn check_terminal(tty: bool, stdin: bool) -> Result<(), Failure> {
    use std::io::IsTerminal;
    if tty && stdin && !std::io::stdin().is_terminal() {
        return Err(Failure::own(
            "the input device is not a TTY: drop -t to pipe stdin, or run from a terminal",
        ));
    }
    Ok(())
}

/// A container whose start failed is removed when --rm asked for it.
async fn cleanup_failed(client: &mut Client, id: &str, rm: bool) {
    if rm {
        let _ = client
            .delete(v1::DeleteRequest {
                id: id.to_string(),
                force: true,
                // As Docker's --rm: the anonymous volumes go too.
                volumes: true,
            })
            .await;
    }
}

/// Write output bytes to our stdout/stderr as they come.
fn write_output(e: &v1::LogEntry) {
    let res = if e.stream == v1::log_entry::Stream::Stderr as i32 {
        let mut err = std::io::stderr().lock();
        err.write_all(&e.data).and_then(|_| err.flush())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(&e.data).and_then(|_| out.flush())
    };
    // A closed stdout (e.g. `| head`) must not stop us reporting the exit.
    let _ = res;
}

/// The CLI's exit code for a container's exit: its code, or 125 when unknown.
fn exit_code_of(e: &v1::ExitStatus) -> CmdResult {
    if e.kind == v1::exit_status::Kind::Unknown as i32 || e.exit_code < 0 {
        let reason = if e.reason.is_empty() {
            "unknown"
        } else {
            &e.reason
        };
        return Err(Failure::own(format!(
            "the container's exit status could not be determined: {reason}"
        )));
    }
    Ok(u8::try_from(e.exit_code).unwrap_or(255))
}

/// What to attach to and how.
struct AttachSpec {
    setup: v1::AttachSetup,
    /// The process has a terminal.
    tty: bool,
    detach_keys: Vec<u8>,
    /// Forward SIGINT/SIGTERM/SIGHUP (without a terminal only).
    sig_proxy: bool,
}

/// Why the input side stopped.
enum InputEnd {
    Detached,
}

/// Attach to a process: stream stdin to it (when asked), its output to
/// ours, resizes of our terminal to its, until it exits; exit with its
/// code. The detach keys end the session and leave it running. Without a
/// terminal, SIGINT/SIGTERM/SIGHUP are forwarded (`docker run`'s sig-proxy).
async fn attach(client: &mut Client, spec: AttachSpec) -> CmdResult {
    use tokio::signal::unix::{signal, SignalKind};
    let AttachSpec {
        mut setup,
        tty,
        detach_keys,
        sig_proxy,
    } = spec;
    let id = setup.id.clone();
    let stdin = setup.stdin;
    if tty {
        setup.size = tty::size().map(|(rows, cols)| v1::TtySize {
            rows: rows.into(),
            cols: cols.into(),
        });
    }
    let (in_tx, in_rx) = tokio::sync::mpsc::channel::<v1::AttachInput>(16);
    let _ = in_tx
        .send(v1::AttachInput {
            kind: Some(v1::attach_input::Kind::Setup(setup)),
        })
        .await;
    // Raw before the process runs, so not a keystroke is echoed twice;
    // restored when this function returns, however it returns.
    let _raw = if tty && stdin {
        tty::RawMode::enable()
    } else {
        None
    };
    let mut stream = client
        .attach(tokio_stream::wrappers::ReceiverStream::new(in_rx))
        .await?
        .into_inner();

    // stdin: forwarded until its end (which closes the process's stdin) or
    // the detach keys.
    let (end_tx, mut end_rx) = tokio::sync::mpsc::channel::<InputEnd>(1);
    if stdin {
        let mut reader = tty::stdin_reader();
        let tx = in_tx.clone();
        // Only a terminal's keystrokes are scanned (as Docker): piped
        // stdin is data, any byte of it may be ctrl-p.
        let keys = if tty { detach_keys } else { Vec::new() };
        let mut scanner = tty::DetachScanner::new(keys);
        tokio::spawn(async move {
            while let Some(chunk) = reader.recv().await {
                let Some(data) = chunk else {
                    let _ = tx
                        .send(v1::AttachInput {
                            kind: Some(v1::attach_input::Kind::CloseStdin(true)),
                        })
                        .await;
                    return;
                };
                let (data, detach) = scanner.scan(&data);
                if !data.is_empty() {
                    let msg = v1::AttachInput {
                        kind: Some(v1::attach_input::Kind::Stdin(data)),
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                if detach {
                    let _ = end_tx.send(InputEnd::Detached).await;
                    return;
                }
            }
        });
    }

    let mut sigs = Vec::new();
    if sig_proxy && !tty {
        for (kind, name) in [
            (SignalKind::interrupt(), "INT"),
            (SignalKind::terminate(), "TERM"),
            (SignalKind::hangup(), "HUP"),
        ] {
            if let Ok(s) = signal(kind) {
                sigs.push((s, name));
            }
        }
    }
    let mut winch = if tty {
        signal(SignalKind::window_change()).ok()
    } else {
        None
    };
    // The process signals go to: the init, or the exec once started.
    let mut process = String::new();
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            name = futures_recv(&mut sigs), if !sigs.is_empty() => {
                let _ = client
                    .clone()
                    .kill(v1::KillRequest {
                        id: id.clone(),
                        signal: name.to_string(),
                        all: false,
                        process: process.clone(),
                    })
                    .await;
                continue;
            }
            Some(()) = async { winch.as_mut()?.recv().await } => {
                if let Some((rows, cols)) = tty::size() {
                    let _ = in_tx
                        .send(v1::AttachInput {
                            kind: Some(v1::attach_input::Kind::Resize(v1::TtySize {
                                rows: rows.into(),
                                cols: cols.into(),
                            })),
                        })
                        .await;
                }
                continue;
            }
            Some(InputEnd::Detached) = end_rx.recv() => return Ok(0),
        };
        match msg {
            Ok(Some(v1::AttachResponse { kind: Some(kind) })) => match kind {
                v1::attach_response::Kind::Output(e) => write_output(&e),
                v1::attach_response::Kind::Exit(e) => return exit_code_of(&e),
                v1::attach_response::Kind::Started(s) => process = s.exec_id,
            },
            Ok(Some(v1::AttachResponse { kind: None })) => {}
            Ok(None) => {
                return Err(Failure::own(
                    "the output stream ended before the process exited (berthd stopped?); the container may still be running",
                ))
            }
            Err(s) => return Err(s.into()),
        }
    }
}

/// `berth attach`: stdin when the container keeps it open, a terminal when
/// it has one.
async fn attach_existing(
    client: &mut Client,
    id: String,
    want_stdin: bool,
    detach_keys: &str,
    sig_proxy: bool,
) -> CmdResult {
    let detach_keys = tty::parse_detach_keys(detach_keys).map_err(Failure::own)?;
    let c = client
        .inspect(v1::InspectRequest { id: id.clone() })
        .await?
        .into_inner()
        .container
        .ok_or_else(|| Failure::own("berthd returned no container"))?;
    if c.state != "running" && c.state != "paused" {
        return Err(Failure::new(
            1,
            format!(
                "container {} is {}: you cannot attach to it; start it first (berth start -ai {})",
                c.name, c.state, c.name
            ),
        ));
    }
    let stdin = want_stdin && c.interactive;
    check_terminal(c.tty, stdin)?;
    let spec = AttachSpec {
        setup: v1::AttachSetup {
            id: c.id,
            stdin,
            ..Default::default()
        },
        tty: c.tty,
        detach_keys,
        sig_proxy,
    };
    attach(client, spec).await
}

/// The name of whichever of `sigs` arrives first.
async fn futures_recv(sigs: &mut [(tokio::signal::unix::Signal, &'static str)]) -> &'static str {
    std::future::poll_fn(|cx| {
        for (s, name) in sigs.iter_mut() {
            if let std::task::Poll::Ready(Some(())) = s.poll_recv(cx) {
                return std::task::Poll::Ready(*name);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn start(
    client: &mut Client,
    attach_out: bool,
    interactive: bool,
    detach_keys: &str,
    ids: Vec<String>,
) -> CmdResult {
    if attach_out || interactive {
        if ids.len() != 1 {
            return Err(Failure::own("start -a/-i takes exactly one container"));
        }
        let detach_keys = tty::parse_detach_keys(detach_keys).map_err(Failure::own)?;
        let c = client
            .inspect(v1::InspectRequest { id: ids[0].clone() })
            .await?
            .into_inner()
            .container
            .ok_or_else(|| Failure::own("berthd returned no container"))?;
        let stdin = interactive && c.interactive;
        check_terminal(c.tty, stdin)?;
        let spec = AttachSpec {
            setup: v1::AttachSetup {
                id: c.id,
                start: true,
                stdin,
                ..Default::default()
            },
            tty: c.tty,
            detach_keys,
            sig_proxy: true,
        };
        return attach(client, spec).await;
    }
    each(ids, |id| {
        let mut c = client.clone();
        async move { c.start(v1::StartRequest { id }).await.map(|_| ()) }
    })
    .await
}

async fn exec(client: &mut Client, a: ExecArgs) -> CmdResult {
    let detach_keys = tty::parse_detach_keys(&a.detach_keys).map_err(Failure::own)?;
    let stdin = a.interactive && !a.detach;
    check_terminal(a.tty, stdin)?;
    let req = v1::ExecRequest {
        id: a.id.clone(),
        args: a.command,
        env: a.env.iter().filter_map(|e| env_entry(e)).collect(),
        workdir: a.workdir.unwrap_or_default(),
        user: a.user.unwrap_or_default(),
        tty: a.tty,
        interactive: stdin,
    };
    if a.detach {
        let resp = client.exec(req).await?.into_inner();
        println!("{}", resp.exec_id);
        return Ok(0);
    }
    let spec = AttachSpec {
        setup: v1::AttachSetup {
            id: a.id,
            stdin,
            exec: Some(req),
            ..Default::default()
        },
        tty: a.tty,
        detach_keys,
        sig_proxy: true,
    };
    attach(client, spec).await
}

struct PsOptions {
    all: bool,
    quiet: bool,
    filters: Vec<String>,
    no_trunc: bool,
    last: Option<usize>,
    size: bool,
}

async fn ps(client: &mut Client, o: PsOptions, fmt: &str) -> CmdResult {
    let filters = crate::psfmt::Filters::parse(&o.filters)?;
    let all = o.all || o.last.is_some() || filters.wants_all();
    let template = if fmt != "table" && fmt != "json" {
        Some(crate::psfmt::Template::parse(fmt)?)
    } else {
        None
    };
    let size = (o.size || template.as_ref().is_some_and(|t| t.wants_size())) && !o.quiet;
    let mut list = client
        .list(v1::ListRequest {
            all,
            size,
            ..Default::default()
        })
        .await?
        .into_inner()
        .containers;
    list.retain(|c| filters.keep(c));
    if let Some(n) = o.last {
        // The list is oldest first; -n keeps the newest N, newest first.
        list.reverse();
        list.truncate(n);
    }
    let mut out = std::io::stdout().lock();
    if o.quiet {
        for c in &list {
            let n = if o.no_trunc { c.id.len() } else { 12 };
            let _ = writeln!(out, "{}", &c.id[..c.id.len().min(n)]);
        }
    } else if let Some(t) = template {
        let _ = write!(out, "{}", t.output(&list, o.no_trunc));
    } else if fmt == "json" {
        for c in &list {
            let _ = writeln!(out, "{}", format::ps_json(c));
        }
    } else if size {
        let _ = write!(out, "{}", format::ps_table_sized(&list));
    } else {
        let _ = write!(out, "{}", format::ps_table(&list));
    }
    Ok(0)
}

async fn inspect(client: &mut Client, ids: Vec<String>) -> CmdResult {
    let mut found = Vec::new();
    let mut code = 0;
    for id in ids {
        match client.inspect(v1::InspectRequest { id }).await {
            Ok(r) => {
                if let Some(c) = r.into_inner().container {
                    found.push(format::inspect_json(&c));
                }
            }
            Err(s) => code = code.max(report(s)),
        }
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Array(found))
        .map_err(|e| Failure::own(e.to_string()))?;
    println!("{text}");
    Ok(code)
}

async fn logs(
    client: &mut Client,
    id: String,
    follow: bool,
    tail: Option<u64>,
    since: Option<String>,
    until: Option<String>,
    timestamps: bool,
) -> CmdResult {
    let mut stream = client
        .logs(v1::LogsRequest {
            id,
            process: String::new(),
            follow,
            tail,
            since: since.unwrap_or_default(),
            until: until.unwrap_or_default(),
            timestamps,
        })
        .await?
        .into_inner();
    // With -t, a timestamp starts every line; track line starts per stream.
    let mut at_line_start = [true, true];
    while let Some(mut e) = stream.message().await? {
        if timestamps {
            let idx = usize::from(e.stream == v1::log_entry::Stream::Stderr as i32);
            if at_line_start[idx] {
                let mut data = format!("{} ", e.time).into_bytes();
                data.extend_from_slice(&e.data);
                e.data = data;
            }
            at_line_start[idx] = e.data.last() == Some(&b'\n');
        }
        write_output(&e);
    }
    Ok(0)
}

async fn wait(client: &mut Client, ids: Vec<String>) -> CmdResult {
    let mut code = 0;
    for id in ids {
        match client
            .wait(v1::WaitRequest {
                id: id.clone(),
                process: String::new(),
                removed: false,
            })
            .await
        {
            Ok(r) => {
                let exit = r.into_inner().exit.unwrap_or_default();
                println!("{}", exit.exit_code);
                if let Err(f) = exit_code_of(&exit) {
                    eprintln!("berth: {id}: {}", f.message);
                    code = 125;
                }
            }
            Err(s) => {
                // Keep one line per argument: the code is unknown.
                println!("-1");
                code = code.max(report(s));
            }
        }
    }
    Ok(code)
}

/// What `berth events --filter type=` takes besides event types.
const OBJECT_KINDS: [&str; 4] = ["container", "image", "volume", "network"];

async fn events(
    client: &mut Client,
    since: Option<String>,
    until: Option<String>,
    filters: Vec<String>,
    fmt: &str,
) -> CmdResult {
    let mut containers = Vec::new();
    let mut types = Vec::new();
    let mut objects = Vec::new();
    for f in &filters {
        let (k, v) = parse_kv(f, "--filter")?;
        match k.as_str() {
            "container" => containers.push(v),
            // `type` names an object kind (as Docker's) or, as before
            // there were other kinds, an event type.
            "type" if OBJECT_KINDS.contains(&v.as_str()) => objects.push(v),
            "object" => objects.push(v),
            "type" | "event" => types.push(v),
            other => {
                return Err(Failure::own(format!(
                    "unknown filter {other:?}: use container=ID, type=container|image|volume|network or event=TYPE"
                )))
            }
        }
    }
    let mut stream = client
        .events(v1::EventsRequest {
            since: since.unwrap_or_default(),
            until: until.unwrap_or_default(),
            containers,
            types,
            objects,
        })
        .await?
        .into_inner();
    while let Some(e) = stream.message().await? {
        let line = if fmt == "json" {
            format::event_json(&e).to_string()
        } else {
            format::event_line(&e)
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break; // the reader went away
        }
    }
    Ok(0)
}

/// `berth port`: the published ports from inspect's network settings.
async fn port_cmd(client: &mut Client, id: &str, filter: Option<&str>) -> CmdResult {
    let c = client
        .inspect(v1::InspectRequest { id: id.to_string() })
        .await?
        .into_inner()
        .container
        .ok_or_else(|| Failure::own("berthd sent no container"))?;
    let v: serde_json::Value = serde_json::from_str(&c.network_json).unwrap_or_default();
    let want = filter.map(|f| {
        let (p, proto) = f.split_once('/').unwrap_or((f, "tcp"));
        (p.to_string(), proto.to_ascii_lowercase())
    });
    let mut shown = 0;
    for p in v["Ports"].as_array().into_iter().flatten() {
        let (cport, proto) = (
            p["ContainerPort"].to_string(),
            p["Protocol"].as_str().unwrap_or(""),
        );
        let host = format!(
            "{}:{}",
            p["HostIp"].as_str().unwrap_or("0.0.0.0"),
            p["HostPort"]
        );
        match &want {
            Some((wp, wproto)) if *wp == cport && wproto == proto => println!("{host}"),
            Some(_) => continue,
            None => println!("{cport}/{proto} -> {host}"),
        }
        shown += 1;
    }
    match filter {
        Some(f) if shown == 0 => Err(Failure::new(
            1,
            format!("no public port {f} published for {id}"),
        )),
        _ => Ok(0),
    }
}
