//! berthd's settings, from three places: the command line (and the
//! environment variables of some flags), the config file
//! (`/etc/berth/berthd.toml`, or `--config PATH`), and the defaults.
//!
//! Every setting is defined once, as a clap argument of [`Args`]. The file's
//! keys are the long flag names (`log-level = "debug"` is `--log-level
//! debug`), and each value from the file is checked by the flag's own value
//! parser, so a new flag is a new key with no other code: add the field to
//! [`Args`] (with its `///` help, its default and, if it can change while
//! berthd runs, an entry in [`LIVE`] and in `main.rs`'s reload), then a line
//! in `packaging/berthd.toml` and in the reference table of
//! `docs/install.md` (a test below fails until both name every key).
//!
//! Precedence: a flag (or its environment variable) > the file > the
//! default.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};

/// Where berthd looks for its config file without `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/berth/berthd.toml";

/// The berth daemon: supervises containers, one berth-shim each.
///
/// Every flag below (except --config and --print-config) can also be set in
/// the config file, under its long name: `log-level = "debug"`. A flag
/// given here wins over the file.
#[derive(Parser, Debug, Clone)]
#[command(name = "berthd", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Args {
    /// The config file (TOML; keys are the long flag names). A missing
    /// default file is fine; a missing file given here is an error.
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Print the settings in force (as TOML, with where each came from)
    /// and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Print the man page berthd(8) (roff) and exit: for packaging.
    #[arg(long, hide = true)]
    pub print_man_page: bool,
    /// Directory for everything berth keeps: database, logs, images,
    /// volumes, network settings.
    #[arg(long, env = "BERTH_ROOT", value_name = "DIR", default_value = berth_api::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Directory for what a reboot ends: bundles, shim sockets, exit files,
    /// the runtime's state. Unset: /run/berth (a tmpfs) with the default
    /// --root, `<root>/run` with another, so two daemons never share one.
    /// Change it only with no container running (berthd refuses to start
    /// otherwise).
    #[arg(long, env = "BERTH_RUN_ROOT", value_name = "DIR")]
    pub run_root: Option<PathBuf>,
    /// The API socket (created with mode 0660). Ignored when systemd passes
    /// a listening socket (socket activation, berth.socket).
    #[arg(long, env = "BERTH_SOCKET", value_name = "PATH", default_value = berth_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Also serve the Docker Engine API on this unix socket (mode 0660,
    /// the same group as --socket), over the same daemon and service
    /// layer: point DOCKER_HOST=unix://PATH at it. Unset: off.
    #[arg(long, env = "BERTH_DOCKER_SOCKET", value_name = "PATH")]
    pub docker_socket: Option<PathBuf>,
    /// The group that owns the API socket: its members may use berth. If
    /// the default group does not exist the socket stays root's; a group
    /// given explicitly must exist.
    #[arg(
        long,
        env = "BERTH_GROUP",
        value_name = "NAME",
        default_value = "berth"
    )]
    pub group: String,
    /// OCI runtime: `embedded` (youki's libcontainer, in the shim), `runc`,
    /// `crun`, or the path of an OCI runtime binary.
    #[arg(long, env = "BERTH_RUNTIME", default_value = "embedded")]
    pub runtime: String,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, env = "BERTH_LOG", value_name = "LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
    /// Log format: `text` (for people: coloured on a terminal, plain
    /// `key=value` fields otherwise, as journald expects) or `json` (one
    /// object a line, with the container span's id, for log shippers).
    #[arg(
        long,
        env = "BERTH_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// The berth-shim binary (default: next to berthd, then
    /// ../libexec/berth/ beside it, then PATH).
    #[arg(long, env = "BERTH_SHIM", value_name = "PATH")]
    pub shim: Option<PathBuf>,
    /// Keep at most this many events in the event log.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub events_max: u64,
    /// Drop events older than this from the event log (e.g. 7d, 12h).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub events_max_age: Duration,
    /// Default log rotation size of a container (`run --log-max-size`
    /// overrides it): e.g. 16m, 1g.
    #[arg(long, value_name = "SIZE", default_value = "16m", value_parser = parse_log_size)]
    pub log_max_size: u64,
    /// Default number of rotated log files kept beside the live one.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub log_max_files: u32,
    /// On SIGTERM or SIGINT, stop every running container (its stop signal,
    /// then SIGKILL after its stop timeout) before exiting. Without it they
    /// keep running and the next berthd adopts them (live restore).
    #[arg(long)]
    pub stop_containers_on_exit: bool,
    /// How a container's root is made from its image's layers: `overlay`
    /// (overlayfs over the shared, read-only layers), `copy` (a private
    /// copy), or `auto`: overlay where an overlayfs mount works (probed at
    /// start), else copy.
    #[arg(long, env = "BERTH_SNAPSHOTTER", value_name = "KIND", default_value = "auto", value_parser = parse_snapshotter)]
    pub snapshotter: String,
    /// The user namespace of a container that asks for none (`run
    /// --userns` overrides it): `host` (Docker's default: the container's
    /// root is the host's root), `auto` (a range of 65536 unprivileged
    /// host ids of its own; images only) or `auto:size=N`.
    #[arg(long, env = "BERTH_USERNS", value_name = "MODE", default_value = "host", value_parser = parse_userns)]
    pub userns: String,
    /// The host ids `--userns=auto` ranges come from, START:SIZE. Default:
    /// the `berth` user's entries in /etc/subuid and /etc/subgid, else
    /// 100000000:1000000000. Give each berthd on a host its own pool.
    #[arg(long, value_name = "START:SIZE", value_parser = parse_userns_pool)]
    pub userns_pool: Option<String>,
    /// The network of a container created without --network: `bridge`
    /// (berth's default bridge network) or `none` (loopback only).
    #[arg(long, value_name = "MODE", default_value = "bridge", value_parser = ["bridge", "none"])]
    pub default_network: String,
    /// The IPv4 subnet of the default `bridge` network (its bridge is
    /// berth0, its gateway the subnet's first address).
    #[arg(long, value_name = "CIDR", default_value = berth_net::network::DEFAULT_SUBNET, value_parser = parse_subnet)]
    pub bridge_subnet: String,
    /// Where the CNI plugins (bridge, host-local, firewall, portmap,
    /// tuning) are installed.
    #[arg(long, value_name = "DIR", default_value = berth_net::cni::DEFAULT_PLUGIN_DIR)]
    pub cni_plugin_dir: PathBuf,
    /// Where `network create` without --subnet takes a free /24 (none of
    /// them overlapping another network's subnet).
    #[arg(long, value_name = "CIDR", default_value = "10.89.0.0/16", value_parser = parse_subnet)]
    pub network_pool: String,
}

