//! Where the token may go: the portal's own origin, over https. Plain http is accepted only
//! for loopback hosts and only when the app asks for it (the local emulator), so a typo or a
//! hostile `domain` cannot make us send a token in clear or to some other path.

use super::digits::parse;
use super::error::{B24Error, Result};
use super::read::has;
use super::text::{contains, rsplit_once, split, split_once, trim};
use crate::core::text::concat;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    /// Host with an explicit port when one was given (`127.0.0.1:8024`).
    pub host: String,
}

fn bad(why: &str) -> B24Error {
    B24Error::invalid("domain", why)
}

pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return split(v6, b']').next() == Some("::1"),
        None => rsplit_once(host, b':').map(|(h, _)| h).unwrap_or(host),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let parts: Vec<&str> = split(name, b'.').collect();
    parts.len() == 4
        && parts[0] == "127"
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && parse(p).is_some_and(|n| n < 256)
        })
}

impl Origin {
    /// Reads `acme.bitrix24.com`, `acme.bitrix24.com:443` or `https://acme.bitrix24.com`.
    pub fn parse(input: &str, allow_http: bool) -> Result<Origin> {
        let input = trim(input);
        let (https, rest) = if let Some(r) = input.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = input.strip_prefix("http://") {
            (false, r)
        } else if has(input, "://") {
            return Err(bad(
                "only https:// (or http:// for a loopback emulator) is accepted",
            ));
        } else {
            (true, input)
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() {
            return Err(bad("is empty"));
        }
        if contains(host, b'@') {
            return Err(bad("must not carry credentials"));
        }
        if host
            .bytes()
            .any(|b| matches!(b, b'/' | b'?' | b'#' | b'\\'))
        {
            return Err(bad("must be a host name without a path, query or fragment"));
        }
        let (name, port) = match host.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) =
                    split_once(v6, b']').ok_or_else(|| bad("has an unclosed [ in its host"))?;
                if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                    return Err(bad("has an invalid IPv6 address"));
                }
                (host, after.strip_prefix(':'))
            }
            None => match rsplit_once(host, b':') {
                Some((h, p)) => (h, Some(p)),
                None => (host, None),
            },
        };
        if let Some(p) = port {
            if p.is_empty()
                || p.len() > 5
                || !p.bytes().all(|b| b.is_ascii_digit())
                || parse(p).is_none_or(|n| n == 0 || n > 65535)
            {
                return Err(bad("has an invalid port"));
            }
        }
        if !name.starts_with('[') {
            let valid = !matches!(name.bytes().next(), Some(b'.' | b'-'))
                && !matches!(name.bytes().last(), Some(b'.' | b'-'))
                && !has(name, "..")
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !valid {
                return Err(bad("is not a valid host name"));
            }
        }
        // The portal hands the default ports along (`acme.bitrix24.com:443`); drop them.
        let host = match (port, https) {
            (Some("443"), true) | (Some("80"), false) => name.to_string(),
            _ => host.to_ascii_lowercase(),
        };
        if !https {
            if !is_loopback(&host) {
                return Err(bad("plain http is refused: the token would travel in clear (allowed only for loopback hosts)"));
            }
            if !allow_http {
                return Err(bad(
                    "plain http to a loopback host needs the allowHttp option",
                ));
            }
        }
        Ok(Origin {
            https,
            host: host.to_ascii_lowercase(),
        })
    }

    /// `https://HOST/rest/METHOD.json`: the only URL a token is ever sent to.
    pub fn rest_url(&self, method: &str) -> String {
        let scheme = if self.https { "https://" } else { "http://" };
        concat(&[scheme, &self.host, "/rest/", method, ".json"])
    }

    /// `https://HOST`: what `postMessage` targets and what incoming messages must come from.
    pub fn origin(&self) -> String {
        concat(&[if self.https { "https://" } else { "http://" }, &self.host])
    }
}

/// Whether `host` is one of the portals an app serves: `patterns` are host names
/// (`acme.bitrix24.com`) or `*.`-suffixes (`*.bitrix24.com`: any subdomain, not the domain
/// itself). Compared without case; a pattern that is not a host name matches nothing.
pub fn host_allowed(host: &str, patterns: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    patterns.iter().any(|p| {
        let p = trim(p).to_ascii_lowercase();
        match p.strip_prefix("*.") {
            Some(suffix) => {
                Origin::parse(suffix, false).is_ok()
                    && host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
            None => Origin::parse(&p, false)
                .map(|o| o.host == host)
                .unwrap_or(false),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let list = vec!["acme.bitrix24.com".to_string(), "*.bitrix24.de".to_string()];
        assert!(host_allowed("Acme.Bitrix24.com", &list));
        assert!(host_allowed("shop.bitrix24.de", &list));
        assert!(host_allowed("a.b.bitrix24.de", &list));
        for no in [
            "bitrix24.de",
            "evilbitrix24.de",
            "acme.bitrix24.com.evil.io",
            "other.bitrix24.com",
        ] {
            assert!(!host_allowed(no, &list), "{no}");
        }
        assert!(!host_allowed(
            "x.y",
            &["*.".to_string(), "".to_string(), "*".to_string()]
        ));
    }

    #[test]
    fn accepts_portal_hosts() {
        let o = Origin::parse("Acme.Bitrix24.com", false).unwrap();
        assert_eq!(
            o.rest_url("event.offline.get"),
            "https://acme.bitrix24.com/rest/event.offline.get.json"
        );
        assert_eq!(
            Origin::parse("https://acme.bitrix24.com:443/", false)
                .unwrap()
                .host,
            "acme.bitrix24.com"
        );
        assert_eq!(
            Origin::parse("acme.bitrix24.com:8443", false).unwrap().host,
            "acme.bitrix24.com:8443"
        );
        let local = Origin::parse("http://127.0.0.1:8024", true).unwrap();
        assert_eq!(local.origin(), "http://127.0.0.1:8024");
        assert!(Origin::parse("http://[::1]:80", true).is_ok());
        assert!(Origin::parse("http://localhost:3000", true).is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for (input, allow) in [
            ("", false),
            ("http://acme.bitrix24.com", true),
            ("http://127.0.0.1:8024", false),
            ("ftp://acme.bitrix24.com", false),
            ("javascript:alert(1)", false),
            ("user:pw@acme.bitrix24.com", false),
            ("acme.bitrix24.com/rest", false),
            ("acme.bitrix24.com?x=1", false),
            ("acme..com", false),
            ("acme.com:99999", false),
            ("acme.com:", false),
            ("evil.com#@acme.bitrix24.com", false),
            ("http://127.0.0.1.evil.com", true),
            ("acme com", false),
        ] {
            assert!(Origin::parse(input, allow).is_err(), "{input}");
        }
    }
}
