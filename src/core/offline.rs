//! Every `event.offline.*` call (and the bindings around them), typed and checked.
//!
//! A queue is an application's events for one connector: the connector given here is sent as
//! `auth_connector` with every call made through it.

use super::args::{Arg, Body, Tree};
use super::batch::{self, Command};
use super::client::{CallOptions, Client};
use super::digits::decimal;
use super::envelope::shape;
use super::error::{B24Error, Result};
use super::model::{Binding, Bound, Features, ListPage, OfflineEvent, Taken};
use super::platform::Platform;
use super::read::{field_uint, flag};
use super::retry::Idempotency;
use super::validate::{self, GET_FIELDS, LIST_FIELDS};
use crate::core::text::concat;

/// Arguments of `event.offline.get`.
#[derive(Debug, Clone, Default)]
pub struct GetArgs {
    pub filter: Option<Tree>,
    pub order: Option<Tree>,
    pub limit: Option<f64>,
    /// `clear=1`: delete what is returned (lossy). `false` reserves instead.
    pub clear: bool,
    pub process_id: Option<String>,
    /// Work on the error queue (`error=1`).
    pub error: bool,
}

/// Arguments of `event.offline.list`.
#[derive(Debug, Clone, Default)]
pub struct ListArgs {
    pub filter: Option<Tree>,
    pub order: Option<Tree>,
    pub start: Option<f64>,
}

/// Which reserved rows `event.offline.clear` deletes.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    All,
    MessageIds(Vec<String>),
    Ids(Vec<f64>),
}

const GET: &str = "event.offline.get";
const CLEAR: &str = "event.offline.clear";

/// The parameters of `event.offline.get`, checked.
fn get_params<D>(args: &GetArgs) -> Result<Vec<(&'static str, Arg<D>)>> {
    let mut out = Vec::with_capacity(6);
    if let Some(f) = validate::filter(args.filter.as_ref(), GET_FIELDS, GET)? {
        out.push(("filter", f));
    }
    if let Some(o) = validate::order(args.order.as_ref(), GET_FIELDS, GET)? {
        out.push(("order", o));
    }
    if let Some(limit) = args.limit {
        out.push(("limit", Arg::Int(validate::positive("limit", limit)?)));
    }
    if let Some(pid) = &args.process_id {
        validate::process_id(pid)?;
        out.push(("process_id", Arg::Str(pid.clone())));
    }
    out.push(("clear", Arg::Int(args.clear as i64)));
    out.push(("error", Arg::Int(args.error as i64)));
    Ok(out)
}

/// A `get` result read; a reservation must come with its process id.
fn taken<P: Platform>(raw: &P::Data, args: &GetArgs) -> Result<Taken<P::Data>> {
    let taken = Taken::read::<P>(raw)
        .ok_or_else(|| shape("the events are not in the expected shape").with_method(GET))?;
    if !args.clear && taken.process_id.is_none() && !taken.is_empty() {
        return Err(shape("a reservation came back without its process_id").with_method(GET));
    }
    Ok(taken)
}

/// The event that announces queue growth to an online handler.
pub const SIGNAL_EVENT: &str = "ONOFFLINEEVENT";

pub struct Queue<'a, P: Platform> {
    pub client: &'a Client<P>,
    pub connector: Option<&'a str>,
}

