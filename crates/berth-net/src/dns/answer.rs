//! What to do with one DNS message: answer it from the network's members,
//! refuse it, or forward it. Pure logic (no sockets), so every branch is a
//! unit test.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// The largest UDP payload berth offers in its own EDNS answers (the size
/// the DNS flag day 2020 settled on: no IP fragmentation on usual paths).
const EDNS_PAYLOAD: u16 = 1232;

/// What the network's table says about a question.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The name belongs to the network: these are all of its addresses (both
    /// families; empty is impossible, a member always has one).
    Name(Vec<IpAddr>),
    /// A name the network owns (one label, or `X.NETWORK`) that no member
    /// has: the network answers NXDOMAIN itself.
    NoSuchName,
    /// Not the network's to answer.
    Foreign,
}

/// The network's view, as the answer logic needs it.
pub(crate) trait Lookup {
    /// `qname` is the question's name, lower case, without the final dot.
    fn find_name(&self, qname: &str) -> Found;
    fn find_addr(&self, addr: IpAddr) -> Option<String>;
    /// `--internal`: nothing is forwarded.
    fn internal(&self) -> bool;
}

#[derive(Debug)]
pub(crate) enum Action {
    /// Malformed, or not a question: no answer at all.
    Drop,
    /// The encoded answer.
    Reply(Vec<u8>),
    /// Ask the upstream nameservers; `servfail` is the answer to send if they
    /// cannot be reached.
    Forward { servfail: Vec<u8> },
}

/// The question's name as the table keys it: lower case, labels joined by
/// dots, no final dot. `None` for a name no member can have (an empty or
/// dotted label).
pub(crate) fn name_key(name: &Name) -> Option<String> {
    let mut key = String::new();
    for label in name.iter() {
        if label.is_empty() || label.contains(&b'.') {
            return None;
        }
        if !key.is_empty() {
            key.push('.');
        }
        key.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    Some(key)
}

/// Decide what to do with the bytes of one message. `max_size` is what the
/// transport can carry back (UDP: 512 or the client's EDNS size; TCP: 65535);
/// a bigger answer is sent truncated (TC), so the client asks again over TCP.
pub(crate) fn handle(view: &dyn Lookup, bytes: &[u8], tcp: bool, ttl: u32) -> Action {
    let Ok(req) = Message::from_vec(bytes) else {
        return Action::Drop;
    };
    if req.metadata.message_type != MessageType::Query {
        // A response sent to a server is noise (or a reflection attempt).
        return Action::Drop;
    }
    let max_size = if tcp {
        usize::from(u16::MAX)
    } else {
        usize::from(req.max_payload().min(4096))
    };
    if req.metadata.op_code != OpCode::Query {
        return reply(error(&req, ResponseCode::NotImp), max_size);
    }
    let [q] = req.queries.as_slice() else {
        return reply(error(&req, ResponseCode::FormErr), max_size);
    };
    let servfail = || encode(&error(&req, ResponseCode::ServFail)).unwrap_or_default();
    let foreign = || {
        if view.internal() {
            // An internal network has no way out, by design: say so at once
            // instead of letting the client wait for a timeout.
            reply(error(&req, ResponseCode::Refused), max_size)
        } else {
            Action::Forward {
                servfail: servfail(),
            }
        }
    };
    if q.query_class() != DNSClass::IN {
        return foreign();
    }
    let qtype = q.query_type();
    if qtype == RecordType::PTR {
        if let Some(name) = q
            .name()
            .parse_arpa_name()
            .ok()
            .filter(|net| net.prefix_len() == net.max_prefix_len())
            .and_then(|net| view.find_addr(net.addr()))
            .and_then(|n| Name::from_ascii(format!("{n}.")).ok())
        {
            let mut resp = answer(&req, ResponseCode::NoError);
            resp.answers.push(Record::from_rdata(
                q.name().clone(),
                ttl,
                RData::PTR(PTR(name)),
            ));
            return reply(resp, max_size);
        }
        return foreign();
    }
    let Some(key) = name_key(q.name()) else {
        return foreign();
    };
    match view.find_name(&key) {
        Found::Name(addrs) => {
            let mut resp = answer(&req, ResponseCode::NoError);
            // Only A and AAAA (and ANY) have data; any other type of a
            // member's name is NODATA (NOERROR, no answer), never NXDOMAIN:
            // musl fails a whole lookup when its AAAA question gets NXDOMAIN.
            for addr in addrs {
                let rdata = match (addr, qtype) {
                    (IpAddr::V4(a), RecordType::A | RecordType::ANY) => RData::A(A(a)),
                    (IpAddr::V6(a), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(a)),
                    _ => continue,
                };
                resp.answers
                    .push(Record::from_rdata(q.name().clone(), ttl, rdata));
            }
            reply(resp, max_size)
        }
        Found::NoSuchName => reply(answer(&req, ResponseCode::NXDomain), max_size),
        Found::Foreign => foreign(),
    }
}

/// An answer from this server: the question echoed, RD and CD copied,
/// authoritative for the network's names, recursion offered (it forwards).
fn answer(req: &Message, rcode: ResponseCode) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata = Metadata::response_from_request(&req.metadata);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = rcode;
    resp.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        resp.edns = Some(edns);
    }
    resp
}

