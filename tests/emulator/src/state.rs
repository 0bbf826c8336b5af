//! Everything the emulated portal remembers, behind one lock: configuration, installed
//! applications and their tokens, event bindings, the queue, the CRM, limits, faults, stats.

use crate::clock::Clock;
use crate::error::ApiError;
use crate::faults::Faults;
use crate::limits::{Bucket, Operating};
use crate::portals::{Health, Registry};
use crate::queue::Queue;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub burst: f64,
    pub drain_per_sec: f64,
}

/// The standard (non-enterprise) plan: 50 requests of burst, draining 2 per second.
pub const STANDARD_RATE: RateLimit = RateLimit {
    burst: 50.0,
    drain_per_sec: 2.0,
};
/// Operating-time limit of cloud plans, in seconds per method over ten minutes.
pub const CLOUD_OPERATING_LIMIT_S: f64 = 480.0;

/// The longest token life the control API accepts: ten years keeps every expiry computable.
pub const MAX_TOKEN_TTL_S: i64 = 10 * 366 * 24 * 3600;

#[derive(Debug, Clone)]
pub struct Config {
    pub extended_mode: bool,
    pub auth_connector: bool,
    pub rate_limit: Option<RateLimit>,
    pub operating_limit_s: Option<f64>,
    pub operating_cost_s: BTreeMap<String, f64>,
    pub token_ttl_s: i64,
    pub require_https: bool,
    /// Which OAuth server the portal's install events name and its `/oauth/token/` is.
    pub oauth: OAuthMode,
}

/// Where a portal's applications refresh their tokens (`oauth` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OAuthMode {
    /// `"cloud"` (the default): the process's central OAuth server, at the first portal's origin,
    /// as every cloud portal names `https://oauth.bitrix.info/rest/`. The portal's own
    /// `/oauth/token/` passes the exchange on to it, as the cloud proxies it.
    #[default]
    Cloud,
    /// `"portal"`: a box (self-hosted) edition, its own OAuth server at its own `/oauth/`.
    Portal,
}

impl OAuthMode {
    pub fn name(self) -> &'static str {
        match self {
            OAuthMode::Cloud => "cloud",
            OAuthMode::Portal => "portal",
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            extended_mode: true,
            auth_connector: true,
            rate_limit: Some(STANDARD_RATE),
            operating_limit_s: Some(CLOUD_OPERATING_LIMIT_S),
            operating_cost_s: BTreeMap::new(),
            token_ttl_s: 3600,
            require_https: false,
            oauth: OAuthMode::Cloud,
        }
    }
}

impl Config {
    pub fn to_json(&self) -> Value {
        json!({
            "extended_mode": self.extended_mode,
            "auth_connector": self.auth_connector,
            "rate_limit": self.rate_limit.map(|r| json!({"burst": r.burst, "drain_per_sec": r.drain_per_sec})),
            "operating_limit_s": self.operating_limit_s,
            "operating_cost_s": self.operating_cost_s,
            "token_ttl_s": self.token_ttl_s,
            "require_https": self.require_https,
            "oauth": self.oauth.name(),
        })
    }