fn parse_userns(s: &str) -> Result<String, String> {
    crate::userns::parse_mode(s).map(|_| s.to_string())
}

fn parse_userns_pool(s: &str) -> Result<String, String> {
    crate::userns::parse_pool(s).map(|_| s.to_string())
}

fn parse_snapshotter(s: &str) -> Result<String, String> {
    s.parse::<berth_image::snapshot::SnapshotterChoice>()
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_subnet(s: &str) -> Result<String, String> {
    let c: berth_net::Cidr = s
        .parse()
        .map_err(|e: berth_net::cidr::BadCidr| e.to_string())?;
    if c.prefix() > 30 {
        return Err(format!(
            "{s}: the subnet is too small for a network: give a /30 or larger"
        ));
    }
    Ok(s.to_string())
}

/// How berthd writes its log (stderr).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

const AFTER_HELP: &str = "SIGHUP re-reads the config file and applies what can change live \
(log-level, log-max-size, log-max-files, events-max, events-max-age, stop-containers-on-exit); \
other changes wait for a restart.";

/// Settings a reload (SIGHUP) applies to the running daemon. The others
/// (root, socket, runtime, ...) are fixed at start.
pub const LIVE: &[&str] = &[
    "log-level",
    "log-max-size",
    "log-max-files",
    "events-max",
    "events-max-age",
    "stop-containers-on-exit",
];

/// Arguments that find or show the config rather than being settings.
const NOT_SETTINGS: &[&str] = &[
    "config",
    "print_config",
    "print_man_page",
    "help",
    "version",
];

fn parse_log_level(s: &str) -> Result<String, String> {
    log_filter(s).map(|_| s.to_string())
}

/// The tracing filter of a `--log-level`: a bare level applies to berth's
/// own crates (libraries stay at warn); anything else is a full filter.
pub fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let bad = |why: String| {
        format!("{level:?} is not a log level: use error, warn, info, debug, trace, off or a tracing filter such as warn,berthd=debug{why}")
    };
    let directives = if ["error", "warn", "info", "debug", "trace", "off"].contains(&level) {
        format!("warn,berthd={level},berth_core={level},berth_docker={level},berth_net={level}")
    } else if level.contains(['=', ',']) {
        level.to_string()
    } else {
        // A bare word would be taken as a target name: a misspelt level
        // would silently log nothing.
        return Err(bad(String::new()));
    };
    tracing_subscriber::EnvFilter::try_new(&directives).map_err(|e| bad(format!(" ({e})")))
}

