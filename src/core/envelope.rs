//! The portal's answer: `{result, total?, next?, time}` or `{error, error_description}` with an
//! HTTP status, or (under load, from a proxy) something that is not JSON at all.

use super::error::{code, B24Error, Result};
use super::platform::Platform;
use super::read::{field_number, field_text, field_uint};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Time {
    pub start: Option<f64>,
    pub operating: Option<f64>,
    pub operating_reset_at: Option<f64>,
}

/// A successful answer; `result` stays platform data.
#[derive(Debug, Clone)]
pub struct Reply<D> {
    pub result: Option<D>,
    pub total: Option<u64>,
    pub next: Option<u64>,
    pub time: Time,
}

impl<D> Reply<D> {
    /// The result, or `BAD_RESPONSE` when the portal sent none.
    pub fn into_result(self) -> Result<D> {
        self.result.ok_or_else(|| shape("the answer has no result"))
    }
}

fn bad_response(status: u16, why: &str) -> B24Error {
    B24Error::new(code::BAD_RESPONSE, why).with_status(status)
}

/// A result that is not what the method returns.
pub fn shape(why: &str) -> B24Error {
    B24Error::new(code::BAD_RESPONSE, why)
}

/// Reads an HTTP answer as the portal's envelope.
pub fn decode<P: Platform>(platform: &P, status: u16, body: &str) -> Result<Reply<P::Data>> {
    let data = match platform.parse(body) {
        Some(d) if P::entries(&d).is_some() => d,
        Some(_) => return Err(bad_response(status, "the answer is JSON but not an object")),
        None => {
            let why = if super::text::trim_start(body).starts_with('<') {
                "the portal answered with an HTML page instead of JSON (a proxy error?)"
            } else {
                "the answer is not valid JSON"
            };
            return Err(bad_response(status, why));
        }
    };
    if let Some(code) = field_text::<P>(&data, "error").filter(|c| !c.is_empty()) {
        return Err(B24Error::portal(
            &code,
            status,
            &field_text::<P>(&data, "error_description").unwrap_or_default(),
        ));
    }
    if status >= 400 {
        return Err(bad_response(
            status,
            "an error status without an error code",
        ));
    }
    let time = match P::field(&data, "time") {
        Some(t) => Time {
            start: field_number::<P>(&t, "start"),
            operating: field_number::<P>(&t, "operating"),
            operating_reset_at: field_number::<P>(&t, "operating_reset_at"),
        },
        None => Time::default(),
    };
    Ok(Reply {
        result: P::field(&data, "result"),
        total: field_uint::<P>(&data, "total"),
        next: field_uint::<P>(&data, "next"),
        time,
    })
}
