//! The call pipeline, the batch splitter and the typed queue calls against a scripted portal
//! and a virtual clock: retries, refresh, limits and validation, with counts asserted.

use super::args::{Body, Tree};
use super::batch::{self, Command};
use super::client::CallOptions;
use super::error::code;
use super::limiter::{RateLimit, STANDARD};
use super::model::Bound;
use super::offline::{GetArgs, Queue, Selection};
use super::retry::Idempotency;
use super::testkit::block_on;
use super::testkit::{client, err, ok, tree, Fake, SECRET};
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::cell::Cell;
use std::rc::Rc;

fn safe() -> CallOptions<'static, Rc<Cell<bool>>> {
    CallOptions::new(Idempotency::Safe)
}

fn unsafe_() -> CallOptions<'static, Rc<Cell<bool>>> {
    CallOptions::new(Idempotency::Unsafe)
}

#[test]
fn decodes_results_and_tracks_operating_time() {
    let fake = Fake::new(|_, _, _| {
        Ok(super::platform::HttpResponse {
            status: 200,
            body: json!({"result": [1, 2], "total": "2", "time": {"start": 1000.5, "operating": 3.5, "operating_reset_at": 1600}}).to_string(),
        })
    });
    let (c, _) = client(&fake, |_| {});
    let reply = block_on(c.call("crm.deal.list", &Body::new(), &safe())).unwrap();
    assert_eq!(reply.result, Some(json!([1, 2])));
    assert_eq!(reply.total, Some(2));
    let stats = c.stats();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.operating[0].seconds, 3.5);
    assert_eq!(stats.by_method, vec![("crm.deal.list".to_string(), 1)]);
    let (_, body) = &fake.seen.borrow().requests[0];
    assert_eq!(body["auth"], json!(SECRET));
}

#[test]
fn one_refresh_for_many_parallel_expired_calls() {
    let fake = Fake::new(|_, body, _| {
        if body["auth"] == json!(SECRET) {
            err(401, "expired_token")
        } else {
            ok(json!(true))
        }
    });
    let (c, refreshes) = client(&fake, |cfg| cfg.rate = None);
    let (body, opts) = (Body::new(), safe());
    let calls = (0..10).map(|_| c.call("profile", &body, &opts));
    let results = block_on(join_all(calls));
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(refreshes.get(), 1, "ten 401s, one refresh");
    assert_eq!(c.stats().refreshes, 1);
    assert_eq!(fake.seen.borrow().requests.len(), 20);
}

#[test]
fn proactive_refresh_before_expiry() {
    let fake = Fake::new(|_, _, _| ok(json!(true)));
    let (mut c, refreshes) = client(&fake, |_| {});
    c.auth = super::auth::Auth::new(
        super::auth::Token {
            access: SECRET.into(),
            expires_at_ms: Some(fake.clock.get() + 30_000.0),
        },
        Some(Rc::new(super::testkit::Refresh(refreshes.clone()))),
    );
    block_on(c.call("profile", &Body::new(), &safe())).unwrap();
    assert_eq!(refreshes.get(), 1, "30 s left is inside the 60 s margin");
    assert_eq!(fake.seen.borrow().requests[0].1["auth"], json!("fresh-1"));
}

#[test]
fn rate_limit_answers_are_retried_even_for_writes() {
    let n = Rc::new(Cell::new(0));
    let count = n.clone();
    let fake = Fake::new(move |_, _, _| {
        count.set(count.get() + 1);
        if count.get() <= 2 {
            err(503, "QUERY_LIMIT_EXCEEDED")
        } else {
            ok(json!(7))
        }
    });
    let (c, _) = client(&fake, |_| {});
    let start = fake.clock.get();
    let r = block_on(c.call("crm.deal.add", &Body::new(), &unsafe_())).unwrap();
    assert_eq!(r.result, Some(json!(7)));
    let stats = c.stats();
    assert_eq!(
        (stats.rate_limited, stats.retries, stats.requests),
        (2, 2, 3)
    );
    assert!(
        fake.clock.get() - start >= 1000.0,
        "waited for the saturated bucket to drain"
    );
}

#[test]
fn ambiguous_failures_retry_only_safe_calls() {
    let fake = Fake::new(|_, _, _| err(500, "INTERNAL_SERVER_ERROR"));
    let (c, _) = client(&fake, |cfg| cfg.retry.max_retries = 3);
    let e = block_on(c.call("crm.deal.get", &Body::new(), &safe())).unwrap_err();
    assert_eq!(
        (e.code.as_ref(), e.status, e.retryable(), e.method.as_str()),
        ("INTERNAL_SERVER_ERROR", 500, true, "crm.deal.get")
    );
    assert_eq!(
        fake.seen.borrow().requests.len(),
        4,
        "one try and three retries"
    );
    let e = block_on(c.call("crm.deal.add", &Body::new(), &unsafe_())).unwrap_err();
    assert_eq!(e.code, "INTERNAL_SERVER_ERROR");
    assert_eq!(
        fake.seen.borrow().requests.len(),
        5,
        "a write is not repeated blindly"
    );
}

