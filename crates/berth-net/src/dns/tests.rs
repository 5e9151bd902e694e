//! The resolver on real sockets: loopback addresses 127.53.X.Y (one per
//! test, X from the pid so two runs of this binary do not meet) and high
//! ports; fake upstreams on loopback too.

use super::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::Ipv4Addr;
use std::time::Instant;

const PORT: u16 = 25353;

fn loopback(test: u8, port: u16) -> SocketAddr {
    let run = u8::try_from(std::process::id() % 200).unwrap() + 20;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 53, run, test)), port)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 89, 0, last))
}

fn member(name: &str, aliases: &[&str], addr: IpAddr) -> Member {
    Member {
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        addrs: vec![addr],
    }
}

fn config(upstreams: Vec<SocketAddr>) -> Config {
    let mut c = Config::new(Upstreams::Fixed(upstreams));
    c.attempt_timeout = Duration::from_millis(300);
    c.forward_deadline = Duration::from_millis(700);
    c
}

fn net(name: &str, listen: SocketAddr, internal: bool) -> NetworkDns {
    NetworkDns {
        name: name.into(),
        listen: vec![listen],
        internal,
    }
}

fn question(name: &str, qtype: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

/// One question over UDP; `None` if no answer came within 3 s.
async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&question(name, qtype, 0x4242), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, from) = timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    assert_eq!(from, server);
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, 0x4242);
    Some(m)
}

async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut conn = TcpStream::connect(server).await.unwrap();
    let q = question(name, qtype, 0x4343);
    let mut out = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    conn.write_all(&out).await.unwrap();
    let mut len = [0u8; 2];
    timeout(Duration::from_secs(3), conn.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    conn.read_exact(&mut buf).await.unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.metadata.id, 0x4343);
    m
}

fn a_records(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(a)) => Some(IpAddr::V4(*a)),
            _ => None,
        })
        .collect()
}

/// The addresses `name` resolves to over UDP (empty: NXDOMAIN).
async fn resolve(server: SocketAddr, name: &str) -> Vec<IpAddr> {
    let m = ask_udp(server, name, RecordType::A)
        .await
        .expect("an answer");
    match m.metadata.response_code {
        ResponseCode::NoError => a_records(&m),
        ResponseCode::NXDomain => Vec::new(),
        other => panic!("{name}: {other}"),
    }
}

/// A fake upstream nameserver (UDP and TCP on `addr`): every question gets
/// one A record, `answer`. Returns its tasks, to abort.
fn fake_upstream(addr: SocketAddr, answer: Ipv4Addr) -> Vec<AbortHandle> {
    let respond = move |bytes: &[u8]| -> Vec<u8> {
        let q = Message::from_vec(bytes).unwrap();
        let mut r = Message::response(q.metadata.id, OpCode::Query);
        r.metadata.recursion_available = true;
        r.queries = q.queries.clone();
        r.answers.push(Record::from_rdata(
            q.queries[0].name().clone(),
            30,
            RData::A(A(answer)),
        ));
        r.to_vec().unwrap()
    };
    let udp = std::net::UdpSocket::bind(addr).unwrap();
    udp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::from_std(udp).unwrap();
    let tcp = std::net::TcpListener::bind(addr).unwrap();
    tcp.set_nonblocking(true).unwrap();
    let tcp = TcpListener::from_std(tcp).unwrap();
    let u = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
            udp.send_to(&respond(&buf[..n]), peer).await.unwrap();
        }
    });
    let t = tokio::spawn(async move {
        loop {
            let (mut c, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            c.read_exact(&mut len).await.unwrap();
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            c.read_exact(&mut q).await.unwrap();
            let r = respond(&q);
            let mut out = u16::try_from(r.len()).unwrap().to_be_bytes().to_vec();
            out.extend_from_slice(&r);
            c.write_all(&out).await.unwrap();
        }
    });
    vec![u.abort_handle(), t.abort_handle()]
}

