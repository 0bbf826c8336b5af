//! The native shell: HTTP(S) over axum/hyper/tokio around [`crate::engine`], an accept loop that
//! owns each connection so that a fault can close one without answering (the `drop` fault),
//! and the outbound posts to applications.

use crate::engine::{self, Resumed, Step, MAX_BODY, POST_TIMEOUT_MS, TICK_MS};
use crate::portals::Registry;
use crate::state::Shared;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

/// Closes the connection a request arrived on, without a response.
#[derive(Clone)]
struct ConnKill(Arc<Notify>);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let kill = parts.extensions.get::<ConnKill>().cloned();
    let (body, oversized) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => (b.to_vec(), false),
        Err(_) => (Vec::new(), true),
    };
    let request = engine::Request {
        method: parts.method.as_str().to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body,
        oversized,
    };
    let mut step = engine::handle(&shared, request);
    loop {
        send_deliveries(&shared.registry);
        step = match step {
            Step::Respond(r) => return to_axum(r),
            Step::Drop => {
                if let Some(ConnKill(n)) = kill {
                    n.notify_one();
                }
                // The connection task drops this future together with the connection.
                std::future::pending::<()>().await;
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            Step::Wait { ms, next } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                engine::resume(next, Resumed::Waited)
            }
            Step::Post { url, form, next } => {
                let status = post(&url, form).await;
                engine::resume(next, Resumed::Posted(status))
            }
            Step::Listen { count, next } => {
                let opened = listen(count).await;
                let addresses = opened
                    .as_ref()
                    .map(|ls| ls.iter().map(|(_, a)| a.clone()).collect())
                    .map_err(|e| e.to_string());
                let step = engine::resume(next, Resumed::Listening(addresses));
                for (listener, addr) in opened.unwrap_or_default() {
                    if let Some(portal) = shared.registry.find(&addr) {
                        tokio::spawn(serve(listener, portal, shared.https));
                    }
                }
                step
            }
        };
    }
}

fn to_axum(r: engine::Response) -> Response {
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

async fn listen(count: usize) -> std::io::Result<Vec<(TcpListener, String)>> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        out.push((listener, addr));
    }
    Ok(out)
}

/// The one HTTP client that calls apps' handlers.
fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

/// POSTs a form to an app: the answer's status, 0 when none came.
async fn post(url: &str, form: String) -> u16 {
    let req = hyper::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)));
    let Ok(req) = req else { return 0 };
    match tokio::time::timeout(
        Duration::from_millis(POST_TIMEOUT_MS),
        client().request(req),
    )
    .await
    {
        Ok(Ok(resp)) => resp.status().as_u16(),
        _ => 0,
    }
}

/// Posts what the portals left in the outbox, each from its own task.
fn send_deliveries(registry: &Registry) {
    for d in registry.take_deliveries() {
        tokio::spawn(async move {
            let status = post(&d.url, d.form.clone()).await;
            d.done((200..300).contains(&status));
        });
    }
}

/// Releases held-back onOfflineEvent signals of every portal of the process, for as long as it
/// runs.
pub async fn tick(registry: Arc<Registry>) {
    let mut every = tokio::time::interval(Duration::from_millis(TICK_MS));
    loop {
        every.tick().await;
        registry.tick();
        send_deliveries(&registry);
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
    crate::state::set_certificate_pem(cert.pem());
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
