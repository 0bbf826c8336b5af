//! The placement-frame protocol (`docs/frame-protocol.md`), the parts that need no browser: reading
//! `window.name`, writing commands, splitting answers, reading the init data. The I/O (the
//! message listener, `postMessage`) is in `src/frame`.

use super::error::{code, B24Error, Result};
use super::origin::Origin;
use super::platform::Platform;
use super::read::{field_number, field_text, field_uint, flag};
use crate::core::text::concat;

/// Answers longer than this are refused (for that request only).
pub const MAX_ANSWER: usize = 1 << 20;

fn unavailable(why: &str) -> B24Error {
    B24Error::new(code::FRAME_UNAVAILABLE, why)
}

/// `window.name` as the portal sets it: `DOMAIN|PROTOCOL|APP_SID`.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameName {
    pub origin: Origin,
    pub app_sid: String,
}

/// Reads `window.name`; `allow_http` lets a loopback portal (the emulator) use http.
pub fn parse_window_name(name: &str, allow_http: bool) -> Result<FrameName> {
    let mut parts = super::text::split(name, b'|');
    let (domain, protocol, app_sid) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if domain.is_empty() || app_sid.is_empty() {
        return Err(unavailable("window.name carries no portal domain and app sid: the page is not open inside a Bitrix24 placement"));
    }
    if !app_sid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        || app_sid.len() > 128
    {
        return Err(unavailable("window.name carries an invalid app sid"));
    }
    let scheme = if super::text::trim(protocol) == "1" {
        "https://"
    } else {
        "http://"
    };
    let origin = Origin::parse(&concat(&[scheme, domain]), allow_http).map_err(|e| {
        unavailable(&concat(&[
            "the portal named in window.name is refused: ",
            &e.description,
        ]))
    })?;
    Ok(FrameName {
        origin,
        app_sid: app_sid.to_string(),
    })
}

/// `COMMAND:PARAMS:CALLBACK:APP_SID`, params left out (with their colon) when there are none.
pub fn command_text(
    command: &str,
    params_json: Option<&str>,
    callback: &str,
    app_sid: &str,
) -> String {
    let mut out = String::with_capacity(command.len() + callback.len() + app_sid.len() + 8);
    out.push_str(command);
    if let Some(p) = params_json.filter(|p| !p.is_empty()) {
        out.push(':');
        out.push_str(p);
    }
    out.push(':');
    out.push_str(callback);
    out.push(':');
    out.push_str(app_sid);
    out
}

/// A fresh callback id from a random number in [0, 1).
pub fn callback_id(random: f64, counter: u32) -> String {
    let r = (random * 9.0e15) as u64;
    let mut out = String::with_capacity(24);
    out.push('b');
    out.push_str(&to_base36(r));
    out.push('x');
    out.push_str(&to_base36(counter as u64));
    out
}

fn to_base36(mut n: u64) -> String {
    let mut out = String::new();
    loop {
        let d = (n % 36) as u8;
        out.insert(0, (if d < 10 { b'0' + d } else { b'a' + d - 10 }) as char);
        n /= 36;
        if n == 0 {
            return out;
        }
    }
}

/// An answer `CALLBACK:JSON`, split on the first colon only (the JSON has colons of its own).
/// `Err(callback)` when the answer is larger than [`MAX_ANSWER`].
pub fn split_answer(data: &str) -> Option<std::result::Result<(&str, &str), &str>> {
    let (callback, json) = super::text::split_once(data, b':')?;
    if callback.is_empty() || callback.len() > 64 {
        return None;
    }
    if data.len() > MAX_ANSWER {
        return Some(Err(callback));
    }
    Some(Ok((callback, json)))
}

/// What `getInitData` tells the app.
#[derive(Debug, Clone, PartialEq)]
pub struct InitData<D> {
    pub domain: String,
    pub lang: String,
    pub member_id: String,
    pub is_admin: bool,
    pub install: bool,
    pub first_run: bool,
    pub placement: String,
    /// `PLACEMENT_OPTIONS`, parsed when the portal sent it as JSON text.
    pub placement_options: D,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Seconds of life left.
    pub expires_in: Option<f64>,
}

/// Reads the `getInitData` answer; it must carry a token.
pub fn init_data<P: Platform>(platform: &P, v: &P::Data) -> Result<InitData<P::Data>> {
    let access_token = field_text::<P>(v, "AUTH_ID")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unavailable("the portal's getInitData answer has no AUTH_ID"))?;
    let placement_options = match P::field(v, "PLACEMENT_OPTIONS") {
        Some(o) => match P::text(&o) {
            Some(t) if !t.is_empty() => platform.parse(&t).unwrap_or(o),
            _ => o,
        },
        None => P::null(),
    };
    let flag_of = |k: &str| P::field(v, k).map(|x| flag::<P>(&x)).unwrap_or(false);
    Ok(InitData {
        domain: field_text::<P>(v, "DOMAIN").unwrap_or_default(),
        lang: field_text::<P>(v, "LANG").unwrap_or_default(),
        member_id: field_text::<P>(v, "MEMBER_ID").unwrap_or_default(),
        is_admin: flag_of("IS_ADMIN"),
        install: flag_of("INSTALL"),
        first_run: flag_of("FIRST_RUN"),
        placement: field_text::<P>(v, "PLACEMENT").unwrap_or_default(),
        placement_options,
        access_token,
        refresh_token: field_text::<P>(v, "REFRESH_ID"),
        expires_in: expires_in::<P>(v),
    })
}

