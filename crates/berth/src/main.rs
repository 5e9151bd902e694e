//! berth: the command line of the berth container supervisor. Talks to
//! berthd over its unix socket; follows Docker's and Podman's habits.
//!
//! Exit codes: 125 for berth's own errors (bad flags, daemon unreachable,
//! invalid input), 126/127 when the container's command cannot be invoked /
//! was not found, 1 when a named container does not exist (as Docker), and
//! otherwise the container's own code (128+N for signal N).

mod cmd;
mod complete;
mod files;
mod format;
mod image;
mod network;
mod psfmt;
mod resources;
mod system;
mod tty;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// An error with the exit code the CLI must end with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// berth's own error.
    pub fn own(message: impl Into<String>) -> Self {
        Self::new(125, message)
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        let code = s
            .metadata()
            .get(berth_api::EXIT_CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u8>().ok())
            .unwrap_or(match s.code() {
                tonic::Code::NotFound => 1,
                _ => 125,
            });
        let message = match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown if s.message().is_empty() => {
                "lost the connection to berthd".to_string()
            }
            _ => s.message().to_string(),
        };
        Failure::new(code, message)
    }
}

impl From<berth_api::ConnectError> for Failure {
    fn from(e: berth_api::ConnectError) -> Self {
        Failure::own(e.to_string())
    }
}

pub type CmdResult = Result<u8, Failure>;

