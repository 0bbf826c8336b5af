//! The whole HTTP protocol of a portal without a server: a request goes in, a [`Step`] comes
//! out, telling the shell what to do: answer, close the connection without an answer, wait,
//! post a form to an application, or open listeners for new portals (the last three with a
//! [`Next`] to [`resume`] once done). Routing, CORS, the REST envelope, faults and the control
//! API all live here, so the native binary (`server.rs`, axum) and the npm package's Node shell
//! (`wasm.rs`) serve the same portal. Forms the portal posts on its own (onOfflineEvent) wait in
//! [`crate::portals::Registry::take_deliveries`]; held-back ones are released by
//! [`crate::portals::Registry::tick`].

use crate::control;
use crate::error::ApiError;
use crate::faults::{corrupt_rows, Kind, Phase};
use crate::params::{parse_form, Params};
use crate::portals::{self, Post};
use crate::rest::{execute, normalize_method, Incoming};
use crate::state::{Config, Shared};
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest request body accepted (a batch of big CRM records fits easily).
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// How long a shell waits for an application to answer a posted form.
pub const POST_TIMEOUT_MS: u64 = 10_000;
/// How often a shell calls [`crate::portals::Registry::tick`].
pub const TICK_MS: u64 = 25;

/// One request as it arrived.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path with its query, as on the request line (`/rest/profile?auth=...`).
    pub target: String,
    /// Every header, or at least `content-type`, `origin` and the CORS preflight's
    /// `access-control-request-method` / `-headers` (names in any case).
    pub headers: Vec<(String, String)>,
    /// The body; when it was larger than [`MAX_BODY`] the shell stops reading, passes what it
    /// has and sets `oversized`.
    pub body: Vec<u8>,
    pub oversized: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    fn json(status: u16, body: &Value) -> Response {
        Response::new(status, "application/json; charset=utf-8", body.to_string())
    }

    fn error(e: &ApiError) -> Response {
        Response::json(e.status, &e.body())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the shell does next.
pub enum Step {
    /// Send this answer.
    Respond(Response),
    /// Close the connection without answering (the `drop` fault).
    Drop,
    /// Wait `ms` milliseconds, then `resume(next, Resumed::Waited)`.
    Wait { ms: u64, next: Next },
    /// POST `form` (`application/x-www-form-urlencoded`) to `url`, following no redirect, for at
    /// most [`POST_TIMEOUT_MS`]; then `resume(next, Resumed::Posted(status))`, 0 for no answer.
    Post {
        url: String,
        form: String,
        next: Next,
    },
    /// Open `count` listeners on free loopback ports, then `resume(next,
    /// Resumed::Listening(Ok(addresses)))` with their `127.0.0.1:PORT`, and serve each as the
    /// portal [`crate::portals::Registry::find`] gives for that address.
    Listen { count: usize, next: Next },
}

/// What the shell did about a [`Step`].
#[derive(Debug, Clone)]
pub enum Resumed {
    Waited,
    Posted(u16),
    Listening(Result<Vec<String>, String>),
}

/// The rest of a request that waits for the shell.
pub struct Next {
    portal: Arc<Shared>,
    cors: Cors,
    stage: Stage,
}

enum Stage {
    /// After the portal's `slow_ms`.
    Slowed(Box<RestCall>),
    /// After a delay fault before the method.
    Delayed(Box<RestCall>),
    /// After a delay fault after the method: the answer is ready.
    Answer(Response),
    /// After posting an install/uninstall form: the rest of the control answer.
    Posted(Value),
    /// After opening listeners for new portals of this configuration.
    Portals(Config),
}

/// A step before the CORS headers are added.
enum Flow {
    Respond(Response),
    Drop,
    Wait(u64, Stage),
    Post(Post),
    Listen(usize, Config),
}

impl From<Response> for Flow {
    fn from(r: Response) -> Flow {
        Flow::Respond(r)
    }
}

/// The CORS of the portal: any origin, with credentials, every method and header a preflight
/// asks for (what tower-http's `very_permissive` answered before this module existed).
#[derive(Debug, Clone, Default)]
struct Cors {
    origin: Option<String>,
}

impl Cors {
    const VARY: &'static str =
        "origin, access-control-request-method, access-control-request-headers";

    fn common(&self, resp: &mut Response) {
        resp.headers
            .push(("access-control-allow-credentials".into(), "true".into()));
        resp.headers.push(("vary".into(), Cors::VARY.into()));
        if let Some(o) = &self.origin {
            resp.headers
                .push(("access-control-allow-origin".into(), o.clone()));
        }
    }

    fn preflight(&self, req: &Request) -> Response {
        let mut resp = Response {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        };
        self.common(&mut resp);
        for (asked, allowed) in [
            (
                "access-control-request-method",
                "access-control-allow-methods",
            ),
            (
                "access-control-request-headers",
                "access-control-allow-headers",
            ),
        ] {
            if let Some(v) = req.header(asked) {
                resp.headers.push((allowed.into(), v.to_string()));
            }
        }
        resp.headers
            .push(("access-control-max-age".into(), "600".into()));
        resp
    }
}

fn step(portal: &Arc<Shared>, cors: Cors, flow: Flow) -> Step {
    let next = |stage| Next {
        portal: portal.clone(),
        cors: cors.clone(),
        stage,
    };
    match flow {
        Flow::Respond(mut resp) => {
            cors.common(&mut resp);
            Step::Respond(resp)
        }
        Flow::Drop => Step::Drop,
        Flow::Wait(ms, stage) => Step::Wait {
            ms,
            next: next(stage),
        },
        Flow::Post(Post { url, form, answer }) => Step::Post {
            url,
            form,
            next: next(Stage::Posted(answer)),
        },
        Flow::Listen(count, config) => Step::Listen {
            count,
            next: next(Stage::Portals(config)),
        },
    }
}

/// Handles one request to `portal`.
pub fn handle(portal: &Arc<Shared>, req: Request) -> Step {
    let cors = Cors {
        origin: req.header("origin").map(str::to_string),
    };
    if req.method == "OPTIONS" {
        return Step::Respond(cors.preflight(&req));
    }
    let flow = route(portal, &req);
    step(portal, cors, flow)
}

/// Carries on with a request once the shell has done what its last [`Step`] asked.
pub fn resume(next: Next, done: Resumed) -> Step {
    let Next {
        portal,
        cors,
        stage,
    } = next;
    let flow = match (stage, done) {
        (Stage::Slowed(call), Resumed::Waited) => rest_checked(&portal, *call),
        (Stage::Delayed(call), Resumed::Waited) => rest_run(&portal, *call),
        (Stage::Answer(resp), Resumed::Waited) => resp.into(),
        (Stage::Posted(answer), Resumed::Posted(status)) => {
            Response::json(200, &portals::delivered(answer, status)).into()
        }
        (Stage::Portals(config), Resumed::Listening(Ok(addresses))) => {
            Response::json(200, &portals::open(&portal, &config, &addresses)).into()
        }
        (Stage::Portals(_), Resumed::Listening(Err(why))) => {
            Response::error(&ApiError::new(500, "CANNOT_LISTEN", why)).into()
        }
        (_, done) => Response::error(&ApiError::new(
            500,
            "INTERNAL_SERVER_ERROR",
            format!("the emulator's shell resumed a request with {done:?}, not what it asked for"),
        ))
        .into(),
    };
    step(&portal, cors, flow)
}

fn route(shared: &Arc<Shared>, req: &Request) -> Flow {
    if req.oversized || req.body.len() > MAX_BODY {
        return Response::error(&ApiError::new(
            413,
            "INVALID_REQUEST",
            "request body too large",
        ))
        .into();
    }
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let body = &req.body[..];
    let is_json = req
        .header("content-type")
        .is_some_and(|v| v.contains("json"));
    let method = req.method.as_str();
    if let Some(rest) = path.strip_prefix("/rest/") {
        let mut params = parse_form(query.as_bytes());
        if !body.is_empty() {
            let more = if is_json {
                match serde_json::from_slice::<Value>(body) {
                    Ok(v) => Params::from_value(v),
                    Err(_) => {
                        return Response::error(&ApiError::new(
                            400,
                            "INVALID_REQUEST",
                            "The request body is not valid JSON",
                        ))
                        .into()
                    }
                }
            } else {
                parse_form(body)
            };
            params.merge(more);
        }
        return rest_start(shared, rest, params);
    }
    if path == "/trap" || path.starts_with("/trap/") {
        return trap(shared, method, path, query, body).into();
    }
    if path == "/oauth/token" || path == "/oauth/token/" {
        let mut params = parse_form(query.as_bytes());
        params.merge(parse_form(body));
        return match crate::oauth::serve(shared, &params) {
            Ok(v) => Response::json(200, &v),
            Err(e) => Response::error(&e),
        }
        .into();
    }
    if let Some(name) = path.strip_prefix("/_emulator/") {
        return control_call(shared, method, path, name, body);
    }
    if (path == "/portal" || path == "/portal/") && method == "GET" {
        return Response::new(200, "text/html; charset=utf-8", crate::portal::PAGE).into();
    }
    if path == "/" && method == "GET" {
        return Response::json(
            200,
            &json!({
                "emulator": "b24-emulator",
                "rest": format!("{}/rest/", shared.base_url()),
                "control": format!("{}/_emulator/", shared.base_url()),
                "portal": format!("{}/portal/?app=URL", shared.base_url()),
                "oauth_server": portals::oauth_server(shared),
            }),
        )
        .into();
    }
    Response::error(&ApiError::new(
        404,
        "NOT_FOUND",
        format!("nothing at {path}"),
    ))
    .into()
}

fn control_call(shared: &Arc<Shared>, method: &str, path: &str, name: &str, body: &[u8]) -> Flow {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                return Response::error(&ApiError::new(
                    400,
                    "BAD_REQUEST",
                    "control calls take a JSON body",
                ))
                .into()
            }
        }
    };
    let name = name.trim_end_matches('/');
    // The control calls that wait for the shell: making listeners, calling the app's handler.
    if method == "POST" {
        let waits = match name {
            "portals" => Some(portals::create(&body).map(|(n, c)| Flow::Listen(n, c))),
            "install" => Some(portals::install(shared, &body).map(Flow::Post)),
            "uninstall" => Some(portals::uninstall(shared, &body).map(Flow::Post)),
            _ => None,
        };
        if let Some(r) = waits {
            return r.unwrap_or_else(|e| Response::error(&e).into());
        }
    }
    match control::handle(shared, method, name, &body) {
        Some(Ok(v)) => Response::json(200, &v),
        Some(Err(e)) => Response::error(&e),
        None => Response::error(&ApiError::new(
            404,
            "NOT_FOUND",
            format!("no control endpoint {method} {path}"),
        )),
    }
    .into()
}

