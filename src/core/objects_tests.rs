//! Step 3 against the emulator's CRM run in process: `consume({ objects })` hands each event
//! over with its object, in one `batch` request per batch, and survives what the portal and
//! the app can get wrong.

use super::args::{Arg, Body, Tree};
use super::client::CallOptions;
use super::consume::{Outcome, Progress};
use super::error::code;
use super::objects::{Found, Objects};
use super::offline::Queue;
use super::options::Options;
use super::retry::Idempotency;
use super::testkit::{block_on, client};
use super::testworld::*;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;

/// What the handler saw of each event: (name, object id or state).
type Seen = Rc<RefCell<Vec<(String, String)>>>;

fn call(world: &World, method: &str, args: Vec<(&str, Arg<Value>)>) -> Value {
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let mut body = Body::new();
    for (k, v) in args {
        body.set(k, v);
    }
    block_on(c.call(method, &body, &CallOptions::new(Idempotency::Unsafe)))
        .unwrap()
        .result
        .unwrap()
}

fn bind(world: &World, events: &[&str]) {
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let q = Queue {
        client: &c,
        connector: None,
    };
    let names: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    block_on(q.bind(&names, None)).unwrap();
}

/// Queues an event as a change made by someone else would (the app's own calls queue
/// nothing for it).
fn fire_event(world: &World, name: &str, data: Value) {
    let now = world.shared.clock.now_ms();
    let mut st = world.shared.lock();
    let mut touched = Default::default();
    b24_emulator::events::fire(&mut st, now, name, &data, 1, None, None, &mut touched);
}

fn won() -> Arg<Value> {
    Arg::Map(vec![("STAGE_ID".into(), Arg::Str("WON".into()))])
}

/// Deals `first..first + n` added and moved to WON, and an update event queued for each.
fn deals(world: &World, first: u64, n: u64) {
    for i in first..first + n {
        let title = Arg::Str(["deal ", &i.to_string()].concat());
        let id = call(
            world,
            "crm.deal.add",
            vec![("fields", Arg::Map(vec![("TITLE".into(), title)]))],
        );
        assert_eq!(id, json!(i));
        call(
            world,
            "crm.deal.update",
            vec![("id", Arg::Int(i as i64)), ("fields", won())],
        );
        fire_event(
            world,
            "ONCRMDEALUPDATE",
            json!({"FIELDS": {"ID": i.to_string()}}),
        );
    }
}

fn with_objects(limit: f64, objects: Tree) -> Options {
    Options {
        objects: Objects::resolve(Some(&objects)).unwrap(),
        ..opts(limit)
    }
}

/// A handler that records what it saw and succeeds.
fn recorder() -> (Rc<Recorder>, Seen) {
    let seen: Seen = Rc::default();
    let s = seen.clone();
    let rec = Recorder::new(move |b, _| {
        assert_eq!(b.objects.len(), b.events.len(), "one per event");
        for (e, found) in b.events.iter().zip(&b.objects) {
            let what = match found {
                None => "none".to_string(),
                Some(Found::Object(o)) => {
                    assert_eq!(o["STAGE_ID"], "WON", "the current object, not the event's");
                    o["ID"].as_str().unwrap().to_string()
                }
                Some(Found::Failed(err)) => ["failed ", &err.code].concat(),
                Some(f) => f.state().to_string(),
            };
            s.borrow_mut().push((e.name.clone(), what));
        }
        Outcome::Done
    });
    (rec, seen)
}

/// Consumes everything with `objects` (these rules): the run's progress, and what the handler
/// saw of each event.
fn consume_objects(world: &World, rules: Tree) -> (Progress, Vec<(String, String)>) {
    let (rec, seen) = recorder();
    let (p, _) = run(world, memory(), &rec, &with_objects(50.0, rules), None);
    let seen = seen.borrow().clone();
    (p, seen)
}

/// The app's rules, as the binding reads them.
fn rules(v: Value) -> Tree {
    super::read::tree::<super::testkit::Fake>(&v)
}

/// A portal whose answers to the objects' `batch` requests `alter` changes.
fn altering(alter: fn(&mut Value)) -> World {
    World::new(Rc::new(RefCell::new(move |m: &str, b: &Value| {
        if batch_has(m, b, "crm.deal.get") {
            Net::Alter(alter)
        } else {
            Net::Pass
        }
    })))
}

