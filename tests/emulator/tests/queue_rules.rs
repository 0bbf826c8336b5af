//! The offline queue rules of `docs/queue-rules.md`, over HTTP: merging, reservation,
//! re-selection, clear, error, expiry, licence, connector scoping.

mod common;

use common::{ids, msg_id, Emu};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

const DEAL_UPDATE: &str = "ONCRMDEALUPDATE";

fn deal(id: u64) -> Value {
    json!({ "FIELDS": { "ID": id.to_string() } })
}

fn deal_msg(id: u64) -> String {
    msg_id(DEAL_UPDATE, &deal(id))
}

/// An emulator without rate limit, an admin token of `local.app`, `ONCRMDEALUPDATE` bound offline.
async fn setup() -> (Emu, String) {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let auth = emu.admin().await;
    emu.bind_offline(&auth, DEAL_UPDATE, None).await;
    (emu, auth)
}

fn row(rows: &[Value], id: u64) -> &Value {
    rows.iter()
        .find(|r| r["ID"] == json!(id.to_string()))
        .unwrap_or_else(|| panic!("row {id} not in {rows:?}"))
}

fn unix(iso: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(iso.as_str().expect("TIMESTAMP_X string"))
        .expect("TIMESTAMP_X is ISO 8601 with offset")
        .timestamp()
}

#[tokio::test]
async fn thousand_updates_of_one_deal_leave_one_row() {
    let (emu, auth) = setup().await;
    let other = emu
        .token_with(json!({ "client_id": "other.app" }))
        .await
        .access;
    let r = emu
        .call(
            "crm.deal.add",
            &other,
            json!({ "fields": { "TITLE": "d" } }),
        )
        .await;
    assert_eq!(r.ok(), &json!(1));
    for b in 0..20 {
        let cmd: Vec<String> = (0..50)
            .map(|i| format!("crm.deal.update?id=1&fields[TITLE]=v{}", b * 50 + i))
            .collect();
        let r = emu
            .call("batch", &other, json!({ "halt": 1, "cmd": cmd }))
            .await;
        assert_eq!(r.ok()["result_error"], json!([]), "{r:?}");
        assert_eq!(r.ok()["result"], json!(vec![true; 50]));
    }
    let rows = emu.queue().await;
    assert_eq!(
        rows.len(),
        1,
        "1000 updates of one deal must merge: {rows:?}"
    );
    let r = &rows[0];
    assert_eq!(r["ID"], json!("1"));
    assert_eq!(r["EVENT_NAME"], json!(DEAL_UPDATE));
    assert_eq!(r["EVENT_DATA"], deal(1));
    assert_eq!(r["MESSAGE_ID"], json!(deal_msg(1)));
    assert_eq!(r["APP_ID"], json!("local.app"));
    assert_eq!(r["CONNECTOR_ID"], json!(""));
    assert_eq!(r["PROCESS_ID"], json!(""));
    assert_eq!(r["ERROR"], json!("0"));
    assert_eq!(r["EVENT_ADDITIONAL"], json!({ "user_id": "1" }));
    let got = emu.call("crm.deal.get", &other, json!({ "id": 1 })).await;
    assert_eq!(got.ok()["TITLE"], json!("v999"));
    // The application sees the same single record.
    let list = emu.offline_list(&auth, json!({})).await;
    assert_eq!(list.body["total"], json!(1));
}

#[tokio::test]
async fn merge_updates_data_additional_and_timestamp() {
    let (emu, auth) = setup().await;
    let m = "0123456789abcdef0123456789abcdef";
    let items: Vec<Value> = (0..1000)
        .map(|n| json!({ "event": DEAL_UPDATE, "data": { "FIELDS": { "ID": "7" }, "N": n }, "message_id": m }))
        .collect();
    assert_eq!(emu.trigger(json!({ "items": items })).await, 1000);
    let rows = emu.offline_list(&auth, json!({})).await.ok().clone();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["MESSAGE_ID"], json!(m));
    assert_eq!(rows[0]["EVENT_DATA"]["N"], json!(999));
    let before = unix(&rows[0]["TIMESTAMP_X"]);

    emu.advance(120.0).await;
    let q = emu
        .trigger(json!({ "event": DEAL_UPDATE, "data": { "FIELDS": { "ID": "7" }, "N": "last" }, "message_id": m, "user_id": 5 }))
        .await;
    assert_eq!(q, 1);
    let rows = emu.queue().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["ID"], json!("1"), "the row keeps its id");
    assert_eq!(
        rows[0]["EVENT_DATA"],
        json!({ "FIELDS": { "ID": "7" }, "N": "last" })
    );
    assert_eq!(rows[0]["EVENT_ADDITIONAL"], json!({ "user_id": "5" }));
    let after = unix(&rows[0]["TIMESTAMP_X"]);
    assert!(
        (120..=122).contains(&(after - before)),
        "TIMESTAMP_X moved by {}",
        after - before
    );
}