/// `/trap/...`: another host as far as a client is concerned (tests redirect to it through
/// `localhost` while the portal is `127.0.0.1`). It records whatever arrives, for
/// `GET /_emulator/trap`, and answers like a portal would, so that a client that followed a
/// redirect here would take the answer for the portal's.
fn trap(shared: &Arc<Shared>, method: &str, path: &str, query: &str, body: &[u8]) -> Response {
    const KEEP: usize = 64 * 1024;
    let text = String::from_utf8_lossy(&body[..body.len().min(KEEP)]).into_owned();
    let mut st = shared.lock();
    if st.trapped.len() < 1000 {
        st.trapped.push(json!({
            "method": method,
            "path": path,
            "query": query,
            "body": text,
        }));
    }
    Response::json(200, &json!({ "result": "trapped", "time": { "start": 0 } }))
}

/// A REST call between its steps.
struct RestCall {
    method: String,
    webhook: Option<(String, String)>,
    params: Params,
    before: Option<Kind>,
    after: Option<Kind>,
    deleted: bool,
}

fn rest_start(shared: &Arc<Shared>, rest: &str, params: Params) -> Flow {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (method, webhook) = match segments.as_slice() {
        [m] => (normalize_method(m), None),
        [user, code, m] => (
            normalize_method(m),
            Some((user.to_string(), code.to_string())),
        ),
        _ => return Response::error(&ApiError::method_not_found(rest)).into(),
    };
    // Every request that arrives is counted, including those a fault then answers. Whether a
    // fault fires after the method is decided now, while the parameters are at hand.
    let (before, after, health) = {
        let mut st = shared.lock();
        *st.stats.requests.entry(method.clone()).or_default() += 1;
        let before = st.faults.pick(&method, &params, Phase::Before);
        let after = match before {
            Some(Kind::Delay(_)) | None => st.faults.pick(&method, &params, Phase::After),
            Some(_) => None,
        };
        (before, after, st.health.clone())
    };
    let call = RestCall {
        method,
        webhook,
        params,
        before,
        after,
        deleted: health.deleted,
    };
    if health.slow_ms > 0 {
        return Flow::Wait(health.slow_ms, Stage::Slowed(Box::new(call)));
    }
    rest_checked(shared, call)
}

