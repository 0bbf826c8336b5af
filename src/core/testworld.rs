//! A world for native tests of the reservation flow: the emulator's own REST logic run in
//! process behind the fake transport (same queue rules as over HTTP, no sockets, a virtual
//! clock), a network that can lose or refuse requests, handlers that record what they saw,
//! and a reporter that keeps what it was told.

use super::consume::{
    consume, Batch, DeadReason, EventRef, Flow, Handler, Outcome, Progress, Reporter,
};
use super::error::B24Error;
use super::journal::{Journal, MemoryStore, Store};
use super::model::OfflineEvent;
use super::offline::Queue;
use super::options::Options;
use super::platform::{HttpResponse, TransportError};
use super::testkit::{block_on, client, Fake, SECRET};
use crate::core::joint::LocalBoxFuture;
use b24_emulator::events::fire;
use b24_emulator::params::Params;
use b24_emulator::rest::{execute, Incoming};
use b24_emulator::state::{Shared, Token};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;

/// What the fake network does to one request: `Lose` lets the portal execute it and then drops
/// the answer (the case that strands reservations); `Refuse` fails it before it gets there;
/// `Answer` answers in the portal's place without executing it; `Alter` executes it and
/// changes the answer (a portal or proxy bug).
#[derive(Clone, Copy)]
#[allow(dead_code)]
pub(crate) enum Net {
    Pass,
    Lose,
    /// The portal acts twice and the second answer arrives: what a browser does when a reused
    /// connection drops before the answer starts (it sends the request again, silently).
    Twice,
    Refuse,
    Answer(u16, &'static str),
    Alter(fn(&mut Value)),
}

pub(crate) type Script = Rc<RefCell<dyn FnMut(&str, &Value) -> Net>>;

pub(crate) struct World {
    pub(crate) shared: Arc<Shared>,
    pub(crate) fake: Fake,
}

impl World {
    pub(crate) fn new(script: Script) -> World {
        let shared = Arc::new(Shared::new("acme.bitrix24.com".into(), true));
        {
            let mut st = shared.lock();
            st.config.rate_limit = None;
            st.config.operating_limit_s = None;
            let app = st.app("local.app");
            // The token of the test clients, and those their refresher hands out.
            let names = (1..=50).map(|n| ["fresh-", &n.to_string()].concat());
            for name in std::iter::once(SECRET.to_string()).chain(names) {
                st.tokens.insert(
                    name,
                    Token {
                        app,
                        user_id: 1,
                        admin: true,
                        expires_ms: i64::MAX,
                    },
                );
            }
        }
        let portal = shared.clone();
        let fake = Fake::new(move |method, body, _| {
            let net = (script.borrow_mut())(method, body);
            match net {
                Net::Refuse => return Err(TransportError::Network("connection refused".into())),
                Net::Answer(status, code) => {
                    return Ok(HttpResponse {
                        status,
                        body: json!({"error": code, "error_description": "scripted"}).to_string(),
                    })
                }
                _ => {}
            }
            let params = Params::from_value(body.clone());
            let (status, v, _) = {
                let mut st = portal.lock();
                // Twice: the first answer is lost, the second arrives.
                let times = if matches!(net, Net::Twice) { 2 } else { 1 };
                let mut last = None;
                for _ in 0..times {
                    last = Some(execute(
                        &portal,
                        &mut st,
                        Incoming {
                            method,
                            webhook: None,
                            params: params.clone(),
                            https: true,
                        },
                    ));
                }
                last.expect("executed at least once")
            };
            let mut v = v;
            match net {
                Net::Alter(change) => {
                    change(&mut v);
                    Ok(HttpResponse {
                        status,
                        body: v.to_string(),
                    })
                }
                Net::Lose => Err(TransportError::Network("connection reset".into())),
                _ => Ok(HttpResponse {
                    status,
                    body: v.to_string(),
                }),
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

    pub(crate) fn passing() -> World {
        World::new(Rc::new(RefCell::new(|_: &str, _: &Value| Net::Pass)))
    }

    pub(crate) fn trigger(&self, first: u32, n: u32) {
        let now = self.shared.clock.now_ms();
        let mut st = self.shared.lock();
        let mut touched = BTreeSet::new();
        for i in first..first + n {
            fire(
                &mut st,
                now,
                "ONCRMDEALUPDATE",
                &json!({"FIELDS": {"ID": i.to_string()}}),
                1,
                None,
                None,
                &mut touched,
            );
        }
    }

    /// Every row: (id, message id, process id, error).
    pub(crate) fn rows(&self) -> Vec<(u64, String, Option<String>, bool)> {
        let st = self.shared.lock();
        st.queue
            .rows()
            .map(|r| {
                (
                    r.id,
                    String::from_utf8_lossy(&r.message_id[..]).into_owned(),
                    r.process.as_ref().map(|p| p.to_string()),
                    r.error,
                )
            })
            .collect()
    }

    /// Moves the portal's clock (not the consumer's) forward.
    pub(crate) fn advance_portal(&self, ms: i64) {
        assert!(self.shared.clock.advance_ms(ms));
    }

    /// (rows in the queue, of which reserved, of which in the error queue)
    pub(crate) fn queue(&self) -> (usize, usize, usize) {
        let st = self.shared.lock();
        let rows: Vec<_> = st.queue.rows().collect();
        (
            rows.len(),
            rows.iter().filter(|r| r.process.is_some()).count(),
            rows.iter().filter(|r| r.error).count(),
        )
    }

    /// Requests that `pick` says yes to.
    pub(crate) fn count_where(&self, pick: impl Fn(&str, &Value) -> bool) -> usize {
        self.fake
            .seen
            .borrow()
            .requests
            .iter()
            .filter(|(m, b)| pick(m, b))
            .count()
    }

    /// Whether a line of the log says yes to `pick`.
    pub(crate) fn logged(&self, pick: impl Fn(&str) -> bool) -> bool {
        self.fake.seen.borrow().logs.iter().any(|l| pick(l))
    }

    pub(crate) fn count(&self, method: &str) -> usize {
        self.fake
            .seen
            .borrow()
            .requests
            .iter()
            .filter(|(m, _)| m == method)
            .count()
    }
}

/// Whether a request is a `batch` with a command of `method` in it (a drain's step carries
/// `event.offline.clear` for what it acknowledges and `event.offline.get` for what it reserves).
pub(crate) fn batch_has(m: &str, body: &Value, method: &str) -> bool {
    m == "batch"
        && body["cmd"].as_object().is_some_and(|cmd| {
            cmd.values()
                .any(|c| c.as_str().is_some_and(|c| c.starts_with(method)))
        })
}

/// A reservation, on its own or in a drain's step.
pub(crate) fn reserves(m: &str, body: &Value) -> bool {
    (m == "event.offline.get" && body.get("process_id").is_none())
        || batch_has(m, body, "event.offline.get")
}

/// An acknowledgement, on its own or in a drain's step.
pub(crate) fn acknowledges(m: &str, body: &Value) -> bool {
    m == "event.offline.clear" || batch_has(m, body, "event.offline.clear")
}

/// Decides a batch's outcome from the batch and the call number.
pub(crate) type Decide = Box<dyn Fn(&Batch<Value>, usize) -> Outcome>;

/// Records every event handed over and decides outcomes with `decide`.
pub(crate) struct Recorder {
    pub(crate) handled: RefCell<Vec<(u64, bool)>>,
    decide: Decide,
    pub(crate) calls: Cell<usize>,
}

impl Recorder {
    pub(crate) fn new(decide: impl Fn(&Batch<Value>, usize) -> Outcome + 'static) -> Rc<Recorder> {
        Rc::new(Recorder {
            handled: RefCell::default(),
            decide: Box::new(decide),
            calls: Cell::new(0),
        })
    }

    pub(crate) fn ids(&self) -> BTreeSet<u64> {
        self.handled.borrow().iter().map(|(id, _)| *id).collect()
    }
}

pub(crate) struct Shared2(pub(crate) Rc<Recorder>);

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
pub(crate) struct Log {
    pub(crate) progress: RefCell<Vec<Progress>>,
    pub(crate) dead: RefCell<Vec<(u64, DeadReason)>>,
    pub(crate) malformed: RefCell<Vec<Value>>,
    pub(crate) errors: RefCell<Vec<B24Error>>,
}

pub(crate) struct LogRef(pub(crate) Rc<Log>);

impl Reporter<Value> for LogRef {
    fn progress(&self, p: &Progress) {
        self.0.progress.borrow_mut().push(p.clone());
    }
    fn dead_letters(&self, events: &[OfflineEvent<Value>], reason: DeadReason) {
        self.0
            .dead
            .borrow_mut()
            .extend(events.iter().map(|e| (e.id, reason)));
    }
    fn malformed(&self, rows: &[Value]) {
        self.0.malformed.borrow_mut().extend(rows.iter().cloned());
    }
    fn error(&self, error: &B24Error) {
        self.0.errors.borrow_mut().push(error.clone());
    }
}

/// Failed by message id, the most common form.
pub(crate) fn failed(ids: impl IntoIterator<Item = String>) -> Outcome {
    Outcome::Failed(ids.into_iter().map(EventRef::Message).collect())
}

/// Virtual milliseconds a reservation is held (`strandedAfterMs` of the tests).
pub(crate) const HOLD_MS: f64 = 60_000.0;

pub(crate) fn flow<'a>(
    c: &'a super::client::Client<Fake>,
    journal: &'a Journal,
    owner: &'a str,
) -> Flow<'a, Fake> {
    Flow {
        queue: Queue {
            client: c,
            connector: None,
        },
        journal,
        owner,
        locked: false,
        flag: false,
        signed: true,
        liveness: None,
        hold_ms: HOLD_MS,
        unknown_ms: HOLD_MS,
        handle_ms: 1_000.0,
    }
}

pub(crate) fn opts(limit: f64) -> Options {
    Options {
        limit: Some(limit),
        handler_timeout_ms: 1_000.0,
        ..Options::default()
    }
}

/// Runs one consumer to the end.
pub(crate) fn run(
    world: &World,
    store: Rc<dyn Store>,
    rec: &Rc<Recorder>,
    opts: &Options,
    signal: Option<Rc<Cell<bool>>>,
) -> (Progress, Rc<Log>) {
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let journal = Journal::new(store, "journal".into());
    let flow = flow(&c, &journal, "consumer");
    let log = Rc::new(Log::default());
    let p = block_on(consume(
        &flow,
        &Shared2(rec.clone()),
        &LogRef(log.clone()),
        opts,
        signal.as_ref(),
        None,
    ))
    .unwrap();
    (p, log)
}

pub(crate) fn memory() -> Rc<dyn Store> {
    Rc::new(MemoryStore::default())
}