#[tokio::test]
async fn a_change_during_processing_makes_a_new_free_row() {
    let (emu, auth) = setup().await;
    assert_eq!(emu.deal_updates([1]).await, 1);
    let first = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    let p1 = first.process_id().expect("process_id with clear=0");
    assert_eq!(p1.len(), 32);
    assert_eq!(ids(&first.events()), vec![1]);

    // The same deal changes twice while row 1 is reserved: one new free row.
    emu.deal_updates([1]).await;
    emu.deal_updates([1]).await;
    let rows = emu.queue().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(row(&rows, 1)["PROCESS_ID"], json!(p1));
    assert_eq!(row(&rows, 2)["PROCESS_ID"], json!(""));
    assert_eq!(row(&rows, 2)["MESSAGE_ID"], json!(deal_msg(1)));
    assert_eq!(row(&rows, 1)["MESSAGE_ID"], json!(deal_msg(1)));

    // A fresh get sees only the new row, under a new process id.
    let second = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    let p2 = second.process_id().unwrap();
    assert_ne!(p1, p2);
    assert_eq!(ids(&second.events()), vec![2]);
    // And the first reservation is still intact.
    let again = emu
        .offline_get(&auth, json!({ "clear": 0, "process_id": p1 }))
        .await;
    assert_eq!(ids(&again.events()), vec![1]);
    assert_eq!(again.process_id().as_deref(), Some(p1.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_gets_reserve_disjoint_sets_covering_the_queue() {
    let (emu, auth) = setup().await;
    assert_eq!(emu.deal_updates(1..=1000).await, 1000);
    let emu = Arc::new(emu);

    let get = |emu: Arc<Emu>, auth: String| async move {
        let r = emu
            .offline_get(&auth, json!({ "clear": 0, "limit": 37 }))
            .await;
        let events = r.events();
        (r.process_id().expect("process_id"), ids(&events))
    };

    // One round of 20 parallel gets: each gets a full batch of 37, no overlap.
    let round: Vec<_> = (0..20)
        .map(|_| tokio::spawn(get(emu.clone(), auth.clone())))
        .collect();
    let mut batches = Vec::new();
    for h in round {
        batches.push(h.await.unwrap());
    }
    assert!(batches.iter().all(|(_, b)| b.len() == 37), "{batches:?}");

    // Then 20 parallel workers drain the rest.
    let workers: Vec<_> = (0..20)
        .map(|_| {
            let emu = emu.clone();
            let auth = auth.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                // 1000 rows need 28 batches of 37 in all: a worker looping longer is handed
                // the same rows again.
                for _ in 0..40 {
                    let (pid, b) = get(emu.clone(), auth.clone()).await;
                    assert!(b.len() <= 37);
                    if b.is_empty() {
                        return mine;
                    }
                    mine.push((pid, b));
                }
                panic!("the queue never ran dry: rows are handed out more than once");
            })
        })
        .collect();
    for w in workers {
        batches.extend(w.await.unwrap());
    }

    let pids: HashSet<&String> = batches.iter().map(|(p, _)| p).collect();
    assert_eq!(
        pids.len(),
        batches.len(),
        "every batch has its own process id"
    );
    let all: Vec<u64> = batches.iter().flat_map(|(_, b)| b.clone()).collect();
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), 1000, "no row handed out twice");
    assert_eq!(unique, (1..=1000).collect::<BTreeSet<u64>>());

    // Every row is reserved, under the process id that returned it.
    let owner: std::collections::HashMap<u64, &String> = batches
        .iter()
        .flat_map(|(p, b)| b.iter().map(move |id| (*id, p)))
        .collect();
    let rows = emu.queue().await;
    assert_eq!(rows.len(), 1000);
    for r in &rows {
        let id: u64 = r["ID"].as_str().unwrap().parse().unwrap();
        assert_eq!(r["PROCESS_ID"].as_str(), Some(owner[&id].as_str()));
    }
}

#[tokio::test]
async fn get_with_process_id_reselects_the_reservation() {
    let (emu, auth) = setup().await;
    emu.deal_updates(1..=5).await;
    let p = emu
        .offline_get(&auth, json!({ "clear": 0, "limit": 2 }))
        .await;
    let pid = p.process_id().unwrap();
    assert_eq!(ids(&p.events()), vec![1, 2]);

    let again = emu
        .offline_get(&auth, json!({ "clear": 0, "process_id": pid }))
        .await;
    assert_eq!(again.process_id().as_deref(), Some(pid.as_str()));
    assert_eq!(ids(&again.events()), vec![1, 2]);
    let one = emu
        .offline_get(&auth, json!({ "clear": 0, "process_id": pid, "limit": 1 }))
        .await;
    assert_eq!(ids(&one.events()), vec![1]);

    // Nothing new was marked by the re-selects.
    let q = emu
        .offline_get(&auth, json!({ "clear": 0, "limit": 10 }))
        .await;
    let qid = q.process_id().unwrap();
    assert_eq!(ids(&q.events()), vec![3, 4, 5]);

    // An unknown process id, or another application, sees nothing.
    let none = emu
        .offline_get(&auth, json!({ "clear": 0, "process_id": "x".repeat(32) }))
        .await;
    assert_eq!(none.events(), Vec::<Value>::new());
    let other = emu
        .token_with(json!({ "client_id": "other.app" }))
        .await
        .access;
    let foreign = emu
        .offline_get(&other, json!({ "clear": 0, "process_id": pid }))
        .await;
    assert_eq!(foreign.events(), Vec::<Value>::new());

    // Re-select with clear=1 returns and deletes the reservation.
    let gone = emu.offline_get(&auth, json!({ "process_id": pid })).await;
    assert_eq!(gone.ok()["process_id"], Value::Null);
    assert_eq!(ids(&gone.events()), vec![1, 2]);
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![3, 4, 5]);
    assert!(rows.iter().all(|r| r["PROCESS_ID"] == json!(qid)));
}

