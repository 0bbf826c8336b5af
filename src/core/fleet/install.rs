//! What a portal hands the app when it is installed and uninstalled, read and checked before
//! anything is sent or stored. Two shapes arrive at an install: the `ONAPPINSTALL` event
//! (`auth[access_token]`, `auth[member_id]`, ..., with the `application_token`) and the POST
//! that opens the app's install page in the portal (`AUTH_ID`, `REFRESH_ID`, `AUTH_EXPIRES`,
//! `DOMAIN`, `PROTOCOL`, `member_id`; no application token). Both may come flat (form) or nested
//! (JSON). Every field is bounded and typed. Nothing here is believed yet: anyone can POST such
//! a body. The OAuth server the app trusts proves it afterwards (`core::fleet::oauth`), and the
//! only host this reading lets the fleet contact is that OAuth server (docs/fleet.md, threat
//! model).

use super::super::args::Tree;
use super::super::error::{code, B24Error, Result};
use super::super::origin::{host_allowed, is_loopback, Origin};
use super::super::signal::{constant_time_eq, field, value};
use crate::core::text::concat;

/// The OAuth server of Bitrix24's cloud; the default `oauthServers`.
pub const BITRIX_OAUTH: &str = "oauth.bitrix.info";
/// The longest token life believed (a payload claiming more is refused).
pub const MAX_EXPIRES_IN_S: f64 = 30.0 * 86_400.0;

/// A checked install: what the fleet stores for a portal.
#[derive(Clone, PartialEq)]
pub struct Install {
    /// 32 hex digits, lower-case: the key of everything kept for the portal.
    pub member_id: String,
    pub origin: Origin,
    /// Where its refresh token goes (once, to prove the install, then at every refresh): a
    /// trusted OAuth server, or the portal itself when the app opted in for it (`portalOAuth`).
    pub oauth: Origin,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in_s: f64,
    /// Only the `ONAPPINSTALL` event carries it; signals and the uninstall are checked with it.
    pub application_token: Option<String>,
}

impl std::fmt::Debug for Install {
    /// Never prints a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Install")
            .field("member_id", &self.member_id)
            .field("origin", &self.origin)
            .field("oauth", &self.oauth)
            .finish_non_exhaustive()
    }
}

/// What the app trusts an install to name.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Hosts (or `*.` suffixes) of portals the app serves; empty: any.
    pub portals: Vec<String>,
    /// Hosts of the OAuth servers the client secret and refresh tokens may be sent to.
    pub oauth_servers: Vec<String>,
    /// Portals (hosts or `*.` suffixes) whose own origin is their OAuth server (box editions
    /// that do not use the cloud's): an explicit opt-in, since for any other portal the origin
    /// an install names is only the sender's word.
    pub portal_oauth: Vec<String>,
    /// Plain http to loopback hosts (the local emulator).
    pub allow_http: bool,
}

impl Default for Trust {
    fn default() -> Trust {
        Trust {
            portals: Vec::new(),
            oauth_servers: vec![BITRIX_OAUTH.to_string()],
            portal_oauth: Vec::new(),
            allow_http: false,
        }
    }
}

impl Trust {
    /// The OAuth server of the portal at `portal`, from the URL an install or a stored record
    /// names (`None`: the install page, which names none). Only a configured OAuth server, or
    /// the portal's own origin when the app opted in for that portal, is ever returned: the
    /// client secret goes nowhere else.
    pub fn oauth_server(&self, named: Option<&str>, portal: &Origin) -> Result<Origin> {
        let own = host_allowed(&portal.host, &self.portal_oauth);
        let Some(named) = named else {
            if own {
                return Ok(portal.clone());
            }
            let first = self
                .oauth_servers
                .first()
                .ok_or_else(|| invalid("no OAuth server is configured (oauthServers)"))?;
            let host = Origin::parse(first, false)
                .map_err(|_| invalid("oauthServers names something that is not a host"))?
                .host;
            return Ok(Origin {
                https: !(self.allow_http && is_loopback(&host)),
                host,
            });
        };
        let (oauth, _) = endpoint(named, self.allow_http, "server_endpoint")?;
        if oauth == *portal {
            if own {
                return Ok(oauth);
            }
        } else if host_allowed(&oauth.host, &self.oauth_servers) {
            return Ok(oauth);
        }
        Err(invalid(
            "server_endpoint is not a trusted OAuth server (oauthServers; a portal's own origin only with portalOAuth)",
        ))
    }
}