#[test]
fn html_and_malformed_bodies_are_bad_responses() {
    let bodies = Rc::new(Cell::new(0));
    let b = bodies.clone();
    let fake = Fake::new(move |_, _, _| {
        b.set(b.get() + 1);
        let (status, body) = match b.get() {
            1 => (502, "<html><body>502 Bad Gateway</body></html>"),
            2 => (
                200,
                "{\"result\":{\"process_id\":\"5f0c\",\"events\":[{\"ID\":\"1\",",
            ),
            3 => (200, "[1, 2]"),
            _ => (200, "{\"result\": 5}"),
        };
        Ok(super::platform::HttpResponse {
            status,
            body: body.into(),
        })
    });
    let (c, _) = client(&fake, |cfg| cfg.retry.max_retries = 0);
    let e = block_on(c.call("crm.deal.get", &Body::new(), &safe())).unwrap_err();
    assert_eq!(
        (e.code.as_ref(), e.status, e.retryable()),
        (code::BAD_RESPONSE, 502, true)
    );
    assert!(e.description.contains("HTML"));
    let e = block_on(c.call("crm.deal.get", &Body::new(), &safe())).unwrap_err();
    assert_eq!((e.code.as_ref(), e.status), (code::BAD_RESPONSE, 200));
    let e = block_on(c.call("crm.deal.get", &Body::new(), &safe())).unwrap_err();
    assert_eq!(e.code, code::BAD_RESPONSE, "JSON, but not an object");
    assert_eq!(
        block_on(c.call("crm.deal.get", &Body::new(), &safe()))
            .unwrap()
            .result,
        Some(json!(5))
    );
}

#[test]
fn operating_limit_pauses_the_method_until_reset() {
    let n = Rc::new(Cell::new(0));
    let count = n.clone();
    let fake = Fake::new(move |_, _, now| {
        count.set(count.get() + 1);
        let reset = (now / 1000.0).floor() + 90.0;
        match count.get() {
            1 => Ok(super::platform::HttpResponse {
                status: 200,
                body: json!({"result": 1, "time": {"start": now / 1000.0, "operating": 479.9, "operating_reset_at": reset}}).to_string(),
            }),
            _ => ok(json!(2)),
        }
    });
    let (c, _) = client(&fake, |cfg| cfg.rate = None);
    block_on(c.call("crm.item.list", &Body::new(), &safe())).unwrap();
    let before = fake.clock.get();
    block_on(c.call("crm.item.list", &Body::new(), &safe())).unwrap();
    let waited = fake.clock.get() - before;
    assert!(
        (89_000.0..=91_000.0).contains(&waited),
        "paused {waited} ms until the reset"
    );
    // Another method is not paused.
    let before = fake.clock.get();
    block_on(c.call("crm.deal.get", &Body::new(), &safe())).unwrap();
    assert_eq!(fake.clock.get(), before);
}

#[test]
fn operation_time_limit_answer_blocks_and_retries() {
    let n = Rc::new(Cell::new(0));
    let count = n.clone();
    let fake = Fake::new(move |_, _, _| {
        count.set(count.get() + 1);
        if count.get() == 1 {
            err(429, "OPERATION_TIME_LIMIT")
        } else {
            ok(json!(1))
        }
    });
    let (c, _) = client(&fake, |cfg| cfg.rate = None);
    let before = fake.clock.get();
    block_on(c.call("crm.item.list", &Body::new(), &unsafe_())).unwrap();
    assert!(
        fake.clock.get() - before >= 60_000.0,
        "no reset time known: waited a minute bucket"
    );
    assert_eq!(c.stats().operating_limited, 1);
}

/// A portal whose counter drains 2 per second, checked once per second: a client with the
/// standard preset makes 200 calls without one refusal.
#[test]
fn standard_preset_never_trips_a_standard_portal() {
    let level = Rc::new(Cell::new(0.0f64));
    let tick = Rc::new(Cell::new(0.0f64));
    let (l, t) = (level.clone(), tick.clone());
    let fake = Fake::new(move |_, _, now| {
        while now - t.get() >= 1000.0 {
            t.set(t.get() + 1000.0);
            l.set((l.get() - 2.0).max(0.0));
        }
        if l.get() >= 50.0 {
            return err(503, "QUERY_LIMIT_EXCEEDED");
        }
        l.set(l.get() + 1.0);
        ok(json!(true))
    });
    tick.set(fake.clock.get());
    let (c, _) = client(&fake, |cfg| cfg.rate = Some(STANDARD));
    for _ in 0..200 {
        block_on(c.call("profile", &Body::new(), &safe())).unwrap();
    }
    let stats = c.stats();
    assert_eq!(stats.rate_limited, 0);
    assert_eq!(stats.requests, 200);
    assert!(
        stats.waited_ms >= 75_000.0,
        "200 calls at 2/s after a burst of 48: {} ms",
        stats.waited_ms
    );
}