fn object_gets(world: &World) -> (usize, usize) {
    (
        world.count_where(|m, b| batch_has(m, b, "crm.deal.get")),
        world.count("crm.deal.get"),
    )
}

#[test]
fn each_event_gets_its_object_in_one_batch_request_per_batch() {
    let world = World::passing();
    deals(&world, 1, 120);
    let (p, seen) = consume_objects(&world, Tree::Bool(true));
    assert_eq!((p.reserved, p.acked, p.failed), (120, 120, 0));
    assert_eq!(seen.len(), 120);
    for (i, (name, id)) in seen.iter().enumerate() {
        assert_eq!(name, "ONCRMDEALUPDATE");
        assert_eq!(*id, (i + 1).to_string(), "each event has its own deal");
    }
    assert_eq!(
        object_gets(&world),
        (3, 0),
        "one batch request per batch of 50, no single get"
    );
    assert_eq!(world.queue(), (0, 0, 0));
}

#[test]
fn deletions_gone_objects_and_unmapped_events_pass_through_as_such() {
    let world = World::passing();
    bind(&world, &["ONCRMDEALDELETE", "ONCRMDEALADD", "ONCRMLEADADD"]);
    deals(&world, 1, 4);
    // Deal 2 deleted after its update was queued: gone; the deletion itself: deleted.
    call(&world, "crm.deal.delete", vec![("id", Arg::Int(2))]);
    fire_event(&world, "ONCRMDEALDELETE", json!({"FIELDS": {"ID": "2"}}));
    // A new deal: its ADD and UPDATE in one batch are fetched once.
    fire_event(&world, "ONCRMDEALADD", json!({"FIELDS": {"ID": "4"}}));
    // An event the app gives no rule (turned off below).
    fire_event(&world, "ONCRMLEADADD", json!({"FIELDS": {"ID": "1"}}));
    // A deal's ADD fetches it too; its STAGE_ID is WON by now.
    let (p, mut seen) = consume_objects(&world, rules(json!({ "ONCRMLEADADD": false })));
    assert_eq!((p.acked, p.failed), (7, 0));
    seen.sort();
    let expect: Vec<(String, String)> = [
        ("ONCRMDEALADD", "4"),
        ("ONCRMDEALDELETE", "deleted"),
        ("ONCRMDEALUPDATE", "1"),
        ("ONCRMDEALUPDATE", "3"),
        ("ONCRMDEALUPDATE", "4"),
        ("ONCRMDEALUPDATE", "gone"),
        ("ONCRMLEADADD", "none"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, expect);
    let cmds: usize = world
        .fake
        .seen
        .borrow()
        .requests
        .iter()
        .filter(|(m, b)| batch_has(m, b, "crm.deal.get"))
        .map(|(_, b)| b["cmd"].as_object().unwrap().len())
        .sum();
    assert_eq!(cmds, 4, "deals 1, 2, 3 and 4, each once");
}

#[test]
fn the_apps_rules_extend_and_override_the_built_in_ones() {
    let world = World::passing();
    deals(&world, 1, 3);
    // The app turns deal updates off.
    let off = json!({ "ONCRMDEALUPDATE": false });
    let (_, seen) = consume_objects(&world, rules(off));
    assert!(seen.iter().all(|(_, w)| w == "none"));
    assert_eq!(object_gets(&world), (0, 0));
    // Its own rule, with more parameters.
    deals(&world, 4, 3);
    let own = json!({
        "onCrmDealUpdate": { "method": "crm.deal.get", "params": { "select": ["ID", "STAGE_ID"] } },
    });
    let (_, seen) = consume_objects(&world, rules(own));
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|(_, w)| w.parse::<u64>().is_ok()),
        "{:?}",
        seen
    );
    let sent = world
        .fake
        .seen
        .borrow()
        .requests
        .iter()
        .rev()
        .find(|(m, b)| batch_has(m, b, "crm.deal.get"))
        .unwrap()
        .1
        .clone();
    assert!(
        sent["cmd"]["0"].as_str().unwrap().contains("select"),
        "{sent}"
    );
}

/// The batch's results by command name (the portal sends a list when they run 0..n).
fn results(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    let r = &mut v["result"]["result"];
    if let Value::Array(items) = r {
        *r = Value::Object(
            items
                .drain(..)
                .enumerate()
                .map(|(i, x)| (i.to_string(), x))
                .collect(),
        );
    }
    r.as_object_mut().expect("batch results")
}