#[tokio::test]
async fn clear_one_deletes_at_once_and_returns_no_process_id() {
    let (emu, auth) = setup().await;
    emu.deal_updates(1..=3).await;
    let r = emu.offline_get(&auth, json!({ "limit": 2 })).await;
    assert_eq!(r.ok()["process_id"], Value::Null);
    assert_eq!(ids(&r.events()), vec![1, 2]);
    assert_eq!(ids(&emu.queue().await), vec![3]);
    let empty = emu.offline_get(&auth, json!({ "clear": 1 })).await;
    assert_eq!(ids(&empty.events()), vec![3]);
    let empty = emu.offline_get(&auth, json!({})).await;
    assert_eq!(empty.ok(), &json!({ "process_id": null, "events": [] }));
    assert!(emu.queue().await.is_empty());
}

#[tokio::test]
async fn clear_by_message_id_by_id_or_all() {
    let (emu, auth) = setup().await;
    emu.deal_updates(1..=7).await;
    let p = emu
        .offline_get(&auth, json!({ "clear": 0, "limit": 6 }))
        .await;
    let pid = p.process_id().unwrap();
    assert_eq!(ids(&p.events()), vec![1, 2, 3, 4, 5, 6]);
    let clear = |params: Value| {
        let emu = &emu;
        let auth = &auth;
        async move {
            let r = emu.call("event.offline.clear", auth, params).await;
            assert_eq!(r.ok(), &json!(true), "{r:?}");
        }
    };

    // message_id wins over id.
    clear(json!({ "process_id": pid, "message_id": [deal_msg(1)], "id": [2] })).await;
    assert_eq!(ids(&emu.queue().await), vec![2, 3, 4, 5, 6, 7]);
    // By id.
    clear(json!({ "process_id": pid, "id": [2, 3] })).await;
    assert_eq!(ids(&emu.queue().await), vec![4, 5, 6, 7]);
    // Ids and message ids that do not exist, or belong to a free row, change nothing.
    clear(json!({ "process_id": pid, "id": [999] })).await;
    clear(json!({ "process_id": pid, "message_id": [deal_msg(7), "f".repeat(32)] })).await;
    clear(json!({ "process_id": "y".repeat(32) })).await;
    assert_eq!(ids(&emu.queue().await), vec![4, 5, 6, 7]);
    // Everything of the process; the free row 7 stays.
    clear(json!({ "process_id": pid })).await;
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![7]);
    assert_eq!(rows[0]["PROCESS_ID"], json!(""));
}

#[tokio::test]
async fn argument_checks() {
    let (emu, auth) = setup().await;
    emu.deal_updates(1..=3).await;
    let pid = emu
        .offline_get(&auth, json!({ "clear": 0, "limit": 1 }))
        .await
        .process_id()
        .unwrap();
    let arg_err = |r: common::Resp, param: &str| {
        r.err(400, "ERROR_ARGUMENT");
        let d = r.body["error_description"].as_str().unwrap();
        assert!(d.contains(param), "{d:?} should name {param}");
    };
    for bad in [json!(0), json!(-1), json!("abc"), json!(1.5), json!("2x")] {
        let r = emu
            .offline_get(&auth, json!({ "clear": 0, "limit": bad }))
            .await;
        arg_err(r, "limit");
    }
    // No upper bound on limit.
    let big = emu.offline_list(&auth, json!({})).await;
    assert_eq!(big.body["total"], json!(3));
    let r = emu
        .offline_get(&auth, json!({ "clear": 0, "limit": "1000" }))
        .await;
    assert_eq!(ids(&r.events()), vec![2, 3]);

    // clear: process_id required (an empty one is not missing: see below); message_id an array of 32-char strings; id positive ints.
    arg_err(
        emu.call("event.offline.clear", &auth, json!({})).await,
        "process_id",
    );
    for bad in [
        json!(["short"]),
        json!([deal_msg(1) + "0"]),
        json!("a-single-string"),
        json!([1]),
    ] {
        let r = emu
            .call(
                "event.offline.clear",
                &auth,
                json!({ "process_id": pid, "message_id": bad }),
            )
            .await;
        arg_err(r, "message_id");
    }
    for bad in [
        json!(["abc"]),
        json!([0]),
        json!([-3]),
        json!("5"),
        json!([1.5]),
    ] {
        let r = emu
            .call(
                "event.offline.clear",
                &auth,
                json!({ "process_id": pid, "id": bad }),
            )
            .await;
        arg_err(r, "id");
    }

    // error: process_id and message_id required, message_id an array.
    arg_err(
        emu.call(
            "event.offline.error",
            &auth,
            json!({ "message_id": [deal_msg(1)] }),
        )
        .await,
        "process_id",
    );
    arg_err(
        emu.call("event.offline.error", &auth, json!({ "process_id": pid }))
            .await,
        "message_id",
    );
    arg_err(
        emu.call(
            "event.offline.error",
            &auth,
            json!({ "process_id": pid, "message_id": "abc" }),
        )
        .await,
        "message_id",
    );
    // An empty array does nothing.
    let r = emu
        .call(
            "event.offline.error",
            &auth,
            json!({ "process_id": pid, "message_id": [] }),
        )
        .await;
    assert_eq!(r.ok(), &json!(true));

    // None of the refused calls changed the queue.
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![1, 2, 3]);
    assert_eq!(row(&rows, 1)["PROCESS_ID"], json!(pid));
    assert!(rows.iter().all(|r| r["ERROR"] == json!("0")));
}