#[test]
fn tokens_never_reach_errors_or_logs() {
    let fake = Fake::new(|_, _, _| err(401, "expired_token"));
    let (c, _) = client(&fake, |cfg| cfg.retry.max_retries = 2);
    let e = block_on(c.call("profile", &Body::new(), &safe())).unwrap_err();
    let seen = fake.seen.borrow();
    for text in seen
        .logs
        .iter()
        .chain(std::iter::once(&e.message()))
        .chain(std::iter::once(&format!("{e:?}")))
    {
        assert!(!text.contains(SECRET) && !text.contains("fresh-"), "{text}");
    }
    assert_eq!(e.code, "expired_token");
    // Structured loggers get the portal and the method with each message.
    assert!(
        seen.logs.iter().any(|l| l.starts_with("info: refreshing")
            && l.contains(" portal=")
            && l.ends_with(" method=profile")),
        "{:?}",
        seen.logs
    );
}

#[test]
fn abort_stops_a_waiting_call() {
    let fake = Fake::new(|_, _, _| err(503, "QUERY_LIMIT_EXCEEDED"));
    let (c, _) = client(&fake, |_| {});
    let signal = Rc::new(Cell::new(true));
    let opts = CallOptions {
        idempotency: Idempotency::Safe,
        signal: Some(&signal),
        connector: None,
    };
    let e = block_on(c.call("profile", &Body::new(), &opts)).unwrap_err();
    assert_eq!(e.code, code::ABORTED);
    assert!(fake.seen.borrow().requests.is_empty());
}

#[test]
fn connector_rides_on_every_call() {
    let fake = Fake::new(|_, _, _| ok(json!(true)));
    let (c, _) = client(&fake, |cfg| cfg.connector = Some("crm_sync".into()));
    block_on(c.call("crm.deal.update", &Body::new(), &unsafe_())).unwrap();
    let q = Queue {
        client: &c,
        connector: Some("other"),
    };
    block_on(q.clear("p".repeat(32).as_str(), &Selection::All, None)).unwrap();
    let seen = fake.seen.borrow();
    assert_eq!(seen.requests[0].1["auth_connector"], json!("crm_sync"));
    assert_eq!(seen.requests[1].1["auth_connector"], json!("other"));
}

#[test]
fn batches_split_at_fifty_and_map_results() {
    let fake = Fake::new(|_, body, _| {
        let cmd = body["cmd"].as_object().unwrap();
        let mut results = serde_json::Map::new();
        let mut errors = serde_json::Map::new();
        for (name, text) in cmd {
            if text.as_str().unwrap().starts_with("crm.deal.get?id=13") {
                errors.insert(
                    name.clone(),
                    json!({"error": "NOT_FOUND", "error_description": "Not found"}),
                );
            } else {
                results.insert(name.clone(), json!(text));
            }
        }
        let errors = if errors.is_empty() {
            json!([])
        } else {
            Value::Object(errors)
        };
        ok(
            json!({"result": results, "result_error": errors, "result_total": [], "result_next": [], "result_time": []}),
        )
    });
    let (c, _) = client(&fake, |_| {});
    let commands: Vec<Command> = (0..120)
        .map(|i| Command {
            name: format!("c{i}"),
            method: "crm.deal.get".into(),
            params: Some(Tree::Map(vec![("id".into(), Tree::Num(i as f64))])),
        })
        .collect();
    let items = block_on(batch::run(&c, commands, false, None, None)).unwrap();
    assert_eq!(
        fake.seen.borrow().requests.len(),
        3,
        "120 commands: 50 + 50 + 20"
    );
    assert_eq!(items.len(), 120);
    assert_eq!(
        items[5].result.as_ref().unwrap().as_ref().unwrap(),
        &json!("crm.deal.get?id=5")
    );
    let e = items[13].result.as_ref().unwrap_err();
    assert_eq!(
        (e.code.as_ref(), e.method.as_str()),
        ("NOT_FOUND", "crm.deal.get")
    );
    let bad = vec![Command {
        name: "a b".into(),
        method: "crm.deal.get".into(),
        params: None,
    }];
    assert_eq!(
        block_on(batch::run(&c, bad, false, None, None))
            .unwrap_err()
            .code,
        code::INVALID_ARGUMENT
    );
}

