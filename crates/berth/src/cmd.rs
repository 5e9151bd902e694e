//! The commands.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use berth_api::{v1, ContainersClient};
use tonic::transport::Channel;

use crate::format;
use crate::{Cli, Cmd, CmdResult, CreateArgs, ExecArgs, Failure, RunArgs};

type Client = ContainersClient<Channel>;

pub async fn run(cli: Cli) -> CmdResult {
    // Check what can be checked before touching the daemon.
    if let Cmd::Ps { format, .. } | Cmd::Events { format, .. } = &cli.cmd {
        check_format(format)?;
    }
    let mut client = berth_api::connect(&cli.socket).await?;
    match cli.cmd {
        Cmd::Run(args) => run_container(&mut client, args).await,
        Cmd::Create(args) => {
            let id = create(&mut client, &args).await?;
            println!("{id}");
            Ok(0)
        }
        Cmd::Start { attach, ids } => start(&mut client, attach, ids).await,
        Cmd::Exec(args) => exec(&mut client, args).await,
        Cmd::Attach { id } => attach(&mut client, &id, false, "").await,
        Cmd::Ps { all, quiet, format } => ps(&mut client, all, quiet, &format).await,
        Cmd::Inspect { ids } => inspect(&mut client, ids).await,
        Cmd::Logs {
            follow,
            tail,
            since,
            timestamps,
            id,
        } => logs(&mut client, id, follow, tail, since, timestamps).await,
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
        Cmd::Rm { force, ids } => {
            each(ids, |id| {
                let mut c = client.clone();
                async move { c.delete(v1::DeleteRequest { id, force }).await.map(|_| ()) }
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
        Cmd::Events {
            since,
            until,
            filters,
            format,
        } => events(&mut client, since, until, filters, &format).await,
        Cmd::Version => {
            let v = client.version(v1::VersionRequest {}).await?.into_inner();
            println!("berth   {}", env!("CARGO_PKG_VERSION"));
            println!(
                "berthd  {} (runtime: {}, root: {})",
                v.version, v.runtime, v.root
            );
            Ok(0)
        }
    }
}

fn check_format(f: &str) -> Result<(), Failure> {
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

async fn create(client: &mut Client, a: &CreateArgs) -> Result<String, Failure> {
    let resp = client.create(create_request(a)?).await?;
    Ok(resp.into_inner().id)
}

fn create_request(a: &CreateArgs) -> Result<v1::CreateRequest, Failure> {
    let source = match (&a.rootfs, &a.bundle) {
        (Some(r), None) => v1::create_request::Source::Rootfs(absolute(r, "--rootfs")?),
        (None, Some(b)) => v1::create_request::Source::Bundle(absolute(b, "--bundle")?),
        _ => return Err(Failure::own(
            "no root filesystem: give --rootfs DIR or --bundle DIR (images are not supported yet)",
        )),
    };
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
            format::parse_size(s)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| {
                    Failure::own(format!("invalid --memory {s:?}: use a size like 64m or 1g"))
                })?,
        ),
    };
    let log_max_size = match &a.log_max_size {
        None => 0,
        Some(s) => format::parse_size(s).filter(|n| *n > 0).ok_or_else(|| {
            Failure::own(format!(
                "invalid --log-max-size {s:?}: use a size like 10m or 1g"
            ))
        })?,
    };
    Ok(v1::CreateRequest {
        name: a.name.clone().unwrap_or_default(),
        source: Some(source),
        args: a.command.clone(),
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
    })
}

/// Both our stdout and stderr go to /dev/null: there is nothing to stream.
fn output_discarded() -> bool {
    let null = |fd: u8| {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|p| p == Path::new("/dev/null"))
    };
    null(1) && null(2)
}

async fn run_container(client: &mut Client, args: RunArgs) -> CmdResult {
    if args.create.rm && !args.detach && output_discarded() {
        // Nothing to show: let the daemon run it to completion, which also
        // tears it down however it ends (even if this CLI is killed).
        let req = create_request(&args.create)?;
        let resp = client.run_to_completion(req).await?.into_inner();
        return exit_code_of(&resp.exit.unwrap_or_default());
    }
    let id = create(client, &args.create).await?;
    if args.detach {
        if let Err(e) = client.start(v1::StartRequest { id: id.clone() }).await {
            cleanup_failed(client, &id, args.create.rm).await;
            return Err(e.into());
        }
        println!("{id}");
        return Ok(0);
    }
    let code = attach(client, &id, true, "").await;
    if code.is_err() {
        cleanup_failed(client, &id, args.create.rm).await;
    }
    code
}