#[tokio::test]
async fn error_marks_own_rows_deletes_others_and_leaves_error_rows() {
    let (emu, auth) = setup().await;
    emu.deal_updates(1..=3).await; // rows 1..3
    let p = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    let pid = p.process_id().unwrap();
    assert_eq!(ids(&p.events()), vec![1, 2, 3]);
    emu.deal_updates([2]).await; // row 4: a free duplicate of deal 2
    emu.deal_updates([5]).await; // row 5
    let q = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    assert!(q.process_id().is_some());
    assert_eq!(ids(&q.events()), vec![4, 5]);
    emu.deal_updates([2]).await; // row 6: free again while 2 and 4 are reserved

    let fail = |pid: String, msgs: Vec<String>| {
        let emu = &emu;
        let auth = &auth;
        async move {
            let r = emu
                .call(
                    "event.offline.error",
                    auth,
                    json!({ "process_id": pid, "message_id": msgs }),
                )
                .await;
            assert_eq!(r.ok(), &json!(true), "{r:?}");
        }
    };
    // Deals 1, 2 and 5 fail in process P. Deal 5 is reserved by Q: deleted.
    fail(pid.clone(), vec![deal_msg(1), deal_msg(2), deal_msg(5)]).await;
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![1, 2, 3], "{rows:?}");
    for id in [1, 2] {
        assert_eq!(row(&rows, id)["ERROR"], json!("1"));
        assert_eq!(row(&rows, id)["PROCESS_ID"], json!(""));
    }
    assert_eq!(row(&rows, 3)["ERROR"], json!("0"));
    assert_eq!(row(&rows, 3)["PROCESS_ID"], json!(pid));

    // A free ERROR=1 row absorbs new changes of its object and stays an error record.
    let before = row(&rows, 2)["TIMESTAMP_X"].clone();
    emu.advance(5.0).await;
    emu.deal_updates([2]).await;
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![1, 2, 3]);
    assert_eq!(row(&rows, 2)["ERROR"], json!("1"));
    assert!(unix(&row(&rows, 2)["TIMESTAMP_X"]) >= unix(&before) + 5);

    // Failing an object whose only row is a free error record changes nothing.
    fail(pid.clone(), vec![deal_msg(2)]).await;
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![1, 2, 3]);
    assert_eq!(row(&rows, 2)["ERROR"], json!("1"));
    assert_eq!(row(&rows, 2)["PROCESS_ID"], json!(""));

    // error=0 gets do not see error rows; error=1 gets see only them.
    let plain = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    assert_eq!(plain.events(), Vec::<Value>::new());
    let e = emu
        .offline_get(&auth, json!({ "clear": 0, "error": 1 }))
        .await;
    let eid = e.process_id().unwrap();
    assert_eq!(ids(&e.events()), vec![1, 2]);
    // list shows them with ERROR "1".
    let list = emu
        .offline_list(&auth, json!({ "filter": { "ERROR": 1 } }))
        .await;
    assert_eq!(ids(list.ok().as_array().unwrap()), vec![1, 2]);

    // Failing an error record again leaves it untouched: still reserved under E.
    fail(eid.clone(), vec![deal_msg(1)]).await;
    let rows = emu.queue().await;
    assert_eq!(row(&rows, 1)["ERROR"], json!("1"));
    assert_eq!(row(&rows, 1)["PROCESS_ID"], json!(eid));
    // Re-select works in the error scope only.
    let again = emu
        .offline_get(&auth, json!({ "clear": 0, "error": 1, "process_id": eid }))
        .await;
    assert_eq!(ids(&again.events()), vec![1, 2]);
    let wrong_scope = emu
        .offline_get(&auth, json!({ "clear": 0, "process_id": eid }))
        .await;
    assert_eq!(wrong_scope.events(), Vec::<Value>::new());

    // The error records are cleared like any reservation.
    let r = emu
        .call("event.offline.clear", &auth, json!({ "process_id": eid }))
        .await;
    assert_eq!(r.ok(), &json!(true));
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![3]);
}

#[tokio::test]
async fn error_get_with_clear_deletes_error_rows() {
    let (emu, auth) = setup().await;
    emu.deal_updates(1..=2).await;
    let pid = emu
        .offline_get(&auth, json!({ "clear": 0 }))
        .await
        .process_id()
        .unwrap();
    let r = emu
        .call(
            "event.offline.error",
            &auth,
            json!({ "process_id": pid, "message_id": [deal_msg(2)] }),
        )
        .await;
    r.ok();
    let e = emu.offline_get(&auth, json!({ "error": "1" })).await;
    assert_eq!(e.ok()["process_id"], Value::Null);
    assert_eq!(ids(&e.events()), vec![2]);
    assert_eq!(e.events()[0]["EVENT_DATA"], deal(2));
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![1]);
    assert_eq!(rows[0]["PROCESS_ID"], json!(pid));
}

/// Deals 1..=6 (rows 1..6) at t0, leads 1..=4 (rows 7..10) 100 s later.
async fn mixed_queue() -> (Emu, String) {
    let (emu, auth) = setup().await;
    emu.bind_offline(&auth, "ONCRMLEADADD", None).await;
    emu.deal_updates(1..=6).await;
    emu.advance(100.0).await;
    let items: Vec<Value> = (1..=4)
        .map(|i| json!({ "event": "ONCRMLEADADD", "data": { "FIELDS": { "ID": i.to_string() } } }))
        .collect();
    assert_eq!(emu.trigger(json!({ "items": items })).await, 4);
    (emu, auth)
}

