//! Shell completions and man pages, generated from the clap definitions
//! (`berth completion bash|zsh|fish`, the hidden `berth man DIR`), and the
//! hidden `berth __complete KIND` that lists names from the daemon for
//! them.
//!
//! clap_complete writes the static part (subcommands, flags). berth adds,
//! per shell, a hook that completes the names of containers where a
//! subcommand takes a container: every positional argument whose value
//! name is in [`KINDS`] (containers, images). Later kinds (volumes,
//! networks) are one line in [`KINDS`] and one arm in [`names`]. Only
//! top-level subcommands are hooked (`berth rmi`, not `berth image rm`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, Command};
use clap_complete::Shell;

/// Which names a positional completes, by its value name.
const KINDS: &[(&str, &str)] = &[
    ("ID", "containers"),
    ("CONTAINER", "containers"),
    ("IMAGE", "images"),
];

/// How long `__complete` may take: a shell waits for it.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);

/// A subcommand argument that completes names from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The subcommand (e.g. `rm`).
    pub sub: String,
    /// `containers`, ...
    pub kind: &'static str,
    /// Index of the argument among the subcommand's positionals.
    pub at: usize,
    /// It takes several values (`rm ID...`): every later word too.
    pub many: bool,
    /// The argument's id (zsh's generated spec names it).
    pub arg_id: String,
    /// The subcommand's options that take a value (their value is no
    /// positional).
    pub value_opts: Vec<String>,
}

fn kind_of(arg: &Arg) -> Option<&'static str> {
    let names = arg.get_value_names()?;
    let first = names.first()?.as_str();
    KINDS.iter().find(|(n, _)| *n == first).map(|(_, k)| *k)
}

fn takes_value(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Set | ArgAction::Append)
}

/// The slots of every (visible) subcommand of `cmd`.
pub fn slots(cmd: &Command) -> Vec<Slot> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let positionals: Vec<&Arg> = sub.get_positionals().collect();
        let Some((at, arg)) = positionals
            .iter()
            .enumerate()
            .find(|(_, a)| kind_of(a).is_some())
        else {
            continue;
        };
        let mut value_opts = Vec::new();
        for o in sub.get_opts().filter(|a| takes_value(a)) {
            if let Some(s) = o.get_short() {
                value_opts.push(format!("-{s}"));
            }
            if let Some(l) = o.get_long() {
                value_opts.push(format!("--{l}"));
            }
        }
        out.push(Slot {
            sub: sub.get_name().to_string(),
            kind: kind_of(arg).unwrap_or("containers"),
            at,
            many: matches!(arg.get_action(), ArgAction::Append)
                || arg.get_num_args().is_some_and(|n| n.max_values() > 1),
            arg_id: arg.get_id().as_str().to_string(),
            value_opts,
        });
    }
    out
}

/// `cmd` without its hidden subcommands (clap_complete would offer them).
pub fn visible(cmd: Command) -> Command {
    let mut out = Command::new("berth").version(env!("CARGO_PKG_VERSION"));
    if let Some(a) = cmd.get_about() {
        out = out.about(a.clone());
    }
    if let Some(a) = cmd.get_long_about() {
        out = out.long_about(a.clone());
    }
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        // --help and --version come back by themselves.
        if !matches!(a.get_id().as_str(), "help" | "version") {
            out = out.arg(a.clone());
        }
    }
    for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(s.clone());
    }
    out.subcommand_required(cmd.is_subcommand_required_set())
}

/// The completion script for `shell`.
pub fn script(shell: Shell, cmd: Command) -> String {
    let mut cmd = visible(cmd);
    cmd.build();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "berth", &mut buf);
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    let slots = slots(&cmd);
    match shell {
        Shell::Bash => text.push_str(&bash_hook(&slots)),
        Shell::Fish => text.push_str(&fish_hook(&slots)),
        Shell::Zsh => text = zsh_hook(text, &slots),
        _ => {}
    }
    text
}

fn bash_hook(slots: &[Slot]) -> String {
    let mut cases = String::new();
    for s in slots {
        cases.push_str(&format!(
            "            {}) kind={} at={} many={} valopts=\" {} \" ;;\n",
            s.sub,
            s.kind,
            s.at,
            u8::from(s.many),
            s.value_opts.join(" ")
        ));
    }
    format!(
        r#"
# berth: names from the daemon (`berth __complete KIND`) where a
# subcommand takes a container.
_berth_names() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local sub="" socket="" kind="" at=0 many=0 valopts="" n=0 i w
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        case "$w" in
        --socket) socket="${{COMP_WORDS[i+1]}}"; ((i++)); continue ;;
        --socket=*) socket="${{w#--socket=}}"; continue ;;
        esac
        if [[ -z "$sub" ]]; then
            [[ "$w" == -* ]] && continue
            sub="$w"
            case "$sub" in
{cases}            esac
            continue
        fi
        case "$w" in
        --*=*) ;;
        -*) [[ "$valopts" == *" $w "* ]] && ((i++)) ;;
        *) ((n++)) ;;
        esac
    done
    _berth "$@"
    [[ -n "$kind" && "$cur" != -* ]] || return 0
    [[ "$valopts" == *" $prev "* ]] && return 0
    if ((many)); then ((n >= at)) || return 0; else ((n == at)) || return 0; fi
    local names
    names="$(berth ${{socket:+--socket "$socket"}} __complete "$kind" 2>/dev/null)"
    COMPREPLY=($(compgen -W "$names" -- "$cur"))
    # No names: nothing, rather than file names.
    compopt +o default 2>/dev/null
    return 0
}}
if [[ "${{BASH_VERSINFO[0]}}" -eq 4 && "${{BASH_VERSINFO[1]}}" -ge 4 || "${{BASH_VERSINFO[0]}}" -gt 4 ]]; then
    complete -F _berth_names -o nosort -o bashdefault -o default berth