fn rest_checked(shared: &Arc<Shared>, mut call: RestCall) -> Flow {
    if call.deleted {
        return Response::error(&ApiError::new(500, "PORTAL_DELETED", "Portal was deleted")).into();
    }
    if let Some(kind) = call.before.take() {
        shared.lock().stats.faults_injected += 1;
        return match kind {
            Kind::Delay(ms) => Flow::Wait(ms, Stage::Delayed(Box::new(call))),
            other => fault(other),
        };
    }
    rest_run(shared, call)
}

fn rest_run(shared: &Arc<Shared>, call: RestCall) -> Flow {
    let (status, mut body, touched) = {
        let mut st = shared.lock();
        let incoming = Incoming {
            method: &call.method,
            webhook: call.webhook.as_ref().map(|(u, c)| (u.as_str(), c.as_str())),
            params: call.params,
            https: shared.https,
        };
        execute(shared, &mut st, incoming)
    };
    crate::notify::schedule(shared, touched);
    let Some(kind) = call.after else {
        return Response::json(status, &body).into();
    };
    let withheld = !matches!(kind, Kind::Delay(_) | Kind::CorruptRows { .. });
    let events = carries_events(&body);
    {
        let mut st = shared.lock();
        st.stats.faults_injected += 1;
        if withheld && events {
            st.stats.answers_lost_with_events += 1;
        }
    }
    match kind {
        Kind::Delay(ms) => Flow::Wait(ms, Stage::Answer(Response::json(status, &body))),
        Kind::CorruptRows { fields, count } => {
            corrupt_rows(&mut body, &fields, count);
            Response::json(status, &body).into()
        }
        other => fault(other),
    }
}