/// berth runs containers: create them from a root filesystem or an OCI
/// bundle, start and exec processes, stream their output, stop them
/// gracefully, and watch every state change as an event.
///
/// Start the daemon first (`berthd`), then for example:
///
///   berth run --rm --rootfs /srv/busybox /bin/echo hello
///
///   berth run -d --name ticker --rootfs /srv/busybox sh -c 'while date; do sleep 1; done'
///
///   berth logs -f ticker
#[derive(Parser, Debug)]
#[command(name = "berth", version, verbatim_doc_comment)]
pub struct Cli {
    /// berthd's API socket.
    #[arg(long, global = true, env = "BERTH_SOCKET", default_value = berth_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create and start a container; in the foreground, stream its output
    /// and exit with its exit code.
    Run(RunArgs),
    /// Create a container without starting it; prints its id.
    Create(CreateArgs),
    /// Start created or stopped containers.
    Start {
        /// Attach: stream the output and exit with the container's code.
        #[arg(short, long)]
        attach: bool,
        /// Attach stdin too (the container must have been created with -i).
        #[arg(short, long)]
        interactive: bool,
        /// Keys that detach, leaving the container running.
        #[arg(long, value_name = "KEYS", default_value = tty::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Connect to a running container's stdin, stdout and stderr until it
    /// exits; exit with its code. ctrl-p ctrl-q detaches and leaves it
    /// running. Without a terminal, SIGINT/SIGTERM/SIGHUP are forwarded.
    Attach {
        /// Do not attach stdin.
        #[arg(long)]
        no_stdin: bool,
        /// Keys that detach, leaving the container running ("" for none).
        #[arg(long, value_name = "KEYS", default_value = tty::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        /// Forward SIGINT, SIGTERM and SIGHUP to the container (non-terminal
        /// containers only: with a terminal, ^C is a keystroke).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        sig_proxy: bool,
        id: String,
    },
    /// List containers.
    Ps {
        /// Show all containers (by default only running and paused ones).
        #[arg(short, long)]
        all: bool,
        /// Only print ids.
        #[arg(short, long)]
        quiet: bool,
        /// Output format: `table`, `json` (one object per line), or a
        /// Go-template-style line such as '{{.Names}} {{.Status}}' or
        /// 'table {{.ID}}\t{{.Names}}\t{{.Status}}' (placeholders .ID
        /// .Names .Image .Command .CreatedAt .RunningFor .Status .State
        /// .Ports .Labels .Label "KEY").
        #[arg(long, default_value = "table")]
        format: String,
        /// Only containers matching KEY=VALUE: id, name, label (KEY or
        /// KEY=VALUE), status (created, running, paused, restarting,
        /// exited), exited (a code), ancestor (an image), health
        /// (starting, healthy, unhealthy, none). Repeatable: the same key
        /// ORs, different keys AND. E.g. --filter status=exited --filter exited=137
        #[arg(short, long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
        /// Full ids and commands.
        #[arg(long)]
        no_trunc: bool,
        /// Only the N most recently created containers (all states).
        #[arg(short = 'n', long, value_name = "N")]
        last: Option<usize>,
        /// Add a SIZE column: what each container wrote to its root, and
        /// that with its image ("virtual"), e.g. `2B (virtual 4.26MB)`.
        #[arg(short, long)]
        size: bool,
    },
    /// Show the full state and configuration of containers as a JSON array.
    Inspect {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Print a container's output (stdout to stdout, stderr to stderr).
    Logs {
        /// Keep streaming new output until the container stops.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
        /// Only output since this time (RFC 3339, e.g. 2026-01-02T15:04:05Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only output before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Prefix each line with its RFC 3339 timestamp.
        #[arg(short, long)]
        timestamps: bool,
        id: String,
    },
    /// Send a signal to containers (default SIGKILL).
    Kill {
        /// Signal name (KILL, SIGTERM, HUP) or number.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Stop containers: the stop signal, a deadline, then SIGKILL.
    Stop {
        /// Seconds to wait before SIGKILL (default: the container's stop timeout, 10).
        #[arg(short, long, value_name = "SECONDS")]
        time: Option<u32>,
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Stop containers (as `stop`), then start them again; stopped or
    /// created ones are only started.
    ///
    ///   berth restart -t 2 web
    #[command(verbatim_doc_comment)]
    Restart {
        /// Seconds the stop waits before SIGKILL (default: the container's
        /// stop timeout, 10).
        #[arg(short, long, value_name = "SECONDS")]
        time: Option<u32>,
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Give a container a new name (it keeps its id).
    ///
    ///   berth rename web web-old
    #[command(verbatim_doc_comment)]
    Rename {
        #[arg(value_name = "CONTAINER")]
        old: String,
        #[arg(value_name = "NEW_NAME")]
        new: String,
    },
    /// Show a running container's processes: the host's `ps` with the
    /// options given (default -ef), only the rows of the container's
    /// processes (host pids).
    ///
    ///   berth top web
    ///
    ///   berth top web -o pid,rss,comm
    #[command(verbatim_doc_comment)]
    Top {
        #[arg(value_name = "CONTAINER")]
        id: String,
        /// ps's options (they must show a PID column).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PS OPTIONS"
        )]
        ps_args: Vec<String>,
    },
    /// Manage containers (prune).
    #[command(subcommand)]
    Container(system::ContainerCmd),
    /// The daemon as a whole: disk usage (df).
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        /// Also remove the containers' anonymous volumes (named ones stay).
        #[arg(short, long)]
        volumes: bool,
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Show a container's published ports (`80/tcp -> 0.0.0.0:8080`), or
    /// the host address of one PORT[/PROTO].
    Port {
        #[arg(value_name = "ID")]
        id: String,
        #[arg(value_name = "PORT[/PROTO]")]
        port: Option<String>,
    },
    /// Wait for containers to stop; print each exit code, one per line.
    Wait {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Freeze all processes of containers.
    Pause {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Thaw paused containers.
    Unpause {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Stream events from the durable event log.
    Events {
        /// Replay from after this sequence number, or from this RFC 3339 time.
        #[arg(long, value_name = "SEQ|TIME")]
        since: Option<String>,
        /// Stop after this sequence number or time.
        #[arg(long, value_name = "SEQ|TIME")]
        until: Option<String>,
        /// container=ID or type=TYPE (repeatable).
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
        /// Output format: `table`, or `json` (JSON Lines).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Show the client's and the daemon's versions.
    Version,
    /// Live CPU, memory, block I/O and pids of containers, refreshed every
    /// second (like `docker stats`).
    ///
    ///   berth stats                       every running container, live
    ///
    ///   berth stats --no-stream web db    one sample of two containers
    ///
    ///   berth stats --format json web     a JSON line per container per sample
    #[command(verbatim_doc_comment)]
    Stats {
        /// All containers (stopped ones show "--"); default: running ones.
        #[arg(short, long)]
        all: bool,
        /// Print one sample and exit.
        #[arg(long)]
        no_stream: bool,
        /// Output format: `table`, or `json` (one object per container per sample).
        #[arg(long, default_value = "table")]
        format: String,
        #[arg(value_name = "CONTAINER")]
        containers: Vec<String>,
    },
    /// Change the limits or the restart policy of containers, live when they
    /// run; later runs keep them.
    ///
    ///   berth update --memory 256m --cpus 1.5 web
    ///
    ///   berth update --restart unless-stopped web db
    #[command(verbatim_doc_comment)]
    Update(resources::UpdateArgs),
    /// Show how the daemon and the host are set up: cgroup kind and
    /// controllers, runtime, root, container counts.
    Info,
    /// Print a shell completion script (bash, zsh or fish): e.g.
    /// `source <(berth completion bash)`. The Debian package installs them.
    Completion {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write the man pages (berth.1, berth-run.1, ...) into DIR.
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Names for shell completion, one a line (containers, images); prints
    /// nothing when the daemon does not answer.
    #[command(name = "__complete", hide = true)]
    Complete {
        kind: String,
    },
    /// Fetch an image from a registry (progress bars on a terminal).
    Pull(image::PullArgs),
    /// List images.
    Images(image::ListArgs),
    /// Remove images (untag; the content goes when nothing needs it).
    Rmi(image::RmiArgs),
    /// Give an image another name: SOURCE and TARGET as IMAGE[:TAG].
    Tag(image::TagArgs),
    /// Show how an image was made, layer by layer.
    History(image::HistoryArgs),
    /// Load images from an OCI layout archive or a `docker save` archive
    /// (gzip or not; standard input unless -i).
    #[command(alias = "import")]
    Load(image::LoadArgs),
    /// Write images to an OCI image layout archive (standard output
    /// unless -o).
    Save(image::SaveArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Manage volumes: create, ls, inspect, rm, prune.
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    Cp(files::CpArgs),
    Diff(files::DiffArgs),
    Export(files::ExportArgs),
    Commit(files::CommitArgs),
    /// Manage networks: create, ls, inspect, rm, connect, disconnect, prune.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Store credentials for a registry, used by pull and run (a file of
    /// mode 0600: $XDG_CONFIG_HOME/berth/auth.json, in Docker's format;
    /// Docker's ~/.docker/config.json is read too).
    Login(image::LoginArgs),
    /// Remove the stored credentials for a registry.
    Logout {
        /// The registry, e.g. 127.0.0.1:5000 (default: docker.io).
        registry: Option<String>,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Replace the image's entrypoint ("" clears it: the command alone runs).
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// When to pull the image: missing (only when it is not in the store),
    /// always, never.
    #[arg(long, value_name = "WHEN", default_value = "missing")]
    pub pull: String,
    /// The platform of the image, os/arch[/variant] (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Root filesystem directory: berth generates the OCI spec from the flags.
    #[arg(long, value_name = "DIR", conflicts_with = "bundle")]
    pub rootfs: Option<PathBuf>,
    /// An OCI bundle (config.json + rootfs), used as given.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Name of the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (K=V; K alone takes it from this shell).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read environment variables from a file (K=V lines, # comments).
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User: UID[:GID] or NAME[:GROUP] from the container's /etc/passwd.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Hostname (default: the first 12 characters of the id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Memory limit (e.g. 64m, 1g; at least 6m).
    #[arg(short, long, value_name = "BYTES")]
    pub memory: Option<String>,
    /// CPUs' worth of time the container may use (e.g. 0.5, 2).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Most processes at once (-1: no limit).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    #[command(flatten)]
    pub resources: resources::ResourceArgs,
    #[command(flatten)]
    pub health: resources::HealthArgs,
    /// Run the command under a small init (tini) as pid 1: it reaps
    /// zombies and passes signals on, so `stop` works for commands that do
    /// not handle SIGTERM themselves.
    #[arg(long)]
    pub init: bool,
    /// Restart policy: no, always, on-failure[:MAX-RETRIES], unless-stopped.
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Signal that stop sends first.
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Seconds stop waits before SIGKILL.
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u32>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Set a label (K=V, repeatable).
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
    /// Rotate the log past this size (e.g. 10m, 1g).
    #[arg(long, value_name = "SIZE")]
    pub log_max_size: Option<String>,
    /// Rotated log files to keep.
    #[arg(long, value_name = "N")]
    pub log_max_files: Option<u32>,
    /// Keep stdin open: attached clients write it (`run -i` streams this
    /// shell's stdin; its end closes the container's).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a terminal (one output stream; with -i this
    /// shell's terminal goes raw and is restored on exit).
    #[arg(short, long)]
    pub tty: bool,
    /// Add a capability (NET_ADMIN, CAP_NET_ADMIN, any case; ALL).
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability (ALL drops every one; --cap-add then adds back).
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// All capabilities and host devices, writable /sys, no seccomp filter
    /// and no masked paths: root in the container is root on the host.
    #[arg(long)]
    pub privileged: bool,
    /// no-new-privileges[=true|false], seccomp=unconfined,
    /// seccomp=PROFILE.json (Docker's format, read here and sent),
    /// systempaths=unconfined.
    #[arg(long, value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Give the container a host device: HOST[:CONTAINER][:rwm].
    #[arg(long, value_name = "DEVICE")]
    pub device: Vec<String>,
    /// Bind-mount a host directory: HOST:CONTAINER[:ro|rw][,rprivate|
    /// rshared|rslave]. HOST must be absolute; a missing one is created.
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:OPTS]")]
    pub volume: Vec<String>,
    /// A mount as key=value pairs: type=bind,src=/HOST,dst=/PATH
    /// [,readonly][,bind-propagation=rslave] (a missing src is an error), or
    /// type=tmpfs,dst=/PATH[,tmpfs-size=64m][,tmpfs-mode=1777].
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub mount: Vec<String>,
    /// Mount a fresh tmpfs: DIR[:size=SIZE,mode=OCTAL,ro].
    #[arg(long, value_name = "DIR[:OPTS]")]
    pub tmpfs: Vec<String>,
    /// Size of /dev/shm (e.g. 256m; default 64m).
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// An extra group for the process: a name from the container's
    /// /etc/group, or a gid.
    #[arg(long, value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// A namespaced sysctl (kernel.msg*, kernel.sem, kernel.shm*,
    /// fs.mqueue.*, net.*): NAME=VALUE.
    #[arg(long, value_name = "NAME=VALUE")]
    pub sysctl: Vec<String>,
    /// A resource limit: NAME=SOFT[:HARD] (nofile, nproc, core, stack ...).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Adjust the OOM killer's preference (-1000 to 1000; below berthd's
    /// own value needs CAP_SYS_RESOURCE).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub oom_score_adj: Option<i32>,
    /// User namespace: host (the container's root is the host's root, as
    /// Docker's default), auto (its own range of 65536 unprivileged host
    /// ids; images only), auto:size=N. Default: berthd's `userns` setting.
    #[arg(long, value_name = "MODE")]
    pub userns: Option<String>,
    /// Network: bridge (the default bridge network; berthd's
    /// default-network setting picks the default), none (loopback only),
    /// host (the daemon's network namespace), container:ID|NAME (share a
    /// running container's network namespace).
    #[arg(long = "network", alias = "net", value_name = "MODE")]
    pub network: Option<String>,
    /// A nameserver for /etc/resolv.conf (repeatable; replaces the host's).
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// A search domain for /etc/resolv.conf (repeatable).
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// A resolv.conf option such as ndots:2 (repeatable).
    #[arg(long, value_name = "OPT")]
    pub dns_option: Vec<String>,
    /// Add NAME:IP to /etc/hosts (repeatable).
    #[arg(long, value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// Another name of the container on its user network (repeatable).
    #[arg(long = "network-alias", alias = "net-alias", value_name = "NAME")]
    pub network_alias: Vec<String>,
    /// A fixed IPv4 address on its user network (inside its subnet).
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// A fixed MAC address of the container's interface.
    #[arg(long, value_name = "MAC")]
    pub mac_address: Option<String>,
    /// Publish a container port on the host: [IP:][HOSTPORT:]CTRPORT[/tcp|/udp]
    /// (ranges as 8000-8009:80-89; no HOSTPORT: a free one). Repeatable.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on free host ports.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// IMAGE, then the command and its arguments (with --rootfs or
    /// --bundle: the command alone). The command replaces the image's CMD.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE] [CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the id.
    #[arg(short, long)]
    pub detach: bool,
    /// Keys that detach, leaving the container running ("" for none).
    #[arg(long, value_name = "KEYS", default_value = tty::DEFAULT_DETACH_KEYS)]
    pub detach_keys: String,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Run in the background and print the exec id.
    #[arg(short, long)]
    pub detach: bool,
    /// Stream this shell's stdin to the process (its end closes the
    /// process's stdin).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Keys that detach, leaving the process running ("" for none).
    #[arg(long, value_name = "KEYS", default_value = tty::DEFAULT_DETACH_KEYS)]
    pub detach_keys: String,
    /// Set an environment variable (K=V).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User: UID[:GID] or NAME[:GROUP].
    #[arg(short, long)]
    pub user: Option<String>,
    pub id: String,
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => 125,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // What needs no daemon.
    match &cli.cmd {
        Cmd::Completion { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            print!("{}", complete::script(shell, Cli::command()));
            return ExitCode::SUCCESS;
        }
        Cmd::Man { dir } => {
            return match complete::man_pages(Cli::command(), dir) {
                Ok(pages) => {
                    for p in pages {
                        println!("{}", p.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berth: cannot write man pages to {}: {e}", dir.display());
                    ExitCode::from(125)
                }
            };
        }
        _ => {}
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start: {e}");
            return ExitCode::from(125);
        }
    };
    if let Cmd::Complete { kind } = &cli.cmd {
        return ExitCode::from(rt.block_on(complete::names(&cli.socket, kind)));
    }
    match rt.block_on(cmd::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("berth: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
