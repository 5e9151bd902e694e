//! The firewall rules of a bridge, made once per bridge and not per
//! container: one MASQUERADE rule for traffic leaving the bridge's subnet
//! and one FORWARD accept pair (out of the bridge; replies back into it),
//! or, for an `--internal` network, one rule accepting traffic between its
//! containers and none out. The CNI bridge plugin's `ipMasq` and the
//! `firewall` plugin made a chain or rules per container on every ADD and
//! DEL (iptables processes on the path of each run); these are made when
//! the bridge is made and removed when it goes.
//!
//! Every rule carries the comment `berth bridge <name>`, by which the
//! sweep finds the rules of bridges that are gone.

use std::collections::HashSet;
use std::process::Command;

use tracing::{debug, warn};

use crate::cidr::Cidr;

/// The comment of a bridge's rules.
fn comment(bridge: &str) -> String {
    format!("berth bridge {bridge}")
}

/// The prefix of every comment berth puts on a rule.
const COMMENT_PREFIX: &str = "berth bridge ";

#[derive(Debug, thiserror::Error)]
#[error("iptables {args}: {msg}: is iptables installed (scripts/setup.sh)?")]
pub struct FirewallError {
    args: String,
    msg: String,
}

/// One rule: its table, its chain, whether it goes first (FORWARD: ahead
/// of another engine's DROP) and its match and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    pub first: bool,
    pub spec: Vec<String>,
}

/// The rules of `bridge` with `subnet`.
pub fn bridge_rules(bridge: &str, subnet: Cidr, internal: bool) -> Vec<Rule> {
    let c = comment(bridge);
    let words = |s: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = s.iter().map(|w| w.to_string()).collect();
        v.extend(["-m", "comment", "--comment", &c].map(String::from));
        v
    };
    let mut out = Vec::new();
    if internal {
        // Its containers reach each other (a FORWARD policy of DROP with
        // br_netfilter would stop even that) and nothing else: no route
        // out, no masquerade.
        out.push(Rule {
            table: "filter",
            chain: "FORWARD",
            first: true,
            spec: words(&["-i", bridge, "-o", bridge])
                .into_iter()
                .chain(["-j", "ACCEPT"].map(String::from))
                .collect(),
        });
        return out;
    }
    let net = subnet.to_string();
    let j = |mut v: Vec<String>, t: &str| {
        v.extend(["-j".to_string(), t.to_string()]);
        v
    };
    out.push(Rule {
        table: "nat",
        chain: "POSTROUTING",
        first: false,
        spec: j(words(&["-s", &net, "!", "-d", &net]), "MASQUERADE"),
    });
    out.push(Rule {
        table: "filter",
        chain: "FORWARD",
        first: true,
        spec: j(words(&["-i", bridge]), "ACCEPT"),
    });
    out.push(Rule {
        table: "filter",
        chain: "FORWARD",
        first: true,
        spec: j(
            words(&[
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
            ]),
            "ACCEPT",
        ),
    });
    out
}

fn iptables(args: &[&str]) -> Result<String, FirewallError> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg("5")
        .args(args)
        .output()
        .map_err(|e| FirewallError {
            args: args.join(" "),
            msg: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FirewallError {
            args: args.join(" "),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn with<'a>(rule: &'a Rule, op: &'a str) -> Vec<&'a str> {
    let mut a = vec!["-t", rule.table, op, rule.chain];
    a.extend(rule.spec.iter().map(String::as_str));
    a
}

/// Makes the rules of a bridge that are not there yet (a restarted berthd
/// finds those it made before).
pub fn ensure(rules: &[Rule]) -> Result<(), FirewallError> {
    for r in rules {
        if iptables(&with(r, "-C")).is_ok() {
            continue;
        }
        let op = if r.first { "-I" } else { "-A" };
        iptables(&with(r, op))?;
    }
    Ok(())
}

/// Removes a bridge's rules (each as often as it is there).
pub fn remove(rules: &[Rule]) {
    for r in rules {
        // A bound on the loop: a rule is there once, or a few times after
        // a crash between a check and an insert.
        for _ in 0..8 {
            if iptables(&with(r, "-D")).is_err() {
                break;
            }
        }
    }
}

/// Splits a rule line of `iptables -S` into words (double quotes group).
pub(crate) fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The bridge a rule line of `iptables -S` belongs to, by its comment.
fn owner(w: &[String]) -> Option<&str> {
    let i = w.iter().position(|a| a == "--comment")?;
    w.get(i + 1)?.strip_prefix(COMMENT_PREFIX)
}

/// Removes the rules of every bridge not in `keep` (a crash between a
/// bridge's teardown and its rules', a network removed while no berthd
/// ran).
pub fn sweep(keep: &HashSet<String>) {
    for (table, chain) in [("nat", "POSTROUTING"), ("filter", "FORWARD")] {
        let Ok(out) = iptables(&["-t", table, "-S", chain]) else {
            continue;
        };
        for w in out.lines().map(words) {
            if w.first().is_none_or(|a| a != "-A") {
                continue;
            }
            let Some(bridge) = owner(&w) else {
                continue;
            };
            if keep.contains(bridge) {
                continue;
            }
            debug!(bridge, "removing a rule of a bridge that is gone");
            let mut args = vec!["-t", table, "-D"];
            args.extend(w.iter().skip(1).map(String::as_str));
            if let Err(e) = iptables(&args) {
                warn!(error = %e, "cannot remove a stray rule");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_of_a_bridge() {
        let r = bridge_rules("berth0", "10.87.0.0/16".parse().unwrap(), false);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].table, r[0].chain), ("nat", "POSTROUTING"));
        assert_eq!(
            r[0].spec.join(" "),
            "-s 10.87.0.0/16 ! -d 10.87.0.0/16 -m comment --comment berth bridge berth0 -j MASQUERADE"
        );
        assert!(r[1..].iter().all(|r| r.chain == "FORWARD" && r.first));
        let i = bridge_rules("berthx", "10.89.0.0/24".parse().unwrap(), true);
        assert_eq!(i.len(), 1);
        assert_eq!(
            i[0].spec.join(" "),
            "-i berthx -o berthx -m comment --comment berth bridge berthx -j ACCEPT"
        );
    }

    #[test]
    fn owner_from_saved_rule() {
        let w =
            words(r#"-A FORWARD -i berth0 -m comment --comment "berth bridge berth0" -j ACCEPT"#);
        assert_eq!(owner(&w), Some("berth0"));
        let w =
            words(r#"-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD"#);
        assert_eq!(owner(&w), None);
        assert_eq!(
            words(r#"-A X --comment "" -j Y"#),
            ["-A", "X", "--comment", "", "-j", "Y"]
        );
    }
}
