//! HTTP(S) serving: routes, CORS, and an accept loop that owns each connection so that a fault
//! can close one without answering (the `drop` fault).

use crate::control;
use crate::error::ApiError;
use crate::faults::{corrupt_rows, Kind, Phase};
use crate::params::{parse_form, Params};
use crate::rest::{execute, normalize_method, Incoming};
use crate::state::Shared;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_http::cors::CorsLayer;

/// Largest request body accepted (a batch of big CRM records fits easily).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Closes the connection a request arrived on, without a response.
#[derive(Clone)]
struct ConnKill(Arc<Notify>);

static CERT_PEM: OnceLock<String> = OnceLock::new();

/// The PEM of the self-signed certificate when serving with `--tls`.
pub fn certificate_pem() -> Option<&'static str> {
    CERT_PEM.get().map(String::as_str)
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(CorsLayer::very_permissive().max_age(Duration::from_secs(600)))
        .with_state(shared)
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.status, &e.body())
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let kill = parts.extensions.get::<ConnKill>().cloned();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::new(
                413,
                "INVALID_REQUEST",
                "request body too large",
            ))
        }
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").as_bytes().to_vec();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.contains("json"))
        .unwrap_or(false);
    if let Some(rest) = path.strip_prefix("/rest/") {
        let mut params = parse_form(&query);
        if !body.is_empty() {
            let more = if is_json {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => Params::from_value(v),
                    Err(_) => {
                        return error_response(&ApiError::new(
                            400,
                            "INVALID_REQUEST",
                            "The request body is not valid JSON",
                        ))
                    }
                }
            } else {
                parse_form(&body)
            };
            params.merge(more);
        }
        return rest_call(shared, rest, params, kill).await;
    }
    if path == "/trap" || path.starts_with("/trap/") {
        return trap(&shared, &parts, &body);
    }
    if path == "/oauth/token" || path == "/oauth/token/" {
        let mut params = parse_form(&query);
        params.merge(parse_form(&body));
        return match crate::oauth::token(&shared, &params) {
            Ok(v) => json_response(200, &v),
            Err(e) => error_response(&e),
        };
    }
    if let Some(name) = path.strip_prefix("/_emulator/") {
        let body: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => {
                    return error_response(&ApiError::new(
                        400,
                        "BAD_REQUEST",
                        "control calls take a JSON body",
                    ))
                }
            }
        };
        let name = name.trim_end_matches('/');
        // The control calls that wait: making listeners, calling the app's handler.
        if parts.method == Method::POST {
            let waited = match name {
                "portals" => Some(crate::portals::create(&shared, &body).await),
                "install" => Some(crate::portals::install(&shared, &body).await),
                "uninstall" => Some(crate::portals::uninstall(&shared, &body).await),
                _ => None,
            };
            if let Some(r) = waited {
                return match r {
                    Ok(v) => json_response(200, &v),
                    Err(e) => error_response(&e),
                };
            }
        }
        return match control::handle(&shared, parts.method.as_str(), name, &body) {
            Some(Ok(v)) => json_response(200, &v),
            Some(Err(e)) => error_response(&e),
            None => error_response(&ApiError::new(
                404,
                "NOT_FOUND",
                format!("no control endpoint {} {path}", parts.method),
            )),
        };
    }
    if (path == "/portal" || path == "/portal/") && parts.method == Method::GET {
        let mut resp = (StatusCode::OK, crate::portal::PAGE).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return resp;
    }
    if path == "/" && parts.method == Method::GET {
        return json_response(
            200,
            &json!({
                "emulator": "b24-emulator",
                "rest": format!("{}/rest/", shared.base_url()),
                "control": format!("{}/_emulator/", shared.base_url()),
                "portal": format!("{}/portal/?app=URL", shared.base_url()),
            }),
        );
    }
    error_response(&ApiError::new(
        404,
        "NOT_FOUND",
        format!("nothing at {path}"),
    ))
}

