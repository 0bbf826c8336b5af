//! The consumer through every transition, against the emulator's own REST logic run in
//! process (see `testworld`): success, partial failure, a throwing handler, a lost
//! acknowledgement, a lost reservation, abort mid-batch, resume from the journal, the
//! error-queue policies, and parallel consumers.

use super::consume::{consume, ensure_extended, Batch, Flow, Handler, Outcome};
use super::error::code;
use super::journal::Journal;
use super::model::Features;
use super::options::{ErrorPolicy, Options};
use super::platform::Platform;
use super::testkit::{block_on, client, Fake};
use super::testworld::*;
use futures_executor::LocalPool;
use futures_util::future::{join_all, FutureExt, LocalBoxFuture};
use futures_util::task::LocalSpawnExt;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

#[test]
fn consumes_everything_in_batches() {
    let world = World::passing();
    world.trigger(1, 120);
    let rec = Recorder::new(|_, _| Outcome::Done);
    let store = memory();
    let (p, log) = run(&world, store.clone(), &rec, &opts(50.0), None);
    assert_eq!(
        (p.batches, p.reserved, p.acked, p.failed, p.duplicates),
        (3, 120, 120, 0, 0)
    );
    assert_eq!(p.remaining, Some(0));
    assert_eq!(p.stopped, "empty");
    assert_eq!(rec.ids().len(), 120);
    assert_eq!(world.queue(), (0, 0, 0));
    assert_eq!(
        block_on(store.get("journal")).unwrap(),
        None,
        "nothing left in the journal"
    );
    assert_eq!(log.progress.borrow().len(), 3, "progress after every batch");
}

#[test]
fn partial_failures_go_to_the_error_queue_and_come_back() {
    let world = World::passing();
    world.trigger(1, 100);
    // Even rows fail the first time they are seen, then succeed in the error pass.
    let rec = Recorder::new(|b, _| {
        if b.error {
            Outcome::Done
        } else {
            failed(
                b.events
                    .iter()
                    .filter(|e| e.id % 2 == 0)
                    .map(|e| e.message_id.clone()),
            )
        }
    });
    let (p, _) = run(&world, memory(), &rec, &opts(40.0), None);
    assert_eq!(
        (p.reserved, p.failed, p.acked),
        (150, 50, 100),
        "100 fresh + 50 again from the error queue, all acknowledged in the end"
    );
    assert_eq!(
        rec.handled.borrow().iter().filter(|(_, err)| *err).count(),
        50
    );
    assert_eq!(world.queue(), (0, 0, 0));
}

#[test]
fn a_throwing_handler_fails_its_whole_batch() {
    let world = World::passing();
    world.trigger(1, 30);
    let rec = Recorder::new(|_, n| {
        if n == 0 {
            Outcome::Threw("boom".into())
        } else {
            Outcome::Done
        }
    });
    let (p, _) = run(&world, memory(), &rec, &opts(10.0), None);
    assert_eq!((p.failed, p.acked), (10, 30));
    assert_eq!(world.queue(), (0, 0, 0));
    assert!(world.logged(|l| l.contains("the handler threw")
        && l.contains(" portal=")
        && l.contains(" processId=")));
}

#[test]
fn a_lost_acknowledgement_is_repeated() {
    let lost = Rc::new(Cell::new(0));
    let l = lost.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, body: &Value| {
        if acknowledges(m, body) && l.get() < 2 {
            l.set(l.get() + 1);
            Net::Lose
        } else {
            Net::Pass
        }
    })));
    world.trigger(1, 20);
    let rec = Recorder::new(|_, _| Outcome::Done);
    let (p, _) = run(&world, memory(), &rec, &opts(10.0), None);
    assert_eq!(lost.get(), 2);
    assert!(
        world.count("event.offline.clear") >= 2,
        "an acknowledgement whose answer was lost is sent again on its own"
    );
    assert_eq!((p.acked, p.unsettled, p.duplicates), (20, 0, 0));
    assert_eq!(world.queue(), (0, 0, 0));
}