fn parse_log_size(s: &str) -> Result<u64, String> {
    berth_api::parse_size(s)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size: use e.g. 16m or 1g"))
}

/// berthd(8), from the clap definitions.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Args::command())
        .section("8")
        .manual("System Administration")
        .render(&mut out)?;
    Ok(out)
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "environment",
            Source::Flag => "flag",
        }
    }
}

/// One setting in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The file key (the long flag name).
    pub key: String,
    /// None: unset (an optional setting).
    pub value: Option<toml::Value>,
    pub source: Source,
}

/// Loading failed.
#[derive(Debug)]
pub enum LoadError {
    /// Bad command line (or --help / --version): clap prints and exits.
    Cli(clap::Error),
    /// A one-line message about the file.
    File(String),
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct Config {
    pub args: Args,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    matches: ArgMatches,
    from_file: BTreeSet<String>,
}

/// The arguments that are settings (file keys).
fn settings(cmd: &clap::Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some() && !a.is_hide_set() && !NOT_SETTINGS.contains(&a.get_id().as_str())
    })
}

fn is_explicit(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
    )
}

/// Load the settings for the command line `argv` (with argv[0]).
pub fn load(argv: &[OsString]) -> Result<Config, LoadError> {
    let cmd = Args::command();
    let first = cmd
        .clone()
        .try_get_matches_from(argv)
        .map_err(LoadError::Cli)?;
    let path = first
        .get_one::<PathBuf>("config")
        .cloned()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let explicit = is_explicit(&first, "config");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
        Err(e) => {
            return Err(LoadError::File(format!(
                "cannot read the config file {}: {e}",
                path.display()
            )))
        }
    };
    let (file_args, from_file) = match &text {
        Some(t) => file_args(&cmd, &first, &path, t).map_err(LoadError::File)?,
        None => (Vec::new(), BTreeSet::new()),
    };
    // The file's settings go first: the real flags have none of those keys
    // (file_args skipped them), so nothing is given twice.
    let mut all: Vec<OsString> = argv.iter().take(1).cloned().collect();
    all.extend(file_args);
    all.extend(argv.iter().skip(1).cloned());
    let matches = cmd.try_get_matches_from(&all).map_err(|e| {
        // Settings that are valid alone but not together.
        LoadError::File(format!(
            "{}: {}",
            path.display(),
            first_line(&e.to_string())
        ))
    })?;
    let args = Args::from_arg_matches(&matches).map_err(LoadError::Cli)?;
    Ok(Config {
        args,
        file: text.map(|_| path),
        matches,
        from_file,
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string()
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The command-line arguments that say what the file says, skipping keys
/// the command line sets; and the ids of the settings they set.
fn file_args(
    cmd: &clap::Command,
    cli: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<(Vec<OsString>, BTreeSet<String>), String> {
    let file = path.display();
    let doc = toml::de::DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        format!("{file}:{line}: not valid TOML: {}", first_line(e.message()))
    })?;
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for (k, v) in doc.get_ref().iter() {
        let key: &str = k.get_ref();
        let line = line_of(text, k.span().start);
        let Some(arg) = settings(cmd).find(|a| a.get_long() == Some(key)) else {
            return Err(format!(
                "{file}:{line}: unknown key {key:?}{}; the keys are berthd's long flag names (berthd --help)",
                suggest(cmd, key)
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default()
            ));
        };
        let id = arg.get_id().as_str();
        if is_explicit(cli, id) {
            continue;
        }
        let one = value_args(arg, key, v.get_ref())
            .map_err(|msg| format!("{file}:{line}: key {key:?}: {msg}"))?;
        // The flag's own parser checks the value.
        let mut alone = vec![OsString::from("berthd")];
        alone.extend(one.iter().cloned());
        if let Err(e) = cmd.clone().try_get_matches_from(alone) {
            return Err(format!("{file}:{line}: key {key:?}: {}", clap_reason(&e)));
        }
        out.extend(one);
        ids.insert(id.to_string());
    }
    Ok((out, ids))
}

/// What clap's value parser said, without the flag's usage.
fn clap_reason(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => Some(v.clone()),
        _ => None,
    };
    match (value, std::error::Error::source(e)) {
        (Some(v), Some(src)) => format!("invalid value {v:?}: {src}"),
        (Some(v), None) => format!("invalid value {v:?}"),
        _ => first_line(&e.to_string()),
    }
}

