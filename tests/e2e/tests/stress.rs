//! 50 containers, with run / exec / stop / kill / rm racing from many
//! threads: no deadlock (every command is bounded), no leak, and every exit
//! reported exactly once, in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_e2e::*;

const THREADS: usize = 10;
const PER_THREAD: usize = 5;

fn fifty_containers_at_once(rt: Rt) {
    let d = Arc::new(Daemon::start(rt));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let d = d.clone();
        handles.push(std::thread::spawn(move || {
            let mut ids = Vec::new();
            for _ in 0..PER_THREAD {
                let r = d.run(
                    &["-d"],
                    &["sh", "-c", "trap 'exit 0' TERM; sleep 100 & wait"],
                );
                ids.push(r.ok());
            }
            for (i, id) in ids.iter().enumerate() {
                let r = d.berth(&["exec", id, "sh", "-c", "exit 5"]);
                assert_eq!(r.code, 5, "{r:?}");
                match (t + i) % 3 {
                    0 => {
                        d.berth(&["stop", "-t", "1", id]).ok();
                    }
                    1 => {
                        d.berth(&["kill", id]).ok();
                    }
                    _ => {
                        d.berth(&["rm", "-f", id]).ok();
                    }
                }
            }
            for (i, id) in ids.iter().enumerate() {
                if (t + i) % 3 != 2 {
                    // kill returns before the exit is handled: wait first.
                    d.berth(&["wait", id]).ok();
                    d.berth(&["rm", id]).ok();
                }
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().expect("a worker failed"));
    }
    assert_eq!(all.len(), THREADS * PER_THREAD);
    assert_eq!(d.berth(&["ps", "-aq"]).ok(), "");
    for id in &all {
        assert_no_leftovers(&d, id, 0);
    }

    let evs = d.events_json(&[]);
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    let mut last_seq = 0;
    for v in &evs {
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(seq, last_seq + 1, "gap in the event log");
        last_seq = seq;
        per.entry(v["container"].as_str().unwrap().to_string())
            .or_default()
            .push(v["type"].as_str().unwrap().to_string());
    }
    for id in &all {
        let k = &per[id];
        assert_eq!(
            k,
            &[
                "create",
                "start",
                "exec-added",
                "exec-started",
                "exec-exit",
                "exit",
                "delete"
            ],
            "container {id}"
        );
    }
    // The daemon is still responsive.
    poll("berthd to answer", Duration::from_secs(5), || {
        (d.berth(&["ps"]).code == 0).then_some(())
    });
}

both_runtimes!(fifty_containers_at_once);