/// One command of the batch refused (the first): that event's object failed, the others are
/// there; the handler decides, nothing is failed for it.
fn refuse_first_get(v: &mut Value) {
    results(v).remove("0");
    v["result"]["result_error"] =
        json!({ "0": { "error": "ACCESS_DENIED", "error_description": "Access denied" } });
}

#[test]
fn a_refused_get_costs_only_its_event() {
    let world = altering(refuse_first_get);
    deals(&world, 1, 3);
    let (p, seen) = consume_objects(&world, Tree::Bool(true));
    assert_eq!((p.acked, p.failed), (3, 0));
    assert_eq!(seen[0].1, "failed ACCESS_DENIED");
    assert_eq!((seen[1].1.as_str(), seen[2].1.as_str()), ("2", "3"));
}

/// What a portal or proxy could answer in place of the objects: each costs only the events
/// whose object it is (failed with BAD_RESPONSE, or gone), never a panic or a lost event.
#[test]
fn nonsense_in_place_of_objects() {
    fn strings(v: &mut Value) {
        for x in results(v).values_mut() {
            *x = json!("<html>");
        }
    }
    fn nulls(v: &mut Value) {
        for x in results(v).values_mut() {
            *x = Value::Null;
        }
    }
    fn missing(v: &mut Value) {
        v["result"]["result"] = json!([]);
    }
    fn not_found_in_words(v: &mut Value) {
        v["result"]["result"] = json!([]);
        v["result"]["result_error"] = json!({ "0": { "error": "", "error_description": "Not found" }, "1": {"error": "NOT_FOUND"}, "2": "oops" });
    }
    // Issue 18, case 13: a method the portal does not have (a module not installed, a typo in
    // a rule) says nothing of the object: failed, never gone (an app deletes its copy on gone).
    fn method_not_found(v: &mut Value) {
        v["result"]["result"] = json!([]);
        v["result"]["result_error"] = json!({ "0": { "error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!" }, "1": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "not found"}, "2": "oops" });
    }
    for (alter, want) in [
        (strings as fn(&mut Value), "failed BAD_RESPONSE"),
        (nulls, "gone"),
        (missing, "gone"),
        (not_found_in_words, "gone"),
        (method_not_found, "failed ERROR_METHOD_NOT_FOUND"),
    ] {
        let world = altering(alter);
        deals(&world, 1, 3);
        let (p, seen) = consume_objects(&world, Tree::Bool(true));
        assert_eq!((p.acked, p.failed), (3, 0), "{want}");
        let states: Vec<&str> = seen.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(states[..2], [want, want], "{want}");
    }
}

#[test]
fn an_event_without_an_id_costs_only_itself() {
    let world = World::passing();
    deals(&world, 1, 2);
    for data in [
        json!({"FIELDS": {}}),
        json!({"FIELDS": {"ID": "-3"}}),
        json!("x"),
    ] {
        fire_event(&world, "ONCRMDEALUPDATE", data);
    }
    let (p, seen) = consume_objects(&world, Tree::Bool(true));
    assert_eq!((p.acked, p.failed), (p.reserved, 0));
    let states: Vec<&str> = seen.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == "failed BAD_RESPONSE")
            .count(),
        3,
        "{states:?}"
    );
    assert!(states.contains(&"1") && states.contains(&"2"));
}

/// The objects' request fails for good: the handler never sees the batch, which goes to the
/// error queue whole and comes back with its objects.
#[test]
fn when_the_objects_cannot_be_fetched_the_batch_fails_whole_and_comes_back() {
    let refused = Rc::new(std::cell::Cell::new(0));
    let r = refused.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, b: &Value| {
        if batch_has(m, b, "crm.deal.get") && r.get() < 1 {
            r.set(r.get() + 1);
            Net::Answer(403, "ACCESS_DENIED")
        } else {
            Net::Pass
        }
    })));
    deals(&world, 1, 10);
    let (p, seen) = consume_objects(&world, Tree::Bool(true));
    assert_eq!(
        (p.failed, p.acked),
        (10, 10),
        "failed once, then acknowledged"
    );
    assert_eq!(
        seen.len(),
        10,
        "the handler saw only the batch that had its objects"
    );
    assert!(seen.iter().all(|(_, w)| w.parse::<u64>().is_ok()));
    assert_eq!(world.queue(), (0, 0, 0));
    assert!(world.logged(|l| l.contains("its objects could not be fetched")));
}