else
    complete -F _berth_names -o bashdefault -o default berth
fi
"#
    )
}

fn fish_hook(slots: &[Slot]) -> String {
    let mut out = String::from(
        "\n# berth: names from the daemon (`berth __complete KIND`) where a subcommand takes a container.\n",
    );
    for s in slots {
        out.push_str(&format!(
            "complete -c berth -n \"__fish_berth_using_subcommand {}\" -f -a \"(berth __complete {} 2>/dev/null)\"\n",
            s.sub, s.kind
        ));
    }
    out
}

/// Point each slot's argument spec at a function that asks the daemon,
/// and define those functions before the script's last lines call
/// `_berth`.
fn zsh_hook(text: String, slots: &[Slot]) -> String {
    let mut out = text;
    for s in slots {
        let head = format!("\n({})\n_arguments", s.sub);
        let Some(start) = out.find(&head) else {
            continue;
        };
        let end = out[start..].find("\n;;\n").map_or(out.len(), |e| start + e);
        let block = out[start..end].replace(
            &format!(":{}:_default'", s.arg_id),
            &format!(":{}:_berth_{}'", s.arg_id, s.kind),
        );
        out.replace_range(start..end, &block);
    }
    let mut kinds: Vec<&str> = slots.iter().map(|s| s.kind).collect();
    kinds.sort();
    kinds.dedup();
    let mut funcs = String::from(
        "# berth: names from the daemon (`berth __complete KIND`) where a subcommand takes a container.\n",
    );
    for k in kinds {
        funcs.push_str(&format!(
            r#"(( $+functions[_berth_{k}] )) ||
_berth_{k}() {{
    local -a names socket
    local i=${{words[(I)--socket]}}
    (( i )) && socket=(--socket "${{words[i+1]}}")
    names=(${{(f)"$(berth $socket __complete {k} 2>/dev/null)"}})
    compadd -a names
}}

"#
        ));
    }
    match out.rfind("if [ \"$funcstack[1]\" = \"_berth\" ]") {
        Some(at) => out.insert_str(at, &funcs),
        None => out.push_str(&funcs),
    }
    out
}

/// `berth __complete KIND`: the names, one a line; nothing (and success)
/// when the daemon cannot be asked, so a shell shows no error.
pub async fn names(socket: &Path, kind: &str) -> u8 {
    let list = async {
        let channel = berth_api::connect_channel(socket).await.ok()?;
        match kind {
            "images" => {
                let r = berth_api::images_client(channel)
                    .list(berth_api::v1::ListImagesRequest { all: false })
                    .await
                    .ok()?;
                // As `berth images` shows them: busybox:latest.
                Some(
                    r.into_inner()
                        .images
                        .iter()
                        .flat_map(|i| i.repo_tags.iter().map(|t| crate::format::familiar(t)))
                        .collect::<Vec<String>>(),
                )
            }
            "containers" => {
                let mut client = berth_api::ContainersClient::new(channel);
                let r = client
                    .list(berth_api::v1::ListRequest {
                        all: true,
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                Some(
                    r.into_inner()
                        .containers
                        .into_iter()
                        .map(|c| c.name)
                        .filter(|n| !n.is_empty())
                        .collect::<Vec<String>>(),
                )
            }
            _ => None,
        }
    };
    if let Ok(Some(names)) = tokio::time::timeout(LIST_TIMEOUT, list).await {
        let mut out = std::io::stdout().lock();
        for n in names {
            let _ = writeln!(out, "{n}");
        }
    }
    0
}

/// Write `berth.1` and one `berth-SUB.1` per visible subcommand into `dir`.
pub fn man_pages(cmd: Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = visible(cmd).disable_help_subcommand(true);
    cmd.build();
    let source = format!("berth {}", env!("CARGO_PKG_VERSION"));
    let page = |c: &Command| {
        clap_mangen::Man::new(c.clone())
            .source(source.clone())
            .manual("berth manual")
            .generate_to(dir)
    };
    let mut pages = vec![page(&cmd)?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push(page(sub)?);
    }
    pages.sort();
    Ok(pages)
}