#[tokio::test]
async fn list_filter_operators_and_order() {
    let (emu, auth) = mixed_queue().await;
    let rows = emu.queue().await;
    let ts7 = row(&rows, 7)["TIMESTAMP_X"].clone();
    let ts7_utc = chrono::DateTime::parse_from_rfc3339(ts7.as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        .to_rfc3339();
    let cases: Vec<(Value, Vec<u64>)> = vec![
        (json!({ ">ID": 5 }), vec![6, 7, 8, 9, 10]),
        (json!({ ">=ID": "5" }), vec![5, 6, 7, 8, 9, 10]),
        (json!({ "<ID": 3 }), vec![1, 2]),
        (json!({ "<=ID": 3 }), vec![1, 2, 3]),
        (json!({ "=ID": 4 }), vec![4]),
        (json!({ "ID": 4 }), vec![4]),
        (json!({ "!ID": 4 }), vec![1, 2, 3, 5, 6, 7, 8, 9, 10]),
        (json!({ "!=ID": 4 }), vec![1, 2, 3, 5, 6, 7, 8, 9, 10]),
        (json!({ "=ID": [2, 3] }), vec![2, 3]),
        (json!({ ">ID": 2, "<ID": 5 }), vec![3, 4]),
        (json!({ "EVENT_NAME": "ONCRMLEADADD" }), vec![7, 8, 9, 10]),
        (
            json!({ "!EVENT_NAME": "ONCRMLEADADD" }),
            vec![1, 2, 3, 4, 5, 6],
        ),
        (json!({ "MESSAGE_ID": deal_msg(3) }), vec![3]),
        (json!({ ">=TIMESTAMP_X": ts7 }), vec![7, 8, 9, 10]),
        (json!({ "<TIMESTAMP_X": ts7_utc }), vec![1, 2, 3, 4, 5, 6]),
        (json!({ "PROCESS_ID": "" }), (1..=10).collect()),
        (json!({ "ERROR": 0 }), (1..=10).collect()),
        (json!({ "ERROR": 1 }), vec![]),
    ];
    for (filter, want) in cases {
        let r = emu
            .offline_list(&auth, json!({ "filter": filter.clone() }))
            .await;
        assert_eq!(
            ids(r.ok().as_array().unwrap()),
            want,
            "filter {filter} -> {r:?}"
        );
        assert_eq!(r.body["total"], json!(want.len()), "filter {filter}");
    }
    let desc = emu
        .offline_list(&auth, json!({ "order": { "ID": "DESC" } }))
        .await;
    assert_eq!(
        ids(desc.ok().as_array().unwrap()),
        vec![10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    );
    let by_name = emu
        .offline_list(
            &auth,
            json!({ "order": { "EVENT_NAME": "ASC", "ID": "DESC" } }),
        )
        .await;
    // ONCRMDEALUPDATE sorts before ONCRMLEADADD; within a name, ID descending.
    assert_eq!(
        ids(by_name.ok().as_array().unwrap()),
        vec![6, 5, 4, 3, 2, 1, 10, 9, 8, 7]
    );
}

#[tokio::test]
async fn get_filter_and_order_select_what_is_reserved() {
    let (emu, auth) = mixed_queue().await;
    let leads = emu
        .offline_get(
            &auth,
            json!({ "clear": 0, "filter": { "EVENT_NAME": "ONCRMLEADADD" } }),
        )
        .await;
    assert_eq!(ids(&leads.events()), vec![7, 8, 9, 10]);
    let mid = emu
        .offline_get(
            &auth,
            json!({ "clear": 0, "filter": { ">ID": 2, "<=ID": 4 } }),
        )
        .await;
    assert_eq!(ids(&mid.events()), vec![3, 4]);
    let desc = emu
        .offline_get(
            &auth,
            json!({ "clear": 0, "order": { "ID": "DESC" }, "limit": 2 }),
        )
        .await;
    assert_eq!(ids(&desc.events()), vec![6, 5]);
    let ts = emu
        .offline_get(
            &auth,
            json!({ "clear": 0, "order": { "TIMESTAMP_X": "DESC" }, "limit": 1 }),
        )
        .await;
    // Rows 1 and 2 share their timestamp; either may come first under TIMESTAMP_X DESC alone.
    let got = ids(&ts.events());
    assert!(got == vec![1] || got == vec![2], "{got:?}");
    let rest = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    assert_eq!(ids(&rest.events()).len(), 1);
    let rows = emu.queue().await;
    assert!(rows.iter().all(|r| r["PROCESS_ID"] != json!("")));
}

#[tokio::test]
async fn default_get_order_is_timestamp_then_id() {
    let (emu, auth) = setup().await;
    emu.deal_updates([1, 2]).await; // rows 1, 2 at t0
    emu.advance(10.0).await;
    emu.deal_updates([3]).await; // row 3 at t0+10
    emu.advance(10.0).await;
    emu.deal_updates([1]).await; // row 1 merged: now the newest
    let r = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    assert_eq!(ids(&r.events()), vec![2, 3, 1]);
}

#[tokio::test]
async fn field_and_operator_whitelists() {
    let (emu, auth) = mixed_queue().await;
    let refused_get = [
        json!({ "filter": { "PROCESS_ID": "" } }),
        json!({ "filter": { "ERROR": 1 } }),
        json!({ "filter": { "APP_ID": "local.app" } }),
        json!({ "filter": { "CONNECTOR_ID": "" } }),
        json!({ "filter": { "EVENT_DATA": "x" } }),
        json!({ "filter": { "%EVENT_NAME": "LEAD" } }),
        json!({ "filter": { "><ID": [1, 3] } }),
        json!({ "filter": { "?ID": 1 } }),
        json!({ "filter": { ">ID": [1, 2] } }),
        json!({ "filter": { "ID": "abc" } }),
        json!({ "filter": { ">TIMESTAMP_X": "yesterday" } }),
        json!({ "order": { "PROCESS_ID": "ASC" } }),
        json!({ "order": { "ERROR": "DESC" } }),
        json!({ "order": { "ID": "UP" } }),
    ];
    for p in refused_get {
        let mut params = p.clone();
        params["clear"] = json!(0);
        let r = emu.offline_get(&auth, params).await;
        r.err(400, "ERROR_ARGUMENT");
        let d = r.body["error_description"].as_str().unwrap();
        assert!(
            d.contains("filter") || d.contains("order"),
            "{p}: {d:?} should name the argument"
        );
    }
    // Nothing was reserved by the refused calls.
    assert!(emu
        .queue()
        .await
        .iter()
        .all(|r| r["PROCESS_ID"] == json!("")));

    let refused_list = [
        json!({ "filter": { "APP_ID": "local.app" } }),
        json!({ "filter": { "CONNECTOR_ID": "" } }),
        json!({ "filter": { "%EVENT_NAME": "LEAD" } }),
        json!({ "order": { "EVENT_DATA": "ASC" } }),
    ];
    for p in refused_list {
        emu.offline_list(&auth, p).await.err(400, "ERROR_ARGUMENT");
    }
    let ok = emu
        .offline_list(
            &auth,
            json!({ "filter": { "PROCESS_ID": "", "ERROR": 0 }, "order": { "ERROR": "DESC", "PROCESS_ID": "ASC", "ID": "ASC" } }),
        )
        .await;
    assert_eq!(
        ids(ok.ok().as_array().unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn list_pages_of_fifty_with_total_and_next() {
    let (emu, auth) = setup().await;
    emu.deal_updates(1..=120).await;
    let page = |start: Option<u64>| {
        let emu = &emu;
        let auth = &auth;
        async move {
            let p = match start {
                Some(s) => json!({ "start": s }),
                None => json!({}),
            };
            emu.offline_list(auth, p).await
        }
    };
    let p0 = page(None).await;
    assert_eq!(
        ids(p0.ok().as_array().unwrap()),
        (1..=50).collect::<Vec<_>>()
    );
    assert_eq!(p0.body["total"], json!(120));
    assert_eq!(p0.body["next"], json!(50));
    assert!(p0.body.get("process_id").is_none());
    assert!(p0.body["time"].is_object());
    let p1 = page(Some(50)).await;
    assert_eq!(
        ids(p1.ok().as_array().unwrap()),
        (51..=100).collect::<Vec<_>>()
    );
    assert_eq!(p1.body["next"], json!(100));
    let p2 = page(Some(100)).await;
    assert_eq!(
        ids(p2.ok().as_array().unwrap()),
        (101..=120).collect::<Vec<_>>()
    );
    assert_eq!(p2.body["total"], json!(120));
    assert!(
        p2.body.get("next").is_none(),
        "no next on the last page: {p2:?}"
    );
    let p3 = page(Some(120)).await;
    assert_eq!(p3.ok(), &json!([]));
    assert!(p3.body.get("next").is_none());
    // Exactly 100 rows: the second page is the last one.
    let exact = emu
        .offline_list(&auth, json!({ "start": 50, "filter": { "<=ID": 100 } }))
        .await;
    assert_eq!(exact.body["total"], json!(100));
    assert!(exact.body.get("next").is_none());

    // Items carry all eight fields, numbers as strings.
    let item = &p0.ok()[0];
    let keys: BTreeSet<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "ID",
            "TIMESTAMP_X",
            "EVENT_NAME",
            "EVENT_DATA",
            "EVENT_ADDITIONAL",
            "MESSAGE_ID",
            "PROCESS_ID",
            "ERROR"
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(item["ID"], json!("1"));
    assert_eq!(item["ERROR"], json!("0"));
    assert_eq!(item["PROCESS_ID"], json!(""));

    // list never marks or clears.
    let rows = emu.queue().await;
    assert_eq!(rows.len(), 120);
    assert!(rows.iter().all(|r| r["PROCESS_ID"] == json!("")));
    // get takes 50 by default, has no upper bound on limit, and its items carry six fields.
    let dflt = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    assert_eq!(ids(&dflt.events()), (1..=50).collect::<Vec<_>>());
    let big = emu
        .offline_get(&auth, json!({ "clear": 0, "limit": 100 }))
        .await;
    let events = big.events();
    assert_eq!(ids(&events), (51..=120).collect::<Vec<_>>());
    let keys: BTreeSet<&str> = events[0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "ID",
            "TIMESTAMP_X",
            "EVENT_NAME",
            "EVENT_DATA",
            "EVENT_ADDITIONAL",
            "MESSAGE_ID"
        ]
        .into_iter()
        .collect()
    );
    // Reserved rows show their PROCESS_ID in list.
    let pid = big.process_id().unwrap();
    let l = emu
        .offline_list(&auth, json!({ "filter": { "PROCESS_ID": pid } }))
        .await;
    assert_eq!(l.body["total"], json!(70));
}

#[tokio::test]
async fn connector_scoping() {
    let (emu, auth) = setup().await;
    emu.bind_offline(&auth, DEAL_UPDATE, Some("c1")).await;
    assert_eq!(emu.deal_updates([1]).await, 2, "one row per binding");
    let rows = emu.queue().await;
    assert_eq!(row(&rows, 1)["CONNECTOR_ID"], json!(""));
    assert_eq!(row(&rows, 2)["CONNECTOR_ID"], json!("c1"));

    let plain = emu.offline_list(&auth, json!({})).await;
    assert_eq!(ids(plain.ok().as_array().unwrap()), vec![1]);
    let c1 = emu
        .offline_list(&auth, json!({ "auth_connector": "c1" }))
        .await;
    assert_eq!(ids(c1.ok().as_array().unwrap()), vec![2]);
    let c2 = emu
        .offline_list(&auth, json!({ "auth_connector": "c2" }))
        .await;
    assert_eq!(c2.ok(), &json!([]));
    assert_eq!(c2.body["total"], json!(0));

    let g = emu
        .offline_get(&auth, json!({ "clear": 0, "auth_connector": "c1" }))
        .await;
    let pid = g.process_id().unwrap();
    assert_eq!(ids(&g.events()), vec![2]);
    // The default scope cannot see, clear or fail the c1 reservation.
    let r = emu
        .offline_get(&auth, json!({ "clear": 0, "process_id": pid }))
        .await;
    assert_eq!(r.events(), Vec::<Value>::new());
    emu.call("event.offline.clear", &auth, json!({ "process_id": pid }))
        .await
        .ok();
    assert_eq!(ids(&emu.queue().await), vec![1, 2]);
    // error in the default scope: the free row 1 of the listed object is deleted (it is not
    // reserved under that process in this scope); the c1 row is out of scope and untouched.
    emu.call(
        "event.offline.error",
        &auth,
        json!({ "process_id": pid, "message_id": [deal_msg(1)] }),
    )
    .await
    .ok();
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![2]);
    assert_eq!(row(&rows, 2)["PROCESS_ID"], json!(pid));
    assert_eq!(row(&rows, 2)["ERROR"], json!("0"));
    emu.call(
        "event.offline.clear",
        &auth,
        json!({ "process_id": pid, "auth_connector": "c1" }),
    )
    .await
    .ok();
    assert!(emu.queue().await.is_empty());

    // event.get shows both offline bindings.
    let b = emu.call("event.get", &auth, json!({})).await;
    assert_eq!(
        b.ok(),
        &json!([
            { "event": DEAL_UPDATE, "connector_id": "", "offline": 1 },
            { "event": DEAL_UPDATE, "connector_id": "c1", "offline": 1 }
        ])
    );

    // Without the auth_connector feature the parameter is ignored.
    assert_eq!(emu.deal_updates([3]).await, 2); // rows 3 ("") and 4 (c1)
    emu.config(json!({ "auth_connector": false })).await;
    let f = emu
        .call(
            "feature.get",
            &auth,
            json!({ "CODE": "rest_auth_connector" }),
        )
        .await;
    assert_eq!(f.ok(), &json!({ "value": "N" }));
    let c1 = emu
        .offline_list(&auth, json!({ "auth_connector": "c1" }))
        .await;
    assert_eq!(ids(c1.ok().as_array().unwrap()), vec![3]);
}

#[tokio::test]
async fn error_in_default_scope_deletes_free_row_of_same_object() {
    // The error rule in its own scope: a free row of a listed message is deleted.
    let (emu, auth) = setup().await;
    emu.deal_updates([1, 2]).await;
    let r = emu
        .call(
            "event.offline.error",
            &auth,
            json!({ "process_id": "z".repeat(32), "message_id": [deal_msg(1)] }),
        )
        .await;
    assert_eq!(r.ok(), &json!(true));
    assert_eq!(ids(&emu.queue().await), vec![2]);
}

#[tokio::test]
async fn reserved_rows_expire_after_thirty_days() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    emu.config(json!({ "token_ttl_s": 100 * 86_400 })).await;
    let auth = emu.admin().await;
    emu.bind_offline(&auth, DEAL_UPDATE, None).await;
    emu.deal_updates([1, 2, 3]).await;
    let pid = emu
        .offline_get(&auth, json!({ "clear": 0, "limit": 1 }))
        .await
        .process_id()
        .unwrap();
    let e = emu
        .offline_get(&auth, json!({ "clear": 0, "limit": 1 }))
        .await
        .process_id()
        .unwrap();
    emu.call(
        "event.offline.error",
        &auth,
        json!({ "process_id": e, "message_id": [deal_msg(2)] }),
    )
    .await
    .ok();
    let eid = emu
        .offline_get(&auth, json!({ "clear": 0, "error": 1 }))
        .await
        .process_id()
        .unwrap();
    // Row 1 reserved (P), row 2 reserved error record (E), row 3 free.
    let rows = emu.queue().await;
    assert_eq!(row(&rows, 1)["PROCESS_ID"], json!(pid));
    assert_eq!(row(&rows, 2)["PROCESS_ID"], json!(eid));

    // 29.5 days: the daily job runs (on the clock move) and deletes nothing.
    emu.advance(29.5 * 86_400.0).await;
    assert_eq!(ids(&emu.queue().await), vec![1, 2, 3]);
    // 30.1 days, but less than a day since the last run: the job has not run yet.
    emu.advance(0.6 * 86_400.0).await;
    assert_eq!(ids(&emu.queue().await), vec![1, 2, 3]);
    let c = emu.post("cleanup", json!({})).await;
    assert_eq!(c, json!({ "deleted": 2 }));
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![3], "only the free row survives");
    // The free row never expires.
    emu.advance(60.0 * 86_400.0).await;
    assert_eq!(ids(&emu.queue().await), vec![3]);
    assert_eq!(emu.stats().await["expired_rows"], json!(2));
}

#[tokio::test]
async fn the_daily_job_runs_by_itself() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    emu.config(json!({ "token_ttl_s": 100 * 86_400 })).await;
    let auth = emu.admin().await;
    emu.bind_offline(&auth, DEAL_UPDATE, None).await;
    emu.deal_updates([1]).await;
    emu.offline_get(&auth, json!({ "clear": 0 })).await.ok();
    emu.advance(29.0 * 86_400.0).await;
    emu.deal_updates([2]).await; // reserved later: expires later
    emu.offline_get(&auth, json!({ "clear": 0 })).await.ok();
    emu.advance(1.5 * 86_400.0).await;
    // The job ran on the clock move: row 1 (30.5 days) is gone, row 2 (1.5 days) stays.
    assert_eq!(ids(&emu.queue().await), vec![2]);
    emu.advance(28.0 * 86_400.0).await; // row 2 is 29.5 days old: stays
    assert_eq!(ids(&emu.queue().await), vec![2]);
    emu.advance(0.9 * 86_400.0).await; // 30.4 days, job not yet due (0.9 day since last run)
    assert_eq!(ids(&emu.queue().await), vec![2]);
    emu.advance(0.2 * 86_400.0).await; // more than a day since the last run: the job runs
    assert_eq!(emu.queue().await, Vec::<Value>::new());
}