#[tokio::test]
async fn names_aliases_short_ids_case_and_network_suffix() {
    let at = loopback(1, PORT);
    let r = Resolver::new(config(vec![])).unwrap();
    r.add_network("n1", net("Net1", at, false)).unwrap();
    assert!(r.join(
        "n1",
        "c1",
        member("Web", &["www", "0123456789ab", ""], ip(2))
    ));
    for name in [
        "web.",
        "WEB.",
        "wEb",
        "www.",
        "0123456789AB.",
        "web.net1.",
        "WWW.NET1.",
    ] {
        assert_eq!(resolve(at, name).await, vec![ip(2)], "{name}");
    }
    // A member without an IPv6 address: AAAA is NODATA, not NXDOMAIN.
    let m = ask_udp(at, "web.", RecordType::AAAA).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // PTR: NAME.NETWORK.
    let m = ask_udp(at, "2.0.89.10.in-addr.arpa.", RecordType::PTR)
        .await
        .unwrap();
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data.to_string(), "web.net1.");
    // The same over TCP.
    assert_eq!(
        a_records(&ask_tcp(at, "Www.", RecordType::A).await),
        vec![ip(2)]
    );
    // A shared alias answers every member that has it.
    r.join("n1", "c2", member("web2", &["www"], ip(3)));
    assert_eq!(resolve(at, "www.").await, vec![ip(2), ip(3)]);
}

#[tokio::test]
async fn each_network_answers_its_own_members() {
    let (at1, at2) = (loopback(2, PORT), loopback(3, PORT));
    let r = Resolver::new(config(vec![])).unwrap();
    r.add_network("n1", net("front", at1, false)).unwrap();
    r.add_network("n2", net("back", at2, false)).unwrap();
    r.join("n1", "app", member("app", &[], ip(2)));
    r.join("n2", "app", member("app", &[], ip(102)));
    r.join("n2", "db", member("db", &[], ip(103)));
    assert!(!r.join("bridge", "db", member("db", &[], ip(4))));
    assert_eq!(resolve(at1, "app.").await, vec![ip(2)]);
    assert_eq!(resolve(at2, "app.").await, vec![ip(102)]);
    assert_eq!(resolve(at2, "db.").await, vec![ip(103)]);
    assert_eq!(
        resolve(at1, "db.").await,
        Vec::<IpAddr>::new(),
        "db is not on front"
    );
    r.leave_all("app");
    assert_eq!(resolve(at1, "app.").await, Vec::<IpAddr>::new());
    assert_eq!(resolve(at2, "app.").await, Vec::<IpAddr>::new());
    assert_eq!(resolve(at2, "db.").await, vec![ip(103)]);
}

#[tokio::test]
async fn join_leave_and_rename_take_effect_at_once() {
    let at = loopback(4, PORT);
    let r = Resolver::new(config(vec![])).unwrap();
    r.add_network("n1", net("n1", at, false)).unwrap();
    assert_eq!(resolve(at, "late.").await, Vec::<IpAddr>::new());
    r.join("n1", "c1", member("late", &["alias1"], ip(5)));
    assert_eq!(resolve(at, "late.").await, vec![ip(5)]);
    // A rename: the old name and alias go, the new ones come.
    r.join("n1", "c1", member("renamed", &["alias2"], ip(5)));
    assert_eq!(resolve(at, "late.").await, Vec::<IpAddr>::new());
    assert_eq!(resolve(at, "alias1.").await, Vec::<IpAddr>::new());
    assert_eq!(resolve(at, "renamed.").await, vec![ip(5)]);
    assert_eq!(resolve(at, "alias2.").await, vec![ip(5)]);
    r.leave("n1", "c1");
    assert_eq!(resolve(at, "renamed.").await, Vec::<IpAddr>::new());
    assert!(r.members("n1").is_empty());
    // Serving the network again (a restore) keeps its members.
    r.join("n1", "c2", member("kept", &[], ip(6)));
    r.add_network("n1", net("n1", at, false)).unwrap();
    assert_eq!(resolve(at, "kept.").await, vec![ip(6)]);
}

