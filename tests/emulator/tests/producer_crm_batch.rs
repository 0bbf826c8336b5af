//! Producer rules (who skips which binding), the in-memory CRM as a producer, and `batch`.

mod common;

use common::Emu;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const ADD: &str = "ONCRMDEALADD";

/// Connector ids of the rows queued for deal `id`.
async fn connectors_for(emu: &Emu, event: &str, id: u64) -> BTreeSet<String> {
    emu.queue()
        .await
        .iter()
        .filter(|r| {
            r["EVENT_NAME"] == json!(event)
                && r["EVENT_DATA"]["FIELDS"]["ID"] == json!(id.to_string())
        })
        .map(|r| {
            assert_eq!(r["APP_ID"], json!("local.app"));
            r["CONNECTOR_ID"].as_str().unwrap().to_string()
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `local.app` has `ONCRMDEALADD` bound offline twice: without connector and with `X`.
async fn two_bindings() -> (Emu, String) {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let a = emu.admin().await;
    emu.bind_offline(&a, ADD, None).await;
    emu.bind_offline(&a, ADD, Some("X")).await;
    (emu, a)
}

#[tokio::test]
async fn an_apps_own_changes_skip_only_the_binding_of_its_connector() {
    let (emu, a) = two_bindings().await;
    let a_user = emu
        .token_with(json!({ "user_id": 9, "admin": false }))
        .await
        .access;
    let b = emu
        .token_with(json!({ "client_id": "other.app" }))
        .await
        .access;
    let hook = emu.post("webhook", json!({ "user_id": 3 })).await["url"]
        .as_str()
        .unwrap()
        .to_string();

    let add = |token: String, connector: Option<&'static str>| {
        let emu = &emu;
        async move {
            let mut p = json!({ "fields": { "TITLE": "t" } });
            if let Some(c) = connector {
                p["auth_connector"] = json!(c);
            }
            emu.call("crm.deal.add", &token, p)
                .await
                .ok()
                .as_u64()
                .expect("new id")
        }
    };
    // local.app without connector: skips its "" binding, reaches X.
    let id = add(a.clone(), None).await;
    assert_eq!(connectors_for(&emu, ADD, id).await, set(&["X"]));
    // The same application through another user: still its own change.
    let id = add(a_user.clone(), None).await;
    assert_eq!(connectors_for(&emu, ADD, id).await, set(&["X"]));
    // local.app with connector X: skips X, reaches "".
    let id = add(a.clone(), Some("X")).await;
    assert_eq!(connectors_for(&emu, ADD, id).await, set(&[""]));
    // local.app with another connector: reaches both.
    let id = add(a.clone(), Some("Y")).await;
    assert_eq!(connectors_for(&emu, ADD, id).await, set(&["", "X"]));
    // Another application, with or without X: always queued.
    let id = add(b.clone(), None).await;
    assert_eq!(connectors_for(&emu, ADD, id).await, set(&["", "X"]));
    let id = add(b.clone(), Some("X")).await;
    assert_eq!(connectors_for(&emu, ADD, id).await, set(&["", "X"]));
    // A webhook: always queued, EVENT_ADDITIONAL names its user.
    let r = emu
        .send(
            emu.http
                .post(format!("{hook}crm.deal.add"))
                .header("content-type", "application/json")
                .body(json!({ "fields": { "TITLE": "w" } }).to_string()),
        )
        .await;
    let id = r.ok().as_u64().unwrap();
    assert_eq!(connectors_for(&emu, ADD, id).await, set(&["", "X"]));
    let rows = emu.queue().await;
    let last = rows.last().unwrap();
    assert_eq!(last["EVENT_ADDITIONAL"], json!({ "user_id": "3" }));
    assert_eq!(rows.len(), 1 + 1 + 1 + 2 + 2 + 2 + 2);
}

#[tokio::test]
async fn trigger_source_follows_the_same_rules() {
    let (emu, _a) = two_bindings().await;
    let data = |id: u64| json!({ "FIELDS": { "ID": id.to_string() } });
    // No source: a user in the UI.
    assert_eq!(
        emu.trigger(json!({ "event": ADD, "data": data(1) })).await,
        2
    );
    assert_eq!(connectors_for(&emu, ADD, 1).await, set(&["", "X"]));
    assert_eq!(
        emu.trigger(
            json!({ "event": ADD, "data": data(2), "source": { "client_id": "local.app" } })
        )
        .await,
        1
    );
    assert_eq!(connectors_for(&emu, ADD, 2).await, set(&["X"]));
    assert_eq!(
        emu.trigger(json!({ "event": ADD, "data": data(3), "source": { "client_id": "local.app", "auth_connector": "X" } }))
            .await,
        1
    );
    assert_eq!(connectors_for(&emu, ADD, 3).await, set(&[""]));
    assert_eq!(
        emu.trigger(
            json!({ "event": ADD, "data": data(4), "source": { "client_id": "other.app" } })
        )
        .await,
        2
    );
    assert_eq!(connectors_for(&emu, ADD, 4).await, set(&["", "X"]));
    // Events nobody bound are not queued; names are upper-cased.
    assert_eq!(
        emu.trigger(json!({ "event": "ONCRMDEALDELETE", "data": data(5) }))
            .await,
        0
    );
    assert_eq!(
        emu.trigger(json!({ "event": "onCrmDealAdd", "data": data(6) }))
            .await,
        2
    );
    assert_eq!(connectors_for(&emu, ADD, 6).await, set(&["", "X"]));
    // A trigger needs an event.
    let r = emu
        .ctl_raw(
            reqwest::Method::POST,
            "trigger",
            Some(json!({ "data": {} })),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn crm_changes_fire_oncrm_events_for_every_entity() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let a = emu.admin().await;
    let entities = ["deal", "lead", "contact", "company"];
    for e in entities {
        for action in ["ADD", "UPDATE", "DELETE"] {
            emu.bind_offline(&a, &format!("ONCRM{}{action}", e.to_uppercase()), None)
                .await;
        }
    }
    let b = emu
        .token_with(json!({ "client_id": "other.app", "user_id": 4 }))
        .await
        .access;
    for e in entities {
        let id = emu
            .call(
                &format!("crm.{e}.add"),
                &b,
                json!({ "fields": { "TITLE": "first" } }),
            )
            .await
            .ok()
            .clone();
        assert_eq!(id, json!(1), "crm.{e}.add");
        let id2 = emu
            .call(
                &format!("crm.{e}.add"),
                &b,
                json!({ "fields": { "title": "second" } }),
            )
            .await
            .ok()
            .clone();
        assert_eq!(id2, json!(2));
        let u = emu
            .call(
                &format!("crm.{e}.update"),
                &b,
                json!({ "id": 1, "fields": { "TITLE": "changed", "OPPORTUNITY": "10" } }),
            )
            .await;
        assert_eq!(u.ok(), &json!(true));
        let g = emu
            .call(&format!("crm.{e}.get"), &b, json!({ "id": "1" }))
            .await;
        let rec = g.ok();
        assert_eq!(rec["ID"], json!("1"));
        assert_eq!(rec["TITLE"], json!("changed"));
        assert_eq!(rec["OPPORTUNITY"], json!("10"));
        assert_eq!(rec["MODIFY_BY_ID"], json!("4"));
        let l = emu
            .call(
                &format!("crm.{e}.list"),
                &b,
                json!({ "order": { "ID": "DESC" } }),
            )
            .await;
        let titles: Vec<&Value> = l
            .ok()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["TITLE"])
            .collect();
        assert_eq!(titles, vec![&json!("second"), &json!("changed")]);
        assert_eq!(l.body["total"], json!(2));
        let l = emu
            .call(
                &format!("crm.{e}.list"),
                &b,
                json!({ "filter": { ">ID": 1 } }),
            )
            .await;
        assert_eq!(l.ok().as_array().unwrap().len(), 1);
        let d = emu
            .call(&format!("crm.{e}.delete"), &b, json!({ "id": 1 }))
            .await;
        assert_eq!(d.ok(), &json!(true));
        emu.call(&format!("crm.{e}.get"), &b, json!({ "id": 1 }))
            .await
            .err(400, "NOT_FOUND");
        emu.call(
            &format!("crm.{e}.update"),
            &b,
            json!({ "id": 1, "fields": {} }),
        )
        .await
        .err(400, "NOT_FOUND");
        emu.call(&format!("crm.{e}.get"), &b, json!({ "id": "x" }))
            .await
            .err(400, "ERROR_ARGUMENT");
    }
    emu.call("crm.invoice.add", &b, json!({}))
        .await
        .err(404, "ERROR_METHOD_NOT_FOUND");

    // For each entity: ADD 1, ADD 2, UPDATE 1, DELETE 1, in that order.
    let rows = emu.queue().await;
    let got: Vec<(String, Value)> = rows
        .iter()
        .map(|r| {
            (
                r["EVENT_NAME"].as_str().unwrap().to_string(),
                r["EVENT_DATA"].clone(),
            )
        })
        .collect();
    let mut want = Vec::new();
    for e in entities {
        let up = e.to_uppercase();
        for (action, id) in [("ADD", 1), ("ADD", 2), ("UPDATE", 1), ("DELETE", 1)] {
            want.push((
                format!("ONCRM{up}{action}"),
                json!({ "FIELDS": { "ID": id.to_string() } }),
            ));
        }
    }
    assert_eq!(got, want);
    assert!(rows
        .iter()
        .all(|r| r["EVENT_ADDITIONAL"] == json!({ "user_id": "4" })));
}

#[tokio::test]
async fn crm_list_pages() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let a = emu.admin().await;
    let cmd: Vec<String> = (1..=50)
        .map(|i| format!("crm.lead.add?fields[TITLE]=L{i}"))
        .collect();
    emu.call("batch", &a, json!({ "cmd": cmd })).await.ok();
    let cmd: Vec<String> = (51..=60)
        .map(|i| format!("crm.lead.add?fields[TITLE]=L{i}"))
        .collect();
    emu.call("batch", &a, json!({ "cmd": cmd })).await.ok();
    let p0 = emu.call("crm.lead.list", &a, json!({})).await;
    assert_eq!(p0.ok().as_array().unwrap().len(), 50);
    assert_eq!(p0.body["total"], json!(60));
    assert_eq!(p0.body["next"], json!(50));
    let p1 = emu.call("crm.lead.list", &a, json!({ "start": 50 })).await;
    assert_eq!(p1.ok().as_array().unwrap().len(), 10);
    assert!(p1.body.get("next").is_none());
    assert_eq!(p1.ok()[9]["TITLE"], json!("L60"));
    // start=-1: no count, no next; the caller pages by >ID of the last row.
    let k0 = emu
        .call(
            "crm.lead.list",
            &a,
            json!({ "start": -1, "order": { "ID": "ASC" } }),
        )
        .await;
    assert_eq!(k0.ok().as_array().unwrap().len(), 50);
    assert!(k0.body.get("total").is_none() && k0.body.get("next").is_none());
    let k1 = emu
        .call(
            "crm.lead.list",
            &a,
            json!({ "start": -1, "order": { "ID": "ASC" }, "filter": { ">ID": 50 } }),
        )
        .await;
    assert_eq!(k1.ok().as_array().unwrap().len(), 10);
    assert_eq!(k1.ok()[0]["ID"], json!("51"));
    emu.call("crm.lead.list", &a, json!({ "start": -2 }))
        .await
        .err(400, "ERROR_ARGUMENT");
}

#[tokio::test]
async fn batch_length_halt_and_references() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let a = emu.admin().await;
    let too_many: Vec<&str> = vec!["profile"; 51];
    emu.call("batch", &a, json!({ "cmd": too_many }))
        .await
        .err(400, "ERROR_BATCH_LENGTH_EXCEEDED");
    let fifty: Vec<&str> = vec!["profile"; 50];
    let r = emu.call("batch", &a, json!({ "cmd": fifty })).await;
    assert_eq!(r.ok()["result"].as_array().unwrap().len(), 50);
    assert_eq!(r.ok()["result_error"], json!([]));
    emu.call("batch", &a, json!({}))
        .await
        .err(400, "ERROR_ARGUMENT");

    // References to earlier results.
    let r = emu
        .call(
            "batch",
            &a,
            json!({ "halt": 0, "cmd": {
                "add": "crm.deal.add?fields[TITLE]=Ref One",
                "get": "crm.deal.get?id=$result[add]",
                "list": "crm.deal.list?filter[ID]=$result[add]",
                "again": "crm.deal.get?id=$result[list][0][ID]",
            } }),
        )
        .await;
    let res = r.ok();
    assert_eq!(res["result"]["add"], json!(1));
    assert_eq!(res["result"]["get"]["TITLE"], json!("Ref One"));
    assert_eq!(res["result"]["again"]["ID"], json!("1"));
    assert_eq!(res["result_total"], json!({ "list": 1 }));
    assert_eq!(res["result_next"], json!([]));
    assert_eq!(res["result_error"], json!([]));
    let times = res["result_time"].as_object().unwrap();
    assert_eq!(
        times.keys().collect::<Vec<_>>(),
        vec!["add", "get", "list", "again"]
    );
    assert!(times["get"]["start"].is_number());

    // halt=1 stops at the first error; halt=0 runs on.
    let cmd = json!({
        "one": "crm.deal.add?fields[TITLE]=A",
        "bad": "crm.deal.get?id=999",
        "two": "crm.deal.add?fields[TITLE]=C",
    });
    let r = emu
        .call("batch", &a, json!({ "halt": 1, "cmd": cmd }))
        .await;
    let res = r.ok();
    assert_eq!(res["result"], json!({ "one": 2 }));
    assert_eq!(res["result_error"]["bad"]["error"], json!("NOT_FOUND"));
    assert!(res["result_error"]["bad"]["error_description"].is_string());
    let r = emu
        .call("batch", &a, json!({ "halt": 0, "cmd": cmd }))
        .await;
    let res = r.ok();
    assert_eq!(res["result"], json!({ "one": 3, "two": 4 }));
    assert_eq!(res["result_error"]["bad"]["error"], json!("NOT_FOUND"));
    // Default halt is 0.
    let r = emu.call("batch", &a, json!({ "cmd": cmd })).await;
    assert_eq!(r.ok()["result"], json!({ "one": 5, "two": 6 }));

    // No batch in a batch; unknown methods are per-command errors.
    let r = emu
        .call(
            "batch",
            &a,
            json!({ "cmd": ["batch?cmd[0]=profile", "nope.nope", "profile"] }),
        )
        .await;
    let res = r.ok();
    // As PHP encodes them: errors under keys 0, 1 form a list; a result under key 2 an object.
    assert_eq!(
        res["result_error"][0]["error"],
        json!("ERROR_BATCH_METHOD_NOT_ALLOWED")
    );
    assert_eq!(
        res["result_error"][1]["error"],
        json!("ERROR_METHOD_NOT_FOUND")
    );
    assert_eq!(res["result"]["2"]["ID"], json!("1"));

    // A form-encoded batch with PHP keys.
    let body = format!(
        "auth={a}&halt=0&{}={}",
        form_urlencoded::byte_serialize(b"cmd[p]").collect::<String>(),
        form_urlencoded::byte_serialize(b"profile").collect::<String>()
    );
    let r = emu
        .send(
            emu.http
                .post(format!("{}/rest/batch.json", emu.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await;
    assert_eq!(r.ok()["result"]["p"]["ADMIN"], json!(true));

    // `cmd` as an object keyed "0", "1": a PHP array like a list, answered with lists.
    let r = emu
        .call(
            "batch",
            &a,
            json!({ "cmd": { "0": "profile", "1": "nope.nope", "2": "profile" } }),
        )
        .await;
    let res = r.ok();
    assert_eq!(
        res["result_error"]["1"]["error"],
        json!("ERROR_METHOD_NOT_FOUND")
    );
    assert!(res["result"].is_object(), "keys 0 and 2 are not a list");
    let r = emu
        .call(
            "batch",
            &a,
            json!({ "cmd": { "0": "profile", "1": "profile" } }),
        )
        .await;
    let res = r.ok();
    assert_eq!(res["result"][1]["ID"], json!("1"));
    assert!(res["result_time"].is_array());
    assert_eq!(res["result_error"], json!([]));
    // The batch's own `time` carries `operating` (the outer call is never accounted: 0).
    assert_eq!(r.body["time"]["operating"], json!(0.0));
    assert!(res["result_time"][0]["operating"].is_number());
}

#[tokio::test]
async fn batch_runs_offline_methods_with_the_outer_connector_and_auth() {
    let (emu, a) = two_bindings().await;
    // The outer auth_connector applies to every command: this app's X binding is skipped.
    let r = emu
        .call(
            "batch",
            &a,
            json!({ "auth_connector": "X", "cmd": ["crm.deal.add?fields[TITLE]=1", "crm.deal.add?fields[TITLE]=2"] }),
        )
        .await;
    assert_eq!(r.ok()["result"], json!([1, 2]));
    assert_eq!(connectors_for(&emu, ADD, 1).await, set(&[""]));
    // Offline methods inside a batch: reserve, then clear by the referenced process id.
    let r = emu
        .call(
            "batch",
            &a,
            json!({ "cmd": {
                "get": "event.offline.get?clear=0&limit=1",
                "list": "event.offline.list?filter[PROCESS_ID]=$result[get][process_id]",
                "clear": "event.offline.clear?process_id=$result[get][process_id]",
                "after": "event.offline.list",
            } }),
        )
        .await;
    let res = r.ok();
    assert_eq!(res["result_error"], json!([]), "{res}");
    let pid = res["result"]["get"]["process_id"].as_str().unwrap();
    assert_eq!(pid.len(), 32);
    assert_eq!(res["result"]["list"][0]["PROCESS_ID"], json!(pid));
    assert_eq!(res["result"]["clear"], json!(true));
    assert_eq!(res["result_total"]["after"], json!(1));

    // A webhook's batch gets the auth-type error per offline command.
    let hook = emu.post("webhook", json!({})).await["url"]
        .as_str()
        .unwrap()
        .to_string();
    let r = emu
        .send(
            emu.http
                .post(format!("{hook}batch"))
                .header("content-type", "application/json")
                .body(json!({ "cmd": { "g": "event.offline.get", "p": "profile" } }).to_string()),
        )
        .await;
    let res = r.ok();
    assert_eq!(res["result_error"]["g"]["error"], json!("WRONG_AUTH_TYPE"));
    assert_eq!(res["result"]["p"]["ID"], json!("1"));
}

#[tokio::test]
async fn batch_commands_count_operating_time_each() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    emu.config(json!({ "operating_cost_s": { "profile": 200 } }))
        .await;
    let a = emu.admin().await;
    let r = emu
        .call(
            "batch",
            &a,
            json!({ "cmd": ["profile", "profile", "profile", "profile"] }),
        )
        .await;
    let res = r.ok();
    let ops: Vec<f64> = (0..3)
        .map(|i| res["result_time"][i]["operating"].as_f64().unwrap())
        .collect();
    assert_eq!(ops, vec![200.0, 400.0, 600.0]);
    assert_eq!(
        res["result_error"]["3"]["error"],
        json!("OPERATION_TIME_LIMIT")
    );
    emu.call("profile", &a, json!({}))
        .await
        .err(429, "OPERATION_TIME_LIMIT");
}
