//! `batch`: many calls in one HTTP request (one tick of the rate limit). Longer lists are split
//! into requests of 50, the portal's maximum; each command's result or error comes back under
//! its name.

use super::args::{build_query, Arg, Body, Tree};
use super::client::{CallOptions, Client};
use super::envelope::shape;
use super::error::{code, B24Error, Result};
use super::platform::Platform;
use super::read::{field_text, keyed, uint};
use super::retry::{is_read_method, Idempotency};
use super::validate::method_name;
use crate::core::text::concat;

/// The portal's limit of commands per `batch` request.
pub const MAX_COMMANDS: usize = 50;

pub struct Command {
    pub name: String,
    pub method: String,
    pub params: Option<Tree>,
}

#[derive(Debug, Clone)]
pub struct Item<D> {
    pub name: String,
    pub result: Result<Option<D>>,
    pub total: Option<u64>,
    pub next: Option<u64>,
}

fn take<T>(list: &mut Vec<(String, T)>, key: &str) -> Option<T> {
    let i = list.iter().position(|(k, _)| k == key)?;
    Some(list.swap_remove(i).1)
}

/// Commands carry the connector themselves: the portal runs each one as its own request.
fn with_connector(params: Option<&Tree>, connector: Option<&str>) -> Option<Tree> {
    let Some(c) = connector else {
        return params.cloned();
    };
    let mut entries = match params {
        Some(Tree::Map(m)) => m.clone(),
        _ => Vec::new(),
    };
    if !entries.iter().any(|(k, _)| k == "auth_connector") {
        entries.push(("auth_connector".to_string(), Tree::Str(c.to_string())));
    }
    Some(Tree::Map(entries))
}

fn check(commands: &[Command]) -> Result<()> {
    for (i, c) in commands.iter().enumerate() {
        let ok_name = !c.name.is_empty()
            && c.name.len() <= 64
            && c.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok_name {
            return Err(B24Error::invalid(
                "commands",
                "names must be letters, digits or _ (at most 64)",
            ));
        }
        if commands[..i].iter().any(|o| o.name == c.name) {
            return Err(B24Error::invalid(
                "commands",
                &concat(&["the name '", &c.name, "' is used twice"]),
            ));
        }
        method_name(&c.method)?;
        if c.method == "batch" {
            return Err(B24Error::invalid(
                "commands",
                "a batch cannot contain another batch",
            ));
        }
        if !matches!(c.params, None | Some(Tree::Null) | Some(Tree::Map(_))) {
            return Err(B24Error::invalid(
                "commands",
                &concat(&["the parameters of '", &c.name, "' must be an object"]),
            ));
        }
    }
    Ok(())
}

fn halted(method: &str) -> B24Error {
    B24Error::new(
        code::BATCH_HALTED,
        "not run: an earlier command failed and halt was set",
    )
    .with_method(method)
}

/// Runs the commands in requests of at most 50. With `halt`, the first failing command stops
/// everything after it (later commands come back as `BATCH_HALTED`). A batch made only of
/// read methods is repeated after an ambiguous failure; any other batch is not.
pub async fn run<P: Platform>(
    client: &Client<P>,
    commands: Vec<Command>,
    halt: bool,
    signal: Option<&P::Signal>,
    connector: Option<&str>,
) -> Result<Vec<Item<P::Data>>> {
    check(&commands)?;
    let idempotency = if commands.iter().all(|c| is_read_method(&c.method)) {
        Idempotency::Safe
    } else {
        Idempotency::Unsafe
    };
    let opts = CallOptions {
        idempotency,
        signal,
        connector,
    };
    let mut items = Vec::with_capacity(commands.len());
    let mut stop = false;
    for chunk in commands.chunks(MAX_COMMANDS) {
        if stop {
            items.extend(chunk.iter().map(|c| Item {
                name: c.name.clone(),
                result: Err(halted(&c.method)),
                total: None,
                next: None,
            }));
            continue;
        }
        let cmd = chunk
            .iter()
            .map(|c| {
                let query = with_connector(c.params.as_ref(), connector)
                    .as_ref()
                    .map(build_query)
                    .unwrap_or_default();
                let text = if query.is_empty() {
                    c.method.clone()
                } else {
                    concat(&[c.method.as_str(), "?", &query])
                };
                (c.name.clone(), Arg::Str(text))
            })
            .collect();
        let body = Body::new()
            .with("halt", Arg::Int(halt as i64))
            .with("cmd", Arg::Map(cmd));
        let raw = client.call("batch", &body, &opts).await?.into_result()?;
        if P::entries(&raw).is_none() {
            return Err(shape("batch returned something other than an object").with_method("batch"));
        }
        let mut results = keyed::<P>(P::field(&raw, "result"));
        let mut errors = keyed::<P>(P::field(&raw, "result_error"));
        let mut totals = keyed::<P>(P::field(&raw, "result_total"));
        let mut nexts = keyed::<P>(P::field(&raw, "result_next"));
        for c in chunk {
            let total = take(&mut totals, &c.name).and_then(|n| uint::<P>(&n));
            let next = take(&mut nexts, &c.name).and_then(|n| uint::<P>(&n));
            let result = match (take(&mut errors, &c.name), take(&mut results, &c.name)) {
                (Some(e), _) => {
                    stop |= halt;
                    let code = field_text::<P>(&e, "error").unwrap_or_default();
                    Err(B24Error::portal(
                        &code,
                        0,
                        &field_text::<P>(&e, "error_description").unwrap_or_default(),
                    )
                    .with_method(&c.method))
                }
                (None, Some(v)) => Ok(Some(v)),
                (None, None) if stop => Err(halted(&c.method)),
                (None, None) => Ok(None),
            };
            items.push(Item {
                name: c.name.clone(),
                result,
                total,
                next,
            });
        }
    }
    Ok(items)
}
