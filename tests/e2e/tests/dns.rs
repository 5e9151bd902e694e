//! DNS by container name on user networks (docs/networking.md, "DNS by
//! container name"): berthd's embedded resolver, on the gateway of each
//! user network.
//!
//! Every daemon runs in a network namespace of the test's own (the
//! harness's default), so the bridges, the listeners on their gateways and
//! all the traffic stay in it; nothing is forwarded anywhere (the names
//! asked for are the network's, or single labels answered at once).

use std::time::Duration;

use berth_e2e::*;

/// `ping -c1 NAME` in container `from`: the address it resolved to, or
/// `None` if the name did not resolve ("bad address").
fn ping(d: &Daemon, from: &str, name: &str) -> Option<String> {
    let r = d.berth(&["exec", from, "ping", "-c1", "-W5", name]);
    if r.stderr.contains("bad address") {
        return None;
    }
    assert_eq!(r.code, 0, "ping {name} from {from}: {r:?}");
    // "PING web (10.89.0.2): 56 data bytes"
    let addr = r
        .stdout
        .split(['(', ')'])
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {r:?}"));
    Some(addr.to_string())
}

fn names_resolve_on_a_user_network(rt: Rt) {
    let d = Daemon::start(rt);
    d.berth(&["network", "create", "dnsnet"]).ok();
    // A small server in `web`: busybox httpd on a page of its own.
    let web = d
        .run(
            &["-d", "--name", "web", "--network", "dnsnet", "--network-alias", "www"],
            &[
                "sh",
                "-c",
                "mkdir -p /tmp/w && echo hello-from-web > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w",
            ],
        )
        .ok();
    let client = d
        .run(
            &["-d", "--name", "client", "--network", "dnsnet"],
            &["sleep", "100"],
        )
        .ok();
    let (ia, ic) = (addr_of(&d, &web), addr_of(&d, &client));
    // The gateway is the container's nameserver.
    let conf = d.berth(&["exec", &client, "cat", "/etc/resolv.conf"]).ok();
    assert!(conf.contains("nameserver "), "{conf}");
    // By name, alias, short id, NAME.NETWORK, any case; both ways.
    for name in ["web", "WWW", &web[..12], "web.dnsnet"] {
        assert_eq!(
            ping(&d, &client, name).as_deref(),
            Some(ia.as_str()),
            "{name}"
        );
    }
    assert_eq!(ping(&d, &web, "client").as_deref(), Some(ic.as_str()));
    // A TCP connection by name to the server.
    let page = poll("web's page by name", Duration::from_secs(10), || {
        let r = d.berth(&[
            "exec",
            &client,
            "sh",
            "-c",
            "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w5 web 8080",
        ]);
        r.stdout.contains("hello-from-web").then_some(r.stdout)
    });
    assert!(page.contains("200"), "{page}");
    // A third container, started later, resolves at once.
    let late = d
        .run(
            &["-d", "--name", "late", "--network", "dnsnet"],
            &["sleep", "100"],
        )
        .ok();
    let il = addr_of(&d, &late);
    assert_eq!(ping(&d, &client, "late").as_deref(), Some(il.as_str()));
    // An unknown name does not resolve.
    assert_eq!(ping(&d, &client, "nosuch"), None);
    // Once removed, it stops resolving (no poll: at once).
    d.berth(&["rm", "-f", &late]).ok();
    assert_eq!(ping(&d, &client, "late"), None);
    // A stopped container does not resolve either; started again, it does.
    d.berth(&["stop", "-t", "0", &web]).ok();
    assert_eq!(ping(&d, &client, "web"), None);
    d.berth(&["start", &web]).ok();
    assert!(ping(&d, &client, "www").is_some());
    // The default bridge resolves no names.
    let b1 = d.run(&["-d", "--name", "onbridge"], &["sleep", "100"]).ok();
    // Its nameserver is its own loopback: the question goes nowhere else.
    let b2 = d.run(&["-d", "--dns", "127.0.0.1"], &["sleep", "100"]).ok();
    assert_eq!(ping(&d, &b2, "onbridge"), None);
    assert_eq!(ping(&d, &client, "onbridge"), None);
    for id in [&web, &client, &b1, &b2] {
        d.berth(&["rm", "-f", id]).ok();
    }
    d.berth(&["network", "rm", "dnsnet"]).ok();
}

both_runtimes!(names_resolve_on_a_user_network);