fn invalid(why: &str) -> B24Error {
    B24Error::new(code::INVALID_INSTALL, why)
}

/// A token as the portal issues them: printable ASCII without spaces, at most 512 bytes.
fn token(v: Option<&str>, name: &str) -> Result<String> {
    let v = v.ok_or_else(|| invalid(&concat(&["no ", name, " in the install request"])))?;
    if v.is_empty() || v.len() > 512 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(&concat(&[name, " is not a token"])));
    }
    Ok(v.to_string())
}

/// A member id: 32 hex digits (the portal's MD5-shaped id), compared lower-case.
pub fn member_id(v: Option<&str>) -> Result<String> {
    let v = v.ok_or_else(|| invalid("no member_id in the request"))?;
    if v.len() != 32 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("member_id is not 32 hex digits"));
    }
    Ok(v.to_ascii_lowercase())
}

/// `scheme://host/path` split, for endpoints (no query, no credentials).
pub(super) fn endpoint(url: &str, allow_http: bool, what: &str) -> Result<(Origin, String)> {
    let bad = || invalid(&concat(&[what, " is not an https URL of a host"]));
    let scheme_end = url.find("://").ok_or_else(bad)?;
    let rest = url.get(scheme_end + 3..).ok_or_else(bad)?;
    let slash = rest.find('/').unwrap_or(rest.len());
    let (host, path) = (
        rest.get(..slash).ok_or_else(bad)?,
        rest.get(slash..).unwrap_or(""),
    );
    if path.contains(['?', '#', '\\']) || path.contains("..") {
        return Err(bad());
    }
    let origin = Origin::parse(
        &concat(&[url.get(..scheme_end + 3).unwrap_or(""), host]),
        allow_http,
    )
    .map_err(|_| bad())?;
    Ok((origin, path.to_string()))
}

impl Install {
    /// Reads and checks an install request (either shape, form or JSON).
    pub fn read(payload: &Tree, trust: &Trust) -> Result<Install> {
        let auth = |k: &str| field(payload, "auth", Some(k));
        let event = field(payload, "event", None);
        let is_event = auth("access_token").is_some();
        if let Some(e) = event {
            if !e.eq_ignore_ascii_case("ONAPPINSTALL") {
                return Err(invalid("not an ONAPPINSTALL request"));
            }
        }
        let (member, access, refresh, expires, server, client, application_token) = if is_event {
            (
                auth("member_id"),
                auth("access_token"),
                auth("refresh_token"),
                value(payload, "auth", Some("expires_in")),
                auth("server_endpoint"),
                auth("client_endpoint").map(str::to_string),
                Some(token(auth("application_token"), "auth[application_token]")?),
            )
        } else {
            // The install page: the endpoint is built from DOMAIN and PROTOCOL (1 = https).
            let domain = field(payload, "DOMAIN", None)
                .ok_or_else(|| invalid("neither auth[access_token] nor AUTH_ID in the request"))?;
            let https = field(payload, "PROTOCOL", None) != Some("0");
            (
                field(payload, "member_id", None),
                field(payload, "AUTH_ID", None),
                field(payload, "REFRESH_ID", None),
                value(payload, "AUTH_EXPIRES", None),
                None,
                Some(concat(&[
                    if https { "https://" } else { "http://" },
                    domain,
                    "/rest/",
                ])),
                None,
            )
        };
        let member_id = member_id(member)?;
        let client = client.ok_or_else(|| invalid("no client_endpoint in the request"))?;
        let (origin, path) = endpoint(&client, trust.allow_http, "client_endpoint")?;
        if path != "/rest/" {
            return Err(invalid("client_endpoint is not the portal's /rest/"));
        }
        if let Some(domain) = auth("domain").or_else(|| field(payload, "DOMAIN", None)) {
            let named = Origin::parse(domain, true).map_err(|_| invalid("domain is not a host"))?;
            if named.host != origin.host {
                return Err(invalid("domain and client_endpoint name different portals"));
            }
        }
        if !trust.portals.is_empty() && !host_allowed(&origin.host, &trust.portals) {
            return Err(invalid(
                "the portal is not one this app serves (portals option)",
            ));
        }
        if is_event && server.is_none() {
            return Err(invalid("no server_endpoint in the request"));
        }
        let oauth = trust.oauth_server(server, &origin)?;
        // Whole seconds, as text (forms) or a number (JSON); no float parsing in the wasm.
        let expires_in_s = expires
            .and_then(Tree::as_int)
            .map(|e| e as f64)
            .filter(|e| *e >= 1.0 && *e <= MAX_EXPIRES_IN_S)
            .ok_or_else(|| invalid("expires_in is not a number of seconds up to 30 days"))?;
        Ok(Install {
            member_id,
            origin,
            oauth,
            access_token: token(access, "the access token")?,
            refresh_token: token(refresh, "the refresh token")?,
            expires_in_s,
            application_token,
        })
    }
}