#[tokio::test]
async fn clear_zero_needs_the_extended_licence() {
    let (emu, auth) = setup().await;
    emu.deal_updates([1, 2]).await;
    let f = emu
        .call(
            "feature.get",
            &auth,
            json!({ "CODE": "rest_offline_extended" }),
        )
        .await;
    assert_eq!(f.ok(), &json!({ "value": "Y" }));
    let f = emu
        .call(
            "feature.get",
            &auth,
            json!({ "code": "rest_auth_connector" }),
        )
        .await;
    assert_eq!(f.ok(), &json!({ "value": "Y" }));

    let c = emu.config(json!({ "extended_mode": false })).await;
    assert_eq!(c["extended_mode"], json!(false));
    let f = emu
        .call(
            "feature.get",
            &auth,
            json!({ "CODE": "rest_offline_extended" }),
        )
        .await;
    assert_eq!(f.ok(), &json!({ "value": "N" }));
    let r = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    r.err(402, "ERROR_LICENSE");
    assert!(emu
        .queue()
        .await
        .iter()
        .all(|r| r["PROCESS_ID"] == json!("")));
    // clear=1 still works.
    let r = emu.offline_get(&auth, json!({ "limit": 1 })).await;
    assert_eq!(ids(&r.events()), vec![1]);
    emu.config(json!({ "extended_mode": true })).await;
    let r = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    assert_eq!(ids(&r.events()), vec![2]);
}