#[test]
fn an_acknowledgement_that_never_arrives_is_settled_by_the_next_run() {
    let broken = Rc::new(Cell::new(true));
    let b = broken.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, body: &Value| {
        if acknowledges(m, body) && b.get() {
            Net::Refuse
        } else {
            Net::Pass
        }
    })));
    world.trigger(1, 5);
    let store = memory();
    let rec = Recorder::new(|_, _| Outcome::Done);
    let (p, _) = run(&world, store.clone(), &rec, &opts(10.0), None);
    assert_eq!((p.acked, p.unsettled), (0, 5));
    assert_eq!(world.queue(), (5, 5, 0), "still reserved, and journaled");
    broken.set(false);
    let (p, _) = run(&world, store.clone(), &rec, &opts(10.0), None);
    assert_eq!((p.recovered, p.acked), (5, 5));
    assert_eq!(world.queue(), (0, 0, 0));
    assert_eq!(block_on(store.get("journal")).unwrap(), None);
}

#[test]
fn a_lost_reservation_is_found_by_the_sweep_and_released_through_the_error_queue() {
    let lost = Rc::new(Cell::new(false));
    let l = lost.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, body: &Value| {
        if reserves(m, body) && !l.get() {
            l.set(true);
            Net::Lose
        } else {
            Net::Pass
        }
    })));
    world.trigger(1, 60);
    let rec = Recorder::new(|_, _| Outcome::Done);
    let before = world.fake.clock.get();
    let (p, _) = run(&world, memory(), &rec, &opts(25.0), None);
    assert!(lost.get());
    assert_eq!(
        (p.reserved, p.released, p.recovered, p.acked),
        (60, 25, 0, 60),
        "25 stranded rows released into the error queue, then reserved from it in the same run"
    );
    assert_eq!(rec.ids().len(), 60);
    assert_eq!(
        rec.handled
            .borrow()
            .iter()
            .filter(|(_, from_errors)| *from_errors)
            .count(),
        25,
        "the released rows came through the error pass"
    );
    assert_eq!(world.queue(), (0, 0, 0), "nothing stranded");
    assert!(
        world.fake.clock.get() - before >= HOLD_MS,
        "waited until the rows counted as stranded"
    );
}

#[test]
fn abort_mid_batch_acks_the_batch_and_stops() {
    let world = World::passing();
    world.trigger(1, 120);
    let signal = Rc::new(Cell::new(false));
    let s = signal.clone();
    let rec = Recorder::new(move |_, n| {
        if n == 1 {
            s.set(true);
        }
        Outcome::Done
    });
    let (p, _) = run(&world, memory(), &rec, &opts(50.0), Some(signal));
    assert_eq!((p.batches, p.acked, p.stopped), (2, 100, "aborted"));
    assert_eq!(world.queue(), (20, 0, 0), "the rest is untouched and free");
}

#[test]
fn a_crash_mid_batch_is_resumed_from_the_journal() {
    let world = World::passing();
    world.trigger(1, 120);
    let store = memory();
    {
        // First consumer: the handler never finishes its second batch; then the "tab" dies.
        let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
        let journal = Journal::new(store.clone(), "journal".into());
        struct Hang(Cell<usize>);
        impl Handler<Value> for Hang {
            fn handle(&self, _: &Batch<Value>) -> LocalBoxFuture<'static, Outcome> {
                self.0.set(self.0.get() + 1);
                if self.0.get() == 2 {
                    Box::pin(futures_util::future::pending())
                } else {
                    Box::pin(async { Outcome::Done })
                }
            }
        }
        let mut pool = LocalPool::new();
        pool.spawner()
            .spawn_local(async move {
                let flow = flow(&c, &journal, "consumer");
                let _ = consume(
                    &flow,
                    &Hang(Cell::new(0)),
                    &LogRef(Rc::default()),
                    &opts(50.0),
                    None,
                    None,
                )
                .await;
            })
            .unwrap();
        pool.run_until_stalled();
        // Dropping the pool drops the run mid-handler, as closing the tab would.
        drop(pool);
    }
    assert_eq!(
        world.queue(),
        (70, 50, 0),
        "batch 1 acked, batch 2 reserved and orphaned"
    );
    let rec = Recorder::new(|_, _| Outcome::Done);
    let (p, _) = run(&world, store, &rec, &opts(50.0), None);
    assert_eq!((p.recovered, p.reserved, p.acked), (50, 20, 70));
    assert_eq!(world.queue(), (0, 0, 0));
}