/// `/trap/...`: another host as far as a client is concerned (tests redirect to it through
/// `localhost` while the portal is `127.0.0.1`). It records whatever arrives, for
/// `GET /_emulator/trap`, and answers like a portal would, so that a client that followed a
/// redirect here would take the answer for the portal's.
fn trap(shared: &Arc<Shared>, parts: &axum::http::request::Parts, body: &[u8]) -> Response {
    const KEEP: usize = 64 * 1024;
    let text = String::from_utf8_lossy(&body[..body.len().min(KEEP)]).into_owned();
    let mut st = shared.lock();
    if st.trapped.len() < 1000 {
        st.trapped.push(json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query().unwrap_or(""),
            "body": text,
        }));
    }
    json_response(200, &json!({ "result": "trapped", "time": { "start": 0 } }))
}

async fn rest_call(
    shared: Arc<Shared>,
    rest: &str,
    params: Params,
    kill: Option<ConnKill>,
) -> Response {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (method, webhook) = match segments.as_slice() {
        [m] => (normalize_method(m), None),
        [user, code, m] => (
            normalize_method(m),
            Some((user.to_string(), code.to_string())),
        ),
        _ => return error_response(&ApiError::method_not_found(rest)),
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
    if health.slow_ms > 0 {
        tokio::time::sleep(Duration::from_millis(health.slow_ms)).await;
    }
    if health.deleted {
        return error_response(&ApiError::new(500, "PORTAL_DELETED", "Portal was deleted"));
    }
    if let Some(kind) = before {
        shared.lock().stats.faults_injected += 1;
        match kind {
            Kind::Delay(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            other => return fault_response(other, kill).await,
        }
    }
    let (status, body, touched) = {
        let mut st = shared.lock();
        let incoming = Incoming {
            method: &method,
            webhook: webhook.as_ref().map(|(u, c)| (u.as_str(), c.as_str())),
            params,
            https: shared.https,
        };
        execute(&shared, &mut st, incoming)
    };
    crate::notify::schedule(&shared, touched);
    let mut body = body;
    if let Some(kind) = after {
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
            Kind::Delay(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Kind::CorruptRows { fields, count } => corrupt_rows(&mut body, &fields, count),
            other => return fault_response(other, kill).await,
        }
    }
    json_response(status, &body)
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

async fn fault_response(kind: Kind, kill: Option<ConnKill>) -> Response {
    match kind {
        Kind::Http500 => error_response(&ApiError::internal()),
        Kind::Html502 => {
            let mut resp = (StatusCode::BAD_GATEWAY, HTML_502).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            resp
        }
        Kind::QueryLimit => error_response(&ApiError::query_limit()),
        Kind::ExpiredToken => error_response(&ApiError::expired_token()),
        Kind::MalformedJson => {
            let mut resp = (
                StatusCode::OK,
                "{\"result\":{\"process_id\":\"5f0c\",\"events\":[{\"ID\":\"1\",",
            )
                .into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            resp
        }
        Kind::Redirect { status, location } => {
            let mut resp = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT),
                "",
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        // Applied to the answer in `rest_call`; never reaches here.
        Kind::CorruptRows { .. } => error_response(&ApiError::internal()),
        Kind::Drop | Kind::Delay(_) => {
            if let Some(ConnKill(n)) = kill {
                n.notify_one();
            }
            // The connection task drops this future together with the connection.
            std::future::pending::<()>().await;
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// One certificate for every portal of the process (the one `GET /_emulator/cert` gives).
fn tls_acceptor() -> std::io::Result<tokio_rustls::TlsAcceptor> {
    static ACCEPTOR: OnceLock<Option<tokio_rustls::TlsAcceptor>> = OnceLock::new();
    ACCEPTOR
        .get_or_init(|| make_tls_acceptor().ok())
        .clone()
        .ok_or_else(|| std::io::Error::other("cannot make the self-signed certificate"))
}

fn make_tls_acceptor() -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};
    let err = |e: String| std::io::Error::other(e);
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(|e| err(e.to_string()))?;
    let _ = CERT_PEM.set(cert.pem());
    let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .map_err(|e| err(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves until the process is stopped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, tls: bool) -> std::io::Result<()> {
    let app = router(shared);
    let acceptor = if tls { Some(tls_acceptor()?) } else { None };
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acc) => {
                    if let Ok(s) = acc.accept(stream).await {
                        serve_connection(s, app).await;
                    }
                }
                None => serve_connection(stream, app).await,
            }
        });
    }
}

async fn serve_connection<S>(stream: S, app: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let conn_kill = ConnKill(kill.clone());
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(conn_kill.clone());
        app.clone().oneshot(req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::carries_events;
    use serde_json::json;

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
}