/// `AUTH_EXPIRES`, whole seconds of life left (a number or decimal text; never parsed as a
/// float, which would pull the float parser into the wasm).
pub fn expires_in<P: Platform>(v: &P::Data) -> Option<f64> {
    field_number::<P>(v, "AUTH_EXPIRES")
        .or_else(|| field_uint::<P>(v, "AUTH_EXPIRES").map(|n| n as f64))
}

/// The portal the frame names and the one the init data names must be the same host.
pub fn same_portal(origin: &Origin, domain: &str) -> bool {
    if domain.is_empty() {
        return true;
    }
    let stripped = domain
        .strip_suffix(":443")
        .or_else(|| domain.strip_suffix(":80"))
        .unwrap_or(domain);
    stripped.eq_ignore_ascii_case(&origin.host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::Fake;
    use serde_json::json;

    #[test]
    fn window_names() {
        let f = parse_window_name("acme.bitrix24.com:443|1|9c33468728e1d2c8", false).unwrap();
        assert_eq!(f.origin.origin(), "https://acme.bitrix24.com");
        assert_eq!(f.app_sid, "9c33468728e1d2c8");
        let local = parse_window_name("127.0.0.1:8024|0|abc", true).unwrap();
        assert_eq!(local.origin.origin(), "http://127.0.0.1:8024");
        for bad in [
            "",
            "acme.bitrix24.com",
            "acme.bitrix24.com|1|",
            "|1|sid",
            "acme.bitrix24.com|1|a b",
            "evil.com/x|1|sid",
        ] {
            assert_eq!(
                parse_window_name(bad, true).unwrap_err().code,
                code::FRAME_UNAVAILABLE,
                "{bad}"
            );
        }
        assert!(
            parse_window_name("acme.bitrix24.com|0|sid", true).is_err(),
            "http to a non-loopback portal"
        );
        assert!(
            parse_window_name("127.0.0.1:8024|0|sid", false).is_err(),
            "http needs allowHttp"
        );
    }

    #[test]
    fn commands_and_answers() {
        assert_eq!(
            command_text("getInitData", None, "cb1", "sid"),
            "getInitData:cb1:sid"
        );
        assert_eq!(
            command_text("setTitle", Some(r#"{"title":"Q: x"}"#), "cb2", "sid"),
            r#"setTitle:{"title":"Q: x"}:cb2:sid"#
        );
        assert_eq!(
            split_answer(r#"cb1:{"a":"b:c"}"#),
            Some(Ok(("cb1", r#"{"a":"b:c"}"#)))
        );
        assert_eq!(split_answer("no-colon"), None);
        assert_eq!(split_answer(":x"), None);
        let big = concat(&["cb9:", &"x".repeat(MAX_ANSWER)]);
        assert_eq!(split_answer(&big), Some(Err("cb9")));
        let a = callback_id(0.5, 1);
        let b = callback_id(0.5, 2);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn init_data_is_read() {
        let v = json!({"DOMAIN": "acme.bitrix24.com:443", "PROTOCOL": 1, "LANG": "en", "APP_SID": "s", "AUTH_ID": "tok", "AUTH_EXPIRES": "3600",
            "REFRESH_ID": "r", "MEMBER_ID": "m", "IS_ADMIN": true, "INSTALL": false, "FIRST_RUN": "N", "PLACEMENT": "CRM_DEAL_DETAIL_TAB",
            "PLACEMENT_OPTIONS": "{\"ID\":\"42\"}"});
        let d = init_data(&Fake::new(|_, _, _| unreachable!()), &v).unwrap();
        assert_eq!(
            (
                d.access_token.as_str(),
                d.expires_in,
                d.is_admin,
                d.first_run
            ),
            ("tok", Some(3600.0), true, false)
        );
        assert_eq!(d.placement_options, json!({"ID": "42"}));
        assert!(same_portal(
            &Origin::parse("acme.bitrix24.com", false).unwrap(),
            &d.domain
        ));
        assert!(!same_portal(
            &Origin::parse("acme.bitrix24.com", false).unwrap(),
            "evil.com"
        ));
        assert!(init_data(
            &Fake::new(|_, _, _| unreachable!()),
            &json!({"DOMAIN": "x"})
        )
        .is_err());
    }
}
