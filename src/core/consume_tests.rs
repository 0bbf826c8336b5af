//! The consumer through every transition, against the emulator's own REST logic run in
//! process behind the fake transport (same queue rules as over HTTP, no sockets, a virtual
//! clock): success, partial failure, a throwing handler, a lost acknowledgement, a lost
//! reservation, abort mid-batch, resume from the journal, the error-queue policies, and
//! parallel consumers.

use super::consume::{
    consume, ensure_extended, Batch, ErrorPolicy, Flow, Handler, Options, Outcome, Progress,
    Reporter,
};
use super::error::code;
use super::journal::{Journal, MemoryStore, Store};
use super::model::{Features, OfflineEvent};
use super::offline::Queue;
use super::platform::{HttpResponse, TransportError};
use super::testkit::{client, Fake, SECRET};
use b24_emulator::events::fire;
use b24_emulator::params::Params;
use b24_emulator::rest::{execute, Incoming};
use b24_emulator::state::{Shared, Token};
use futures_executor::{block_on, LocalPool};
use futures_util::future::{join_all, FutureExt, LocalBoxFuture};
use futures_util::task::LocalSpawnExt;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

/// What the fake network does to one request: `Lose` lets the portal execute it and then drops
/// the answer (the case that strands reservations); `Refuse` fails it before it gets there.
#[derive(Clone, Copy, PartialEq)]
enum Net {
    Pass,
    Lose,
    Refuse,
}

type Script = Rc<RefCell<dyn FnMut(&str, &Value) -> Net>>;

struct World {
    shared: Arc<Shared>,
    fake: Fake,
}

impl World {
    fn new(script: Script) -> World {
        let shared = Arc::new(Shared::new("acme.bitrix24.com".into(), true));
        {
            let mut st = shared.lock();
            st.config.rate_limit = None;
            st.config.operating_limit_s = None;
            let app = st.app("local.app");
            st.tokens.insert(
                SECRET.into(),
                Token {
                    app,
                    user_id: 1,
                    admin: true,
                    expires_ms: i64::MAX,
                },
            );
        }
        let portal = shared.clone();
        let fake = Fake::new(move |method, body, _| {
            let net = (script.borrow_mut())(method, body);
            if net == Net::Refuse {
                return Err(TransportError::Network("connection refused".into()));
            }
            let params = Params::from_value(body.clone());
            let (status, v, _) = {
                let mut st = portal.lock();
                execute(
                    &portal,
                    &mut st,
                    Incoming {
                        method,
                        webhook: None,
                        params,
                        https: true,
                    },
                )
            };
            match net {
                Net::Pass => Ok(HttpResponse {
                    status,
                    body: v.to_string(),
                }),
                Net::Lose | Net::Refuse => Err(TransportError::Network("connection reset".into())),
            }
        });
        let world = World { shared, fake };
        let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
        let q = Queue {
            client: &c,
            connector: None,
        };
        block_on(q.bind(&["ONCRMDEALUPDATE".into()], None)).unwrap();
        world
    }

    fn passing() -> World {
        World::new(Rc::new(RefCell::new(|_: &str, _: &Value| Net::Pass)))
    }

    fn trigger(&self, first: u32, n: u32) {
        let mut st = self.shared.lock();
        let mut touched = BTreeSet::new();
        for i in first..first + n {
            fire(
                &mut st,
                0,
                "ONCRMDEALUPDATE",
                &json!({"FIELDS": {"ID": i.to_string()}}),
                1,
                None,
                None,
                &mut touched,
            );
        }
    }

    /// (rows in the queue, of which reserved, of which in the error queue)
    fn queue(&self) -> (usize, usize, usize) {
        let st = self.shared.lock();
        let rows: Vec<_> = st.queue.rows().collect();
        (
            rows.len(),
            rows.iter().filter(|r| r.process.is_some()).count(),
            rows.iter().filter(|r| r.error).count(),
        )
    }

    fn count(&self, method: &str) -> usize {
        self.fake
            .seen
            .borrow()
            .requests
            .iter()
            .filter(|(m, _)| m == method)
            .count()
    }
}

/// Decides a batch's outcome from the batch and the call number.
type Decide = Box<dyn Fn(&Batch<Value>, usize) -> Outcome>;

/// Records every event handed over and decides outcomes with `decide`.
struct Recorder {
    handled: RefCell<Vec<(u64, bool)>>,
    decide: Decide,
    calls: Cell<usize>,
}

impl Recorder {
    fn new(decide: impl Fn(&Batch<Value>, usize) -> Outcome + 'static) -> Rc<Recorder> {
        Rc::new(Recorder {
            handled: RefCell::default(),
            decide: Box::new(decide),
            calls: Cell::new(0),
        })
    }