#[test]
fn error_queue_failures_are_parked_then_given_up() {
    let world = World::passing();
    world.trigger(1, 10);
    let poison = |b: &Batch<Value>| {
        b.events
            .iter()
            .filter(|e| e.data["FIELDS"]["ID"] == json!("7"))
            .map(|e| e.message_id.clone())
            .collect::<Vec<_>>()
    };
    let rec = Recorder::new(move |b, _| failed(poison(b)));
    let store = memory();
    let retry = Options {
        errors: ErrorPolicy::Retry(2),
        ..opts(50.0)
    };
    let (p, log) = run(&world, store.clone(), &rec, &retry, None);
    assert_eq!((p.acked, p.failed, p.parked, p.dead), (9, 1, 1, 0));
    assert_eq!(
        world.queue(),
        (1, 1, 1),
        "parked: reserved from the error queue, journaled"
    );
    assert_eq!(
        world.count("event.offline.error"),
        1,
        "an error-queue record is never sent to event.offline.error"
    );
    assert!(log.dead.borrow().is_empty());
    let (p, log) = run(&world, store.clone(), &rec, &retry, None);
    assert_eq!((p.recovered, p.dead), (1, 1));
    assert_eq!(log.dead.borrow().len(), 1);
    assert_eq!(world.queue(), (0, 0, 0));
    assert_eq!(world.count("event.offline.error"), 1);
    // With 'include' it stays parked, run after run.
    world.trigger(7, 1);
    let include = opts(50.0);
    run(&world, store.clone(), &rec, &include, None);
    let (p, _) = run(&world, store.clone(), &rec, &include, None);
    assert_eq!((p.recovered, p.parked, p.dead), (1, 1, 0));
    assert_eq!(world.queue(), (1, 1, 1));
}

#[test]
fn skip_leaves_the_error_queue_alone() {
    let world = World::passing();
    world.trigger(1, 4);
    let rec = Recorder::new(|b, _| failed([b.events[0].message_id.clone()]));
    let (p, _) = run(
        &world,
        memory(),
        &rec,
        &Options {
            errors: ErrorPolicy::Skip,
            ..opts(50.0)
        },
        None,
    );
    assert_eq!((p.acked, p.failed), (3, 1));
    assert_eq!(
        world.queue(),
        (1, 0, 1),
        "the failed one waits in the error queue"
    );
}

#[test]
fn parallel_consumers_get_disjoint_batches() {
    let world = World::passing();
    world.trigger(1, 1000);
    let recs: Vec<Rc<Recorder>> = (0..3)
        .map(|_| Recorder::new(|_, _| Outcome::Done))
        .collect();
    let clients: Vec<_> = (0..3)
        .map(|_| client(&world.fake, |cfg| cfg.rate = None).0)
        .collect();
    let journals: Vec<Journal> = (0..3)
        .map(|_| Journal::new(memory(), "journal".into()))
        .collect();
    let owners = ["a", "b", "c"];
    let flows: Vec<Flow<Fake>> = clients
        .iter()
        .zip(&journals)
        .zip(owners)
        .map(|((c, j), o)| flow(c, j, o))
        .collect();
    let o = Options {
        concurrency: 2,
        ..opts(37.0)
    };
    let handlers: Vec<Shared2> = recs.iter().map(|r| Shared2(r.clone())).collect();
    let reporter = LogRef(Rc::default());
    let runs = flows
        .iter()
        .zip(&handlers)
        .map(|(f, h)| consume(f, h, &reporter, &o, None, None).boxed_local());
    let results = block_on(join_all(runs));
    let mut all: HashMap<u64, usize> = HashMap::new();
    for r in &recs {
        for id in r.ids() {
            *all.entry(id).or_default() += 1;
        }
        assert!(!r.ids().is_empty(), "every consumer got work");
    }
    assert_eq!(all.len(), 1000);
    assert!(
        all.values().all(|n| *n == 1),
        "no event handed to two consumers"
    );
    assert_eq!(
        results
            .iter()
            .map(|r| r.as_ref().unwrap().acked)
            .sum::<u64>(),
        1000
    );
    assert_eq!(world.queue(), (0, 0, 0));
}

#[test]
fn reservations_need_the_extended_feature() {
    let e = ensure_extended(&Features {
        extended: false,
        connector: true,
    })
    .unwrap_err();
    assert_eq!(e.code, code::FEATURE_UNAVAILABLE);
    assert!(e.description.contains("rest_offline_extended") && e.description.contains("take()"));
    assert!(ensure_extended(&Features {
        extended: true,
        connector: false
    })
    .is_ok());
}