#[tokio::test]
async fn unknown_single_label_is_nxdomain_at_once() {
    let at = loopback(5, PORT);
    // An upstream that never answers: the answer must not wait for it.
    let silent = std::net::UdpSocket::bind(loopback(5, PORT + 1)).unwrap();
    let r = Resolver::new(config(vec![silent.local_addr().unwrap()])).unwrap();
    r.add_network("n1", net("n1", at, false)).unwrap();
    let t = Instant::now();
    let m = ask_udp(at, "nosuch.", RecordType::A).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn other_names_are_forwarded_to_the_upstream() {
    let at = loopback(6, PORT);
    let up = loopback(6, PORT + 1);
    let tasks = fake_upstream(up, Ipv4Addr::new(192, 0, 2, 7));
    let r = Resolver::new(config(vec![up])).unwrap();
    r.add_network("n1", net("n1", at, false)).unwrap();
    r.join("n1", "c1", member("web", &[], ip(2)));
    let want = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))];
    assert_eq!(resolve(at, "example.org.").await, want);
    assert_eq!(
        a_records(&ask_tcp(at, "example.org.", RecordType::A).await),
        want
    );
    // A member's name is still answered locally.
    assert_eq!(resolve(at, "web.").await, vec![ip(2)]);
    // An internal network forwards nothing.
    let at2 = loopback(7, PORT);
    r.add_network("n2", net("n2", at2, true)).unwrap();
    let m = ask_udp(at2, "example.org.", RecordType::A).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn upstreams_from_a_resolv_conf_read_again_when_it_changes() {
    let at = loopback(8, PORT);
    let dir = std::env::temp_dir().join(format!("berth-dns-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("resolv.conf");
    // Port 53 is what resolv.conf means: the fakes listen on it, on
    // addresses of their own.
    let (up1, up2) = (loopback(9, DNS_PORT), loopback(10, DNS_PORT));
    let mut tasks = fake_upstream(up1, Ipv4Addr::new(192, 0, 2, 1));
    tasks.extend(fake_upstream(up2, Ipv4Addr::new(192, 0, 2, 2)));
    std::fs::write(&conf, format!("search x\nnameserver {}\n", up1.ip())).unwrap();
    let mut c = config(vec![]);
    c.upstreams = Upstreams::ResolvConf(conf.clone());
    let r = Resolver::new(c).unwrap();
    r.add_network("n1", net("n1", at, false)).unwrap();
    assert_eq!(
        resolve(at, "example.org.").await,
        vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]
    );
    // A longer file: its length changes even if the mtime's grain hides it.
    std::fs::write(&conf, format!("nameserver {}\n# changed\n", up2.ip())).unwrap();
    assert_eq!(
        resolve(at, "example.org.").await,
        vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))]
    );
    for t in tasks {
        t.abort();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_silent_upstream_times_out_and_the_next_is_tried() {
    let at = loopback(11, PORT);
    let silent = std::net::UdpSocket::bind(loopback(11, PORT + 1)).unwrap();
    let silent = silent.local_addr().unwrap();
    let r = Resolver::new(config(vec![silent])).unwrap();
    r.add_network("n1", net("n1", at, false)).unwrap();
    let t = Instant::now();
    let m = ask_udp(at, "example.org.", RecordType::A).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // Silent first, then one that answers: the answer, after one attempt.
    let up = loopback(11, PORT + 2);
    let tasks = fake_upstream(up, Ipv4Addr::new(192, 0, 2, 9));
    let r2 = Resolver::new(config(vec![silent, up])).unwrap();
    let at2 = loopback(12, PORT);
    r2.add_network("n1", net("n1", at2, false)).unwrap();
    assert_eq!(
        resolve(at2, "example.org.").await,
        vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))]
    );
    // No upstream at all: SERVFAIL at once.
    let r3 = Resolver::new(config(vec![])).unwrap();
    let at3 = loopback(13, PORT);
    r3.add_network("n1", net("n1", at3, false)).unwrap();
    let t = Instant::now();
    let m = ask_udp(at3, "example.org.", RecordType::A).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(t.elapsed() < Duration::from_millis(250));
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn forwarded_questions_in_flight_are_capped() {
    let at = loopback(14, PORT);
    let silent = std::net::UdpSocket::bind(loopback(14, PORT + 1)).unwrap();
    let mut c = config(vec![silent.local_addr().unwrap()]);
    c.max_inflight = 2;
    c.attempt_timeout = Duration::from_secs(2);
    c.forward_deadline = Duration::from_secs(2);
    let r = Resolver::new(c).unwrap();
    r.add_network("n1", net("n1", at, false)).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..6u16 {
        sock.send_to(&question("example.org.", RecordType::A, i), at)
            .await
            .unwrap();
    }
    // Four are over the cap: SERVFAIL at once, long before the 2 s the
    // other two wait for.
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    for _ in 0..4 {
        let n = timeout(Duration::from_secs(1), sock.recv(&mut buf))
            .await
            .expect("SERVFAIL at once")
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }
    assert!(t.elapsed() < Duration::from_millis(800));
}