/// Whether an answer hands out events: `event.offline.get`'s, or a `batch` with such a command.
fn carries_events(body: &Value) -> bool {
    let some = |v: &Value| {
        v.get("events")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty())
    };
    let Some(result) = body.get("result") else {
        return false;
    };
    some(result)
        || match result.get("result") {
            Some(Value::Object(cmds)) => cmds.values().any(some),
            Some(Value::Array(cmds)) => cmds.iter().any(some),
            _ => false,
        }
}

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

fn fault(kind: Kind) -> Flow {
    match kind {
        Kind::Http500 => Response::error(&ApiError::internal()),
        Kind::Html502 => Response::new(502, "text/html", HTML_502),
        Kind::QueryLimit => Response::error(&ApiError::query_limit()),
        Kind::ExpiredToken => Response::error(&ApiError::expired_token()),
        Kind::MalformedJson => Response::new(
            200,
            "application/json; charset=utf-8",
            "{\"result\":{\"process_id\":\"5f0c\",\"events\":[{\"ID\":\"1\",",
        ),
        Kind::Redirect { status, location } => {
            let mut resp = Response::new(status, "text/plain; charset=utf-8", "");
            resp.headers.push(("location".into(), location));
            resp
        }
        // Applied to the answer in `rest_run`; never reaches here.
        Kind::CorruptRows { .. } => Response::error(&ApiError::internal()),
        Kind::Drop | Kind::Delay(_) => return Flow::Drop,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal() -> Arc<Shared> {
        let p = Arc::new(Shared::new("127.0.0.1:1".into(), false));
        p.registry.add(p.clone());
        p
    }

    fn request(method: &str, target: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Origin".into(), "http://app.example".into()),
            ],
            body: body.as_bytes().to_vec(),
            oversized: false,
        }
    }

    fn answer(s: Step) -> (u16, Value, Response) {
        let Step::Respond(r) = s else {
            panic!("not an answer")
        };
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v, r)
    }

    #[test]
    fn answers_that_hand_out_events_are_told_apart() {
        let row = json!([{"ID": "1"}]);
        assert!(carries_events(
            &json!({"result": {"process_id": "p", "events": row}})
        ));
        assert!(!carries_events(
            &json!({"result": {"process_id": null, "events": []}})
        ));
        assert!(carries_events(
            &json!({"result": {"result": {"a0": true, "g0": {"events": row}}}})
        ));
        assert!(carries_events(
            &json!({"result": {"result": [true, {"events": row}]}})
        ));
        assert!(!carries_events(
            &json!({"result": {"result": {"g0": {"events": []}}}})
        ));
        assert!(!carries_events(&json!({"error": "INTERNAL_SERVER_ERROR"})));
    }

    #[test]
    fn a_delay_before_the_method_runs_it_only_when_resumed() {
        let p = portal();
        let (_, token, _) = answer(handle(&p, request("POST", "/_emulator/token", "{}")));
        let auth = token["access_token"].as_str().unwrap().to_string();
        let rule = r#"{"rules":[{"method":"profile","kind":{"delay_ms":70}}]}"#;
        answer(handle(&p, request("POST", "/_emulator/faults", rule)));
        let body = json!({ "auth": auth }).to_string();
        let Step::Wait { ms, next } = handle(&p, request("POST", "/rest/profile", &body)) else {
            panic!("a delay fault waits")
        };
        assert_eq!(ms, 70);
        assert_eq!(p.lock().operating.per_method(p.clock.now_ms()).len(), 0);
        let (status, v, resp) = answer(resume(next, Resumed::Waited));
        assert_eq!((status, &v["result"]["ID"]), (200, &json!("1")));
        assert_eq!(
            resp.header("access-control-allow-origin"),
            Some("http://app.example")
        );
    }

    #[test]
    fn install_posts_then_answers_with_the_apps_status() {
        let p = portal();
        let body = r#"{"client_id":"app.x","handler":"http://127.0.0.1:9/hook"}"#;
        let Step::Post { url, form, next } =
            handle(&p, request("POST", "/_emulator/install", body))
        else {
            panic!("install posts")
        };
        assert_eq!(url, "http://127.0.0.1:9/hook");
        assert!(form.starts_with("event=ONAPPINSTALL&"), "{form}");
        let (status, v, _) = answer(resume(next, Resumed::Posted(503)));
        assert_eq!(status, 200);
        assert_eq!(
            (&v["delivered"], &v["status"]),
            (&json!(false), &json!(503))
        );
        assert_eq!(v["portal"]["domain"], json!("127.0.0.1:1"));
        // A resume that does not fit the step is an error, not a panic.
        let Step::Post { next, .. } = handle(&p, request("POST", "/_emulator/install", body))
        else {
            panic!("install posts")
        };
        let (status, v, _) = answer(resume(next, Resumed::Waited));
        assert_eq!(
            (status, &v["error"]),
            (500, &json!("INTERNAL_SERVER_ERROR"))
        );
    }

    #[test]
    fn new_portals_live_on_the_addresses_the_shell_opened() {
        let p = portal();
        let Step::Listen { count, next } =
            handle(&p, request("POST", "/_emulator/portals", r#"{"count":2}"#))
        else {
            panic!("portals need listeners")
        };
        assert_eq!(count, 2);
        let addrs = vec!["127.0.0.1:2".to_string(), "127.0.0.1:3".to_string()];
        let (status, v, _) = answer(resume(next, Resumed::Listening(Ok(addrs))));
        assert_eq!(status, 200);
        assert_eq!(v["portals"][1]["origin"], json!("http://127.0.0.1:3"));
        assert!(p.registry.find("127.0.0.1:3").is_some());
        let Step::Listen { next, .. } = handle(&p, request("POST", "/_emulator/portals", "{}"))
        else {
            panic!("portals need listeners")
        };
        let (status, v, _) = answer(resume(next, Resumed::Listening(Err("no ports".into()))));
        assert_eq!((status, &v["error"]), (500, &json!("CANNOT_LISTEN")));
    }

    #[test]
    fn preflight_oversized_and_drop() {
        let p = portal();
        let mut pre = request("OPTIONS", "/rest/event.offline.get", "");
        pre.headers
            .push(("Access-Control-Request-Method".into(), "POST".into()));
        let (status, _, resp) = answer(handle(&p, pre));
        assert_eq!(status, 200);
        assert_eq!(resp.header("access-control-allow-methods"), Some("POST"));
        assert_eq!(resp.header("access-control-max-age"), Some("600"));
        let mut big = request("POST", "/rest/profile", "");
        big.oversized = true;
        assert_eq!(answer(handle(&p, big)).0, 413);
        answer(handle(
            &p,
            request(
                "POST",
                "/_emulator/faults",
                r#"{"rules":[{"kind":"drop"}]}"#,
            ),
        ));
        assert!(matches!(
            handle(&p, request("GET", "/rest/profile", "")),
            Step::Drop
        ));
    }
}
