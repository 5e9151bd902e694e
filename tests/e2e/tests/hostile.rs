//! Hostile input through the API itself (not the CLI, which checks its own
//! flags): a tonic client of `berth.v1` sends requests no CLI would, a raw
//! codec sends bytes that are not protobuf, and a plain socket sends bytes
//! that are not HTTP/2. Each gets an error, berthd keeps serving, and its
//! root directory holds the same files before and after.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_api::v1;
use berth_e2e::*;
use bytes::{Buf, BufMut};
use hyper_util::rt::TokioIo;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Every path under `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap_or(&p).to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

async fn channel(socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://berthd.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("connect to berthd")
}

/// Sends and receives bytes as they are: no protobuf.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

fn req(rootfs: &str, args: &[&str]) -> v1::CreateRequest {
    v1::CreateRequest {
        source: Some(v1::create_request::Source::Rootfs(rootfs.to_string())),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The request fails with one of `codes`, with a short one-line message.
#[track_caller]
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, Status>, codes: &[Code]) {
    match r {
        Ok(v) => panic!("{what}: accepted: {v:?}"),
        Err(s) => {
            assert!(
                codes.contains(&s.code()),
                "{what}: {:?}: {}",
                s.code(),
                s.message()
            );
            assert!(
                !s.message().contains('\n'),
                "{what}: one line: {}",
                s.message()
            );
            assert!(
                s.message().len() < 600,
                "{what}: a short message: {}",
                s.message().len()
            );
        }
    }
}

fn hostile_requests_are_refused_and_berthd_keeps_serving(rt: Rt) {
    let mut d = Daemon::start(rt);
    let root = rootfs();
    let rootfs = root.to_str().unwrap().to_string();
    // A running container, for the requests that name one.
    let sleeper = d.run(&["-d"], &["sleep", "100"]).ok();
    let before = listing(&d.root);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let mut c = berth_api::connect(&d.socket).await.expect("connect");
        let ia = [Code::InvalidArgument];
        let mb = "x".repeat(1 << 20);

        let mut cases: Vec<(&str, v1::CreateRequest)> = Vec::new();
        let mut r = req(&rootfs, &["true"]);
        r.name = "../../etc".into();
        cases.push(("name with ../", r));
        let mut r = req(&rootfs, &["true"]);
        r.name = "a\0b".into();
        cases.push(("name with NUL", r));
        cases.push(("relative rootfs", req("rel/rootfs", &["true"])));
        cases.push(("rootfs with NUL", req("/tmp\0/x", &["true"])));
        cases.push((
            "rootfs outside any root",
            req("/nonexistent/../../", &["true"]),
        ));
        let mut r = req("", &["true"]);
        r.source = Some(v1::create_request::Source::Bundle("../bundle".into()));
        cases.push(("relative bundle", r));
        cases.push(("no source", v1::CreateRequest::default()));
        let mut r = req(&rootfs, &["true"]);
        r.env = vec![format!("BIG={mb}")];
        cases.push(("1 MB env value", r));
        cases.push(("1 MB argument", req(&rootfs, &["echo", &mb])));
        cases.push(("NUL in an argument", req(&rootfs, &["echo", "a\0b"])));
        let mut r = req(&rootfs, &["true"]);
        r.env = vec!["=x".into(), "A\0=1".into()];
        cases.push(("env without a name", r));
        let mut r = req(&rootfs, &["true"]);
        r.workdir = "relative/dir".into();
        cases.push(("relative workdir", r));
        let mut r = req(&rootfs, &["true"]);
        r.workdir = mb.clone();
        cases.push(("1 MB workdir", r));
        let mut r = req(&rootfs, &["true"]);
        r.memory = Some(-1);
        cases.push(("negative memory", r));
        let mut r = req(&rootfs, &["true"]);
        r.pids_limit = Some(-5);
        cases.push(("negative pids limit", r));
        let mut r = req(&rootfs, &["true"]);
        r.cpus = Some(-1.0);
        cases.push(("negative cpus", r));
        let mut r = req(&rootfs, &["true"]);
        r.cpus = Some(f64::NAN);
        cases.push(("NaN cpus", r));
        let mut r = req(&rootfs, &["true"]);
        r.oom_score_adj = Some(-1000);
        cases.push(("negative oom score", r));
        let mut r = req(&rootfs, &["true"]);
        r.ulimits = vec!["nofile=-3".into()];
        cases.push(("negative ulimit", r));
        let mut r = req(&rootfs, &["true"]);
        r.stop_signal = "SIGBOGUS".into();
        cases.push(("unknown stop signal", r));
        let mut r = req(&rootfs, &["true"]);
        r.restart = "sometimes".into();
        cases.push(("unknown restart policy", r));
        let mut r = req(&rootfs, &["true"]);
        r.labels = (0..50_000).map(|i| (format!("k{i}"), "v".into())).collect();
        cases.push(("50000 labels", r));
        let mut r = req(&rootfs, &["true"]);
        r.labels = HashMap::from([(mb.clone(), "v".into())]);
        cases.push(("1 MB label key", r));
        let mut r = req(&rootfs, &["true"]);
        r.labels = HashMap::from([("k".into(), "a\0b".into())]);
        cases.push(("NUL in a label", r));
        let mut r = req(&rootfs, &["true"]);
        r.devices = vec!["/dev/../etc/shadow".into()];
        cases.push(("device path with ..", r));
        let mut r = req(&rootfs, &["true"]);
        r.sysctls = HashMap::from([("kernel/../../../sys/x".into(), "1".into())]);
        cases.push(("sysctl name with a path", r));
        let mut r = req(&rootfs, &["true"]);
        r.security_opt = vec!["seccomp=/etc/shadow".into()];
        cases.push(("seccomp profile path for the daemon to read", r));
        let mut r = req(&rootfs, &["true"]);
        r.security_opt = vec![format!("seccomp={{\"defaultAction\":\"{mb}\"}}")];
        cases.push(("1 MB bad seccomp profile", r));
        let mut r = req(&rootfs, &["true"]);
        r.cap_add = vec!["CAP_EVERYTHING".into()];
        cases.push(("unknown capability", r));
        let mut r = req(&rootfs, &["true"]);
        r.hostname = "../host".into();
        cases.push(("hostname with ../", r));
        let mut r = req(&rootfs, &["true"]);
        r.user = "root\0:0".into();
        cases.push(("user with NUL", r));
        for (what, r) in cases {
            refused(what, c.create(r.clone()).await, &ia);
            refused(what, c.run_to_completion(r).await, &ia);
            c.version(v1::VersionRequest::default())
                .await
                .unwrap_or_else(|e| panic!("berthd stopped serving after {what}: {e}"));
        }

        // Bigger than any request may be: refused by the decoder.
        let mut r = req(&rootfs, &["true"]);
        r.env = (0..6).map(|i| format!("V{i}={mb}")).collect();
        refused(
            "a 6 MB request",
            c.create(r).await,
            &[
                Code::OutOfRange,
                Code::ResourceExhausted,
                Code::InvalidArgument,
            ],
        );

        // Ids, processes and signals that name nothing.
        for id in ["../../../etc/passwd", "", "\0", &mb[..4096]] {
            refused(
                "inspect of a bad id",
                c.inspect(v1::InspectRequest { id: id.into() }).await,
                &[Code::NotFound, Code::InvalidArgument],
            );
        }
        refused(
            "logs of a path as a process",
            c.logs(v1::LogsRequest {
                id: sleeper.clone(),
                process: "../../../../../../../etc/hostname".into(),
                ..Default::default()
            })
            .await,
            &[Code::NotFound],
        );
        for sig in ["SIGBOGUS", "999", "-1", "0", "RTMIN+99", &mb[..100]] {
            refused(
                "kill with an unknown signal",
                c.kill(v1::KillRequest {
                    id: sleeper.clone(),
                    signal: sig.into(),
                    ..Default::default()
                })
                .await,
                &ia,
            );
        }
        refused(
            "exec with a 1 MB env value",
            c.exec(v1::ExecRequest {
                id: sleeper.clone(),
                args: vec!["true".into()],
                env: vec![format!("BIG={mb}")],
                ..Default::default()
            })
            .await,
            &ia,
        );
        refused(
            "exec with a relative workdir",
            c.exec(v1::ExecRequest {
                id: sleeper.clone(),
                args: vec!["true".into()],
                workdir: "tmp".into(),
                ..Default::default()
            })
            .await,
            &ia,
        );
        refused(
            "wait on a path as a process",
            c.wait(v1::WaitRequest {
                id: sleeper.clone(),
                process: "../x".into(),
                removed: false,
            })
            .await,
            &[Code::NotFound],
        );

        // Not protobuf at all, on a valid HTTP/2 stream.
        let mut grpc = tonic::client::Grpc::new(channel(&d.socket).await);
        for (what, body) in [
            ("garbage bytes", vec![0xff; 64]),
            (
                "a field with a length past the end",
                vec![0x0a, 0xff, 0xff, 0xff, 0x0f, b'x'],
            ),
            ("a truncated varint", vec![0x08, 0x80]),
            (
                "invalid UTF-8 in a string field",
                vec![0x0a, 0x02, 0xc3, 0x28],
            ),
        ] {
            grpc.ready().await.expect("ready");
            let r = grpc
                .unary(
                    tonic::Request::new(body),
                    PathAndQuery::from_static("/berth.v1.Containers/Create"),
                    Raw,
                )
                .await;
            assert!(r.is_err(), "{what}: accepted");
        }
        c.version(v1::VersionRequest::default())
            .await
            .expect("serving after malformed protobuf");
    });

    // Not HTTP/2: garbage, and a preface followed by a garbage frame. Each
    // connection is closed by berthd (bounded read), the next one served.
    for bytes in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &[0xff; 200][..]].concat(),
        vec![0u8; 100_000],
    ] {
        let mut s = StdUnixStream::connect(&d.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&bytes);
        let mut sink = Vec::new();
        let r = s.read_to_end(&mut sink);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "berthd closes a garbage connection: {r:?}"
        );
    }
    assert!(d.try_exited().is_none(), "berthd is still running");
    // Still serving: a container runs, and the sleeper is untouched.
    assert_eq!(d.run(&["--rm"], &["echo", "fine"]).ok(), "fine");
    assert_eq!(d.state_of(&sleeper), "running");
    // A removed container's network namespace file is unmounted and
    // deleted off the rm path, a moment after the reply: wait for it.
    let settled = poll_until(Duration::from_secs(10), || listing(&d.root) == before);
    let after = listing(&d.root);
    assert!(settled, "berthd's root changed: {before:?} -> {after:?}");
}

both_runtimes!(hostile_requests_are_refused_and_berthd_keeps_serving);