#[test]
fn halt_stops_later_chunks() {
    let fake = Fake::new(|_, _, _| {
        ok(
            json!({"result": {"c0": 1}, "result_error": {"c1": {"error": "X", "error_description": ""}}}),
        )
    });
    let (c, _) = client(&fake, |_| {});
    let commands: Vec<Command> = (0..60)
        .map(|i| Command {
            name: format!("c{i}"),
            method: "crm.deal.add".into(),
            params: None,
        })
        .collect();
    let items = block_on(batch::run(&c, commands, true, None, None)).unwrap();
    assert_eq!(fake.seen.borrow().requests.len(), 1);
    assert!(items[0].result.is_ok());
    assert_eq!(items[1].result.as_ref().unwrap_err().code, "X");
    assert_eq!(
        items[2].result.as_ref().unwrap_err().code,
        code::BATCH_HALTED
    );
    assert_eq!(
        items[59].result.as_ref().unwrap_err().code,
        code::BATCH_HALTED
    );
}

#[test]
fn queue_calls_validate_before_sending() {
    let fake = Fake::new(|_, _, _| ok(json!(true)));
    let (c, _) = client(&fake, |_| {});
    let q = Queue {
        client: &c,
        connector: None,
    };
    let filter = tree(r#"{"PROCESS_ID": "x"}"#);
    let e = block_on(q.get(
        &GetArgs {
            filter: Some(filter),
            ..GetArgs::default()
        },
        None,
    ))
    .unwrap_err();
    assert_eq!(e.code, code::INVALID_ARGUMENT);
    assert!(block_on(q.get(
        &GetArgs {
            limit: Some(0.0),
            ..GetArgs::default()
        },
        None
    ))
    .is_err());
    assert!(block_on(q.clear("pid", &Selection::MessageIds(vec!["short".into()]), None)).is_err());
    assert!(block_on(q.clear("", &Selection::All, None)).is_err());
    // Empty selections send nothing: the portal would clear the whole reservation.
    block_on(q.clear("pid", &Selection::MessageIds(vec![]), None)).unwrap();
    block_on(q.clear("pid", &Selection::Ids(vec![]), None)).unwrap();
    block_on(q.error("pid", &[], None)).unwrap();
    assert!(block_on(q.bind(&["ONOFFLINEEVENT".into()], None)).is_err());
    assert!(block_on(q.notify_at("ftp://x", None, None)).is_err());
    assert!(fake.seen.borrow().requests.is_empty());
}

#[test]
fn reservations_and_bindings_decode() {
    let fake = Fake::new(|method, body, _| match method {
        "event.offline.get" => {
            assert_eq!(body["clear"], json!(0));
            assert_eq!(body["filter"], json!({">ID": 3}));
            ok(
                json!({"process_id": "p".repeat(32), "events": [{"ID": "4", "TIMESTAMP_X": "2024-07-18T12:32:31+02:00", "EVENT_NAME": "ONCRMDEALUPDATE",
                "EVENT_DATA": {"FIELDS": {"ID": "42"}}, "EVENT_ADDITIONAL": {"user_id": "1"}, "MESSAGE_ID": "m".repeat(32)}]}),
            )
        }
        "batch" => ok(
            json!({"result": {"e0": true}, "result_error": {"e1": {"error": "ERROR_CORE", "error_description": "Unable to set event handler: Handler already binded"}}}),
        ),
        _ => ok(json!(null)),
    });
    let (c, _) = client(&fake, |_| {});
    let q = Queue {
        client: &c,
        connector: None,
    };
    let filter = tree(r#"{">ID": "3"}"#);
    let taken = block_on(q.get(
        &GetArgs {
            filter: Some(filter),
            clear: false,
            ..GetArgs::default()
        },
        None,
    ))
    .unwrap();
    assert_eq!(taken.process_id.as_deref(), Some("p".repeat(32).as_str()));
    assert_eq!(taken.events[0].id, 4);
    let bound = block_on(q.bind(&["onCrmDealAdd".into(), "ONCRMDEALUPDATE".into()], None)).unwrap();
    assert_eq!(
        bound,
        vec![
            Bound {
                event: "ONCRMDEALADD".into(),
                created: true
            },
            Bound {
                event: "ONCRMDEALUPDATE".into(),
                created: false
            }
        ]
    );
}

#[test]
fn custom_rate_limits_apply() {
    let fake = Fake::new(|_, _, _| ok(json!(true)));
    let (c, _) = client(&fake, |cfg| {
        cfg.rate = Some(RateLimit {
            burst: 5.0,
            drain_per_sec: 1.0,
        })
    });
    let start = fake.clock.get();
    for _ in 0..10 {
        block_on(c.call("profile", &Body::new(), &safe())).unwrap();
    }
    // Capacity 4 (one second of headroom), then one per second.
    assert_eq!(fake.clock.get() - start, 6000.0);
}