fn scalar(v: &toml::de::DeValue<'_>) -> Option<String> {
    use toml::de::DeValue;
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => {
            let n = i64::from_str_radix(i.as_str(), i.radix()).ok()?;
            Some(n.to_string())
        }
        DeValue::Float(f) => Some(f.as_str().to_string()),
        DeValue::Boolean(b) => Some(b.to_string()),
        DeValue::Datetime(_) | DeValue::Array(_) | DeValue::Table(_) => None,
    }
}

/// The flags that give `key` the file's value `v`.
fn value_args(arg: &Arg, key: &str, v: &toml::de::DeValue<'_>) -> Result<Vec<OsString>, String> {
    use toml::de::DeValue;
    let flag = |val: &str| OsString::from(format!("--{key}={val}"));
    match arg.get_action() {
        ArgAction::SetTrue => match v {
            DeValue::Boolean(true) => Ok(vec![OsString::from(format!("--{key}"))]),
            DeValue::Boolean(false) => Ok(Vec::new()),
            other => Err(format!("expects true or false, not {}", other.type_str())),
        },
        ArgAction::Append => {
            let items: Vec<&DeValue<'_>> = match v {
                DeValue::Array(a) => a.iter().map(|x| x.get_ref()).collect(),
                one => vec![one],
            };
            items
                .into_iter()
                .map(|x| {
                    scalar(x)
                        .map(|s| flag(&s))
                        .ok_or_else(|| format!("expects values, not {}", x.type_str()))
                })
                .collect()
        }
        _ => scalar(v)
            .map(|s| vec![flag(&s)])
            .ok_or_else(|| format!("expects one value, not {}", v.type_str())),
    }
}

