//! The image commands: pull, images, rmi, tag, history, load, save, and
//! `image …`; and the pull-on-create that `run IMAGE` does (as Docker's
//! CLI: create, and on "No such image" pull and create again).

use std::collections::HashMap;
use std::future::Future;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use berth_api::{v1, ImagesClient};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::transport::Channel;

use crate::files::write_archive;
use crate::format;
use crate::{CmdResult, CreateArgs, Failure};

pub type ImageClient = ImagesClient<Channel>;

#[derive(Args, Debug, Clone)]
pub struct PullArgs {
    /// The platform to pull, os/arch[/variant] (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print only the image's digest at the end.
    #[arg(short, long)]
    pub quiet: bool,
    /// Allow plain HTTP and unverified TLS to a registry that is not on
    /// loopback (loopback registries may always use plain HTTP).
    #[arg(long)]
    pub insecure: bool,
    /// NAME[:TAG|@DIGEST], e.g. busybox, 127.0.0.1:5000/app:1.
    pub reference: String,
}

#[derive(Args, Debug, Clone)]
pub struct LoginArgs {
    /// User name (asked for on a terminal when not given).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password or token (prefer --password-stdin: this shows in `ps`).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The registry, e.g. 127.0.0.1:5000 (default: docker.io).
    pub registry: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Also show untagged images.
    #[arg(short, long)]
    pub all: bool,
    /// Only print image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: `table`, or `json` (one object per line).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Show full image ids.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RmiArgs {
    /// Remove the tag even if containers use the image (its content stays
    /// until they are gone); with an image id, remove all its tags.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args, Debug, Clone)]
pub struct HistoryArgs {
    /// Only print the layers' image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate the output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format: `table`, or `json` (one object per line).
    #[arg(long, default_value = "table")]
    pub format: String,
    pub image: String,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// The archive to read (default: standard input).
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// The archive, as `import FILE` takes it.
    #[arg(value_name = "FILE", conflicts_with = "input")]
    pub file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct SaveArgs {
    /// Write to this file (default: standard output, unless a terminal).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show images as a JSON array.
    Inspect {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Remove images.
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Remove untagged images (all unused ones with -a), and every blob and
    /// snapshot no image needs.
    Prune {
        /// Remove every image no container uses, not only untagged ones.
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation (berth never asks; accepted for
        /// Docker's scripts).
        #[arg(short, long)]
        force: bool,
    },
    /// Fetch an image from a registry.
    Pull(PullArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Show how an image was made.
    History(HistoryArgs),
    /// Load images from an archive.
    #[command(alias = "import")]
    Load(LoadArgs),
    /// Write images to an OCI layout archive.
    Save(SaveArgs),
}

pub async fn image_cmd(images: &mut ImageClient, cmd: ImageCmd) -> CmdResult {
    match cmd {
        ImageCmd::Ls(a) => list(images, &a).await,
        ImageCmd::Inspect { images: names } => inspect(images, names).await,
        ImageCmd::Rm(a) => remove(images, &a).await,
        ImageCmd::Prune { all, force: _ } => prune(images, all).await,
        ImageCmd::Pull(a) => pull(images, &a).await,
        ImageCmd::Tag(a) => tag(images, &a).await,
        ImageCmd::History(a) => history(images, &a).await,
        ImageCmd::Load(a) => load(images, &a).await,
        ImageCmd::Save(a) => save(images, &a).await,
    }
}

/// The stored credentials for a reference's registry, to send with a pull.
/// A reference that does not parse is left for the daemon to refuse.
fn credentials_for(reference: &str) -> Result<Option<v1::RegistryAuth>, Failure> {
    let Ok(r) = berth_image::reference::Reference::parse(reference) else {
        return Ok(None);
    };
    let creds = berth_image::auth::lookup(r.registry())
        .map_err(|e| Failure::own(format!("cannot read registry credentials: {e}")))?;
    Ok(creds.map(|c| v1::RegistryAuth {
        username: c.username,
        password: c.password,
        identity_token: String::new(),
    }))
}

pub async fn login(a: &LoginArgs) -> CmdResult {
    let registry =
        berth_image::reference::normalize_registry(a.registry.as_deref().unwrap_or("docker.io"))
            .map_err(|e| Failure::own(e.to_string()))?;
    let registry = registry.as_str();
    let username = match &a.username {
        Some(u) => u.clone(),
        None if std::io::stdin().is_terminal() && !a.password_stdin => {
            eprint!("Username: ");
            let mut u = String::new();
            std::io::stdin()
                .read_line(&mut u)
                .map_err(|e| Failure::own(format!("cannot read the user name: {e}")))?;
            u.trim().to_string()
        }
        None => {
            return Err(Failure::own(
                "no user name: give -u USER (with --password-stdin, or on a terminal)",
            ))
        }
    };
    let password = match (&a.password, a.password_stdin) {
        (Some(p), _) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p.clone()
        }
        (None, true) => {
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .map_err(|e| Failure::own(format!("cannot read the password: {e}")))?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => crate::tty::read_password("Password: ")
            .map_err(|e| Failure::own(format!("cannot read the password: {e}")))?,
    };
    if username.is_empty() || password.is_empty() {
        return Err(Failure::own(
            "a user name and a password are both needed: give -u USER and --password-stdin",
        ));
    }
    let creds = berth_image::auth::Credentials::new(username, password);
    // Checked against the registry before they are kept, as Docker does.
    let client = berth_image::registry::Client::new(Default::default())
        .map_err(|e| Failure::own(format!("cannot set up the registry client: {e}")))?;
    client.set_credentials(registry, creds.clone());
    client
        .ping(registry)
        .await
        .map_err(|e| Failure::own(format!("login to {registry} failed: {e}")))?;
    berth_image::auth::login(registry, &creds)
        .map_err(|e| Failure::own(format!("cannot store the credentials: {e}")))?;
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(registry: Option<&str>) -> CmdResult {
    let registry = registry.unwrap_or("docker.io");
    let removed = berth_image::auth::logout(registry)
        .map_err(|e| Failure::own(format!("cannot remove the credentials: {e}")))?;
    if removed {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(0)
}

pub fn check_pull_policy(p: &str) -> Result<(), Failure> {
    match p {
        "missing" | "always" | "never" => Ok(()),
        other => Err(Failure::own(format!(
            "invalid --pull {other:?}: use missing, always or never"
        ))),
    }
}

/// Whether a daemon error says the image is not in the store.
fn no_such_image(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::NotFound && s.message().starts_with("No such image")
}

/// Run `op` (a create) for `req`, pulling its image first as `--pull`
/// says: `always` pulls before, `missing` pulls when the daemon answers
/// "No such image" and tries once more, `never` does neither.
pub async fn with_image<T, F, Fut>(
    images: &mut ImageClient,
    a: &CreateArgs,
    req: &v1::CreateRequest,
    op: F,
) -> Result<T, Failure>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    // A missing image is berth's own error to `run` and `create` (125,
    // as Docker), not a missing container's 1.
    let op = || async {
        op().await.map_err(|s| {
            if no_such_image(&s) {
                Failure::own(s.message())
            } else {
                Failure::from(s)
            }
        })
    };
    let Some(v1::create_request::Source::Image(reference)) = &req.source else {
        return op().await;
    };
    let pull_args = PullArgs {
        platform: a.platform.clone(),
        quiet: false,
        insecure: false,
        reference: reference.clone(),
    };
    match a.pull.as_str() {
        "always" => {
            pull_to(images, &pull_args, Output::Stderr).await?;
            op().await
        }
        "never" => op().await,
        _ => match op().await {
            Err(f) if f.message.starts_with("No such image") => {
                eprintln!("Unable to find image '{reference}' locally");
                pull_to(images, &pull_args, Output::Stderr).await?;
                op().await
            }
            r => r,
        },
    }
}

/// Where pull's report goes: a pull before a run keeps stdout for the
/// container's output, as Docker does.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    Stdout,
    Stderr,
}

pub async fn pull(images: &mut ImageClient, a: &PullArgs) -> CmdResult {
    pull_to(images, a, Output::Stdout).await
}

async fn pull_to(images: &mut ImageClient, a: &PullArgs, out: Output) -> CmdResult {
    let req = v1::PullRequest {
        reference: a.reference.clone(),
        platform: a.platform.clone().unwrap_or_default(),
        insecure: a.insecure,
        auth: credentials_for(&a.reference)?,
    };
    let mut stream = images.pull(req).await?.into_inner();
    let terminal = !a.quiet
        && match out {
            Output::Stdout => std::io::stdout().is_terminal(),
            Output::Stderr => std::io::stderr().is_terminal(),
        };
    let mut view = PullView::new(terminal, a.quiet, out);
    while let Some(msg) = stream.message().await? {
        match msg.event {
            Some(v1::pull_progress::Event::Resolved(r)) => view.resolved(&r),
            Some(v1::pull_progress::Event::Layer(l)) => view.layer(&l),
            Some(v1::pull_progress::Event::Done(d)) => {
                view.done(&d);
                return Ok(0);
            }
            None => {}
        }
    }
    Err(Failure::own(
        "the pull ended before berthd reported its result: see berthd's log",
    ))
}

/// What a pull shows: on a terminal, a bar per layer with bytes, rate and
/// ETA; otherwise one line per layer state change (no control characters).
struct PullView {
    quiet: bool,
    out: Output,
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
    /// The last status printed per layer (plain output).
    last: HashMap<String, String>,
}

impl PullView {
    fn new(terminal: bool, quiet: bool, out: Output) -> Self {
        let bars = terminal.then(|| {
            let target = match out {
                Output::Stdout => ProgressDrawTarget::stdout(),
                Output::Stderr => ProgressDrawTarget::stderr(),
            };
            (MultiProgress::with_draw_target(target), HashMap::new())
        });
        Self {
            quiet,
            out,
            bars,
            last: HashMap::new(),
        }
    }

    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        if let Some((m, _)) = &self.bars {
            let _ = m.println(s);
            return;
        }
        let _ = match self.out {
            Output::Stdout => writeln!(std::io::stdout(), "{s}"),
            Output::Stderr => writeln!(std::io::stderr(), "{s}"),
        };
    }

    fn resolved(&mut self, r: &v1::PullResolved) {
        let tag = r
            .reference
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map(|(_, t)| t)
            .unwrap_or("latest");
        // Docker names the repository without its registry.
        let repo = berth_image::reference::Reference::parse(&r.reference)
            .map(|r| r.repository().to_string())
            .unwrap_or_else(|_| format::familiar_repository(&r.reference));
        self.line(&format!("{tag}: Pulling from {repo}"));
        if let Some((m, bars)) = &mut self.bars {
            let style = ProgressStyle::with_template(
                "{prefix}: {msg:<18} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            for (digest, size) in r.layers.iter().zip(r.sizes.iter()) {
                let bar = m.add(ProgressBar::new(*size));
                bar.set_style(style.clone());
                bar.set_prefix(short(digest).to_string());
                bar.set_message("Waiting");
                bars.insert(digest.clone(), bar);
            }
        }
    }

    fn layer(&mut self, l: &v1::LayerProgress) {
        let text = berth_api::display::pull_status(&l.status);
        if let Some((_, bars)) = &self.bars {
            if let Some(bar) = bars.get(&l.digest) {
                if l.total > 0 {
                    bar.set_length(l.total);
                }
                bar.set_position(l.current);
                bar.set_message(text);
                if matches!(l.status.as_str(), "pull-complete" | "already-exists") {
                    bar.finish();
                }
            }
            return;
        }
        // Plain output: state changes only, never a line per chunk.
        if self.last.get(&l.digest).map(String::as_str) == Some(l.status.as_str()) {
            return;
        }
        self.last.insert(l.digest.clone(), l.status.clone());
        if l.status != "downloading" || l.current == 0 {
            self.line(&format!("{}: {text}", short(&l.digest)));
        }
    }

    fn done(&mut self, d: &v1::PullDone) {
        if let Some((m, bars)) = self.bars.take() {
            for bar in bars.values() {
                bar.finish();
            }
            let _ = m.clear();
        }
        if self.quiet {
            println!("{}", d.digest);
            return;
        }
        let name = format::familiar(&d.reference);
        self.line(&format!("Digest: {}", d.digest));
        if d.downloaded {
            self.line(&format!("Status: Downloaded newer image for {name}"));
        } else {
            self.line(&format!("Status: Image is up to date for {name}"));
        }
        self.line(&d.reference);
    }
}

/// The 12 hex characters Docker shows for a digest or id.
pub use berth_api::display::short_id as short;

pub async fn list(images: &mut ImageClient, a: &ListArgs) -> CmdResult {
    crate::cmd::check_format(&a.format)?;
    let resp = images
        .list(v1::ListImagesRequest { all: a.all })
        .await?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for i in &resp.images {
            if seen.insert(&i.id) {
                let id = if a.no_trunc { &i.id } else { short(&i.id) };
                let _ = writeln!(out, "{id}");
            }
        }
        return Ok(0);
    }
    if a.format == "json" {
        for i in &resp.images {
            let _ = writeln!(out, "{}", format::image_json(i));
        }
        return Ok(0);
    }
    let _ = write!(out, "{}", format::images_table(&resp.images, a.no_trunc));
    Ok(0)
}

async fn inspect(images: &mut ImageClient, names: Vec<String>) -> CmdResult {
    let mut docs = Vec::new();
    let mut code = 0;
    for name in names {
        match images
            .inspect(v1::InspectImageRequest { image: name })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                match serde_json::from_str::<serde_json::Value>(&r.json) {
                    Ok(v) => docs.push(v),
                    Err(e) => {
                        return Err(Failure::own(format!(
                            "berthd sent an image description that is not JSON: {e}"
                        )))
                    }
                }
            }
            Err(s) => {
                eprintln!("berth: {}", s.message());
                code = 1;
            }
        }
    }
    let text = serde_json::to_string_pretty(&docs).unwrap_or_else(|_| "[]".into());
    println!("{text}");
    Ok(code)
}

pub async fn remove(images: &mut ImageClient, a: &RmiArgs) -> CmdResult {
    let mut code = 0;
    for name in &a.images {
        match images
            .remove(v1::RemoveImageRequest {
                image: name.clone(),
                force: a.force,
            })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                for u in &r.untagged {
                    println!("Untagged: {}", format::familiar(u));
                }
                for d in &r.deleted {
                    println!("Deleted: {d}");
                }
            }
            Err(s) => {
                eprintln!("berth: {}", s.message());
                code = if s.code() == tonic::Code::InvalidArgument {
                    125
                } else {
                    1
                };
            }
        }
    }
    Ok(code)
}

