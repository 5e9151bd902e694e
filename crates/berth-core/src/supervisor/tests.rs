use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::container::{Source, DEFAULT_STOP_SIGNAL};
use crate::runtime::fake::FakeRuntime;
use crate::store::MemStore;

fn spec(args: &[&str]) -> oci_spec::runtime::Spec {
    let mut spec = oci_spec::runtime::Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    spec.set_process(Some(process));
    spec
}

fn params(name: Option<&str>, args: &[&str]) -> CreateParams {
    CreateParams {
        id: crate::id::generate_id().unwrap(),
        name: name.map(String::from),
        spec: spec(args),
        config: ContainerConfig {
            source: Source::Rootfs("/tmp/rootfs".into()),
            auto_remove: false,
            labels: Default::default(),
            stop_signal: DEFAULT_STOP_SIGNAL,
            stop_timeout: 10,
            log_max_size: 0,
            log_max_files: 0,
            restart: Default::default(),
            open_stdin: false,
            health: None,
            exposed_ports: Vec::new(),
        },
    }
}

fn setup() -> (Supervisor, FakeRuntime, Arc<MemStore>) {
    let rt = FakeRuntime::new();
    let store = Arc::new(MemStore::default());
    let sup = Supervisor::new(Arc::new(rt.clone()), store.clone()).unwrap();
    (sup, rt, store)
}

async fn events_of(sup: &Supervisor, id: &str) -> Vec<(EventType, Option<i32>)> {
    let mut sub = sup.events().subscribe(0);
    let mut out = vec![];
    while let Some(ev) = sub.try_next() {
        if ev.container == id {
            out.push((ev.kind, ev.exit_code));
        }
    }
    out
}