#[tokio::test]
async fn applications_have_separate_queues() {
    let (emu, auth) = setup().await;
    let b = emu
        .token_with(json!({ "client_id": "other.app" }))
        .await
        .access;
    emu.bind_offline(&b, DEAL_UPDATE, None).await;
    assert_eq!(emu.deal_updates([1]).await, 2);
    let rows = emu.queue().await;
    let apps: Vec<&Value> = rows.iter().map(|r| &r["APP_ID"]).collect();
    assert_eq!(apps, vec![&json!("local.app"), &json!("other.app")]);
    let a = emu.offline_get(&auth, json!({})).await;
    assert_eq!(ids(&a.events()), vec![1]);
    let bl = emu.offline_list(&b, json!({})).await;
    assert_eq!(ids(bl.ok().as_array().unwrap()), vec![2]);
}

/// `process_id=""` is not refused (only a missing one is): the portal's delete matches the
/// process id column, so it selects the free rows of the app's scope, narrowed as usual.
#[tokio::test]
async fn clear_with_an_empty_process_id_deletes_free_rows() {
    let (emu, auth) = setup().await;
    let items: Vec<Value> = (1..=4)
        .map(|i| json!({ "event": DEAL_UPDATE, "data": deal(i) }))
        .collect();
    assert_eq!(emu.trigger(json!({ "items": items })).await, 4);
    let reserved = emu
        .offline_get(&auth, json!({ "clear": 0, "limit": 1 }))
        .await;
    assert_eq!(ids(&reserved.events()), vec![1]);
    // Narrowed by message id: only that free row goes.
    emu.call(
        "event.offline.clear",
        &auth,
        json!({ "process_id": "", "message_id": [deal_msg(2)] }),
    )
    .await
    .ok();
    let left: Vec<u64> = emu
        .queue()
        .await
        .iter()
        .map(|r| r["ID"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(left, vec![1, 3, 4]);
    // A reserved row is not selected by the empty id, even when named.
    emu.call(
        "event.offline.clear",
        &auth,
        json!({ "process_id": "", "message_id": [deal_msg(1)] }),
    )
    .await
    .ok();
    assert_eq!(emu.queue().await.len(), 3);
    // Not narrowed: every free row of the scope goes; the reservation stays.
    let r = emu
        .call("event.offline.clear", &auth, json!({ "process_id": "" }))
        .await;
    assert_eq!(r.ok(), &json!(true));
    let rows = emu.queue().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["ID"], json!("1"));
    assert_ne!(rows[0]["PROCESS_ID"], json!(""));
}