pub async fn tag(images: &mut ImageClient, a: &TagArgs) -> CmdResult {
    images
        .tag(v1::TagImageRequest {
            source: a.source.clone(),
            target: a.target.clone(),
        })
        .await?;
    Ok(0)
}

async fn prune(images: &mut ImageClient, all: bool) -> CmdResult {
    let r = images
        .prune(v1::PruneImagesRequest { all })
        .await?
        .into_inner();
    if !r.untagged.is_empty() || !r.deleted.is_empty() {
        println!("Deleted Images:");
        for u in &r.untagged {
            println!("untagged: {}", format::familiar(u));
        }
        for d in &r.deleted {
            println!("deleted: {d}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", format::human_size(r.reclaimed));
    Ok(0)
}

pub async fn history(images: &mut ImageClient, a: &HistoryArgs) -> CmdResult {
    crate::cmd::check_format(&a.format)?;
    let r = images
        .history(v1::HistoryRequest {
            image: a.image.clone(),
        })
        .await?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for e in &r.entries {
            let id = if a.no_trunc { &e.id } else { short(&e.id) };
            let _ = writeln!(out, "{id}");
        }
        return Ok(0);
    }
    if a.format == "json" {
        for e in &r.entries {
            let _ = writeln!(out, "{}", format::history_json(e));
        }
        return Ok(0);
    }
    let _ = write!(out, "{}", format::history_table(&r.entries, a.no_trunc));
    Ok(0)
}

/// The size of each chunk streamed to and from berthd.
const CHUNK: usize = 256 * 1024;

pub async fn load(images: &mut ImageClient, a: &LoadArgs) -> CmdResult {
    let path = a.input.clone().or_else(|| a.file.clone());
    let mut reader: Box<dyn Read + Send> = match &path {
        Some(p) => Box::new(
            std::fs::File::open(p)
                .map_err(|e| Failure::own(format!("cannot open {}: {e}", p.display())))?,
        ),
        None => {
            if std::io::stdin().is_terminal() {
                return Err(Failure::own(
                    "requested load from stdin, but stdin is a terminal: give -i FILE or pipe an archive in",
                ));
            }
            Box::new(std::io::stdin())
        }
    };
    // Read on a thread: a file or a pipe, either may block.
    let (tx, rx) = tokio::sync::mpsc::channel::<v1::LoadChunk>(4);
    let (err_tx, err_rx) = tokio::sync::oneshot::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let chunk = v1::LoadChunk {
                        data: buf[..n].to_vec(),
                    };
                    if tx.blocking_send(chunk).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = err_tx.send(format!("cannot read the archive: {e}"));
                    return;
                }
            }
        }
    });
    let result = images
        .load(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    if let Ok(msg) = err_rx.await {
        return Err(Failure::own(msg));
    }
    let mut stream = result?.into_inner();
    while let Some(p) = stream.message().await? {
        if !a.quiet {
            println!("{}", p.message);
        }
    }
    Ok(0)
}

pub async fn save(images: &mut ImageClient, a: &SaveArgs) -> CmdResult {
    let request = images.save(v1::SaveRequest {
        images: a.images.clone(),
    });
    write_archive(a.output.as_deref(), request, |c| c.data).await
}