    fn ids(&self) -> BTreeSet<u64> {
        self.handled.borrow().iter().map(|(id, _)| *id).collect()
    }
}

struct Shared2(Rc<Recorder>);

impl Handler<Value> for Shared2 {
    fn handle(&self, batch: &Batch<Value>) -> LocalBoxFuture<'static, Outcome> {
        let n = self.0.calls.get();
        self.0.calls.set(n + 1);
        self.0
            .handled
            .borrow_mut()
            .extend(batch.events.iter().map(|e| (e.id, batch.error)));
        let outcome = (self.0.decide)(batch, n);
        Box::pin(async move { outcome })
    }
}

#[derive(Default)]
struct Log {
    progress: RefCell<Vec<Progress>>,
    dead: RefCell<Vec<u64>>,
}

struct LogRef(Rc<Log>);

impl Reporter<Value> for LogRef {
    fn progress(&self, p: &Progress) {
        self.0.progress.borrow_mut().push(p.clone());
    }
    fn dead_letters(&self, events: &[OfflineEvent<Value>]) {
        self.0.dead.borrow_mut().extend(events.iter().map(|e| e.id));
    }
}

fn opts(limit: f64) -> Options {
    Options {
        limit: Some(limit),
        stranded_after_ms: 1_000.0,
        ..Options::default()
    }
}

/// Runs one consumer to the end.
fn run(
    world: &World,
    store: Rc<dyn Store>,
    rec: &Rc<Recorder>,
    opts: &Options,
    signal: Option<Rc<Cell<bool>>>,
) -> (Progress, Rc<Log>) {
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let journal = Journal::new(store, "journal".into());
    let flow = Flow {
        queue: Queue {
            client: &c,
            connector: None,
        },
        journal: &journal,
    };
    let log = Rc::new(Log::default());
    let p = block_on(consume(
        &flow,
        &Shared2(rec.clone()),
        &LogRef(log.clone()),
        opts,
        signal.as_ref(),
    ))
    .unwrap();
    (p, log)
}

fn memory() -> Rc<dyn Store> {
    Rc::new(MemoryStore::default())
}

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
            Outcome::Failed(
                b.events
                    .iter()
                    .filter(|e| e.id % 2 == 0)
                    .map(|e| e.message_id.clone())
                    .collect(),
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
    assert!(world
        .fake
        .seen
        .borrow()
        .logs
        .iter()
        .any(|l| l.contains("the handler threw")));
}

#[test]
fn a_lost_acknowledgement_is_repeated() {
    let lost = Rc::new(Cell::new(0));
    let l = lost.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, _: &Value| {
        if m == "event.offline.clear" && l.get() < 2 {
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
    assert_eq!((p.acked, p.unsettled, p.duplicates), (20, 0, 0));
    assert_eq!(world.queue(), (0, 0, 0));
}

#[test]
fn an_acknowledgement_that_never_arrives_is_settled_by_the_next_run() {
    let broken = Rc::new(Cell::new(true));
    let b = broken.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, _: &Value| {
        if m == "event.offline.clear" && b.get() {
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
fn a_lost_reservation_is_found_by_the_sweep_and_recovered() {
    let lost = Rc::new(Cell::new(false));
    let l = lost.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, body: &Value| {
        if m == "event.offline.get" && body.get("process_id").is_none() && !l.get() {
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
        (p.reserved, p.recovered, p.acked),
        (35, 25, 60),
        "25 stranded rows recovered by their process id"
    );
    assert_eq!(rec.ids().len(), 60);
    assert_eq!(world.queue(), (0, 0, 0), "nothing stranded");
    assert!(
        world.fake.clock.get() - before >= 1_000.0,
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
                let flow = Flow {
                    queue: Queue {
                        client: &c,
                        connector: None,
                    },
                    journal: &journal,
                };
                let _ = consume(
                    &flow,
                    &Hang(Cell::new(0)),
                    &LogRef(Rc::default()),
                    &opts(50.0),
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
    let rec = Recorder::new(move |b, _| Outcome::Failed(poison(b)));
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
    let rec = Recorder::new(|b, _| Outcome::Failed(vec![b.events[0].message_id.clone()]));
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
    let flows: Vec<Flow<Fake>> = clients
        .iter()
        .zip(&journals)
        .map(|(c, j)| Flow {
            queue: Queue {
                client: c,
                connector: None,
            },
            journal: j,
        })
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
        .map(|(f, h)| consume(f, h, &reporter, &o, None).boxed_local());
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