#[tokio::test]
async fn too_many_addresses_for_udp_are_truncated_and_whole_over_tcp() {
    let at = loopback(15, PORT);
    let r = Resolver::new(config(vec![])).unwrap();
    r.add_network("n1", net("n1", at, false)).unwrap();
    for i in 0..100u8 {
        r.join(
            "n1",
            &format!("c{i}"),
            member(&format!("c{i}"), &["pool"], ip(i)),
        );
    }
    let m = ask_udp(at, "pool.", RecordType::A).await.unwrap();
    assert!(m.metadata.truncation);
    assert_eq!(
        a_records(&ask_tcp(at, "pool.", RecordType::A).await).len(),
        100
    );
}

#[tokio::test]
async fn garbage_gets_no_answer_and_breaks_nothing() {
    let at = loopback(16, PORT);
    let r = Resolver::new(config(vec![])).unwrap();
    r.add_network("n1", net("n1", at, false)).unwrap();
    r.join("n1", "c1", member("web", &[], ip(2)));
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rnd = [0u8; 1500];
    for _ in 0..500 {
        getrandom::fill(&mut rnd).unwrap();
        let len = usize::from(rnd[0]) * 5 % 1500;
        sock.send_to(&rnd[..len], at).await.unwrap();
    }
    // Garbage over TCP: the connection is closed, the server goes on.
    let mut conn = TcpStream::connect(at).await.unwrap();
    conn.write_all(&[0, 40]).await.unwrap();
    conn.write_all(&rnd[..40]).await.unwrap();
    let mut b = [0u8; 1];
    let got = timeout(Duration::from_secs(3), conn.read(&mut b))
        .await
        .unwrap();
    assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    assert_eq!(resolve(at, "web.").await, vec![ip(2)]);
}

#[tokio::test]
async fn removing_a_network_closes_its_listeners() {
    let at = loopback(17, PORT);
    let r = Resolver::new(config(vec![])).unwrap();
    r.add_network("n1", net("n1", at, false)).unwrap();
    // A second listener on the same address is refused.
    let err = Resolver::new(config(vec![]))
        .unwrap()
        .add_network("n1", net("n1", at, false))
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot listen for DNS on"),
        "{err}"
    );
    assert!(r.serves("n1"));
    r.remove_network("n1");
    assert!(r.networks().is_empty());
    assert!(!r.serves("n1"));
    // The address is free again once the aborted tasks are dropped.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match std::net::UdpSocket::bind(at) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("still bound: {e}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while std::net::TcpListener::bind(at).is_err() {
        assert!(Instant::now() < deadline, "TCP still bound");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Dropping the resolver closes the rest.
    let at2 = loopback(18, PORT);
    r.add_network("n2", net("n2", at2, false)).unwrap();
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(3);
    while std::net::UdpSocket::bind(at2).is_err() {
        assert!(Instant::now() < deadline, "UDP still bound after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn networks_can_be_served_from_any_thread() {
    let at = loopback(19, PORT);
    let r = Arc::new(Resolver::new(config(vec![])).unwrap());
    let r2 = r.clone();
    // A plain thread, outside the runtime (berthd's blocking tasks are like it).
    std::thread::spawn(move || {
        r2.add_network("n1", net("n1", at, false)).unwrap();
        r2.join("n1", "c1", member("web", &[], ip(2)));
    })
    .join()
    .unwrap();
    assert_eq!(resolve(at, "web.").await, vec![ip(2)]);
}

#[test]
fn a_resolver_needs_a_runtime() {
    assert!(matches!(
        Resolver::new(config(vec![])),
        Err(DnsError::NoRuntime)
    ));
}
