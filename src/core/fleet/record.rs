//! What the fleet keeps per portal in its store (the only place tokens are written): the
//! portal's address, its OAuth server, the token pair, the application token, and whether the
//! portal is stopped and why. One text record per portal, read whole and written with a
//! compare-and-swap, so that two workers never overwrite each other's refresh.

use super::super::args::url_encode;
use super::super::digits::decimal;
use super::super::error::{code, B24Error, Result};
use super::super::limiter::RateLimit;
use super::super::origin::Origin;
use super::super::signal::url_decode;
use super::install::Install;
use super::oauth::Grant;
use crate::core::text::concat;

/// One portal, as stored.
#[derive(Clone, PartialEq)]
pub struct Record {
    pub member_id: String,
    pub origin: Origin,
    /// The portal's OAuth server as its install was proven by (`https://HOST/rest/`, normalised);
    /// checked against the app's trust again at every refresh.
    pub server_endpoint: String,
    pub application_token: Option<String>,
    pub access_token: String,
    pub refresh_token: String,
    /// Wall-clock ms (every worker reads the same record, so not a local monotonic time).
    pub expires_at_ms: f64,
    /// Bumped by every change of the token pair: a worker that saw generation `n` knows a
    /// record at `n + 1` carries a pair it has not tried.
    pub generation: u64,
    /// The code that stopped the portal (`invalid_grant`, `PORTAL_DELETED`, ...); a stopped
    /// portal is not drained until a new install.
    pub stopped: Option<String>,
    /// The host the portal said it moved to, when a redirect told (`PORTAL_MOVED`).
    pub moved_to: Option<String>,
    /// This portal's request rate (its plan), when it differs from the fleet's default.
    pub plan: Option<RateLimit>,
}

impl std::fmt::Debug for Record {
    /// Never prints a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("member_id", &self.member_id)
            .field("origin", &self.origin)
            .field("generation", &self.generation)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

fn corrupt() -> B24Error {
    B24Error::new(
        code::STORE_FAILED,
        "a stored portal record is not in the expected format",
    )
}

impl Record {
    const HEADER: &'static str = "b24-offline-portal 1";