#[test]
fn bad_rules_are_refused_by_name() {
    for bad in [
        json!(5),
        json!("yes"),
        json!([]),
        json!({ "X": 1 }),
        json!({ "X": true }),
        json!({ "X": {} }),
        json!({ "X": { "method": "" } }),
        json!({ "X": { "method": "crm.deal.get; drop" } }),
        json!({ "X": { "method": "crm.deal.get", "id": "FIELDS..ID" } }),
        json!({ "X": { "method": "crm.deal.get", "params": [] } }),
        json!({ "X": { "method": "crm.deal.get", "params": { "id": 3 } } }),
        json!({ "X": { "method": "crm.deal.get", "param": 7 } }),
        json!({ "X": { "deleted": false } }),
        json!({ "X": { "deleted": true, "method": "crm.deal.get" } }),
        Value::Object((0..501).map(|i| (i.to_string(), json!(false))).collect()),
    ] {
        let tree = super::read::tree::<super::testkit::Fake>(&bad);
        let e = Objects::resolve(Some(&tree)).unwrap_err();
        assert_eq!(e.code, code::INVALID_ARGUMENT, "{bad}");
        assert!(e.description.starts_with("objects"), "{}", e.description);
    }
    assert_eq!(Objects::resolve(Some(&Tree::Bool(false))).unwrap(), None);
}

#[test]
fn the_built_in_families() {
    let o = Objects::resolve(Some(&Tree::Bool(true))).unwrap().unwrap();
    let method = |name: &str| match o.rule(name) {
        Some(super::objects::Rule::Fetch(s)) => {
            [&s.method, &s.id, &s.param].map(|x| x.as_str()).join(" ")
        }
        Some(super::objects::Rule::Deleted) => "deleted".into(),
        _ => "none".into(),
    };
    assert_eq!(method("ONCRMDEALUPDATE"), "crm.deal.get FIELDS.ID id");
    assert_eq!(method("onCrmLeadAdd"), "crm.lead.get FIELDS.ID id");
    assert_eq!(method("ONCRMCONTACTUPDATE"), "crm.contact.get FIELDS.ID id");
    assert_eq!(method("ONCRMCOMPANYDELETE"), "deleted");
    assert_eq!(method("ONCRMDEALUSERFIELDADD"), "none");
    assert_eq!(
        method("ONTASKUPDATE"),
        "tasks.task.get FIELDS_AFTER.ID taskId"
    );
    assert_eq!(method("ONTASKDELETE"), "deleted");
    assert_eq!(method("ONUSERADD"), "user.get ID ID");
    assert_eq!(method("ONAPPTEST"), "none");
}

/// Stopped while the objects are on their way: nothing is failed or acknowledged, the batch
/// stays journaled, and the next run hands it over with its objects.
#[test]
fn an_abort_while_fetching_leaves_the_batch_for_the_next_run() {
    let signal = Rc::new(std::cell::Cell::new(false));
    let s = signal.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, b: &Value| {
        if batch_has(m, b, "crm.deal.get") && !s.get() {
            s.set(true);
            Net::Refuse
        } else {
            Net::Pass
        }
    })));
    deals(&world, 1, 5);
    let store = memory();
    let (rec, seen) = recorder();
    let (p, _) = run(
        &world,
        store.clone(),
        &rec,
        &with_objects(50.0, Tree::Bool(true)),
        Some(signal.clone()),
    );
    assert_eq!((p.stopped, p.acked, p.failed), ("aborted", 0, 0));
    assert!(seen.borrow().is_empty(), "the handler never saw it");
    assert_eq!(world.queue(), (5, 5, 0), "still reserved");
    let (p, _) = run(
        &world,
        store,
        &rec,
        &with_objects(50.0, Tree::Bool(true)),
        None,
    );
    assert_eq!((p.recovered, p.acked, p.failed), (5, 5, 0));
    let seen = seen.borrow();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|(_, w)| w.parse::<u64>().is_ok()));
    assert_eq!(world.queue(), (0, 0, 0));
}