/// A checked `ONAPPUNINSTALL`: which portal, proven by the application token it was installed
/// with (compared in constant time by [`Uninstall::matches`]).
#[derive(Clone, PartialEq)]
pub struct Uninstall {
    pub member_id: String,
    application_token: String,
}

impl Uninstall {
    pub fn read(payload: &Tree) -> Result<Uninstall> {
        let event = field(payload, "event", None).unwrap_or("");
        if !event.eq_ignore_ascii_case("ONAPPUNINSTALL") {
            return Err(invalid("not an ONAPPUNINSTALL request"));
        }
        Ok(Uninstall {
            member_id: member_id(field(payload, "auth", Some("member_id")))?,
            application_token: token(
                field(payload, "auth", Some("application_token")),
                "auth[application_token]",
            )?,
        })
    }

    /// Whether it carries the portal's application token.
    pub fn matches(&self, application_token: &str) -> bool {
        !application_token.is_empty()
            && constant_time_eq(
                self.application_token.as_bytes(),
                application_token.as_bytes(),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::signal::form_tree;
    use crate::core::testkit::tree;

    const MEMBER: &str = "a223c6b3710f85df22e9377d6c4f7553";

    fn event(extra: &str) -> Tree {
        form_tree(&concat(&[
            "event=ONAPPINSTALL&data%5BVERSION%5D=1&ts=1696527000",
            "&auth%5Bdomain%5D=acme.bitrix24.com&auth%5Baccess_token%5D=s6p6eclrvim6da22",
            "&auth%5Brefresh_token%5D=4s386p3q0tr8dy89&auth%5Bexpires_in%5D=3600",
            "&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bstatus%5D=F",
            "&auth%5Bclient_endpoint%5D=https%3A%2F%2Facme.bitrix24.com%2Frest%2F",
            "&auth%5Bmember_id%5D=A223C6B3710F85DF22E9377D6C4F7553",
            "&auth%5Bapplication_token%5D=51856fefc120afa4b628cc82d3935cce",
            extra,
        ]))
    }

    fn refused(t: &Tree, trust: &Trust, why: &str) {
        let e = Install::read(t, trust).expect_err(why);
        assert_eq!(e.code, code::INVALID_INSTALL, "{why}");
        assert!(
            !e.message().contains("s6p6eclrvim6da22"),
            "{why}: {}",
            e.message()
        );
        assert!(!e.message().contains("4s386p3q0tr8dy89"), "{why}");
    }

    #[test]
    fn the_install_event_and_the_install_page_are_read() {
        let i = Install::read(&event(""), &Trust::default()).unwrap();
        assert_eq!(i.member_id, MEMBER);
        assert_eq!(i.origin.host, "acme.bitrix24.com");
        assert!(i.origin.https);
        assert_eq!(i.access_token, "s6p6eclrvim6da22");
        assert_eq!(i.refresh_token, "4s386p3q0tr8dy89");
        assert_eq!(i.expires_in_s, 3600.0);
        assert_eq!(i.oauth.origin(), "https://oauth.bitrix.info");
        assert_eq!(
            i.application_token.as_deref(),
            Some("51856fefc120afa4b628cc82d3935cce")
        );
        assert!(!format!("{i:?}").contains("s6p6"));
        // Nested JSON, as a framework that parses the body hands it over.
        let json = tree(&concat(&[
            r#"{"event":"ONAPPINSTALL","auth":{"domain":"acme.bitrix24.com","#,
            r#""access_token":"a1","refresh_token":"r1","expires_in":3600,"#,
            r#""server_endpoint":"https://oauth.bitrix.info/rest/","#,
            r#""client_endpoint":"https://acme.bitrix24.com/rest/","#,
            r#""member_id":"a223c6b3710f85df22e9377d6c4f7553","application_token":"t1"}}"#,
        ]));
        let j = Install::read(&json, &Trust::default()).unwrap();
        assert_eq!((j.access_token.as_str(), j.expires_in_s), ("a1", 3600.0));
        // The install page's POST.
        let page = form_tree(&concat(&[
            "DOMAIN=acme.bitrix24.com&PROTOCOL=1&LANG=en&APP_SID=x",
            "&AUTH_ID=a2&AUTH_EXPIRES=3600&REFRESH_ID=r2&member_id=",
            MEMBER,
            "&status=F&PLACEMENT=DEFAULT",
        ]));
        let p = Install::read(&page, &Trust::default()).unwrap();
        assert_eq!(p.application_token, None);
        assert_eq!(
            p.oauth.origin(),
            "https://oauth.bitrix.info",
            "the install page names no OAuth server: the first configured one"
        );
        assert_eq!(p.origin.host, "acme.bitrix24.com");
    }

    #[test]
    fn the_emulator_is_trusted_only_on_loopback_with_allow_http() {
        let local = |server: &str| {
            form_tree(&concat(&[
                "event=ONAPPINSTALL&auth[domain]=127.0.0.1:8024&auth[access_token]=a&auth[refresh_token]=r",
                "&auth[expires_in]=3600&auth[server_endpoint]=",
                server,
                "&auth[client_endpoint]=http://127.0.0.1:8024/rest/&auth[member_id]=",
                MEMBER,
                "&auth[application_token]=t",
            ]))
        };
        // The emulator's central OAuth server, named in oauthServers.
        let trust = Trust {
            allow_http: true,
            oauth_servers: vec!["127.0.0.1:8000".into()],
            ..Trust::default()
        };
        let i = Install::read(&local("http://127.0.0.1:8000/rest/"), &trust).unwrap();
        assert_eq!(i.origin.host, "127.0.0.1:8024");
        assert_eq!(i.oauth.origin(), "http://127.0.0.1:8000");
        refused(
            &local("http://127.0.0.1:8000/rest/"),
            &Trust::default(),
            "http without allowHttp",
        );
        // The portal's own /oauth/ only for portals opted in (a box edition).
        refused(
            &local("http://127.0.0.1:8024/oauth/"),
            &trust,
            "the portal as its own OAuth server without portalOAuth",
        );
        let boxed = Trust {
            portal_oauth: vec!["127.0.0.1:8024".into()],
            ..trust.clone()
        };
        let i = Install::read(&local("http://127.0.0.1:8024/oauth/"), &boxed).unwrap();
        assert_eq!(i.oauth.origin(), "http://127.0.0.1:8024");
        refused(
            &local("http://127.0.0.1:9999/oauth/"),
            &boxed,
            "another loopback host is neither",
        );
    }

    #[test]
    fn a_forged_install_naming_its_own_servers_is_refused_before_any_request() {
        // Issue 18, case 1: client and server endpoints both at the sender's host. Refused by
        // reading alone: the fleet sends nothing anywhere for it.
        let forged = form_tree(&concat(&[
            "event=ONAPPINSTALL&auth[domain]=evil.example&auth[access_token]=a&auth[refresh_token]=r",
            "&auth[expires_in]=3600&auth[server_endpoint]=https://evil.example/rest/",
            "&auth[client_endpoint]=https://evil.example/rest/&auth[member_id]=",
            MEMBER,
            "&auth[application_token]=t",
        ]));
        refused(
            &forged,
            &Trust::default(),
            "the sender's host as its OAuth server",
        );
        // Variants: upper case, the default port, a trailing dot-free look-alike.
        for server in [
            "https://EVIL.example/rest/",
            "https://evil.example:443/rest/",
            "https://oauth.bitrix.info@evil.example/rest/",
        ] {
            let t = form_tree(&concat(&[
                "event=ONAPPINSTALL&auth[domain]=evil.example&auth[access_token]=a&auth[refresh_token]=r",
                "&auth[expires_in]=3600&auth[server_endpoint]=",
                server,
                "&auth[client_endpoint]=https://evil.example/rest/&auth[member_id]=",
                MEMBER,
                "&auth[application_token]=t",
            ]));
            refused(&t, &Trust::default(), server);
        }
        // A trusted server named with the default port or upper case is the same server,
        // normalised: what is stored and used is `https://oauth.bitrix.info`.
        let mut t = event("");
        if let Tree::Map(m) = &mut t {
            for (k, v) in m.iter_mut() {
                if k == "auth[server_endpoint]" {
                    *v = Tree::Str("https://OAuth.Bitrix.Info:443/rest/".into());
                }
            }
        }
        let i = Install::read(&t, &Trust::default()).unwrap();
        assert_eq!(i.oauth.origin(), "https://oauth.bitrix.info");
    }

    #[test]
    fn hostile_installs_are_refused_without_echoing_tokens() {
        let trust = Trust::default();
        let with = |from: &str, to: &str| {
            let mut t = event("");
            if let Tree::Map(m) = &mut t {
                for (k, v) in m.iter_mut() {
                    if k == from {
                        *v = Tree::Str(to.to_string());
                    }
                }
                if !m.iter().any(|(k, _)| k == from) {
                    m.push((from.to_string(), Tree::Str(to.to_string())));
                }
            }
            t
        };
        for (k, v, why) in [
            ("event", "ONAPPUNINSTALL", "another event"),
            (
                "auth[member_id]",
                "../../etc/passwd",
                "a member id that is a path",
            ),
            (
                "auth[member_id]",
                "a223c6b3710f85df22e9377d6c4f755",
                "31 digits",
            ),
            (
                "auth[client_endpoint]",
                "https://evil.example/rest/",
                "another portal's endpoint",
            ),
            (
                "auth[client_endpoint]",
                "https://acme.bitrix24.com/api/",
                "not /rest/",
            ),
            (
                "auth[client_endpoint]",
                "http://acme.bitrix24.com/rest/",
                "plain http",
            ),
            (
                "auth[client_endpoint]",
                "https://user:pw@acme.bitrix24.com/rest/",
                "credentials",
            ),
            (
                "auth[server_endpoint]",
                "https://evil.example/rest/",
                "an untrusted OAuth server",
            ),
            (
                "auth[server_endpoint]",
                "https://oauth.bitrix.info.evil.example/",
                "a look-alike",
            ),
            ("auth[server_endpoint]", "oauth.bitrix.info", "no scheme"),
            ("auth[expires_in]", "0", "expired at birth"),
            ("auth[expires_in]", "1e30", "forever"),
            ("auth[expires_in]", "NaN", "not a number"),
            ("auth[access_token]", "", "an empty token"),
            ("auth[access_token]", "a b", "a token with a space"),
            ("auth[refresh_token]", &"r".repeat(513), "a huge token"),
            ("auth[application_token]", "", "no application token"),
            (
                "auth[domain]",
                "other.bitrix24.com",
                "domain and endpoint disagree",
            ),
        ] {
            refused(&with(k, v), &trust, why);
        }
        let only = Trust {
            portals: vec!["*.bitrix24.de".into()],
            ..Trust::default()
        };
        refused(&event(""), &only, "a portal the app does not serve");
        refused(&form_tree("event=ONAPPINSTALL"), &trust, "empty");
        refused(&Tree::Null, &trust, "nothing");
    }

    #[test]
    fn uninstall_is_proven_by_the_application_token() {
        let u = Uninstall::read(&form_tree(&concat(&[
            "event=ONAPPUNINSTALL&data[CLEAN]=1&auth[member_id]=",
            MEMBER,
            "&auth[application_token]=51856fefc120afa4b628cc82d3935cce",
        ])))
        .unwrap();
        assert_eq!(u.member_id, MEMBER);
        assert!(u.matches("51856fefc120afa4b628cc82d3935cce"));
        assert!(!u.matches("51856fefc120afa4b628cc82d3935ccf"));
        assert!(!u.matches(""));
        assert!(Uninstall::read(&form_tree("event=ONAPPINSTALL&auth[member_id]=x")).is_err());
        assert!(Uninstall::read(&form_tree(&concat(&[
            "event=ONAPPUNINSTALL&auth[member_id]=",
            MEMBER
        ])))
        .is_err());
    }
}