/// A container whose start failed is removed when --rm asked for it.
async fn cleanup_failed(client: &mut Client, id: &str, rm: bool) {
    if rm {
        let _ = client
            .delete(v1::DeleteRequest {
                id: id.to_string(),
                force: true,
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

/// Stream a process's output until it exits; forward SIGINT/SIGTERM/SIGHUP
/// to the container (as `docker run`'s sig-proxy).
async fn attach(client: &mut Client, id: &str, start: bool, process: &str) -> CmdResult {
    use tokio::signal::unix::{signal, SignalKind};
    let mut stream = client
        .attach(v1::AttachRequest {
            id: id.to_string(),
            start,
            process: process.to_string(),
        })
        .await?
        .into_inner();
    let mut sigs = Vec::new();
    for (kind, name) in [
        (SignalKind::interrupt(), "INT"),
        (SignalKind::terminate(), "TERM"),
        (SignalKind::hangup(), "HUP"),
    ] {
        if let Ok(s) = signal(kind) {
            sigs.push((s, name));
        }
    }
    loop {
        let next = {
            let recv = futures_recv(&mut sigs);
            tokio::select! {
                m = stream.message() => Some(m),
                name = recv => {
                    // Forwarded to the process we are attached to (the init,
                    // or the exec), as `docker run`'s sig-proxy.
                    let _ = client
                        .clone()
                        .kill(v1::KillRequest {
                            id: id.to_string(),
                            signal: name.to_string(),
                            all: false,
                            process: process.to_string(),
                        })
                        .await;
                    None
                }
            }
        };
        let Some(msg) = next else { continue };
        match msg {
            Ok(Some(v1::AttachResponse { kind: Some(kind) })) => match kind {
                v1::attach_response::Kind::Output(e) => write_output(&e),
                v1::attach_response::Kind::Exit(e) => return exit_code_of(&e),
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

async fn start(client: &mut Client, attach_out: bool, ids: Vec<String>) -> CmdResult {
    if attach_out {
        if ids.len() != 1 {
            return Err(Failure::own("start -a takes exactly one container"));
        }
        return attach(client, &ids[0], true, "").await;
    }
    each(ids, |id| {
        let mut c = client.clone();
        async move { c.start(v1::StartRequest { id }).await.map(|_| ()) }
    })
    .await
}

async fn exec(client: &mut Client, a: ExecArgs) -> CmdResult {
    let resp = client
        .exec(v1::ExecRequest {
            id: a.id.clone(),
            args: a.command,
            env: a.env.iter().filter_map(|e| env_entry(e)).collect(),
            workdir: a.workdir.unwrap_or_default(),
            user: a.user.unwrap_or_default(),
        })
        .await?
        .into_inner();
    if a.detach {
        println!("{}", resp.exec_id);
        return Ok(0);
    }
    attach(client, &a.id, false, &resp.exec_id).await
}

async fn ps(client: &mut Client, all: bool, quiet: bool, fmt: &str) -> CmdResult {
    let list = client
        .list(v1::ListRequest { all })
        .await?
        .into_inner()
        .containers;
    let mut out = std::io::stdout().lock();
    if quiet {
        for c in &list {
            let _ = writeln!(out, "{}", &c.id[..c.id.len().min(12)]);
        }
    } else if fmt == "json" {
        for c in &list {
            let _ = writeln!(out, "{}", format::ps_json(c));
        }
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
    timestamps: bool,
) -> CmdResult {
    let mut stream = client
        .logs(v1::LogsRequest {
            id,
            process: String::new(),
            follow,
            tail,
            since: since.unwrap_or_default(),
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

async fn events(
    client: &mut Client,
    since: Option<String>,
    until: Option<String>,
    filters: Vec<String>,
    fmt: &str,
) -> CmdResult {
    let mut containers = Vec::new();
    let mut types = Vec::new();
    for f in &filters {
        let (k, v) = parse_kv(f, "--filter")?;
        match k.as_str() {
            "container" => containers.push(v),
            "type" | "event" => types.push(v),
            other => {
                return Err(Failure::own(format!(
                    "unknown filter {other:?}: use container=ID or type=TYPE"
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