    /// Applies any subset of the fields; an unknown field or a wrong type is refused whole.
    pub fn patch(&mut self, v: &Value) -> Result<(), ApiError> {
        let bad = |field: &str, want: &str| {
            ApiError::new(400, "BAD_CONFIG", format!("'{field}' must be {want}"))
        };
        let Value::Object(map) = v else {
            return Err(bad("config", "an object"));
        };
        let mut next = self.clone();
        for (key, value) in map {
            match key.as_str() {
                "extended_mode" => {
                    next.extended_mode = value.as_bool().ok_or_else(|| bad(key, "a boolean"))?
                }
                "auth_connector" => {
                    next.auth_connector = value.as_bool().ok_or_else(|| bad(key, "a boolean"))?
                }
                "require_https" => {
                    next.require_https = value.as_bool().ok_or_else(|| bad(key, "a boolean"))?
                }
                "rate_limit" => {
                    next.rate_limit = match value {
                        Value::Null => None,
                        Value::String(s) if s == "standard" => Some(STANDARD_RATE),
                        Value::String(s) if s == "enterprise" => Some(RateLimit {
                            burst: 250.0,
                            drain_per_sec: 5.0,
                        }),
                        _ => {
                            let burst = value
                                .get("burst")
                                .and_then(Value::as_f64)
                                .filter(|b| *b >= 1.0);
                            let drain = value
                                .get("drain_per_sec")
                                .and_then(Value::as_f64)
                                .filter(|d| *d > 0.0);
                            match (burst, drain) {
                                (Some(burst), Some(drain_per_sec)) => Some(RateLimit {
                                    burst,
                                    drain_per_sec,
                                }),
                                _ => {
                                    return Err(bad(key, "null or {burst >= 1, drain_per_sec > 0}"))
                                }
                            }
                        }
                    }
                }
                "oauth" => {
                    next.oauth = match value.as_str() {
                        Some("cloud") => OAuthMode::Cloud,
                        Some("portal") => OAuthMode::Portal,
                        _ => return Err(bad(key, "\"cloud\" or \"portal\"")),
                    }
                }
                "operating_limit_s" => {
                    next.operating_limit_s = match value {
                        Value::Null => None,
                        v => Some(
                            v.as_f64()
                                .filter(|f| *f >= 0.0)
                                .ok_or_else(|| bad(key, "null or a number >= 0"))?,
                        ),
                    }
                }
                "operating_cost_s" => {
                    let Value::Object(costs) = value else {
                        return Err(bad(key, "an object {method: seconds}"));
                    };
                    next.operating_cost_s = costs
                        .iter()
                        .map(|(m, s)| {
                            s.as_f64()
                                .filter(|f| *f >= 0.0)
                                .map(|f| (m.to_ascii_lowercase(), f))
                                .ok_or_else(|| bad(key, "an object {method: seconds}"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "token_ttl_s" => {
                    next.token_ttl_s = value
                        .as_i64()
                        .filter(|t| (1..=MAX_TOKEN_TTL_S).contains(t))
                        .ok_or_else(|| bad(key, "a positive integer of at most ten years"))?
                }
                other => {
                    return Err(bad(
                        other,
                        "one of the known config fields (this one is unknown)",
                    ))
                }
            }
        }
        *self = next;
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct App {
    pub client_id: String,
    pub application_token: String,
    /// Removed through `POST /_emulator/uninstall`; installing again gives a new
    /// application token.
    pub uninstalled: bool,
    /// Registered by the control call that installed the app (`client_secret`); once set, a
    /// refresh must present it with the client id.
    pub client_secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub app: u32,
    pub user_id: u64,
    pub admin: bool,
    pub expires_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Grant {
    pub app: u32,
    pub user_id: u64,
    pub admin: bool,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub user_id: u64,
    pub admin: bool,
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub app: u32,
    pub event: String,
    pub offline: bool,
    pub connector: u32,
    pub handler: String,
    pub auth_type: u64,
    pub user_id: u64,
    /// Whether the binding user is an administrator (the onOfflineEvent token carries it).
    pub admin: bool,
    pub min_timeout_s: i64,
}

/// onOfflineEvent delivery state of one application.
#[derive(Debug, Clone, Default)]
pub struct NotifyState {
    pub last_sent_ms: Option<i64>,
    /// A signal held back by `minTimeout`, due at `due_ms` on the emulator clock.
    pub pending: bool,
    pub due_ms: i64,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub requests: BTreeMap<String, u64>,
    pub rejections: BTreeMap<String, u64>,
    pub faults_injected: u64,
    /// Answers withheld (after the method ran) that carried events: reservations only the
    /// portal knows about.
    pub answers_lost_with_events: u64,
    pub notifications_sent: u64,
    pub notifications_failed: u64,
    pub notifications_skipped: u64,
    pub expired_rows: u64,
    /// Refresh tokens of this portal exchanged at an OAuth server, and exchanges refused (a
    /// deleted portal, a wrong client id or secret; a spent or unknown refresh token counts at
    /// the portal whose origin received it).
    pub refreshes: u64,
    pub refreshes_refused: u64,
}

#[derive(Debug, Default)]
pub struct Crm {
    pub entities: BTreeMap<String, BTreeMap<u64, Map<String, Value>>>,
    pub next_id: BTreeMap<String, u64>,
}

pub struct State {
    pub config: Config,
    pub apps: Vec<App>,
    pub app_by_client: HashMap<String, u32>,
    pub tokens: HashMap<String, Token>,
    pub grants: HashMap<String, Grant>,
    pub webhooks: HashMap<String, Webhook>,
    pub bindings: Vec<Binding>,
    pub queue: Queue,
    pub crm: Crm,
    pub bucket: Bucket,
    pub operating: Operating,
    pub faults: Faults,
    pub stats: Stats,
    pub notify: HashMap<u32, NotifyState>,
    pub last_expiry_ms: i64,
    /// What arrived at `/trap/...` (requests a client should never have sent).
    pub trapped: Vec<Value>,
    pub health: Health,
}

impl State {
    pub fn new(now_ms: i64) -> State {
        State {
            config: Config::default(),
            apps: Vec::new(),
            app_by_client: HashMap::new(),
            tokens: HashMap::new(),
            grants: HashMap::new(),
            webhooks: HashMap::new(),
            bindings: Vec::new(),
            queue: Queue::new(),
            crm: Crm::default(),
            bucket: Bucket::default(),
            operating: Operating::default(),
            faults: Faults::default(),
            stats: Stats::default(),
            notify: HashMap::new(),
            trapped: Vec::new(),
            health: Health::default(),
            last_expiry_ms: now_ms,
        }
    }

    /// Empties everything but the configuration.
    pub fn reset(&mut self, now_ms: i64) {
        let config = std::mem::take(&mut self.config);
        *self = State::new(now_ms);
        self.config = config;
    }

    /// The application installed under `client_id`, installing it on first sight.
    pub fn app(&mut self, client_id: &str) -> u32 {
        if let Some(id) = self.app_by_client.get(client_id) {
            return *id;
        }
        let id = self.apps.len() as u32;
        self.apps.push(App {
            client_id: client_id.to_string(),
            application_token: random_token(32),
            uninstalled: false,
            client_secret: None,
        });
        self.app_by_client.insert(client_id.to_string(), id);
        id
    }

    /// Issues an access/refresh pair for a user of an application.
    pub fn issue_token(
        &mut self,
        app: u32,
        user_id: u64,
        admin: bool,
        now_ms: i64,
    ) -> (String, String) {
        let access = random_token(40);
        let refresh = random_token(40);
        let expires_ms = now_ms + self.config.token_ttl_s * 1000;
        self.tokens.insert(
            access.clone(),
            Token {
                app,
                user_id,
                admin,
                expires_ms,
            },
        );
        self.grants.insert(
            refresh.clone(),
            Grant {
                app,
                user_id,
                admin,
            },
        );
        (access, refresh)
    }
}

pub struct Shared {
    pub state: Mutex<State>,
    /// One clock for every portal of the process.
    pub clock: Arc<Clock>,
    /// `127.0.0.1:PORT`: what tokens carry as `domain`.
    pub domain: String,
    pub https: bool,
    pub member_id: String,
    /// Every portal of the process (`crate::portals`).
    pub registry: Arc<Registry>,
}

impl Shared {
    pub fn new(domain: String, https: bool) -> Shared {
        Shared::with(domain, https, Arc::default(), Arc::default())
    }

    /// Another portal of the same process: same clock and registry, everything else its own.
    pub fn sibling(of: &Shared, domain: String) -> Shared {
        Shared::with(domain, of.https, of.clock.clone(), of.registry.clone())
    }

    fn with(domain: String, https: bool, clock: Arc<Clock>, registry: Arc<Registry>) -> Shared {
        let now = clock.now_ms();
        Shared {
            state: Mutex::new(State::new(now)),
            clock,
            domain,
            https,
            member_id: random_hex(32),
            registry,
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; keep serving rather than poison forever.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn base_url(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.domain
        )
    }
}

static CERT_PEM: OnceLock<String> = OnceLock::new();

/// The PEM of the self-signed certificate when serving with `--tls` (`GET /_emulator/cert`).
pub fn certificate_pem() -> Option<&'static str> {
    CERT_PEM.get().map(String::as_str)
}

/// Records the certificate the native shell serves with; the first one stays.
pub fn set_certificate_pem(pem: String) {
    let _ = CERT_PEM.set(pem);
}

/// Lower-case alphanumeric, like the portal's tokens and process ids.
pub fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect()
}

pub fn random_hex(len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| HEX[rng.gen_range(0..16)] as char)
        .collect()
}
