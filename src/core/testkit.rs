//! A scripted portal and a virtual clock for native tests of everything above the transport.
//! Sleeps wait on the virtual clock; [`block_on`] moves it forward to the next timer whenever
//! every task waits (as a paused tokio clock does), so waits cost no real time, a hanging
//! future times out exactly when its deadline comes, and a run that waits for nothing at all
//! panics instead of hanging the test.

use super::args::Tree;
use super::args::{Arg, Body};
use super::auth::{Auth, Refresher, Token};
use super::client::{Client, Config};
use super::error::Result;
use super::joint::LocalBoxFuture;
use super::origin::Origin;
use super::platform::{Context, HttpRequest, HttpResponse, Level, Platform, TransportError};
use serde_json::{json, Map, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Returns `Pending` once, so that concurrent futures interleave as they would over a network.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

struct Timer {
    at: f64,
    clock: Rc<Cell<f64>>,
    waker: std::task::Waker,
    /// Cleared when the sleep is dropped before it ends.
    live: Rc<Cell<bool>>,
}

thread_local! {
    static TIMERS: RefCell<Vec<Timer>> = const { RefCell::new(Vec::new()) };
}

struct Flag(std::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs a future to the end on the virtual clock (see the module comment).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::atomic::Ordering;
    let flag = std::sync::Arc::new(Flag(std::sync::atomic::AtomicBool::new(true)));
    let waker = std::task::Waker::from(flag.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        flag.0.store(false, Ordering::SeqCst);
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        if flag.0.load(Ordering::SeqCst) {
            continue;
        }
        // Every task waits: the earliest live timer fires, its clock moving up to it.
        let next = TIMERS.with(|t| {
            let mut t = t.borrow_mut();
            t.retain(|x| x.live.get());
            let i = (0..t.len()).min_by(|a, b| t[*a].at.total_cmp(&t[*b].at))?;
            Some(t.swap_remove(i))
        });
        let timer = next.expect("the future waits for nothing: it would hang forever");
        if timer.clock.get() < timer.at {
            timer.clock.set(timer.at);
        }
        timer.waker.wake();
    }
}

/// Ends a sleep's timer when the sleep is dropped.
struct Live(Rc<Cell<bool>>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

pub type Reply = std::result::Result<HttpResponse, TransportError>;
/// How long an answer from a URL takes to come back (ms).
pub type Latency = Box<dyn Fn(&str) -> f64>;
type Handler = Box<dyn FnMut(&str, &str, &Value, f64) -> Reply>;

/// The requests the fake portal saw: (method, body), and the log lines.
#[derive(Default)]
pub struct Seen {
    pub requests: Vec<(String, Value)>,
    pub logs: Vec<String>,
}

#[derive(Clone)]
pub struct Fake {
    pub clock: Rc<Cell<f64>>,
    pub seen: Rc<RefCell<Seen>>,
    /// How long an answer takes to come back, by URL (the server acts at once): a request
    /// whose answer would take longer than its timeout times out when the timeout passes.
    pub latency: Rc<RefCell<Latency>>,
    handler: Rc<RefCell<Handler>>,
}

pub fn ok(result: Value) -> Reply {
    Ok(HttpResponse {
        status: 200,
        body: json!({"result": result, "time": {"start": 0.0}}).to_string(),
    })
}

pub fn err(status: u16, code: &str) -> Reply {
    Ok(HttpResponse {
        status,
        body: json!({"error": code, "error_description": "scripted"}).to_string(),
    })
}

impl Fake {
    /// `handler(method, body, now_ms)` plays the portal.
    pub fn new(mut handler: impl FnMut(&str, &Value, f64) -> Reply + 'static) -> Fake {
        Fake::routed(move |_, method, body, now| handler(method, body, now))
    }

    /// `handler(url, method, body, now_ms)` plays several servers (portals, an OAuth server):
    /// `method` is the REST method of a POST, or the path of a GET (`oauth/token`), whose query
    /// arrives as `body` (an object of strings).
    pub fn routed(handler: impl FnMut(&str, &str, &Value, f64) -> Reply + 'static) -> Fake {
        Fake {
            clock: Rc::new(Cell::new(1_000_000.0)),
            seen: Rc::default(),
            latency: Rc::new(RefCell::new(Box::new(|_| 0.0))),
            handler: Rc::new(RefCell::new(Box::new(handler))),
        }
    }
}

pub fn to_json(arg: &Arg<Value>) -> Value {
    match arg {
        Arg::Str(s) => json!(s),
        Arg::Int(i) => json!(i),
        Arg::Bool(b) => json!(b),
        Arg::List(l) => Value::Array(l.iter().map(to_json).collect()),
        Arg::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Arg::Data(d) => d.clone(),
    }
}

impl Platform for Fake {
    type Data = Value;
    type Signal = Rc<Cell<bool>>;

    fn now_ms(&self) -> f64 {
        self.clock.get()
    }

    fn random(&self) -> f64 {
        0.5
    }

    async fn sleep(&self, ms: f64, signal: Option<&Self::Signal>) -> Result<()> {
        let aborted = || {
            signal
                .map(|s| s.get())
                .unwrap_or(false)
                .then(|| super::error::B24Error::new(super::error::code::ABORTED, "aborted"))
        };
        if let Some(e) = aborted() {
            return Err(e);
        }
        let at = self.clock.get() + super::time::clamp_delay(ms);
        let live = Live(Rc::new(Cell::new(true)));
        let clock = self.clock.clone();
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if clock.get() >= at {
                return std::task::Poll::Ready(());
            }
            if !registered {
                registered = true;
                TIMERS.with(|t| {
                    t.borrow_mut().push(Timer {
                        at,
                        clock: clock.clone(),
                        waker: cx.waker().clone(),
                        live: live.0.clone(),
                    })
                });
            }
            std::task::Poll::Pending
        })
        .await;
        match aborted() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn aborted(&self, signal: &Self::Signal) -> bool {
        signal.get()
    }

    async fn send(&self, request: HttpRequest<'_>, _signal: Option<&Self::Signal>) -> Reply {
        let (method, body) = match &request.body {
            Some(text) => (
                request
                    .url
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .trim_end_matches(".json")
                    .to_string(),
                serde_json::from_str::<Value>(text).expect("the client sends JSON"),
            ),
            None => {
                let (path, query) = request.url.split_once('?').unwrap_or((request.url, ""));
                let path = path.splitn(4, '/').nth(3).unwrap_or("");
                let query: Map<String, Value> = super::signal::parse_form(query)
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                (path.trim_end_matches('/').to_string(), Value::Object(query))
            }
        };
        self.seen
            .borrow_mut()
            .requests
            .push((method.clone(), body.clone()));
        yield_now().await;
        let reply = (self.handler.borrow_mut())(request.url, &method, &body, self.clock.get());
        let late = (self.latency.borrow())(request.url);
        if late > 0.0 {
            if late >= request.timeout_ms {
                let _ = self.sleep(request.timeout_ms, None).await;
                return Err(TransportError::Timeout);
            }
            let _ = self.sleep(late, None).await;
        }
        reply
    }

    fn encode(&self, body: &Body<Value>, connector: Option<&str>, auth: &str) -> Result<String> {
        let mut map = match &body.base {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        for (k, v) in &body.args {
            map.insert(k.clone(), to_json(v));
        }
        if let Some(c) = connector {
            map.entry("auth_connector".to_string())
                .or_insert_with(|| json!(c));
        }
        map.insert("auth".into(), json!(auth));
        Ok(Value::Object(map).to_string())
    }

    fn parse(&self, text: &str) -> Option<Value> {
        serde_json::from_str(text).ok()
    }

    fn null() -> Value {
        Value::Null
    }

    fn number_text(n: f64) -> String {
        n.to_string()
    }

    fn field(value: &Value, key: &str) -> Option<Value> {
        value.get(key).filter(|v| !v.is_null()).cloned()
    }

    fn text(value: &Value) -> Option<String> {
        value.as_str().map(str::to_string)
    }

    fn number(value: &Value) -> Option<f64> {
        value.as_f64()
    }

    fn boolean(value: &Value) -> Option<bool> {
        value.as_bool()
    }

    fn items(value: &Value) -> Option<Vec<Value>> {
        value.as_array().cloned()
    }

    fn entries(value: &Value) -> Option<Vec<(String, Value)>> {
        value
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn log(&self, level: Level, message: &str, context: &Context<'_>) {
        let mut line = [level.name(), ": ", message].concat();
        for (k, v) in [
            (" portal=", context.portal),
            (" method=", context.method),
            (" processId=", context.process_id),
        ] {
            if let Some(v) = v {
                line.push_str(k);
                line.push_str(v);
            }
        }
        self.seen.borrow_mut().logs.push(line);
    }
}

/// Hands out `fresh-N` tokens and counts the calls.
pub struct Refresh(pub Rc<Cell<u32>>);

impl Refresher for Refresh {
    fn refresh(&self) -> LocalBoxFuture<'static, Result<Token>> {
        let n = self.0.clone();
        Box::pin(async move {
            n.set(n.get() + 1);
            yield_now().await;
            Ok(Token {
                access: ["fresh-", &n.get().to_string()].concat(),
                expires_at_ms: None,
            })
        })
    }
}

pub const SECRET: &str = "SECRET-TOKEN-0123456789";

/// A client of `acme.bitrix24.com` with the token [`SECRET`] and a counting refresher.
pub fn client(fake: &Fake, config: impl FnOnce(&mut Config)) -> (Client<Fake>, Rc<Cell<u32>>) {
    let refreshes = Rc::new(Cell::new(0));
    let mut cfg = Config::new(Origin::parse("acme.bitrix24.com", false).unwrap());
    config(&mut cfg);
    let auth = Auth::new(
        Token {
            access: SECRET.into(),
            expires_at_ms: None,
        },
        Some(Rc::new(Refresh(refreshes.clone()))),
    );
    (Client::new(fake.clone(), cfg, auth), refreshes)
}

/// What JavaScript would receive, as JSON.
pub fn to_value<T: super::out::ToOut<Value> + ?Sized>(v: &T) -> Value {
    fn write(o: &super::out::Out<'_, Value>) -> Value {
        use super::out::Out;
        match o {
            Out::Null => Value::Null,
            Out::Bool(b) => json!(b),
            Out::Num(n) if n.fract() == 0.0 && n.abs() < 9e15 => json!(*n as i64),
            Out::Num(n) => json!(n),
            Out::Str(s) => json!(s),
            Out::Data(d) => (*d).clone(),
            Out::List(items) => Value::Array(items.iter().map(write).collect()),
            Out::Obj(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), write(v)))
                    .collect(),
            ),
        }
    }
    write(&v.out())
}

/// A [`Tree`] from JSON text, keys in order.
pub fn tree(json: &str) -> Tree {
    super::read::tree::<Fake>(&serde_json::from_str::<Value>(json).expect("test JSON"))
}