/// At the ceiling: each batch costs one request (its acknowledgement travels with the next
/// reservation), and an idle queue one request more; nothing else is sent while draining.
#[test]
fn a_drain_moves_one_batch_per_request() {
    let world = World::passing();
    world.trigger(1, 510);
    let rec = Recorder::new(|_, _| Outcome::Done);
    let (p, _) = run(&world, memory(), &rec, &opts(50.0), None);
    assert_eq!((p.batches, p.acked), (11, 510));
    assert_eq!(
        world.count_where(reserves),
        12,
        "eleven batches, then one that found both queues empty"
    );
    assert_eq!(world.count("event.offline.get"), 0);
    assert_eq!(world.count("event.offline.clear"), 0);
    assert_eq!(world.queue(), (0, 0, 0));
}

/// An idle polling consumer costs one request a poll (both queues in one `batch`), plus a look
/// for stranded reservations every `strandedAfterMs / 2`; `wake()` ends its wait at once.
#[test]
fn an_idle_poll_is_one_request_and_wake_ends_the_wait() {
    let polls = Rc::new(Cell::new(0u32));
    let signal = Rc::new(Cell::new(false));
    let (p2, s2) = (polls.clone(), signal.clone());
    let world = World::new(Rc::new(RefCell::new(move |m: &str, body: &Value| {
        if reserves(m, body) {
            p2.set(p2.get() + 1);
            if p2.get() == 60 {
                s2.set(true);
            }
        }
        Net::Pass
    })));
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let journal = Journal::new(memory(), "j".into());
    let f = flow(&c, &journal, "a");
    let rec = Recorder::new(|_, _| Outcome::Done);
    let o = Options {
        poll: Some((1_000.0, 1_000.0)),
        ..opts(50.0)
    };
    let start = world.fake.clock.get();
    let p = block_on(consume(
        &f,
        &Shared2(rec.clone()),
        &LogRef(Rc::default()),
        &o,
        Some(&signal),
        None,
    ))
    .unwrap();
    let minutes = (world.fake.clock.get() - start) / 60_000.0;
    assert_eq!(p.stopped, "aborted");
    assert_eq!(world.count_where(reserves), 60, "one request a poll");
    assert_eq!(world.count("batch"), 61, "and the binding, before");
    // One list for the estimate at start, then a look every HOLD_MS / 2.
    let looks = world.count("event.offline.list");
    assert_eq!(
        looks,
        1 + 1 + (minutes * 60_000.0 / (HOLD_MS / 2.0)) as usize
    );
    assert_eq!(
        world.count("event.offline.get") + world.count("event.offline.clear"),
        0
    );

    // wake(): the wait of an hour ends as soon as the alarm rings.
    let alarm = super::joint::Alarm::default();
    let signal = Rc::new(Cell::new(false));
    let hour = Options {
        poll: Some((3_600_000.0, 3_600_000.0)),
        ..opts(50.0)
    };
    let before = world.fake.clock.get();
    let wake_then_stop = async {
        world.fake.sleep(1_000.0, None).await.unwrap();
        world.trigger(1, 3);
        alarm.ring();
        world.fake.sleep(1_000.0, None).await.unwrap();
        signal.set(true);
        alarm.ring();
    };
    let (handler, reporter) = (Shared2(rec.clone()), LogRef(Rc::default()));
    let run = consume(&f, &handler, &reporter, &hour, Some(&signal), Some(&alarm));
    let (p, _) = block_on(futures_util::future::join(run, wake_then_stop));
    let p = p.unwrap();
    assert_eq!((p.acked, p.stopped), (3, "aborted"));
    assert!(
        world.fake.clock.get() - before < 10_000.0,
        "woken, not waiting an hour"
    );
}