impl<'a, P: Platform> Queue<'a, P> {
    fn opts<'s>(
        &'s self,
        idempotency: Idempotency,
        signal: Option<&'s P::Signal>,
    ) -> CallOptions<'s, P::Signal> {
        CallOptions {
            idempotency,
            signal,
            connector: self.connector,
        }
    }

    /// `event.offline.get`. Only a re-select by `process_id` is repeated after an ambiguous
    /// failure: a fresh reservation or a destructive read may already have happened.
    pub async fn get(&self, args: &GetArgs, signal: Option<&P::Signal>) -> Result<Taken<P::Data>> {
        let mut body = Body::new();
        for (k, v) in get_params(args)? {
            body.set(k, v);
        }
        let safe = args.process_id.is_some() && !args.clear;
        let opts = self.opts(
            if safe {
                Idempotency::Safe
            } else {
                Idempotency::Unsafe
            },
            signal,
        );
        let raw = self.client.call(GET, &body, &opts).await?.into_result()?;
        taken::<P>(&raw, args)
    }

    /// One request that acknowledges what is settled (`acks`: process id and message ids,
    /// never an empty list) and reserves anew (`gets`): the portal counts a `batch` as one
    /// request, so a drain moves one batch per request instead of two. Each part answers on its
    /// own; the request as a whole is never repeated after an ambiguous failure (its
    /// reservations may have happened; the caller acknowledges again alone, which is safe).
    pub async fn step(
        &self,
        acks: &[(String, Vec<String>)],
        gets: &[GetArgs],
        signal: Option<&P::Signal>,
    ) -> Result<(Vec<Result<()>>, Vec<Result<Taken<P::Data>>>)> {
        let mut commands = Vec::with_capacity(acks.len() + gets.len());
        for (i, (pid, ids)) in acks.iter().enumerate() {
            validate::process_id(pid)?;
            validate::message_ids("messageIds", ids)?;
            if ids.is_empty() {
                return Err(B24Error::invalid("messageIds", "must not be empty"));
            }
            let ids = ids.iter().map(|m| Tree::Str(m.clone())).collect();
            commands.push(Command {
                name: concat(&["a", &decimal(i as u64)]),
                method: CLEAR.to_string(),
                params: Some(Tree::Map(vec![
                    ("process_id".into(), Tree::Str(pid.clone())),
                    ("message_id".into(), Tree::List(ids)),
                ])),
            });
        }
        for (i, args) in gets.iter().enumerate() {
            let params = get_params::<P::Data>(args)?
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_tree()))
                .collect();
            commands.push(Command {
                name: concat(&["g", &decimal(i as u64)]),
                method: GET.to_string(),
                params: Some(Tree::Map(params)),
            });
        }
        let mut items = batch::run(self.client, commands, false, signal, self.connector)
            .await?
            .into_iter();
        let cleared = acks
            .iter()
            .map(|_| match items.next() {
                Some(item) => item.result.map(|_| ()),
                None => Err(shape("batch left a command out").with_method(CLEAR)),
            })
            .collect();
        let taken = gets
            .iter()
            .map(|args| match items.next() {
                Some(item) => item
                    .result?
                    .ok_or_else(|| shape("the answer has no result").with_method(GET))
                    .and_then(|raw| taken::<P>(&raw, args)),
                None => Err(shape("batch left a command out").with_method(GET)),
            })
            .collect();
        Ok((cleared, taken))
    }

    /// `event.offline.list`: one page of 50, read-only.
    pub async fn list(
        &self,
        args: &ListArgs,
        signal: Option<&P::Signal>,
    ) -> Result<ListPage<P::Data>> {
        const METHOD: &str = "event.offline.list";
        let mut body = Body::new();
        if let Some(f) = validate::filter(args.filter.as_ref(), LIST_FIELDS, METHOD)? {
            body.set("filter", f);
        }
        if let Some(o) = validate::order(args.order.as_ref(), LIST_FIELDS, METHOD)? {
            body.set("order", o);
        }
        if let Some(start) = args.start {
            body.set("start", Arg::Int(validate::non_negative("start", start)?));
        }
        let reply = self
            .client
            .call(METHOD, &body, &self.opts(Idempotency::Safe, signal))
            .await?;
        let (total, next) = (reply.total, reply.next);
        let raw = reply.into_result()?;
        let rows = OfflineEvent::read_all::<P>(&raw)
            .ok_or_else(|| shape("the events are not in the expected shape").with_method(METHOD))?;
        Ok(ListPage {
            total: total.unwrap_or((rows.events.len() + rows.malformed.len()) as u64),
            next,
            events: rows.events,
            malformed: rows.malformed,
        })
    }

    /// `event.offline.clear`. An empty selection sends nothing: the portal would read an empty
    /// list as "no narrowing" and delete the whole reservation.
    pub async fn clear(
        &self,
        process_id: &str,
        selection: &Selection,
        signal: Option<&P::Signal>,
    ) -> Result<()> {
        validate::process_id(process_id)?;
        let mut body = Body::new().with("process_id", Arg::Str(process_id.to_string()));
        match selection {
            Selection::All => {}
            Selection::MessageIds(ids) => {
                validate::message_ids("messageIds", ids)?;
                if ids.is_empty() {
                    return Ok(());
                }
                body.set(
                    "message_id",
                    Arg::List(ids.iter().map(|m| Arg::Str(m.clone())).collect()),
                );
            }
            Selection::Ids(ids) => {
                let ids = validate::record_ids("ids", ids)?;
                if ids.is_empty() {
                    return Ok(());
                }
                body.set("id", Arg::List(ids.into_iter().map(Arg::Int).collect()));
            }
        }
        self.client
            .call(CLEAR, &body, &self.opts(Idempotency::Safe, signal))
            .await?;
        Ok(())
    }

    /// `event.offline.error`: send these messages of the reservation to the error queue.
    pub async fn error(
        &self,
        process_id: &str,
        message_ids: &[String],
        signal: Option<&P::Signal>,
    ) -> Result<()> {
        validate::process_id(process_id)?;
        validate::message_ids("messageIds", message_ids)?;
        if message_ids.is_empty() {
            return Ok(());
        }
        let body = Body::new()
            .with("process_id", Arg::Str(process_id.to_string()))
            .with(
                "message_id",
                Arg::List(message_ids.iter().map(|m| Arg::Str(m.clone())).collect()),
            );
        self.client
            .call(
                "event.offline.error",
                &body,
                &self.opts(Idempotency::Unsafe, signal),
            )
            .await?;
        Ok(())
    }

    /// The plan's features and the app's code (`app.info`), in one request, once per client
    /// (every queue of a client shares the portal and the app): the queue's journal and lock
    /// are named after the app, so two apps on one origin never share them. The code is `None`
    /// if `app.info` did not answer it. A failure is not kept: the next call asks again.
    pub async fn context(&self, signal: Option<&P::Signal>) -> Result<(Features, Option<String>)> {
        if let Some(known) = self.client.context.borrow().clone() {
            return Ok(known);
        }
        let feature = |name: &str, code: &str| Command {
            name: name.to_string(),
            method: "feature.get".to_string(),
            params: Some(Tree::Map(vec![(
                "CODE".to_string(),
                Tree::Str(code.to_string()),
            )])),
        };
        let app = Command {
            name: "app".to_string(),
            method: "app.info".to_string(),
            params: None,
        };
        let mut items = batch::run(
            self.client,
            vec![
                feature("extended", "rest_offline_extended"),
                feature("connector", "rest_auth_connector"),
                app,
            ],
            false,
            signal,
            None,
        )
        .await?
        .into_iter();
        let mut flag_of = |name: &str| -> Result<bool> {
            let value = items
                .next()
                .and_then(|item| item.result.transpose())
                .transpose()?
                .and_then(|r| P::field(&r, "value"))
                .ok_or_else(|| {
                    shape(&concat(&[name, " returned no value"])).with_method("feature.get")
                })?;
            Ok(flag::<P>(&value))
        };
        let features = Features {
            extended: flag_of("rest_offline_extended")?,
            connector: flag_of("rest_auth_connector")?,
        };
        let code = items
            .next()
            .and_then(|item| item.result.ok().flatten())
            .and_then(|r| super::read::field_text::<P>(&r, "CODE"))
            .filter(|c| !c.is_empty() && c.len() <= 128);
        *self.client.context.borrow_mut() = Some((features, code.clone()));
        Ok((features, code))
    }

    /// Binds events to this queue (`event_type=offline`, no handler). Binding an event that is
    /// already bound is not an error: the result says which were new.
    pub async fn bind(&self, events: &[String], signal: Option<&P::Signal>) -> Result<Vec<Bound>> {
        if events.is_empty() {
            return Err(B24Error::invalid("events", "give at least one event name"));
        }
        let names = events
            .iter()
            .map(|e| validate::event_name(e))
            .collect::<Result<Vec<_>>>()?;
        if names.iter().any(|n| n == SIGNAL_EVENT) {
            return Err(B24Error::invalid(
                "events",
                "ONOFFLINEEVENT cannot be queued offline; use notifyAt() for it",
            ));
        }
        let commands = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut p = vec![
                    ("event".to_string(), Tree::Str(name.clone())),
                    ("event_type".to_string(), Tree::Str("offline".into())),
                ];
                if let Some(c) = self.connector {
                    p.push(("auth_connector".to_string(), Tree::Str(c.to_string())));
                }
                Command {
                    name: concat(&["e", &decimal(i as u64)]),
                    method: "event.bind".to_string(),
                    params: Some(Tree::Map(p)),
                }
            })
            .collect();
        let items = batch::run(self.client, commands, false, signal, self.connector).await?;
        names
            .into_iter()
            .zip(items)
            .map(|(name, item)| match item.result {
                Ok(_) => Ok(Bound {
                    event: name,
                    created: true,
                }),
                Err(e) if is_already_bound(&e) => Ok(Bound {
                    event: name,
                    created: false,
                }),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Removes this queue's offline binding of `event`; returns how many bindings went.
    pub async fn unbind(&self, event: &str, signal: Option<&P::Signal>) -> Result<u64> {
        let body = Body::new()
            .with("event", Arg::Str(validate::event_name(event)?))
            .with("event_type", Arg::Str("offline".into()));
        self.unbound(body, signal).await
    }

    async fn unbound(&self, body: Body<P::Data>, signal: Option<&P::Signal>) -> Result<u64> {
        let r = self
            .client
            .call("event.unbind", &body, &self.opts(Idempotency::Safe, signal))
            .await?
            .into_result()?;
        Ok(field_uint::<P>(&r, "count").unwrap_or(0))
    }

    /// This application's bindings (`event.get`), online and offline.
    pub async fn bindings(&self, signal: Option<&P::Signal>) -> Result<Vec<Binding>> {
        let raw = self
            .client
            .call(
                "event.get",
                &Body::new(),
                &self.opts(Idempotency::Safe, signal),
            )
            .await?
            .into_result()?;
        P::items(&raw)
            .and_then(|items| items.iter().map(Binding::read::<P>).collect())
            .ok_or_else(|| {
                shape("the bindings are not in the expected shape").with_method("event.get")
            })
    }

    /// Asks the portal to POST `ONOFFLINEEVENT` to `handler` when the queue grows, at most once
    /// per `min_timeout_s` seconds. Already bound is not an error.
    pub async fn notify_at(
        &self,
        handler: &str,
        min_timeout_s: Option<f64>,
        signal: Option<&P::Signal>,
    ) -> Result<bool> {
        validate::handler_url(handler)?;
        let mut body = Body::new()
            .with("event", Arg::Str(SIGNAL_EVENT.into()))
            .with("handler", Arg::Str(handler.to_string()));
        if let Some(t) = min_timeout_s {
            body.set(
                "options",
                Arg::Map(vec![(
                    "minTimeout".to_string(),
                    Arg::Int(validate::non_negative("minTimeout", t)?),
                )]),
            );
        }
        match self
            .client
            .call("event.bind", &body, &self.opts(Idempotency::Unsafe, signal))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_already_bound(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the `ONOFFLINEEVENT` handler.
    pub async fn stop_notify(&self, handler: &str, signal: Option<&P::Signal>) -> Result<u64> {
        validate::handler_url(handler)?;
        let body = Body::new()
            .with("event", Arg::Str(SIGNAL_EVENT.into()))
            .with("handler", Arg::Str(handler.to_string()));
        self.unbound(body, signal).await
    }
}

/// Reads a whole list page by page. Without an `order` it pages by ID (`>ID` of the last row
/// seen, the portal's default order), which stays correct while rows are deleted meanwhile;
/// with an `order` it pages by offset, which can skip rows deleted meanwhile. The one pager
/// of the library: `listAll()` and the sweep both walk the queue with it.
#[derive(Debug, Clone)]
pub struct Pager {
    filter: Option<Tree>,
    order: Option<Tree>,
    /// Keyset position: the largest row id seen.
    after: Option<u64>,
    start: u64,
    done: bool,
}

impl Pager {
    pub fn new(filter: Option<Tree>, order: Option<Tree>) -> Pager {
        Pager {
            after: order.is_none().then_some(0),
            filter,
            order,
            start: 0,
            done: false,
        }
    }

    /// The next page, or `None` after the last one.
    pub async fn next<P: Platform>(
        &mut self,
        queue: &Queue<'_, P>,
        signal: Option<&P::Signal>,
    ) -> Result<Option<ListPage<P::Data>>> {
        if self.done {
            return Ok(None);
        }
        let args = match self.after {
            Some(after) => ListArgs {
                filter: Some(after_id(self.filter.clone(), after)),
                order: None,
                start: None,
            },
            None => ListArgs {
                filter: self.filter.clone(),
                order: self.order.clone(),
                start: Some(self.start as f64),
            },
        };
        let page = queue.list(&args, signal).await?;
        let count = (page.events.len() + page.malformed.len()) as u64;
        self.start += count;
        if let Some(after) = self.after.as_mut() {
            // Malformed rows move the position too, when their ID is readable.
            let ids = page.events.iter().map(|e| e.id).chain(
                page.malformed
                    .iter()
                    .filter_map(|r| field_uint::<P>(r, "ID")),
            );
            let last = ids.max().unwrap_or(*after);
            // A page that does not move forward would be read forever.
            self.done = last <= *after;
            *after = last;
        }
        self.done |= page.next.is_none() || count == 0;
        Ok(Some(page))
    }
}

/// Sets `>ID` in a filter to at least `after`.
fn after_id(filter: Option<Tree>, after: u64) -> Tree {
    let mut entries = match filter {
        Some(Tree::Map(m)) => m,
        _ => Vec::new(),
    };
    let mut floor = after as f64;
    entries.retain(|(k, v)| {
        let is_gt = super::text::trim(k).eq_ignore_ascii_case(">ID");
        if is_gt {
            floor = floor.max(v.as_int().unwrap_or(0) as f64);
        }
        !is_gt
    });
    entries.push((">ID".to_string(), Tree::Num(floor)));
    Tree::Map(entries)
}

/// The portal's "Unable to set event handler: Handler already binded".
fn is_already_bound(e: &B24Error) -> bool {
    super::read::has(&e.description, "already bind") || e.code == "ERROR_HANDLER_ALREADY_EXIST"
}