    /// The record an install makes once its OAuth server proved it (`grant`: the pair that
    /// proof brought, the install's own being spent by it), at `now_ms` (wall clock).
    pub fn installed(install: &Install, grant: &Grant, now_ms: f64) -> Record {
        Record {
            member_id: install.member_id.clone(),
            origin: install.origin.clone(),
            server_endpoint: concat(&[&install.oauth.origin(), "/rest/"]),
            application_token: install.application_token.clone(),
            access_token: grant.access.clone(),
            refresh_token: grant.refresh.clone(),
            expires_at_ms: now_ms + grant.expires_in_s * 1000.0,
            generation: 0,
            stopped: None,
            moved_to: None,
            plan: None,
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = String::from(Record::HEADER);
        let mut line = |k: &str, v: &str| {
            out.push('\n');
            out.push_str(k);
            out.push(' ');
            url_encode(&mut out, v);
        };
        line("member", &self.member_id);
        line("origin", &self.origin.origin());
        line("oauth", &self.server_endpoint);
        if let Some(t) = &self.application_token {
            line("app", t);
        }
        line("access", &self.access_token);
        line("refresh", &self.refresh_token);
        line("expires", &decimal(self.expires_at_ms.max(0.0) as u64));
        line("generation", &decimal(self.generation));
        if let Some(s) = &self.stopped {
            line("stopped", s);
        }
        if let Some(m) = &self.moved_to {
            line("moved", m);
        }
        if let Some(p) = &self.plan {
            // Whole requests, and thousandths of a request a second: integers only.
            line(
                "plan",
                &[
                    decimal(p.burst as u64),
                    decimal((p.drain_per_sec * 1000.0).round() as u64),
                ]
                .join(" "),
            );
        }
        out
    }

    /// Reads a record; anything else is `STORE_FAILED` rather than a guess.
    pub fn from_text(text: &str) -> Result<Record> {
        let mut lines = text.split('\n');
        if lines.next() != Some(Record::HEADER) {
            return Err(corrupt());
        }
        let mut fields: Vec<(&str, String)> = Vec::new();
        for l in lines {
            let (k, v) = l.split_once(' ').ok_or_else(corrupt)?;
            if fields.iter().any(|(seen, _)| *seen == k) {
                return Err(corrupt());
            }
            fields.push((k, url_decode(v)));
        }
        let take = |k: &str| fields.iter().find(|(f, _)| *f == k).map(|(_, v)| v.clone());
        let need = |k: &str| take(k).filter(|v| !v.is_empty()).ok_or_else(corrupt);
        let number = |k: &str| need(k)?.parse::<u64>().map_err(|_| corrupt());
        if fields.iter().any(|(k, _)| {
            !matches!(
                *k,
                "member"
                    | "origin"
                    | "oauth"
                    | "app"
                    | "access"
                    | "refresh"
                    | "expires"
                    | "generation"
                    | "stopped"
                    | "moved"
                    | "plan"
            )
        }) {
            return Err(corrupt());
        }
        Ok(Record {
            member_id: need("member")?,
            origin: Origin::parse(&need("origin")?, true).map_err(|_| corrupt())?,
            server_endpoint: need("oauth")?,
            application_token: take("app"),
            access_token: need("access")?,
            refresh_token: need("refresh")?,
            expires_at_ms: number("expires")? as f64,
            generation: number("generation")?,
            stopped: take("stopped"),
            moved_to: take("moved"),
            plan: match take("plan") {
                None => None,
                Some(p) => {
                    let (b, d) = p.split_once(' ').ok_or_else(corrupt)?;
                    let n = |t: &str| {
                        t.parse::<u64>()
                            .ok()
                            .filter(|n| *n > 0 && *n <= 10_000_000)
                            .ok_or_else(corrupt)
                    };
                    Some(RateLimit {
                        burst: n(b)? as f64,
                        drain_per_sec: n(d)? as f64 / 1000.0,
                    })
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            member_id: "a223c6b3710f85df22e9377d6c4f7553".into(),
            origin: Origin::parse("https://acme.bitrix24.com", false).unwrap(),
            server_endpoint: "https://oauth.bitrix.info/rest/".into(),
            application_token: Some("t o/k%".into()),
            access_token: "a\nb".into(),
            refresh_token: "r".into(),
            expires_at_ms: 1_700_000_000_123.0,
            generation: 7,
            stopped: None,
            moved_to: None,
            plan: None,
        }
    }

    #[test]
    fn text_round_trip() {
        let r = record();
        assert_eq!(Record::from_text(&r.to_text()).unwrap(), r);
        let s = Record {
            stopped: Some(code::INVALID_GRANT.into()),
            moved_to: Some("new.bitrix24.com".into()),
            application_token: None,
            plan: Some(RateLimit {
                burst: 250.0,
                drain_per_sec: 5.0,
            }),
            ..record()
        };
        assert_eq!(Record::from_text(&s.to_text()).unwrap(), s);
        assert!(!format!("{s:?}").contains("a\nb"));
    }

    #[test]
    fn anything_else_is_refused() {
        let text = record().to_text();
        for bad in [
            String::new(),
            text.replace("b24-offline-portal 1", "b24-offline-portal 2"),
            text.replace("\nrefresh r", ""),
            text.replace("generation 7", "generation -7"),
            text.replace("generation 7", "generation 7\ngeneration 8"),
            text.replace("origin https", "origin ftp"),
            [&text, "\nextra 1"].concat(),
            [&text, "\nnospace"].concat(),
            [&text, "\nplan 0 2000"].concat(),
            [&text, "\nplan 50"].concat(),
            [&text, "\nplan 50 -2"].concat(),
        ] {
            assert_eq!(
                Record::from_text(&bad).unwrap_err().code,
                code::STORE_FAILED,
                "{bad:?}"
            );
        }
    }
}