/// The known key closest to a misspelt one.
fn suggest(cmd: &clap::Command, key: &str) -> Option<String> {
    let with_underscores = key.replace('_', "-");
    settings(cmd)
        .filter_map(|a| a.get_long())
        .map(|k| (edit_distance(&with_underscores, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Config {
    /// Every setting in force, in `--help` order.
    pub fn in_force(&self) -> Vec<Setting> {
        let cmd = Args::command();
        settings(&cmd)
            .map(|a| {
                let id = a.get_id().as_str();
                let key = a.get_long().unwrap_or(id).to_string();
                let value = match a.get_action() {
                    ArgAction::SetTrue | ArgAction::SetFalse => {
                        Some(toml::Value::Boolean(self.matches.get_flag(id)))
                    }
                    action => self.matches.get_raw(id).map(|raw| {
                        let vals: Vec<toml::Value> = raw.map(raw_value).collect();
                        match (action, vals.len()) {
                            (ArgAction::Append, _) | (_, 0) => toml::Value::Array(vals),
                            _ => vals
                                .into_iter()
                                .next()
                                .unwrap_or(toml::Value::Array(vec![])),
                        }
                    }),
                };
                let source = if self.from_file.contains(id) {
                    Source::File
                } else {
                    match self.matches.value_source(id) {
                        Some(ValueSource::CommandLine) => Source::Flag,
                        Some(ValueSource::EnvVariable) => Source::Env,
                        _ => Source::Default,
                    }
                };
                Setting { key, value, source }
            })
            .collect()
    }

    /// The settings in force as a TOML document that berthd reads back.
    pub fn to_toml(&self) -> String {
        render(self.file.as_deref(), &self.in_force())
    }

    /// What is in force after a reload to `new`: its live settings, and
    /// this config's others (they wait for a restart).
    pub fn with_live_of(&self, new: &Config) -> String {
        let fresh = new.in_force();
        let merged: Vec<Setting> = self
            .in_force()
            .into_iter()
            .map(|s| {
                if LIVE.contains(&s.key.as_str()) {
                    fresh.iter().find(|f| f.key == s.key).cloned().unwrap_or(s)
                } else {
                    s
                }
            })
            .collect();
        render(new.file.as_deref(), &merged)
    }
}

fn render(file: Option<&Path>, settings: &[Setting]) -> String {
    {
        let mut out = format!(
            "# berthd settings in force (config file: {})\n",
            match file {
                Some(p) => p.display().to_string(),
                None => "none".to_string(),
            }
        );
        for s in settings {
            match &s.value {
                Some(v) => out.push_str(&format!("{} = {v} # {}\n", s.key, s.source.describe())),
                None => out.push_str(&format!("# {} is not set\n", s.key)),
            }
        }
        out
    }
}

impl Config {
    /// A setting's value as TOML ("" when unset).
    pub fn value_of(&self, key: &str) -> String {
        self.in_force()
            .into_iter()
            .find(|s| s.key == key)
            .and_then(|s| s.value)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    /// How `self` (the settings in force) differs from `new` (reloaded):
    /// the keys whose value changed.
    pub fn changed_keys(&self, new: &Config) -> Vec<String> {
        self.in_force()
            .into_iter()
            .zip(new.in_force())
            .filter(|(a, b)| a.value != b.value)
            .map(|(a, _)| a.key)
            .collect()
    }
}

/// A raw value as TOML: an integer when it reads as one (the file gives
/// integers and strings alike to the flag's parser, so both read back).
fn raw_value(v: &OsStr) -> toml::Value {
    let s = v.to_string_lossy();
    match s.parse::<i64>() {
        Ok(n) => toml::Value::Integer(n),
        Err(_) => toml::Value::String(s.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("berthd")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// A file in a directory of its own (tests run in parallel).
    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berthd-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn load_file(name: &str, text: &str, extra: &[&str]) -> Result<Config, String> {
        let p = file(name, text);
        let mut a = vec!["--config", p.to_str().expect("utf8")];
        a.extend_from_slice(extra);
        let r = load(&argv(&a));
        if let Some(dir) = p.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        r.map_err(|e| match e {
            LoadError::Cli(e) => e.to_string(),
            LoadError::File(s) => s,
        })
    }

    #[test]
    fn file_sets_and_flag_overrides() {
        let c = load_file(
            "a.toml",
            "root = \"/srv/b\"\nlog-max-files = 5\nlog-max-size = \"1m\"\nevents-max-age = \"12h\"\nstop-containers-on-exit = true\n",
            &["--log-max-files", "7"],
        )
        .expect("load");
        assert_eq!(c.args.root, PathBuf::from("/srv/b"));
        assert_eq!(c.args.log_max_files, 7);
        assert_eq!(c.args.log_max_size, 1 << 20);
        assert_eq!(c.args.events_max_age, Duration::from_secs(12 * 3600));
        assert!(c.args.stop_containers_on_exit);
        let f = c.in_force();
        let get = |k: &str| f.iter().find(|s| s.key == k).expect("key").clone();
        assert_eq!(get("root").source, Source::File);
        assert_eq!(get("log-max-files").source, Source::Flag);
        assert_eq!(get("log-max-files").value, Some(toml::Value::Integer(7)));
        assert_eq!(get("runtime").source, Source::Default);
        assert_eq!(get("shim").value, None);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e =
            load_file("b.toml", "root = \"/x\"\n\nlog-levle = \"debug\"\n", &[]).expect_err("typo");
        assert!(e.contains("b.toml:3:"), "{e}");
        assert!(e.contains("unknown key \"log-levle\""), "{e}");
        assert!(e.contains("did you mean \"log-level\""), "{e}");
        assert!(!e.contains('\n'), "{e}");

        let e = load_file("c.toml", "# c\nlog-max-files = 0\n", &[]).expect_err("range");
        assert!(
            e.contains("c.toml:2: key \"log-max-files\": invalid value \"0\""),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");

        let e = load_file("d.toml", "log-max-size = \"lots\"\n", &[]).expect_err("size");
        assert!(e.contains("d.toml:1: key \"log-max-size\""), "{e}");
        assert!(e.contains("is not a size"), "{e}");

        let e =
            load_file("e.toml", "\nstop-containers-on-exit = \"yes\"\n", &[]).expect_err("bool");
        assert!(
            e.contains("e.toml:2: key \"stop-containers-on-exit\": expects true or false"),
            "{e}"
        );

        let e = load_file("m.toml", "log-level = \"verbose\"\n", &[]).expect_err("level");
        assert!(
            e.contains("m.toml:1: key \"log-level\": invalid value \"verbose\""),
            "{e}"
        );

        let e = load_file("f.toml", "root = [\"/a\"]\n", &[]).expect_err("array");
        assert!(
            e.contains("f.toml:1: key \"root\": expects one value"),
            "{e}"
        );

        let e = load_file("g.toml", "root = \n", &[]).expect_err("syntax");
        assert!(e.contains("g.toml:1: not valid TOML"), "{e}");
        assert!(!e.contains('\n'), "{e}");

        let e = load_file("h.toml", "config = \"/x\"\n", &[]).expect_err("not a setting");
        assert!(e.contains("unknown key \"config\""), "{e}");
    }

    #[test]
    fn missing_files() {
        // An explicit file must exist.
        let Err(LoadError::File(e)) = load(&argv(&["--config", "/nonexistent/berthd.toml"])) else {
            panic!("a missing explicit file is an error");
        };
        assert!(e.contains("/nonexistent/berthd.toml"), "{e}");
    }

    #[test]
    fn print_config_reads_back() {
        let c = load_file(
            "i.toml",
            "events-max = 42\nruntime = \"runc\"\n",
            &["--group", "wheel"],
        )
        .expect("load");
        let text = c.to_toml();
        assert!(text.contains("events-max = 42 # file"), "{text}");
        assert!(text.contains("group = \"wheel\" # flag"), "{text}");
        assert!(text.contains("# shim is not set"), "{text}");
        let again = load_file("j.toml", &text, &[]).expect("reload printed config");
        assert_eq!(again.args.events_max, 42);
        assert_eq!(again.args.runtime, "runc");
        assert_eq!(again.args.group, "wheel");
        assert!(c.changed_keys(&again).is_empty());
    }

    #[test]
    fn changed_keys_lists_differences() {
        let a = load_file("k.toml", "log-level = \"info\"\n", &[]).expect("a");
        let b = load_file("l.toml", "log-level = \"debug\"\nroot = \"/r\"\n", &[]).expect("b");
        assert_eq!(a.changed_keys(&b), vec!["root", "log-level"]);
    }

    /// Every setting is documented and in the packaged default config.
    #[test]
    fn every_key_is_documented_and_packaged() {
        let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let doc = std::fs::read_to_string(ws.join("docs/install.md")).expect("docs/install.md");
        let pkg = std::fs::read_to_string(ws.join("packaging/berthd.toml"))
            .expect("packaging/berthd.toml");
        let cmd = Args::command();
        for a in settings(&cmd) {
            let key = a.get_long().expect("long");
            assert!(
                doc.contains(&format!("| `{key}` |")),
                "docs/install.md's config reference lacks `{key}`"
            );
            assert!(
                pkg.contains(&format!("# {key} = ")),
                "packaging/berthd.toml lacks `# {key} = ...`"
            );
        }
        for k in LIVE {
            assert!(settings(&cmd).any(|a| a.get_long() == Some(k)), "{k}");
        }
        // The packaged file, all comments, is valid and sets nothing.
        let c = load_file("pkg.toml", &pkg, &[]).expect("packaged config loads");
        assert!(c.in_force().iter().all(|s| s.source == Source::Default));
    }
}