async fn settle<F: Fn() -> bool>(f: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn lifecycle_and_event_order() {
    let (sup, rt, _) = setup();
    let id = sup.create(params(Some("web"), &["sh"])).await.unwrap();
    assert_eq!(sup.inspect("web").unwrap().state, State::Created);
    let (_, mut watch) = sup.start(&id[..8]).await.unwrap();
    assert_eq!(sup.inspect(&id).unwrap().state, State::Running);
    rt.exit(&id, ExitStatus::Exited { code: 3 });
    let exit = watch.wait(Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!(exit.status.code(), 3);
    let rec = sup.inspect(&id).unwrap();
    assert_eq!(rec.state, State::Stopped);
    assert_eq!(rec.exit.unwrap().status.code(), 3);
    sup.delete(&id, false).await.unwrap();
    assert!(matches!(sup.inspect(&id), Err(Error::NotFound(_))));
    assert_eq!(
        events_of(&sup, &id).await,
        vec![
            (EventType::Create, None),
            (EventType::Start, None),
            (EventType::Exit, Some(3)),
            (EventType::Delete, None),
        ]
    );
    assert_eq!(rt.removed(), vec![id]);
}

#[tokio::test]
async fn failed_create_leaves_nothing() {
    let (sup, rt, store) = setup();
    let err = sup
        .create(params(Some("bad"), &["/nonexistent"]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Runtime(RuntimeError {
            kind: crate::runtime::RuntimeErrorKind::CommandNotFound,
            ..
        })
    ));
    assert!(sup.list(true).is_empty());
    assert!(store.load_containers().unwrap().is_empty());
    assert!(rt.live().is_empty());
    // The name is free again.
    sup.create(params(Some("bad"), &["sh"])).await.unwrap();
}

#[tokio::test]
async fn names_are_unique_and_validated() {
    let (sup, _, _) = setup();
    sup.create(params(Some("a"), &["sh"])).await.unwrap();
    assert!(matches!(
        sup.create(params(Some("a"), &["sh"])).await,
        Err(Error::NameInUse(..))
    ));
    assert!(matches!(
        sup.create(params(Some("-bad"), &["sh"])).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn running_container_needs_force_to_remove() {
    let (sup, rt, _) = setup();
    let id = sup.create(params(None, &["sh"])).await.unwrap();
    sup.start(&id).await.unwrap();
    assert!(matches!(
        sup.delete(&id, false).await,
        Err(Error::InvalidState(_))
    ));
    sup.delete(&id, true).await.unwrap();
    assert!(rt.live().is_empty());
    let evs = events_of(&sup, &id).await;
    assert_eq!(evs[2], (EventType::Exit, Some(137)));
    assert_eq!(evs[3], (EventType::Delete, None));
}

#[tokio::test]
async fn stop_uses_signal_then_kill() {
    let (sup, rt, _) = setup();
    let id = sup.create(params(None, &["sh"])).await.unwrap();
    sup.start(&id).await.unwrap();
    let exit = sup.stop(&id, None).await.unwrap();
    assert_eq!(exit.status, ExitStatus::Signaled { signal: 15 });

    let id2 = sup.create(params(None, &["sh"])).await.unwrap();
    sup.start(&id2).await.unwrap();
    rt.ignore_sigterm(&id2);
    let exit = sup
        .stop(&id2, Some(Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(exit.status.code(), 137);
    // Already stopped is success, with the same exit.
    assert_eq!(sup.stop(&id2, None).await.unwrap().status.code(), 137);
}

/// Without a restart policy nothing reads "manually stopped" before the
/// exit, so a stop writes the record once (with the exit), not twice; with
/// a policy the flag is durable before the signal.
#[tokio::test]
async fn an_explicit_stop_writes_once_without_a_restart_policy() {
    let (sup, _rt, store) = setup();
    let mut saves = vec![];
    for policy in [
        crate::restart::RestartPolicy::No,
        crate::restart::RestartPolicy::Always,
    ] {
        let mut p = params(None, &["sh"]);
        p.config.restart = policy;
        let id = sup.create(p).await.unwrap();
        sup.start(&id).await.unwrap();
        let before = store.saves();
        let exit = sup.stop(&id, None).await.unwrap();
        assert_eq!(exit.status, ExitStatus::Signaled { signal: 15 });
        saves.push(store.saves() - before);
        // Either way the flag is in the stored record once the exit is.
        let rec = store
            .load_containers()
            .unwrap()
            .into_iter()
            .find(|r| r.id == id)
            .unwrap();
        assert!(rec.manually_stopped, "{policy:?}");
    }
    assert_eq!(
        saves[0] + 1,
        saves[1],
        "saves per stop (no, always): {saves:?}"
    );
}

#[tokio::test]
async fn auto_remove() {
    let (sup, rt, _) = setup();
    let mut p = params(None, &["sh"]);
    p.config.auto_remove = true;
    let id = sup.create(p).await.unwrap();
    let (_, mut watch) = sup.start(&id).await.unwrap();
    rt.exit(&id, ExitStatus::Exited { code: 0 });
    assert_eq!(
        watch
            .wait(Some(Duration::from_secs(5)))
            .await
            .unwrap()
            .status,
        ExitStatus::Exited { code: 0 }
    );
    let s = sup.clone();
    let id2 = id.clone();
    settle(move || s.inspect(&id2).is_err()).await;
    assert_eq!(rt.removed(), vec![id]);
}

#[tokio::test]
async fn exec_exits_come_before_the_init_exit() {
    let (sup, rt, _) = setup();
    let id = sup.create(params(None, &["sh"])).await.unwrap();
    let (_, mut watch) = sup.start(&id).await.unwrap();
    let mut process = oci_spec::runtime::Process::default();
    process.set_args(Some(vec!["true".into()]));
    let (e1, _) = sup.exec(&id, process.clone()).await.unwrap();
    let (e2, _) = sup.exec(&id, process).await.unwrap();
    rt.exit_exec(&id, &e1, 7);
    assert_eq!(sup.wait_exec(&id, &e1).await.unwrap().status.code(), 7);
    rt.exit(&id, ExitStatus::Exited { code: 0 });
    watch.wait(Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!(sup.wait_exec(&id, &e2).await.unwrap().status.code(), 137);
    assert_eq!(
        events_of(&sup, &id).await,
        vec![
            (EventType::Create, None),
            (EventType::Start, None),
            (EventType::ExecAdded, None),
            (EventType::ExecStarted, None),
            (EventType::ExecAdded, None),
            (EventType::ExecStarted, None),
            (EventType::ExecExit, Some(7)),
            (EventType::ExecExit, Some(137)),
            (EventType::Exit, Some(0)),
        ]
    );
}

#[tokio::test]
async fn pause_resume() {
    let (sup, _, _) = setup();
    let id = sup.create(params(None, &["sh"])).await.unwrap();
    assert!(sup.pause(&id).await.is_err());
    sup.start(&id).await.unwrap();
    sup.pause(&id).await.unwrap();
    assert_eq!(sup.inspect(&id).unwrap().state, State::Paused);
    assert!(sup.exec(&id, Default::default()).await.is_err());
    sup.resume(&id).await.unwrap();
    assert_eq!(sup.inspect(&id).unwrap().state, State::Running);
}

#[tokio::test]
async fn restart_of_a_stopped_container_is_a_new_run() {
    let (sup, rt, _) = setup();
    let id = sup.create(params(None, &["sh"])).await.unwrap();
    sup.start(&id).await.unwrap();
    rt.exit(&id, ExitStatus::Exited { code: 1 });
    sup.wait(&id).await.unwrap();
    let (_, mut watch) = sup.start(&id).await.unwrap();
    assert_eq!(sup.inspect(&id).unwrap().state, State::Running);
    rt.exit(&id, ExitStatus::Exited { code: 2 });
    assert_eq!(
        watch
            .wait(Some(Duration::from_secs(5)))
            .await
            .unwrap()
            .status
            .code(),
        2
    );
}

#[tokio::test]
async fn prefixes_resolve_uniquely() {
    let (sup, _, _) = setup();
    let a = sup.create(params(Some("one"), &["sh"])).await.unwrap();
    assert_eq!(sup.resolve(&a[..3]).unwrap(), a);
    assert_eq!(sup.resolve("one").unwrap(), a);
    assert!(matches!(sup.resolve("zzzz"), Err(Error::NotFound(_))));
    assert!(matches!(sup.resolve(""), Err(Error::InvalidArgument(_))));
}

#[tokio::test]
async fn restore_reports_exits_that_happened_while_away() {
    let rt = FakeRuntime::new();
    let store = Arc::new(MemStore::default());
    let (live, gone) = {
        let sup = Supervisor::new(Arc::new(rt.clone()), store.clone()).unwrap();
        let live = sup.create(params(None, &["sh"])).await.unwrap();
        sup.start(&live).await.unwrap();
        let gone = sup.create(params(None, &["sh"])).await.unwrap();
        sup.start(&gone).await.unwrap();
        (live, gone)
    };
    // The daemon is "down": the runtime loses one container.
    rt.remove(&gone).await.unwrap();
    let sup = Supervisor::new(Arc::new(rt.clone()), store.clone()).unwrap();
    sup.restore().await.unwrap();
    assert_eq!(sup.inspect(&live).unwrap().state, State::Running);
    let rec = sup.inspect(&gone).unwrap();
    assert_eq!(rec.state, State::Stopped);
    assert_eq!(rec.exit.unwrap().status.code(), -1);
    // The reconnected one is still supervised.
    rt.exit(&live, ExitStatus::Exited { code: 4 });
    assert_eq!(sup.wait(&live).await.unwrap().status.code(), 4);
    // Event seqs continued.
    let last = sup.events().last_seq();
    assert!(last >= 6, "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_containers_concurrently() {
    let (sup, rt, _) = setup();
    let mut handles = vec![];
    for i in 0..50 {
        let sup = sup.clone();
        let rt = rt.clone();
        handles.push(tokio::spawn(async move {
            let id = sup.create(params(None, &["sh"])).await.unwrap();
            let (_, mut w) = sup.start(&id).await.unwrap();
            match i % 3 {
                0 => {
                    sup.stop(&id, Some(Duration::from_millis(10)))
                        .await
                        .unwrap();
                }
                1 => sup.kill(&id, 9, false).await.unwrap(),
                _ => rt.exit(&id, ExitStatus::Exited { code: 0 }),
            }
            w.wait(Some(Duration::from_secs(10))).await.unwrap();
            sup.delete(&id, true).await.unwrap();
            id
        }));
    }
    let mut ids = vec![];
    for h in handles {
        ids.push(h.await.unwrap());
    }
    assert!(sup.list(true).is_empty());
    assert!(rt.live().is_empty());
    for id in ids {
        let evs = events_of(&sup, &id).await;
        assert_eq!(evs.iter().filter(|e| e.0 == EventType::Exit).count(), 1);
    }
}

#[tokio::test]
async fn run_to_completion_tears_down_either_way() {
    let (sup, rt, _) = setup();
    let p = params(None, &["sh"]);
    let id = p.id.clone();
    let rt2 = rt.clone();
    let id2 = id.clone();
    // The fake container exits 3 as soon as it runs.
    let exiter = tokio::spawn(async move {
        loop {
            if rt2.live().contains(&id2) {
                rt2.exit(&id2, ExitStatus::Exited { code: 3 });
                if rt2.live().is_empty() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let err = sup.run_to_completion(p, None).await.unwrap_err();
    exiter.await.unwrap();
    match err {
        Error::Failed(_, exit) => assert_eq!(exit.status.code(), 3),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err_msg_names_code(3));
    assert!(sup.list(true).is_empty());
    assert_eq!(rt.removed(), vec![id]);

    // A container that outlives its timeout is killed and removed.
    let p = params(None, &["sh"]);
    let err = sup
        .run_to_completion(p, Some(Duration::from_millis(20)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Failed(_, ref e) if e.status.code() == 137),
        "{err:?}"
    );
    assert!(sup.list(true).is_empty());
    assert!(rt.live().is_empty());
}

fn err_msg_names_code(code: i32) -> bool {
    let e = Error::Failed(
        "c".into(),
        Exit {
            status: ExitStatus::Exited { code },
            at: String::new(),
            oom_killed: false,
        },
    );
    e.to_string().contains(&format!("code {code}"))
}

#[tokio::test]
async fn restore_removes_orphans() {
    let rt = FakeRuntime::new();
    let store = Arc::new(MemStore::default());
    // A container the runtime has but no record knows (the daemon died
    // between runtime create and saving the record).
    let orphan = crate::id::generate_id().unwrap();
    rt.create(crate::runtime::CreateTask {
        id: orphan.clone(),
        spec: Arc::new(spec(&["sh"])),
        log_max_size: 0,
        log_max_files: 0,
        open_stdin: false,
    })
    .await
    .unwrap();
    let sup = Supervisor::new(Arc::new(rt.clone()), store).unwrap();
    sup.restore().await.unwrap();
    assert!(rt.live().is_empty());
    assert_eq!(rt.removed(), vec![orphan]);
}

/// Run `f` as an earlier daemon would have: on its own runtime, which is
/// shut down (all its tasks gone) before the caller goes on.
fn earlier_daemon<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn restore_reports_exec_exits_that_happened_while_away() {
    let rt = FakeRuntime::new();
    let store = Arc::new(MemStore::default());
    let (rt1, store1) = (rt.clone(), store.clone());
    let (id, e1, e2) = earlier_daemon(move || {
        Box::pin(async move {
            let sup = Supervisor::new(Arc::new(rt1), store1).unwrap();
            let id = sup.create(params(None, &["sh"])).await.unwrap();
            sup.start(&id).await.unwrap();
            let mut process = oci_spec::runtime::Process::default();
            process.set_args(Some(vec!["true".into()]));
            let (e1, _) = sup.exec(&id, process.clone()).await.unwrap();
            let (e2, _) = sup.exec(&id, process).await.unwrap();
            (id, e1, e2)
        })
    });
    // While the daemon is down, one exec exits.
    rt.exit_exec_silently(&id, &e1, 6);
    let sup = Supervisor::new(Arc::new(rt.clone()), store.clone()).unwrap();
    sup.restore().await.unwrap();
    assert_eq!(sup.wait_exec(&id, &e1).await.unwrap().status.code(), 6);
    // The other dies with the init; its exit is reported as the fake does.
    rt.exit(&id, ExitStatus::Exited { code: 0 });
    sup.wait(&id).await.unwrap();
    assert_eq!(sup.wait_exec(&id, &e2).await.unwrap().status.code(), 137);
    assert_eq!(
        events_of(&sup, &id).await,
        vec![
            (EventType::Create, None),
            (EventType::Start, None),
            (EventType::ExecAdded, None),
            (EventType::ExecStarted, None),
            (EventType::ExecAdded, None),
            (EventType::ExecStarted, None),
            (EventType::ExecExit, Some(6)),
            (EventType::ExecExit, Some(137)),
            (EventType::Exit, Some(0)),
        ]
    );
}

fn with_policy(policy: &str) -> CreateParams {
    let mut p = params(None, &["sh"]);
    p.config.restart = policy.parse().unwrap();
    p
}

/// Let the fake container's current run exit with `code` once it runs.
async fn exit_when_running(sup: &Supervisor, rt: &FakeRuntime, id: &str, code: i32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while sup.inspect(id).unwrap().state != State::Running {
        assert!(tokio::time::Instant::now() < deadline, "never ran again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rt.exit(id, ExitStatus::Exited { code });
    // Until the exit is applied (the watcher runs asynchronously).
    while sup.inspect(id).unwrap().state == State::Running {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn settled_stopped(sup: &Supervisor, id: &str) {
    // Long enough for any pending backoff (time is paused: this is instant).
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(sup.inspect(id).unwrap().state, State::Stopped);
}

#[tokio::test(start_paused = true)]
async fn on_failure_restarts_up_to_its_limit() {
    let (sup, rt, _) = setup();
    let id = sup.create(with_policy("on-failure:2")).await.unwrap();
    sup.start(&id).await.unwrap();
    for _ in 0..3 {
        exit_when_running(&sup, &rt, &id, 3).await;
    }
    settled_stopped(&sup, &id).await;
    let rec = sup.inspect(&id).unwrap();
    assert_eq!(rec.restart_count, 2);
    assert_eq!(rec.exit.unwrap().status.code(), 3);
    let k: Vec<EventType> = events_of(&sup, &id)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    use EventType::*;
    assert_eq!(
        k,
        vec![Create, Start, Exit, Restart, Start, Exit, Restart, Start, Exit]
    );
    // A clean exit is not a failure.
    let id = sup.create(with_policy("on-failure")).await.unwrap();
    sup.start(&id).await.unwrap();
    exit_when_running(&sup, &rt, &id, 0).await;
    settled_stopped(&sup, &id).await;
    assert_eq!(sup.inspect(&id).unwrap().restart_count, 0);
}

#[tokio::test(start_paused = true)]
async fn always_restarts_until_stopped_and_backs_off() {
    let (sup, rt, _) = setup();
    let id = sup.create(with_policy("always")).await.unwrap();
    sup.start(&id).await.unwrap();
    let mut starts = vec![];
    for _ in 0..4 {
        exit_when_running(&sup, &rt, &id, 0).await;
        let t0 = tokio::time::Instant::now();
        while sup.inspect(&id).unwrap().state != State::Running {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        starts.push(t0.elapsed());
    }
    // 100 ms, 200 ms, 400 ms, 800 ms (within a few ms of polling).
    for (i, d) in starts.iter().enumerate() {
        let want = crate::restart::BACKOFF_START * 2u32.pow(i as u32);
        assert!(
            *d >= want && *d < want + Duration::from_millis(50),
            "{starts:?}"
        );
    }
    // An explicit stop is never undone by the policy.
    sup.stop(&id, Some(Duration::from_millis(10)))
        .await
        .unwrap();
    settled_stopped(&sup, &id).await;
    assert!(sup.inspect(&id).unwrap().manually_stopped);
    assert!(!sup.inspect(&id).unwrap().restarting);
    // Starting it again arms the policy again.
    sup.start(&id).await.unwrap();
    exit_when_running(&sup, &rt, &id, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sup.inspect(&id).unwrap().state, State::Running);
    sup.delete(&id, true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn removal_cancels_a_pending_restart() {
    let (sup, rt, _) = setup();
    let id = sup.create(with_policy("always")).await.unwrap();
    sup.start(&id).await.unwrap();
    exit_when_running(&sup, &rt, &id, 0).await;
    // Stopped, waiting out the backoff: rm (no -f needed) cancels it.
    while sup.inspect(&id).unwrap().exit.is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(sup.inspect(&id).unwrap().restarting);
    sup.delete(&id, false).await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(rt.live().is_empty());
    assert!(sup.inspect(&id).is_err());
}

#[tokio::test]
async fn rm_and_restart_policy_do_not_mix() {
    let (sup, _, _) = setup();
    let mut p = with_policy("always");
    p.config.auto_remove = true;
    assert!(matches!(
        sup.create(p).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn every_wait_is_bounded_even_when_sigkill_fails() {
    let (sup, rt, _) = setup();
    let id = sup.create(params(None, &["sh"])).await.unwrap();
    sup.start(&id).await.unwrap();
    rt.make_unkillable(&id);
    let t0 = tokio::time::Instant::now();
    let err = sup
        .stop(&id, Some(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert_eq!(t0.elapsed(), Duration::from_secs(1) + KILL_WAIT);
    let err = sup.delete(&id, true).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    // Still there, still usable: nothing was half-removed.
    assert_eq!(sup.inspect(&id).unwrap().state, State::Running);
}

/// A stop waiting out its deadline holds no lock: a kill of the same
/// container goes through at once and ends the stop early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lock_is_held_across_a_stop_deadline() {
    let (sup, rt, _) = setup();
    let id = sup.create(params(None, &["sh"])).await.unwrap();
    sup.start(&id).await.unwrap();
    rt.ignore_sigterm(&id);
    let stopper = {
        let (sup, id) = (sup.clone(), id.clone());
        tokio::spawn(async move { sup.stop(&id, Some(Duration::from_secs(30))).await })
    };
    // Once the stop is waiting (its SIGTERM was ignored), other operations
    // on the same container still go through.
    let rt2 = rt.clone();
    let id2 = id.clone();
    settle(move || rt2.signals(&id2).contains(&15)).await;
    tokio::time::timeout(Duration::from_secs(5), sup.kill(&id, 9, false))
        .await
        .expect("kill blocked by the stop")
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(5), stopper)
        .await
        .expect("stop did not end with the kill")
        .unwrap()
        .unwrap();
    assert_eq!(exit.status.code(), 137);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_without_an_explicit_stop_and_holds_policies() {
    let (sup, rt, _) = setup();
    let a = sup.create(with_policy("unless-stopped")).await.unwrap();
    sup.start(&a).await.unwrap();
    let b = sup.create(params(None, &["sh"])).await.unwrap();
    sup.start(&b).await.unwrap();
    rt.ignore_sigterm(&b);
    assert_eq!(sup.shutdown(true).await, 2);
    for id in [&a, &b] {
        let rec = sup.inspect(id).unwrap();
        assert_eq!(rec.state, State::Stopped);
        assert!(!rec.manually_stopped, "a shutdown is not an explicit stop");
    }
    assert_eq!(sup.inspect(&b).unwrap().exit.unwrap().status.code(), 137);
    // No policy restart while the daemon goes away.
    settled_stopped(&sup, &a).await;
    assert_eq!(sup.inspect(&a).unwrap().restart_count, 0);
}

#[tokio::test(start_paused = true)]
async fn restore_resumes_a_restart_the_last_daemon_owed() {
    let rt = FakeRuntime::new();
    let store = Arc::new(MemStore::default());
    let id = {
        let sup = Supervisor::new(Arc::new(rt.clone()), store.clone()).unwrap();
        let id = sup.create(with_policy("on-failure")).await.unwrap();
        sup.start(&id).await.unwrap();
        // The daemon "dies" while the container waits out its backoff.
        sup.shutdown(false).await;
        rt.exit(&id, ExitStatus::Exited { code: 2 });
        while sup.inspect(&id).unwrap().state != State::Stopped {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        id
    };
    let mut rec = store.load_containers().unwrap().pop().unwrap();
    assert_eq!(rec.state, State::Stopped);
    rec.restarting = true;
    store.save_container(&rec).unwrap();
    let sup = Supervisor::new(Arc::new(rt.clone()), store.clone()).unwrap();
    sup.restore().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sup.inspect(&id).unwrap().state != State::Running {
        assert!(tokio::time::Instant::now() < deadline, "not restarted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sup.inspect(&id).unwrap().restart_count, 1);
    sup.delete(&id, true).await.unwrap();
}

#[tokio::test]
async fn attach_before_start_relays_both_ways() {
    use crate::runtime::{AttachInput, AttachOptions, OutputStream};
    let (sup, _rt, _store) = setup();
    let id = sup.create(params(None, &["sh"])).await.unwrap();
    let opts = AttachOptions { stdin: true };
    let (_, _watch, io) = sup
        .start_attached(&id, Some((opts, Some((24, 80)))))
        .await
        .unwrap();
    let mut io = io.unwrap();
    // The size went in before the start.
    let first = io.output.recv().await.unwrap();
    assert_eq!(first.data, b"24 80\n");
    io.input
        .send(AttachInput::Stdin(b"hello".to_vec()))
        .await
        .unwrap();
    io.input
        .send(AttachInput::Stdin(b"!err".to_vec()))
        .await
        .unwrap();
    let out = io.output.recv().await.unwrap();
    assert_eq!(
        (out.stream, out.data),
        (OutputStream::Stdout, b"hello".to_vec())
    );
    let err = io.output.recv().await.unwrap();
    assert_eq!(
        (err.stream, err.data),
        (OutputStream::Stderr, b"!ERR".to_vec())
    );
    io.input.send(AttachInput::CloseStdin).await.unwrap();
    assert!(io.output.recv().await.is_none());
}

#[tokio::test]
async fn attach_needs_a_live_process() {
    use crate::runtime::AttachOptions;
    let (sup, rt, _store) = setup();
    let id = sup.create(params(None, &["sh"])).await.unwrap();
    sup.start(&id).await.unwrap();
    let opts = AttachOptions::default();
    assert!(matches!(
        sup.attach(&id, "nope", opts).await,
        Err(Error::ProcessNotFound(..))
    ));
    let (exec_id, _, io) = sup
        .exec_attached(&id, Default::default(), Some(opts))
        .await
        .unwrap();
    assert!(io.is_some());
    assert!(sup.attach(&id, &exec_id, opts).await.is_ok());
    rt.exit(&id, ExitStatus::Exited { code: 0 });
    sup.wait(&id).await.unwrap();
    assert!(matches!(
        sup.attach(&id, crate::runtime::INIT_PROCESS, opts).await,
        Err(Error::InvalidState(_))
    ));
}
