//! How results look to JavaScript, written once here: each type the app receives describes
//! itself as a small tree (field names in camelCase, numbers as numbers, absent fields left
//! out, event data passed through untouched). The binding writes such a tree as plain objects
//! with a dozen lines, so no serializer is compiled into the wasm; native tests read the same
//! trees as JSON.

use super::client::Stats;
use super::consume::{Batch, Progress};
use super::fleet::worker::{Installed, PortalInfo, PortalStats};
use super::frame::InitData;
use super::limiter::MethodOperating;
use super::model::{Binding, Bound, Features, ListPage, OfflineEvent};
use super::objects::Found;
use super::signal::Signal;

/// A value as JavaScript gets it. `D` is the platform's opaque data, passed through.
pub enum Out<'a, D> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    Data(&'a D),
    List(Vec<Out<'a, D>>),
    Obj(Vec<(&'a str, Out<'a, D>)>),
}

/// A type that JavaScript receives.
pub trait ToOut<D> {
    fn out(&self) -> Out<'_, D>;
}

impl<D, T: ToOut<D>> ToOut<D> for [T] {
    fn out(&self) -> Out<'_, D> {
        Out::List(self.iter().map(ToOut::out).collect())
    }
}

impl<D, T: ToOut<D>> ToOut<D> for Vec<T> {
    fn out(&self) -> Out<'_, D> {
        self.as_slice().out()
    }
}

/// An object's fields; `None` values are left out. (A `Vec`, not an array: one copy of this
/// for every object rather than one per field count.)
fn obj<'a, D>(fields: Vec<(&'a str, Option<Out<'a, D>>)>) -> Out<'a, D> {
    Out::Obj(
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
    )
}

fn num<'a, D>(n: impl Into<f64>) -> Option<Out<'a, D>> {
    Some(Out::Num(n.into()))
}

fn text<D>(s: &str) -> Option<Out<'_, D>> {
    Some(Out::Str(s))
}

fn data<D>(rows: &[D]) -> Out<'_, D> {
    Out::List(rows.iter().map(Out::Data).collect())
}

/// An event, with its object where `consume({ objects })` fetched one.
fn event<'a, D>(e: &'a OfflineEvent<D>, found: Option<&'a Found<D>>) -> Out<'a, D> {
    obj(vec![
        ("id", num(e.id as f64)),
        ("messageId", text(&e.message_id)),
        ("name", text(&e.name)),
        ("timestamp", text(&e.timestamp)),
        ("data", Some(Out::Data(&e.data))),
        ("additional", Some(Out::Data(&e.additional))),
        ("processId", e.process_id.as_deref().map(Out::Str)),
        ("error", e.error.map(Out::Bool)),
        (
            "object",
            found.map(|f| match f {
                Found::Object(d) => Out::Data(d),
                _ => Out::Null,
            }),
        ),
        ("objectState", found.map(|f| Out::Str(f.state()))),
        (
            "objectError",
            match found {
                Some(Found::Failed(e)) => Some(obj(vec![
                    ("code", text(&e.code)),
                    ("description", text(&e.description)),
                ])),
                _ => None,
            },
        ),
    ])
}

impl<D> ToOut<D> for OfflineEvent<D> {
    fn out(&self) -> Out<'_, D> {
        event(self, None)
    }
}

/// A batch as its handler receives it: the events, with their objects if fetched.
impl<D> ToOut<D> for Batch<D> {
    fn out(&self) -> Out<'_, D> {
        Out::List(
            self.events
                .iter()
                .enumerate()
                .map(|(i, e)| event(e, self.objects.get(i).and_then(Option::as_ref)))
                .collect(),
        )
    }
}

impl<D> ToOut<D> for ListPage<D> {
    fn out(&self) -> Out<'_, D> {
        obj(vec![
            ("events", Some(self.events.out())),
            ("total", num(self.total as f64)),
            ("next", self.next.map(|n| Out::Num(n as f64))),
            (
                "malformed",
                (!self.malformed.is_empty()).then(|| data(&self.malformed)),
            ),
        ])
    }
}

impl<D> ToOut<D> for Bound {
    fn out(&self) -> Out<'_, D> {
        obj(vec![
            ("event", text(&self.event)),
            ("created", Some(Out::Bool(self.created))),
        ])
    }
}

impl<D> ToOut<D> for Binding {
    fn out(&self) -> Out<'_, D> {
        obj(vec![
            ("event", text(&self.event)),
            ("offline", Some(Out::Bool(self.offline))),
            ("connector", self.connector.as_deref().map(Out::Str)),
            ("handler", self.handler.as_deref().map(Out::Str)),
            ("authType", self.auth_type.as_deref().map(Out::Str)),
        ])
    }
}