/// The plan's features and the app's code are asked once per client, whichever of its queues
/// asks; a failed ask is not kept.
#[test]
fn the_queue_context_is_asked_once_per_client() {
    // Armed once the world is set up (it binds an event with a batch).
    let refuse = Rc::new(Cell::new(false));
    let r = refuse.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, _: &Value| {
        if m == "batch" && r.get() {
            r.set(false);
            Net::Answer(503, "INTERNAL_SERVER_ERROR")
        } else {
            Net::Pass
        }
    })));
    let (c, _) = client(&world.fake, |cfg| {
        cfg.rate = None;
        cfg.retry.max_retries = 0;
    });
    let queue = |connector| super::offline::Queue {
        client: &c,
        connector,
    };
    refuse.set(true);
    let before = world.count("batch");
    assert!(block_on(queue(None).context(None)).is_err());
    let (features, app) = block_on(queue(None).context(None)).unwrap();
    assert_eq!(
        features,
        Features {
            extended: true,
            connector: true
        }
    );
    assert_eq!(
        block_on(queue(Some("crm")).context(None)).unwrap(),
        (features, app)
    );
    assert_eq!(
        world.count("batch") - before,
        2,
        "one refused, one answered, then kept"
    );
}

/// Concurrency drains a busy queue side by side, yet an idle poll still costs one request: the
/// other drains start only once the first finds work.
#[test]
fn idle_polls_cost_one_request_whatever_the_concurrency() {
    let idle_reserves = Rc::new(Cell::new(0u32));
    let drained = Rc::new(Cell::new(false));
    let signal = Rc::new(Cell::new(false));
    let (r2, d2, s2) = (idle_reserves.clone(), drained.clone(), signal.clone());
    let world = World::new(Rc::new(RefCell::new(move |m: &str, body: &Value| {
        if d2.get() && reserves(m, body) {
            r2.set(r2.get() + 1);
            if r2.get() == 30 {
                s2.set(true);
            }
        }
        Net::Pass
    })));
    world.trigger(1, 200);
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let journal = Journal::new(memory(), "j".into());
    let f = flow(&c, &journal, "a");
    let rec = Recorder::new(|_, _| Outcome::Done);
    let (r3, d3) = (rec.clone(), drained.clone());
    let o = Options {
        poll: Some((1_000.0, 1_000.0)),
        concurrency: 4,
        ..opts(50.0)
    };
    let watch = async {
        while r3.ids().len() < 200 {
            world.fake.sleep(10.0, None).await.unwrap();
        }
        d3.set(true);
    };
    let start = Cell::new(0.0);
    let run = async {
        let p = consume(
            &f,
            &Shared2(rec.clone()),
            &LogRef(Rc::default()),
            &o,
            Some(&signal),
            None,
        )
        .await;
        p
    };
    let (p, _) = block_on(futures_util::future::join(run, async {
        watch.await;
        start.set(world.fake.clock.get());
    }));
    let p = p.unwrap();
    assert_eq!(rec.ids().len(), 200);
    assert_eq!(p.stopped, "aborted");
    // 30 polls after the drain took about 30 one-second waits: one request each.
    let seconds = (world.fake.clock.get() - start.get()) / 1000.0;
    assert!(
        seconds >= 28.0,
        "{seconds} s for 30 idle polls: more than one request a poll"
    );
}