fn error(req: &Message, rcode: ResponseCode) -> Message {
    let mut resp = answer(req, rcode);
    resp.metadata.authoritative = false;
    resp
}

fn encode(msg: &Message) -> Option<Vec<u8>> {
    match msg.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::debug!(error = %e, "cannot encode a DNS answer");
            None
        }
    }
}

fn reply(mut msg: Message, max_size: usize) -> Action {
    let Some(bytes) = encode(&msg) else {
        return Action::Drop;
    };
    if bytes.len() <= max_size {
        return Action::Reply(bytes);
    }
    // Too many addresses for the transport: say so (TC) with no answers; a
    // resolver then asks again over TCP.
    msg.answers.clear();
    msg.metadata.truncation = true;
    encode(&msg).map_or(Action::Drop, Action::Reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use std::net::{Ipv4Addr, Ipv6Addr};

    struct View {
        internal: bool,
    }

    impl Lookup for View {
        fn find_name(&self, qname: &str) -> Found {
            match qname {
                "web" => Found::Name(vec![
                    IpAddr::V4(Ipv4Addr::new(10, 89, 0, 2)),
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
                ]),
                "v4only" => Found::Name(vec![IpAddr::V4(Ipv4Addr::new(10, 89, 0, 3))]),
                "many" => Found::Name(
                    (0..200u8)
                        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 89, 1, i)))
                        .collect(),
                ),
                "nosuch" => Found::NoSuchName,
                _ => Found::Foreign,
            }
        }
        fn find_addr(&self, addr: IpAddr) -> Option<String> {
            (addr == IpAddr::V4(Ipv4Addr::new(10, 89, 0, 2))).then(|| "web.net1".to_string())
        }
        fn internal(&self) -> bool {
            self.internal
        }
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    fn ask(view: &View, bytes: &[u8], tcp: bool) -> Message {
        match handle(view, bytes, tcp, 5) {
            Action::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    const OPEN: View = View { internal: false };

    #[test]
    fn a_and_aaaa_of_a_member() {
        let r = ask(&OPEN, &query("WeB.", RecordType::A), false);
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative && r.metadata.recursion_desired);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(10, 89, 0, 2))));
        let r = ask(&OPEN, &query("web", RecordType::AAAA), false);
        assert_eq!(r.answers.len(), 1);
        assert!(matches!(r.answers[0].data, RData::AAAA(_)));
        let r = ask(&OPEN, &query("web.", RecordType::ANY), false);
        assert_eq!(r.answers.len(), 2);
    }

    #[test]
    fn other_types_of_a_member_are_nodata() {
        for t in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let r = ask(&OPEN, &query("v4only.", t), false);
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
            assert!(r.answers.is_empty());
        }
    }

    #[test]
    fn the_networks_unknown_names_are_nxdomain_others_forwarded() {
        let r = ask(&OPEN, &query("nosuch.", RecordType::A), false);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(matches!(
            handle(&OPEN, &query("example.org.", RecordType::A), false, 5),
            Action::Forward { .. }
        ));
        let internal = View { internal: true };
        let r = ask(&internal, &query("example.org.", RecordType::A), false);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn ptr_of_a_member_and_forwarded_others() {
        let r = ask(
            &OPEN,
            &query("2.0.89.10.in-addr.arpa.", RecordType::PTR),
            false,
        );
        assert_eq!(r.answers.len(), 1);
        assert_eq!(
            r.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("web.net1.").unwrap()))
        );
        assert!(matches!(
            handle(
                &OPEN,
                &query("9.0.89.10.in-addr.arpa.", RecordType::PTR),
                false,
                5
            ),
            Action::Forward { .. }
        ));
        // A whole /24 is not one address.
        assert!(matches!(
            handle(
                &OPEN,
                &query("0.89.10.in-addr.arpa.", RecordType::PTR),
                false,
                5
            ),
            Action::Forward { .. }
        ));
    }

    #[test]
    fn too_big_for_udp_is_truncated_whole_over_tcp() {
        let r = ask(&OPEN, &query("many.", RecordType::A), false);
        assert!(r.metadata.truncation);
        assert!(r.answers.is_empty());
        let r = ask(&OPEN, &query("many.", RecordType::A), true);
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 200);
    }

    #[test]
    fn responses_and_malformed_are_dropped_other_opcodes_refused() {
        let mut m = Message::from_vec(&query("web.", RecordType::A)).unwrap();
        m.metadata.message_type = MessageType::Response;
        assert!(matches!(
            handle(&OPEN, &m.to_vec().unwrap(), false, 5),
            Action::Drop
        ));
        assert!(matches!(handle(&OPEN, &[0u8; 5], false, 5), Action::Drop));
        let mut m = Message::from_vec(&query("web.", RecordType::A)).unwrap();
        m.metadata.op_code = OpCode::Update;
        let r = ask(&OPEN, &m.to_vec().unwrap(), false);
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        let mut m = Message::from_vec(&query("web.", RecordType::A)).unwrap();
        m.queries.clear();
        let r = ask(&OPEN, &m.to_vec().unwrap(), false);
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    }

    /// Random bytes, and valid questions with random bytes flipped: nothing
    /// panics, and whatever is answered is a well-formed response.
    #[test]
    fn fuzz_random_and_mutated_packets() {
        let mut rnd = [0u8; 4096];
        let valid = query("web.", RecordType::A);
        for round in 0..3000 {
            getrandom::fill(&mut rnd).unwrap();
            let pkt: Vec<u8> = if round % 2 == 0 {
                let len = usize::from(rnd[0]) % 600;
                rnd[1..=len].to_vec()
            } else {
                let mut p = valid.clone();
                for i in 0..(usize::from(rnd[0]) % 6 + 1) {
                    let at = usize::from(rnd[1 + i]) % p.len();
                    p[at] = rnd[20 + i];
                }
                p
            };
            for view in [&OPEN, &View { internal: true }] {
                match handle(view, &pkt, round % 3 == 0, 5) {
                    Action::Reply(b) => {
                        let m = Message::from_vec(&b).unwrap();
                        assert_eq!(m.metadata.message_type, MessageType::Response);
                    }
                    Action::Forward { servfail } => {
                        assert!(Message::from_vec(&servfail).is_ok());
                    }
                    Action::Drop => {}
                }
            }
        }
    }

    #[test]
    fn name_keys() {
        assert_eq!(
            name_key(&Name::from_ascii("Web.NET1.").unwrap()).as_deref(),
            Some("web.net1")
        );
        assert_eq!(name_key(&Name::root()).as_deref(), Some(""));
    }
}