impl<D> ToOut<D> for Features {
    fn out(&self) -> Out<'_, D> {
        obj(vec![
            ("extended", Some(Out::Bool(self.extended))),
            ("connector", Some(Out::Bool(self.connector))),
        ])
    }
}

impl<D> ToOut<D> for Progress {
    fn out(&self) -> Out<'_, D> {
        let n = |v: u64| num(v as f64);
        obj(vec![
            ("batches", n(self.batches)),
            ("reserved", n(self.reserved)),
            ("recovered", n(self.recovered)),
            ("acked", n(self.acked)),
            ("failed", n(self.failed)),
            ("parked", n(self.parked)),
            ("dead", n(self.dead)),
            ("duplicates", n(self.duplicates)),
            ("remaining", self.remaining.and_then(n)),
            ("unsettled", n(self.unsettled)),
            ("released", n(self.released)),
            ("malformed", n(self.malformed)),
            ("timedOut", n(self.timed_out)),
            ("errors", n(self.errors)),
            ("waiting", n(self.waiting)),
            ("lagMs", self.lag_ms.and_then(num)),
            ("stopped", text(self.stopped)),
        ])
    }
}

impl<D> ToOut<D> for MethodOperating {
    fn out(&self) -> Out<'_, D> {
        obj(vec![
            ("method", text(&self.method)),
            ("seconds", num(self.seconds)),
            ("resetAtMs", self.reset_at_ms.map(Out::Num)),
            ("maxStep", num(self.max_step)),
            ("blockedUntilMs", num(self.blocked_until_ms)),
        ])
    }
}

/// `[(key, count)]` as an object keyed by the names.
fn counts<D>(pairs: &[(String, u64)]) -> Out<'_, D> {
    Out::Obj(
        pairs
            .iter()
            .map(|(k, v)| (k.as_str(), Out::Num(*v as f64)))
            .collect(),
    )
}

impl<D> ToOut<D> for Stats {
    fn out(&self) -> Out<'_, D> {
        let n = |v: u64| num(v as f64);
        obj(vec![
            ("requests", n(self.requests)),
            ("retries", n(self.retries)),
            ("refreshes", n(self.refreshes)),
            ("rateLimited", n(self.rate_limited)),
            ("operatingLimited", n(self.operating_limited)),
            ("waitedMs", num(self.waited_ms)),
            ("byMethod", Some(counts(&self.by_method))),
            ("errors", Some(counts(&self.errors))),
            ("operating", Some(self.operating.out())),
            ("bucketLevel", num(self.bucket_level)),
        ])
    }
}

impl<D> ToOut<D> for InitData<D> {
    fn out(&self) -> Out<'_, D> {
        obj(vec![
            ("domain", text(&self.domain)),
            ("lang", text(&self.lang)),
            ("memberId", text(&self.member_id)),
            ("isAdmin", Some(Out::Bool(self.is_admin))),
            ("install", Some(Out::Bool(self.install))),
            ("firstRun", Some(Out::Bool(self.first_run))),
            ("placement", text(&self.placement)),
            ("placementOptions", Some(Out::Data(&self.placement_options))),
        ])
    }
}

impl<D> ToOut<D> for Signal {
    fn out(&self) -> Out<'_, D> {
        obj(vec![
            ("event", text(&self.event)),
            ("ts", self.ts.map(|t| Out::Num(t as f64))),
            ("domain", self.domain.as_deref().map(Out::Str)),
            ("memberId", self.member_id.as_deref().map(Out::Str)),
        ])
    }
}

impl<D> ToOut<D> for PortalInfo {
    fn out(&self) -> Out<'_, D> {
        obj(vec![
            ("memberId", text(&self.member_id)),
            ("domain", text(&self.domain)),
        ])
    }
}

impl<D> ToOut<D> for Installed {
    fn out(&self) -> Out<'_, D> {
        obj(vec![
            ("memberId", text(&self.portal.member_id)),
            ("domain", text(&self.portal.domain)),
            ("known", Some(Out::Bool(self.known))),
            ("bound", Some(self.bound.out())),
            ("signalBound", Some(Out::Bool(self.signal_bound))),
        ])
    }
}

impl<D> ToOut<D> for PortalStats {
    fn out(&self) -> Out<'_, D> {
        obj(vec![
            ("memberId", text(&self.portal.member_id)),
            ("domain", text(&self.portal.domain)),
            ("progress", Some(self.progress.out())),
            ("requests", self.client.as_ref().map(ToOut::out)),
            (
                "lastError",
                self.last_error.as_ref().map(|e| {
                    Out::Obj(vec![
                        ("code", Out::Str(&e.code)),
                        ("description", Out::Str(&e.description)),
                    ])
                }),
            ),
        ])
    }
}