/// Issue 19: a polling consumer whose drain request failed (its answer lost after the portal
/// ran it, or refused before it ran while another consumer holds a reservation) keeps draining:
/// changes made meanwhile are handled within a poll, not after a whole hold; what the lost
/// answer reserved is released when it becomes stranded, and handled then; every error that
/// passed reached the reporter; and stop ends the run at once.
#[test]
fn a_failed_drain_request_never_stops_a_polling_consumer() {
    for fault in ["lost", "refused"] {
        let failed_once = Rc::new(Cell::new(false));
        let f2 = failed_once.clone();
        let world = World::new(Rc::new(RefCell::new(move |m: &str, body: &Value| {
            if batch_has(m, body, "event.offline.get") && !f2.get() {
                f2.set(true);
                if fault == "lost" {
                    Net::Lose
                } else {
                    Net::Answer(502, "BAD_GATEWAY")
                }
            } else {
                Net::Pass
            }
        })));
        // Another consumer holds a reservation of its own (its journal is elsewhere).
        world.trigger(100, 2);
        let (other, _) = client(&world.fake, |cfg| cfg.rate = None);
        let q = super::offline::Queue {
            client: &other,
            connector: None,
        };
        let held = block_on(q.get(&super::offline::GetArgs::default(), None)).unwrap();
        assert_eq!(held.events.len(), 2);
        world.trigger(1, 3);
        let clock = world.fake.clock.clone();
        let seen: Rc<RefCell<Vec<(String, f64)>>> = Rc::default();
        let s2 = seen.clone();
        let rec = Recorder::new(move |b, _| {
            for e in &b.events {
                let id = e.data["FIELDS"]["ID"].as_str().unwrap_or("").to_string();
                s2.borrow_mut().push((id, clock.get()));
            }
            Outcome::Done
        });
        let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
        let journal = Journal::new(memory(), "j".into());
        let f = flow(&c, &journal, "mine");
        let o = Options {
            poll: Some((1_000.0, 5_000.0)),
            ..opts(50.0)
        };
        let alarm = super::joint::Alarm::default();
        let log = Rc::new(super::testworld::Log::default());
        let changed_at = Cell::new(0.0);
        let driver = async {
            // The first drain request fails; then objects 4-8 change, and 1 again.
            while !failed_once.get() {
                world.fake.sleep(100.0, None).await.unwrap();
            }
            // Once the drain that failed has ended (its retry found nothing new).
            world.fake.sleep(8_000.0, None).await.unwrap();
            changed_at.set(world.fake.clock.get());
            world.trigger(4, 5);
            world.trigger(1, 1);
            // Long enough for the lost reservation to become stranded and come back.
            world.fake.sleep(HOLD_MS + 30_000.0, None).await.unwrap();
            alarm.close();
        };
        let (handler, reporter) = (Shared2(rec.clone()), LogRef(log.clone()));
        let run = consume(&f, &handler, &reporter, &o, None, Some(&alarm));
        let (p, ()) = block_on(futures_util::future::join(run, driver));
        let p = p.unwrap();
        assert_eq!(p.stopped, "stopped", "{fault}");
        let seen = seen.borrow().clone();
        let at = |id: &str| {
            seen.iter()
                .find(|(i, t)| i == id && *t >= changed_at.get())
                .map(|(_, t)| *t - changed_at.get())
        };
        for id in ["4", "5", "6", "7", "8"] {
            let wait = at(id).unwrap_or_else(|| panic!("{fault}: {id} never handled: {seen:?}"));
            assert!(
                wait <= 5_000.0 + 1_000.0,
                "{fault}: {id} waited {wait} ms (maxIdleDelay is 5 s): {seen:?}"
            );
        }
        for id in ["1", "2", "3"] {
            assert!(
                seen.iter().any(|(i, _)| i == id),
                "{fault}: {id} handled in the end: {seen:?}"
            );
        }
        // The other consumer's live reservation is left alone until its hold is over.
        assert!(
            !log.errors.borrow().is_empty(),
            "{fault}: the error reached the reporter"
        );
        assert!(p.errors >= 1);
        let (_, reserved, _) = world.queue();
        assert!(
            reserved <= 2,
            "{fault}: only the other consumer's rows may still be held"
        );
    }
}

/// Issue 19: a one-shot run waiting for its lost reservation to become stranded drains free
/// rows meanwhile, and a graceful stop (or `wake()`) ends its wait at once.
#[test]
fn a_one_shot_run_drains_while_it_waits_and_stops_at_once() {
    let lost = Rc::new(Cell::new(false));
    let l2 = lost.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, body: &Value| {
        if reserves(m, body) && !l2.get() {
            l2.set(true);
            Net::Lose
        } else {
            Net::Pass
        }
    })));
    world.trigger(1, 3);
    let rec = Recorder::new(|_, _| Outcome::Done);
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let journal = Journal::new(memory(), "j".into());
    let f = flow(&c, &journal, "mine");
    let alarm = super::joint::Alarm::default();
    let start = world.fake.clock.get();
    let driver = async {
        while !lost.get() {
            world.fake.sleep(100.0, None).await.unwrap();
        }
        world.fake.sleep(1_000.0, None).await.unwrap();
        world.trigger(10, 4);
        // While the run waits for the lost reservation, new changes are drained.
        world.fake.sleep(20_000.0, None).await.unwrap();
        alarm.close();
    };
    let (handler, reporter) = (Shared2(rec.clone()), LogRef(Rc::default()));
    let once = opts(50.0);
    let run = consume(&f, &handler, &reporter, &once, None, Some(&alarm));
    let (p, ()) = block_on(futures_util::future::join(run, driver));
    let p = p.unwrap();
    assert_eq!(p.acked, 4, "the four free rows were drained while waiting");
    assert_eq!(p.stopped, "stopped");
    assert!(
        world.fake.clock.get() - start < HOLD_MS,
        "the stop ended the wait, not the hold"
    );
}
