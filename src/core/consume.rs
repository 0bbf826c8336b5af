//! The reservation flow: reserve a batch (`clear=0` → process id), hand it to the app, then
//! acknowledge what succeeded (`event.offline.clear`) and send what failed to the error queue
//! (`event.offline.error`), with a journal so that nothing is lost or stranded on the way, and
//! ownership rules so that two consumers never work on one reservation.
//!
//! ```text
//!            reserve (get clear=0)            handler(events)
//!  queue ───────────────────────▶ journal ───────────────────▶ outcome
//!    ▲                              │                             │
//!    │  failed: error (ERROR=1) ◀───┼──── failed ids ◀────────────┤
//!    │                              │                             │
//!    └── error pass (get error=1) ◀─┘     clear (acked ids) ◀─────┘
//!
//!  crash / reload ──▶ journal ──▶ still within its hold? re-select by process id ──▶ handler
//!  stranded (lost get answer, owner gone, hold over) ──▶ main queue: released into the
//!      error queue (the portal hands it to exactly one consumer); error queue: re-selected
//! ```
//!
//! Delivery is at least once: a batch whose acknowledgement did not reach the portal is handed
//! over again, so handlers deduplicate by `messageId` (or by `id` for one exact row). The rules
//! are written out in `docs/reservations.md`.

use super::args::Tree;
use super::digits::decimal;
use super::error::{code, B24Error, Kind, Result};
use super::joint::{race, Alarm, Either};
use super::journal::{Entry, Journal};
use super::model::{Features, OfflineEvent, Taken};
use super::objects::{fetch_objects, Found};
use super::offline::{GetArgs, ListArgs, Pager, Queue, Selection};
use super::options::{ErrorPolicy, MalformedPolicy, Options};
use super::platform::{Level, Platform};
use super::read::{field_text, field_uint, flag};
use crate::core::joint::LocalBoxFuture;
use crate::core::text::concat;
use std::cell::{Cell, RefCell};
use std::task::Poll;

/// A reserved batch handed to the app.
#[derive(Debug, Clone)]
pub struct Batch<D> {
    pub process_id: String,
    pub events: Vec<OfflineEvent<D>>,
    /// Rows of the reservation that are not readable events (reported, never handed over).
    pub malformed: Vec<D>,
    /// Taken from the error queue.
    pub error: bool,
    /// Re-selected from the journal or taken over, not freshly reserved.
    pub recovered: bool,
    /// `consume({ objects })`: per event, its object (`None`: it has no rule); empty until
    /// fetched.
    pub objects: Vec<Option<Found<D>>>,
}

impl<D> Batch<D> {
    pub fn message_ids(&self) -> Vec<String> {
        self.events.iter().map(|e| e.message_id.clone()).collect()
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.malformed.is_empty()
    }

    fn of(process_id: &str, taken: Taken<D>, error: bool, recovered: bool) -> Batch<D> {
        Batch {
            process_id: process_id.to_string(),
            events: taken.events,
            malformed: taken.malformed,
            error,
            recovered,
            objects: Vec::new(),
        }
    }
}

/// How the app names one event of a batch: by message id, by row id, or something that is
/// neither (kept with the reason, so the whole answer is refused rather than guessed at).
#[derive(Debug, Clone, PartialEq)]
pub enum EventRef {
    Message(String),
    Row(u64),
    /// The event object: its row id and message id must name the same row.
    Both(u64, String),
    Invalid(String),
}

/// The message ids of the batch's events that `refs` name, in batch order, or why the list
/// cannot be taken as it is (an entry that is not an event of this batch, or of no known kind).
pub fn resolve<D>(
    events: &[OfflineEvent<D>],
    refs: &[EventRef],
) -> std::result::Result<Vec<String>, String> {
    let mut named = vec![false; events.len()];
    for (i, r) in refs.iter().enumerate() {
        let hit = match r {
            EventRef::Message(m) => events.iter().position(|e| &e.message_id == m),
            EventRef::Row(id) => events.iter().position(|e| e.id == *id),
            EventRef::Both(id, m) => events
                .iter()
                .position(|e| e.id == *id && &e.message_id == m),
            EventRef::Invalid(why) => return Err(concat(&["[", &decimal(i as u64), "] ", why])),
        };
        match hit {
            Some(at) => named[at] = true,
            None => {
                return Err(concat(&[
                    "[",
                    &decimal(i as u64),
                    "] names no event of this batch (give message ids, row ids or the event objects handed over)",
                ]))
            }
        }
    }
    Ok(events
        .iter()
        .zip(named)
        .filter(|(_, n)| *n)
        .map(|(e, _)| e.message_id.clone())
        .collect())
}

/// What the app's handler made of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Everything succeeded.
    Done,
    /// These events failed; the rest succeeded.
    Failed(Vec<EventRef>),
    /// The handler threw: the whole batch failed.
    Threw(String),
    /// The handler returned something that is not an outcome: the whole batch failed.
    Invalid(String),
}

pub trait Handler<D>: 'static {
    fn handle(&self, batch: &Batch<D>) -> LocalBoxFuture<'static, Outcome>;
}

/// Why events were given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// They failed as often as `{ retries }` allows.
    Retries,
    /// They would soon be deleted by the portal's 30-day expiry of reserved rows.
    Expiring,
}

impl DeadReason {
    pub fn name(self) -> &'static str {
        match self {
            DeadReason::Retries => "retries",
            DeadReason::Expiring => "expiring",
        }
    }
}

/// Receives progress, the events given up on, rows that could not be read, and the failures a
/// polling consumer survives.
pub trait Reporter<D>: 'static {
    fn progress(&self, progress: &Progress);
    fn dead_letters(&self, events: &[OfflineEvent<D>], reason: DeadReason);
    fn malformed(&self, rows: &[D]);
    fn error(&self, error: &B24Error);
}

/// Parked events are given up this long after their last change: well before the portal's
/// daily job deletes reserved rows 30 days after it.
pub const EXPIRING_AFTER_MS: f64 = 25.0 * 86_400_000.0;

/// Counters reported as the run goes and returned at the end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub batches: u64,
    /// Events freshly reserved.
    pub reserved: u64,
    /// Events re-selected from the journal or taken over, not freshly reserved.
    pub recovered: u64,
    pub acked: u64,
    /// Events sent to the error queue.
    pub failed: u64,
    /// Error-queue events that failed again and stay reserved for the next run.
    pub parked: u64,
    /// Events given up (retries spent, or about to expire on the portal).
    pub dead: u64,
    /// Events handed over more than once (the same row id) during this run, deliberate retries
    /// from the error queue not counted.
    pub duplicates: u64,
    /// Events in the queue when the run started, less those settled since (an estimate: new
    /// changes keep arriving).
    pub remaining: Option<u64>,
    /// Calls to acknowledge or fail that did not go through; their events stay journaled.
    pub unsettled: u64,
    /// Events of stranded reservations released into the error queue.
    pub released: u64,
    /// Rows that were not readable events.
    pub malformed: u64,
    /// Batches whose handler did not settle within the handler timeout.
    pub timed_out: u64,
    /// Failures a polling consumer survived (each also went to `onError`).
    pub errors: u64,
    /// Reservations of unknown owner (a lost answer's, another consumer's) seen at the last
    /// sweep and not yet old enough to release: released at the sweep when the oldest is due.
    pub waiting: u64,
    /// How old the oldest change of the latest batch was when it was handed over (the portal's
    /// `TIMESTAMP_X` against this machine's clock, so clock skew counts), 0 once both queues
    /// were found empty: the consumer's lag.
    pub lag_ms: Option<f64>,
    /// "empty" (nothing left to do), "aborted" (the signal), "stopped" (a fleet's graceful stop).
    pub stopped: &'static str,
}

/// `FEATURE_UNAVAILABLE` unless the plan offers reservations.
pub fn ensure_extended(features: &Features) -> Result<()> {
    if features.extended {
        Ok(())
    } else {
        Err(B24Error::new(
            code::FEATURE_UNAVAILABLE,
            "the portal's plan lacks rest_offline_extended, so events cannot be reserved (clear=0) or acknowledged; take() reads them destructively instead (lossy)",
        ))
    }
}

/// Whether a polling consumer goes on after this failure (it waits, reports it and retries)
/// rather than stopping: everything that can pass by itself. Wrong arguments, refused access,
/// a moved portal, a missing feature stop it.
pub fn survivable(e: &B24Error) -> bool {
    e.retryable() || e.is(code::REFRESH_FAILED) || e.is(code::STORE_FAILED)
}

/// Whether a failed request may have run at the portal (and so reserved rows whose process id
/// never arrived): its answer was lost after the request went out (a timeout, a dropped
/// connection, a cut answer, a gateway that timed out waiting). A status that says the request
/// was refused before it ran (a proxy's 502 or 503, a portal's error envelope) is a plain retry.
pub fn may_have_run(e: &B24Error) -> bool {
    match e.status {
        0 => true,
        504 => true,
        s if (200..300).contains(&s) => e.is(code::BAD_RESPONSE),
        _ => false,
    }
}

/// How many rows a reservation takes when no `limit` is given (the portal's default).
const DEFAULT_LIMIT: f64 = 50.0;

/// Re-selecting a reservation returns at most this many rows per call.
const RESELECT_LIMIT: f64 = 5000.0;

/// Tells which consumers are alive, where the runtime can know (browsers: every queue object
/// holds a Web Lock named after its id for as long as it exists; a closed or reloaded page
/// releases it). `None` where it cannot tell.
pub trait Liveness {
    fn alive(&self) -> LocalBoxFuture<'static, Option<Vec<String>>>;
    /// Whether `owner` is surely gone (Node: its id names a process of this host that no
    /// longer runs), where [`Liveness::alive`] cannot list who lives.
    fn gone(&self, _owner: &str) -> bool {
        false
    }
}

/// The reservation operations, with the journal kept in step.
pub struct Flow<'a, P: Platform> {
    pub queue: Queue<'a, P>,
    pub journal: &'a Journal,
    /// This consumer's id in journal entries.
    pub owner: &'a str,
    /// Whether this consumer holds the queue's exclusive lock now (one consumer per browser):
    /// it may take over at once what a dead consumer, or an earlier holder of the lock, left.
    pub locked: bool,
    /// Whether the reservations it writes carry the lock flag (written under the lock by a
    /// consumer that will hold it while it works on them).
    pub flag: bool,
    /// Whether this consumer holds its sign of life (see [`Liveness`]).
    pub signed: bool,
    pub liveness: Option<&'a dyn Liveness>,
    /// How long a reservation is held before others may take it over, and how long one of
    /// unknown owner must have been seen reserved to count as stranded (`strandedAfterMs`).
    pub hold_ms: f64,
    /// How long a reservation nobody here journaled must have been seen reserved before it
    /// counts as stranded: `hold_ms` where other consumers may hold live reservations of their
    /// own; shorter in the fleet, where the lease holder is the portal's only consumer and every
    /// journal write is fenced, so such a reservation is a lost answer or an earlier holder's.
    pub unknown_ms: f64,
    /// How long handing one batch over and settling it may take (the handler timeout and two
    /// request timeouts): a reservation is handed over only while this much of its hold is left.
    pub handle_ms: f64,
}

/// What one look at unfinished reservations found.
pub struct Recovered<D> {
    /// Reservations to hand over again (this consumer's, or stranded error-queue ones).
    pub batches: Vec<Batch<D>>,
    /// Events of stranded main-queue reservations released into the error queue.
    pub released: u64,
    /// Reservations of unknown owner not yet old enough to count as stranded.
    pub young: usize,
    /// When the oldest of those becomes old enough (this consumer's clock).
    pub due_at: Option<f64>,
}

impl<P: Platform> Flow<'_, P> {
    fn now(&self) -> f64 {
        self.queue.client.platform.now_ms()
    }

    fn entry(
        &self,
        process_id: &str,
        taken: &Taken<P::Data>,
        error: bool,
        reserved_at: f64,
    ) -> Entry {
        Entry {
            process_id: process_id.to_string(),
            owner: self.owner.to_string(),
            reserved_at_ms: reserved_at,
            hold_until_ms: reserved_at + self.hold_ms,
            locked: self.flag,
            signed: self.signed,
            error,
            attempts: 0,
            malformed: 0,
            message_ids: taken.events.iter().map(|e| e.message_id.clone()).collect(),
        }
    }

    /// Reserves a batch and journals it before anyone sees it.
    pub async fn reserve(
        &self,
        args: &GetArgs,
        signal: Option<&P::Signal>,
    ) -> Result<Batch<P::Data>> {
        let args = GetArgs {
            clear: false,
            process_id: None,
            ..args.clone()
        };
        // The portal reserves after this moment: holds are counted from it.
        let sent_at = self.now();
        let taken = self.queue.get(&args, signal).await?;
        let pid = taken.process_id.clone().unwrap_or_default();
        if !taken.is_empty() {
            self.journal
                .put(&self.entry(&pid, &taken, args.error, sent_at))
                .await?;
        }
        Ok(Batch::of(&pid, taken, args.error, false))
    }

    /// Acknowledges what is settled and reserves anew, in one request (see `Queue::step`);
    /// the journal follows: acknowledged messages settled, new reservations written before
    /// anyone sees them. Returns each acknowledgement's outcome and each reservation.
    pub async fn step(
        &self,
        acks: &[(String, Vec<String>)],
        gets: &[GetArgs],
        signal: Option<&P::Signal>,
    ) -> Result<(Vec<Result<()>>, Vec<Result<Batch<P::Data>>>)> {
        // The portal reserves after this moment: holds are counted from it.
        let sent_at = self.now();
        let (cleared, taken) = self.queue.step(acks, gets, signal).await?;
        for ((pid, ids), r) in acks.iter().zip(&cleared) {
            if r.is_ok() {
                self.journal.settle(pid, ids).await?;
            }
        }
        let mut batches = Vec::with_capacity(taken.len());
        for (t, args) in taken.into_iter().zip(gets) {
            batches.push(match t {
                Ok(taken) => {
                    let pid = taken.process_id.clone().unwrap_or_default();
                    if !taken.is_empty() {
                        self.journal
                            .put(&self.entry(&pid, &taken, args.error, sent_at))
                            .await?;
                    }
                    Ok(Batch::of(&pid, taken, args.error, false))
                }
                Err(e) => Err(e),
            });
        }
        Ok((cleared, batches))
    }

    /// The rows reserved under a process id, as the portal has them now.
    async fn reread(
        &self,
        process_id: &str,
        error: bool,
        signal: Option<&P::Signal>,
    ) -> Result<Taken<P::Data>> {
        let args = GetArgs {
            process_id: Some(process_id.to_string()),
            error,
            limit: Some(RESELECT_LIMIT),
            ..GetArgs::default()
        };
        self.queue.get(&args, signal).await
    }

    /// Takes a reservation back (this consumer's) or over (a stranded error-queue one): writes
    /// this consumer as its owner and reads its rows again. An error-queue reservation gets a
    /// new hold; a main-queue one keeps the hold of its reservation, which other consumers
    /// count from too.
    pub async fn claim(
        &self,
        process_id: &str,
        error: bool,
        previous: Option<&Entry>,
        signal: Option<&P::Signal>,
    ) -> Result<Batch<P::Data>> {
        let taken = self.reread(process_id, error, signal).await?;
        if taken.is_empty() {
            self.journal.remove(process_id).await?;
        } else {
            let now = self.now();
            let mut entry = self.entry(process_id, &taken, error, now);
            if let Some(p) = previous {
                entry.attempts = p.attempts;
                entry.malformed = p.malformed;
                if !error && p.owner == self.owner {
                    entry.reserved_at_ms = p.reserved_at_ms;
                    entry.hold_until_ms = p.hold_until_ms;
                }
            }
            self.journal.put(&entry).await?;
        }
        Ok(Batch::of(process_id, taken, error, true))
    }

    /// Acknowledges these messages of the reservation (`clear` by message id: idempotent, and
    /// scoped to the process id, so it never touches anyone else's rows).
    pub async fn ack(&self, process_id: &str, message_ids: &[String]) -> Result<()> {
        if message_ids.is_empty() {
            return Ok(());
        }
        self.queue
            .clear(
                process_id,
                &Selection::MessageIds(message_ids.to_vec()),
                None,
            )
            .await?;
        self.journal.settle(process_id, message_ids).await
    }

    /// Sends messages of a main-queue reservation to the error queue: only those the portal
    /// still has reserved under it, re-read just before. (`event.offline.error` deletes every
    /// other row of a listed message: had someone acknowledged one meanwhile and the object
    /// changed again, the newer change would go.) `None` sends all that are still reserved.
    /// Returns the message ids sent.
    async fn to_error_queue(
        &self,
        process_id: &str,
        message_ids: Option<&[String]>,
        signal: Option<&P::Signal>,
    ) -> Result<Vec<String>> {
        let still: Vec<String> = self
            .reread(process_id, false, signal)
            .await?
            .events
            .into_iter()
            .map(|e| e.message_id)
            .filter(|m| message_ids.map(|ids| ids.contains(m)).unwrap_or(true))
            .collect();
        self.queue.error(process_id, &still, signal).await?;
        Ok(still)
    }

    /// Sends failed messages of a main-queue reservation to the error queue (those still
    /// reserved under it). For an error-queue reservation it only counts the failed attempt
    /// (the events stay reserved and journaled) and returns how many attempts there have been.
    pub async fn fail(
        &self,
        process_id: &str,
        message_ids: &[String],
        error_queue: bool,
    ) -> Result<u32> {
        if message_ids.is_empty() {
            return Ok(0);
        }
        if error_queue {
            return self.journal.failed_attempt(process_id).await;
        }
        self.to_error_queue(process_id, Some(message_ids), None)
            .await?;
        // Those no longer reserved were settled by someone else: nothing of them is ours.
        self.journal.settle(process_id, message_ids).await?;
        Ok(0)
    }

    /// Releases a stranded main-queue reservation into the error queue: its rows become free
    /// error records, and the portal's atomic reservation hands them to exactly one consumer.
    pub async fn release(&self, process_id: &str, signal: Option<&P::Signal>) -> Result<u64> {
        let sent = self.to_error_queue(process_id, None, signal).await?;
        self.journal.remove(process_id).await?;
        self.queue.client.log(
            Level::Info,
            &concat(&[
                "released a stranded reservation of ",
                &decimal(sent.len() as u64),
                " events into the error queue",
            ]),
            None,
            Some(process_id),
        );
        Ok(sent.len() as u64)
    }

    /// Every reserved row of this app and connector, by process id, with its error flag.
    async fn reserved(&self, signal: Option<&P::Signal>) -> Result<Vec<(String, bool)>> {
        let mut found: Vec<(String, bool)> = Vec::new();
        let filter = Tree::Map(vec![("!PROCESS_ID".into(), Tree::Str(String::new()))]);
        let mut pager = Pager::new(Some(filter), None);
        while let Some(page) = pager.next(&self.queue, signal).await? {
            let rows = page
                .events
                .iter()
                .map(|e| (e.process_id.clone(), e.error.unwrap_or(false)))
                .chain(page.malformed.iter().map(|r| {
                    let pid = field_text::<P>(r, "PROCESS_ID").filter(|p| !p.is_empty());
                    (
                        pid,
                        P::field(r, "ERROR").map(|e| flag::<P>(&e)).unwrap_or(false),
                    )
                }));
            for (pid, error) in rows {
                if let Some(pid) = pid {
                    if !found.iter().any(|(p, _)| *p == pid) {
                        found.push((pid, error));
                    }
                }
            }
        }
        Ok(found)
    }

    /// Looks at every unfinished reservation: this consumer's journal, and every reservation
    /// the portal has for this queue. This consumer's own (or, under the exclusive lock, those
    /// of an earlier holder of the lock or of a consumer known dead) are handed over again
    /// while there is time left in their hold; another live consumer's are left alone;
    /// stranded ones (hold over, owner gone, or unknown to every journal here and reserved for
    /// `hold_ms`) are released into the error queue, or, when already error records, taken
    /// over. `busy` are process ids this consumer works on now.
    pub async fn recoverable(
        &self,
        busy: &[String],
        signal: Option<&P::Signal>,
    ) -> Result<Recovered<P::Data>> {
        // The index first: an entry in it was written before the sweep below started.
        let index = self.journal.index().await?;
        let on_portal = self.reserved(signal).await?;
        let live = match self.liveness {
            Some(l) => l.alive().await,
            None => None,
        };
        let now = self.now();
        let mut out = Recovered {
            batches: Vec::new(),
            released: 0,
            young: 0,
            due_at: None,
        };
        let mut suspects = Vec::new();
        let mut pids: Vec<(String, Option<bool>)> = index
            .reserved
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    on_portal.iter().find(|(q, _)| q == p).map(|(_, e)| *e),
                )
            })
            .collect();
        for (p, e) in &on_portal {
            if !pids.iter().any(|(q, _)| q == p) {
                pids.push((p.clone(), Some(*e)));
            }
        }
        for (pid, portal_error) in pids {
            if busy.contains(&pid) {
                continue;
            }
            let Some(portal_error) = portal_error else {
                // Journaled, but nothing of it is reserved any more: settled or expired.
                self.journal.remove(&pid).await?;
                continue;
            };
            let entry = self.journal.entry(&pid).await?;
            let stranded = match &entry {
                Some(e) => {
                    let dead = e.signed
                        && match &live {
                            Some(l) => !l.contains(&e.owner),
                            None => self.liveness.is_some_and(|l| l.gone(&e.owner)),
                        };
                    let mine = e.owner == self.owner || (self.locked && (e.locked || dead));
                    if mine && (e.error || now + self.handle_ms < e.hold_until_ms) {
                        let batch = self.claim(&pid, e.error, Some(e), signal).await?;
                        if !batch.is_empty() {
                            out.batches.push(batch);
                        }
                        continue;
                    }
                    // Another consumer's, and it may still be working on it unless it is
                    // gone or its hold is over.
                    mine || dead || now >= e.hold_until_ms
                }
                None => {
                    let first = index
                        .suspects
                        .iter()
                        .find(|(p, _)| *p == pid)
                        .map(|(_, t)| *t)
                        .unwrap_or(now);
                    let old = now - first >= self.unknown_ms;
                    if !old {
                        suspects.push((pid.clone(), first));
                        out.young += 1;
                        let due = first + self.unknown_ms;
                        out.due_at = Some(out.due_at.map_or(due, |d: f64| d.min(due)));
                    }
                    old
                }
            };
            if !stranded {
                continue;
            }
            let error = entry.as_ref().map(|e| e.error).unwrap_or(portal_error);
            if error {
                let batch = self.claim(&pid, true, entry.as_ref(), signal).await?;
                if !batch.is_empty() {
                    out.batches.push(batch);
                }
            } else {
                out.released += self.release(&pid, signal).await?;
            }
        }
        if suspects != index.suspects {
            self.journal.set_suspects(suspects).await?;
        }
        Ok(out)
    }
}

/// Polls every future until all are done; the first error wins (the others still finish).
/// A few lines instead of `join_all`, whose general machinery costs kilobytes in wasm.
async fn join(mut futures: Vec<LocalBoxFuture<'_, Result<()>>>) -> Result<()> {
    let mut outcome = Ok(());
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| match f.as_mut().poll(cx) {
            Poll::Ready(r) => {
                if outcome.is_ok() {
                    outcome = r;
                }
                false
            }
            Poll::Pending => true,
        });
        if futures.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outcome
}

/// What became of a batch handed over.
enum Done {
    /// Settled: failures sent, successes acknowledged.
    Settled,
    /// Failures sent; these successes are left to acknowledge (with the next request).
    Ack(String, Vec<String>),
    /// The run was stopped while the handler ran: nothing settled, the batch comes back.
    Aborted,
}

/// State shared by the workers of one `consume` run.
struct Run<'a, P: Platform> {
    flow: &'a Flow<'a, P>,
    handler: &'a dyn Handler<P::Data>,
    reporter: &'a dyn Reporter<P::Data>,
    opts: &'a Options,
    signal: Option<&'a P::Signal>,
    /// Ends an idle wait; closed, ends the run after the batch in hand (a graceful stop).
    alarm: Option<&'a Alarm>,
    progress: RefCell<Progress>,
    /// Row ids handed over in this run, sorted (a hash set would bring hashing into the wasm).
    seen: RefCell<Vec<u64>>,
    busy: RefCell<Vec<String>>,
    /// Process ids handled in this cycle: not handed over again before the next one.
    handled: RefCell<Vec<String>>,
    /// When the next look for stranded reservations is due during a long drain.
    next_sweep_at: Cell<f64>,
    sweeping: Cell<bool>,
}

impl<P: Platform> Run<'_, P> {
    fn platform(&self) -> &P {
        &self.flow.queue.client.platform
    }

    /// Aborted, or stopping (the alarm closed): no new batch is taken.
    fn aborted(&self) -> bool {
        self.alarm.is_some_and(Alarm::closed)
            || self
                .signal
                .map(|s| self.platform().aborted(s))
                .unwrap_or(false)
    }

    /// Logs with the portal and, where there is one, the reservation in the context.
    fn log(&self, level: Level, message: &str, process_id: Option<&str>) {
        self.flow.queue.client.log(level, message, None, process_id);
    }

    fn settled(&self, n: usize) {
        let mut p = self.progress.borrow_mut();
        if let Some(r) = p.remaining.as_mut() {
            *r = r.saturating_sub(n as u64);
        }
    }

    fn report(&self) {
        let p = self.progress.borrow().clone();
        self.reporter.progress(&p);
    }

    /// How often stranded reservations are looked for while the queue keeps the workers busy.
    fn sweep_every(&self) -> f64 {
        (self.flow.hold_ms / 2.0).clamp(1_000.0, 300_000.0)
    }

    /// Hands one batch to the handler and settles it: what failed at once, what succeeded now
    /// or (`defer`) by the caller, with its next request. Returns `Done::Aborted` when the run
    /// was stopped while the handler was busy: the batch then stays journaled and comes back.
    async fn process(&self, mut batch: Batch<P::Data>, defer: bool) -> Done {
        let n = batch.events.len() as u64;
        let pid = batch.process_id.clone();
        self.busy.borrow_mut().push(pid.clone());
        self.handled.borrow_mut().push(pid.clone());
        {
            let mut p = self.progress.borrow_mut();
            p.batches += 1;
            if batch.recovered {
                p.recovered += n;
            } else {
                p.reserved += n;
            }
            let now = self.platform().now_ms();
            let oldest = batch
                .events
                .iter()
                .filter_map(|e| super::time::parse_iso_ms(&e.timestamp))
                .fold(now, f64::min);
            p.lag_ms = Some(now - oldest);
            // A row handed over again from the error queue is a deliberate retry, not a duplicate.
            if !batch.error {
                let mut seen = self.seen.borrow_mut();
                for e in &batch.events {
                    match seen.binary_search(&e.id) {
                        Ok(_) => p.duplicates += 1,
                        Err(at) => seen.insert(at, e.id),
                    }
                }
            }
        }
        let done = match self.handle(&mut batch).await {
            None => Done::Aborted,
            // Unreadable rows are settled after the rest is acknowledged: not deferred.
            Some(ids) if defer && batch.malformed.is_empty() && !ids.is_empty() => {
                Done::Ack(pid.clone(), ids)
            }
            Some(ids) => {
                self.ack_now(&pid, &ids).await;
                if !batch.malformed.is_empty() {
                    self.settle_malformed(&batch).await;
                }
                Done::Settled
            }
        };
        self.busy.borrow_mut().retain(|p| *p != pid);
        self.report();
        done
    }

    /// Acknowledges at once, counting what went through.
    async fn ack_now(&self, pid: &str, ids: &[String]) {
        // Settling does not take the abort signal: finished work is acknowledged even when the
        // run is being stopped.
        match self.flow.ack(pid, ids).await {
            Ok(()) => self.acked(ids.len()),
            Err(e) => self.unsettled(ids.len(), &e),
        }
    }

    fn acked(&self, n: usize) {
        self.progress.borrow_mut().acked += n as u64;
        self.settled(n);
    }

    /// The handler's part: run it (bounded by the handler timeout and the abort signal), fail
    /// what it says failed, and return what succeeded, for acknowledging (`None`: aborted).
    async fn handle(&self, batch: &mut Batch<P::Data>) -> Option<Vec<String>> {
        if batch.events.is_empty() {
            return Some(Vec::new());
        }
        if self.aborted() {
            // Reserved as the run was stopped: it stays journaled and comes back.
            return None;
        }
        let all = batch.message_ids();
        let limit = self.opts.handler_timeout_ms;
        let outcome = match race(
            self.hand_over(batch),
            self.platform().sleep(limit, self.signal),
        )
        .await
        {
            Either::Left(Some(outcome)) => outcome,
            Either::Left(None) => return None,
            Either::Right(Ok(())) => {
                self.progress.borrow_mut().timed_out += 1;
                Outcome::Invalid(concat(&[
                    "the handler did not settle within ",
                    &decimal(limit as u64),
                    " ms",
                ]))
            }
            Either::Right(Err(_)) => return None,
        };
        let failed: Vec<String> = match outcome {
            Outcome::Done => Vec::new(),
            Outcome::Failed(refs) => match resolve(&batch.events, &refs) {
                Ok(ids) => ids,
                Err(why) => {
                    self.log(
                        Level::Warn,
                        &concat(&["the handler's { failed } is not usable, so the whole batch failed: failed", &why]),
                        Some(&batch.process_id),
                    );
                    all.clone()
                }
            },
            Outcome::Threw(why) => {
                self.log(
                    Level::Warn,
                    &concat(&["the handler threw; the whole batch failed: ", &why]),
                    Some(&batch.process_id),
                );
                all.clone()
            }
            Outcome::Invalid(why) => {
                self.log(
                    Level::Warn,
                    &concat(&["the whole batch failed: ", &why]),
                    Some(&batch.process_id),
                );
                all.clone()
            }
        };
        if !failed.is_empty() {
            self.fail(batch, &failed).await;
        }
        Some(all.into_iter().filter(|m| !failed.contains(m)).collect())
    }

    /// Runs the handler on the batch, with its events' objects fetched first when the run
    /// asks for them (within the handler's time: the hold of a reservation counts on it).
    /// `None`: aborted while fetching.
    async fn hand_over(&self, batch: &mut Batch<P::Data>) -> Option<Outcome> {
        if let Some(objects) = &self.opts.objects {
            let queue = &self.flow.queue;
            let fetched = fetch_objects(
                queue.client,
                objects,
                &batch.events,
                self.signal,
                queue.connector,
            )
            .await;
            match fetched {
                Ok(found) => batch.objects = found,
                Err(e) if e.is(code::ABORTED) => return None,
                Err(e) => {
                    return Some(Outcome::Invalid(concat(&[
                        "its objects could not be fetched: ",
                        &e.message(),
                    ])))
                }
            }
        }
        Some(self.handler.handle(batch).await)
    }

    /// Reports the rows of a batch that are not readable events (once per reservation), and
    /// clears or parks them by policy.
    async fn settle_malformed(&self, batch: &Batch<P::Data>) {
        let pid = &batch.process_id;
        let rows = &batch.malformed;
        let known = match self.flow.journal.entry(pid).await {
            Ok(e) => e.map(|e| e.malformed as usize).unwrap_or(0),
            Err(e) => return self.unsettled(rows.len(), &e),
        };
        if rows.len() > known {
            self.progress.borrow_mut().malformed += (rows.len() - known) as u64;
            self.log(
                Level::Warn,
                &concat(&[
                    &decimal(rows.len() as u64),
                    " rows of a reservation are not readable events (reported to onMalformed)",
                ]),
                Some(pid),
            );
            self.reporter.malformed(rows);
        }
        let outcome = match self.opts.malformed {
            MalformedPolicy::Park => {
                let n = rows.len() as u32;
                self.flow
                    .journal
                    .update(pid, &mut |e| e.malformed = n)
                    .await
                    .map(|_| ())
            }
            MalformedPolicy::Clear => self.clear_malformed(batch).await,
        };
        if let Err(e) = outcome {
            self.unsettled(rows.len(), &e);
        }
    }

    /// Deletes the unreadable rows: by row id or message id where those can be read, else the
    /// whole rest of the reservation once nothing readable of it is left reserved.
    async fn clear_malformed(&self, batch: &Batch<P::Data>) -> Result<()> {
        let pid = &batch.process_id;
        let queue = &self.flow.queue;
        let ids: Vec<f64> = batch
            .malformed
            .iter()
            .filter_map(|r| field_uint::<P>(r, "ID").filter(|n| *n > 0))
            .map(|n| n as f64)
            .collect();
        if ids.len() == batch.malformed.len() {
            queue.clear(pid, &Selection::Ids(ids), None).await?;
        } else {
            let left = self.flow.reread(pid, batch.error, None).await?;
            if !left.events.is_empty() {
                // Readable events still wait under it (unsettled or parked): park instead.
                let n = batch.malformed.len() as u32;
                return self
                    .flow
                    .journal
                    .update(pid, &mut |e| e.malformed = n)
                    .await
                    .map(|_| ());
            }
            queue.clear(pid, &Selection::All, None).await?;
        }
        self.flow.journal.remove(pid).await
    }

    fn unsettled(&self, n: usize, e: &B24Error) {
        self.progress.borrow_mut().unsettled += n as u64;
        self.log(
            Level::Warn,
            &concat(&[
                "could not settle events; they stay journaled and come back: ",
                &e.message(),
            ]),
            None,
        );
    }

    async fn fail(&self, batch: &Batch<P::Data>, failed: &[String]) {
        let n = failed.len() as u64;
        let attempts = match self.flow.fail(&batch.process_id, failed, batch.error).await {
            Ok(a) => a,
            Err(e) => return self.unsettled(failed.len(), &e),
        };
        if !batch.error {
            self.progress.borrow_mut().failed += n;
            return;
        }
        let spent = matches!(self.opts.errors, ErrorPolicy::Retry(max) if attempts >= max);
        let portal_now = self.flow.queue.client.portal_now_ms();
        let expiring = |e: &OfflineEvent<P::Data>| {
            super::time::parse_iso_ms(&e.timestamp)
                .map(|t| portal_now - t >= EXPIRING_AFTER_MS)
                .unwrap_or(false)
        };
        // Retries spent: every failed event; else those about to expire.
        let dead: Vec<OfflineEvent<P::Data>> = batch
            .events
            .iter()
            .filter(|e| failed.contains(&e.message_id) && (spent || expiring(e)))
            .cloned()
            .collect();
        let reason = if spent {
            DeadReason::Retries
        } else {
            DeadReason::Expiring
        };
        self.progress.borrow_mut().parked += n - dead.len() as u64;
        if dead.is_empty() {
            return;
        }
        let ids: Vec<String> = dead.iter().map(|e| e.message_id.clone()).collect();
        match self.flow.ack(&batch.process_id, &ids).await {
            Ok(()) => {
                self.progress.borrow_mut().dead += ids.len() as u64;
                self.settled(ids.len());
                self.reporter.dead_letters(&dead, reason);
            }
            Err(e) => self.unsettled(ids.len(), &e),
        }
    }

    /// Reserves and processes batches until the queue and the error queue are empty, one
    /// request a batch: each request acknowledges what the last batch settled and reserves the
    /// next. While the queue gives batches, only the queue is reserved from; when it comes back
    /// empty, the next request also asks the error queue (unless `errors: 'skip'`), so the end
    /// of a drain, and an idle poll, is one request for both. Looks for stranded reservations
    /// on the way when a drain runs long. On an abort, what is settled is still acknowledged.
    /// One drain. The lead of several (`lead`) says when it first finds work, so that the
    /// others start only then: an idle cycle costs one request whatever the concurrency.
    async fn drain(&self, lead: Option<(&Alarm, &Cell<bool>)>) -> Result<()> {
        let main = GetArgs {
            filter: self.opts.filter.clone(),
            order: self.opts.order.clone(),
            limit: self.opts.limit,
            ..GetArgs::default()
        };
        let busy = std::slice::from_ref(&main);
        let mut both = vec![main.clone()];
        if self.opts.errors != ErrorPolicy::Skip {
            both.push(GetArgs {
                error: true,
                ..main.clone()
            });
        }
        let mut queue_busy = false;
        let mut acks: Vec<(String, Vec<String>)> = Vec::new();
        let mut failures = 0u32;
        let outcome = loop {
            if self.aborted() {
                break Ok(());
            }
            if self.platform().now_ms() >= self.next_sweep_at.get() && !self.sweeping.get() {
                self.sweeping.set(true);
                let round = self.recover_round().await;
                self.sweeping.set(false);
                if let Err(e) = round {
                    break Err(e);
                }
            }
            let gets = if queue_busy { busy } else { &both[..] };
            let (cleared, batches) = match self.flow.step(&acks, gets, self.signal).await {
                Ok(step) => step,
                Err(e) if e.is(code::ABORTED) => break Ok(()),
                Err(e) if e.kind() == Kind::Transient => {
                    // Only an answer lost after the request may have run can have reserved
                    // rows whose process id never reached us: the sweep is brought forward to
                    // find them. A refusal that says the method did not run is a plain retry.
                    // Either way the drain goes on, and the acknowledgements are sent again on
                    // their own.
                    let lost = may_have_run(&e);
                    if lost {
                        self.next_sweep_at.set(self.platform().now_ms());
                    }
                    failures += 1;
                    self.log(
                        Level::Warn,
                        &concat(&[
                            if lost {
                                "a reservation's answer was lost; a sweep will find its rows: "
                            } else {
                                "a reservation was refused before it ran; trying again: "
                            },
                            &e.message(),
                        ]),
                        None,
                    );
                    self.progress.borrow_mut().errors += 1;
                    self.reporter.error(&e);
                    self.flush(&mut acks).await;
                    let delay = self
                        .flow
                        .queue
                        .client
                        .config
                        .retry
                        .backoff_ms(failures.min(6), self.platform().random());
                    // Like every wait of a run, ended by wake(), a graceful stop or an abort.
                    if !self.pause(delay).await {
                        break Ok(());
                    }
                    continue;
                }
                Err(e) => break Err(e),
            };
            failures = 0;
            for ((_, ids), r) in acks.drain(..).zip(cleared) {
                match r {
                    Ok(()) => self.acked(ids.len()),
                    Err(e) => self.unsettled(ids.len(), &e),
                }
            }
            let mut first_error = None;
            let mut idle = true;
            queue_busy = false;
            for batch in batches {
                match batch {
                    Ok(b) if b.is_empty() => {}
                    Ok(b) => {
                        idle = false;
                        if let Some((gate, found)) = lead {
                            found.set(true);
                            gate.close();
                        }
                        // A full batch from the queue: there is likely more of it. A short one
                        // (or none): the next request asks the error queue too.
                        let limit = self.opts.limit.unwrap_or(DEFAULT_LIMIT);
                        queue_busy |=
                            !b.error && (b.events.len() + b.malformed.len()) as f64 >= limit;
                        match self.process(b, true).await {
                            Done::Aborted => break,
                            Done::Ack(pid, ids) => acks.push((pid, ids)),
                            Done::Settled => {}
                        }
                    }
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
            if let Some(e) = first_error {
                break Err(e);
            }
            if idle && gets.len() == both.len() {
                // Both queues empty: nothing waits (what is reserved is in hand or waiting).
                self.progress.borrow_mut().lag_ms = Some(0.0);
                break Ok(());
            }
        };
        self.flush(&mut acks).await;
        outcome
    }

    /// Acknowledges on their own what a request that did not go out (or whose answer was
    /// lost) should have: `clear` is safe to repeat.
    async fn flush(&self, acks: &mut Vec<(String, Vec<String>)>) {
        for (pid, ids) in acks.drain(..) {
            self.ack_now(&pid, &ids).await;
        }
    }

    /// Runs `concurrency` drains side by side: the first alone until it finds work (an idle
    /// queue costs one request), then the others with it.
    async fn drain_all(&self) -> Result<()> {
        let n = self.opts.concurrency.max(1);
        // Closed by the first drain when it finds work (`found`) or ends.
        let gate = Alarm::default();
        let found = Cell::new(false);
        let mut workers: Vec<LocalBoxFuture<'_, Result<()>>> = vec![Box::pin(async {
            let r = self.drain((n > 1).then_some((&gate, &found))).await;
            gate.close();
            r
        })];
        for _ in 1..n {
            workers.push(Box::pin(async {
                gate.until_closed().await;
                if found.get() {
                    self.drain(None).await
                } else {
                    Ok(())
                }
            }));
        }
        join(workers).await
    }

    /// One look at unfinished reservations; hands over what it finds. Returns whether it found
    /// any (how many of unknown owner are not old enough yet goes to `Progress::waiting`).
    async fn recover_round(&self) -> Result<bool> {
        self.next_sweep_at
            .set(self.platform().now_ms() + self.sweep_every());
        let skip: Vec<String> = self
            .busy
            .borrow()
            .iter()
            .chain(self.handled.borrow().iter())
            .cloned()
            .collect();
        let found = self.flow.recoverable(&skip, self.signal).await?;
        // Reservations of unknown owner are looked at again when the oldest becomes stranded,
        // not a whole sweep period later.
        if let Some(due) = found.due_at {
            if due < self.next_sweep_at.get() {
                self.next_sweep_at.set(due);
            }
        }
        self.progress.borrow_mut().waiting = found.young as u64;
        if found.released > 0 {
            self.progress.borrow_mut().released += found.released;
            self.report();
        }
        let any = !found.batches.is_empty() || found.released > 0;
        for batch in found.batches {
            if self.aborted() || matches!(self.process(batch, false).await, Done::Aborted) {
                break;
            }
        }
        Ok(any)
    }

    /// Recovers what is unfinished at the end of a run that does not poll: waits until every
    /// reservation of unknown owner has settled or counts as stranded, draining meanwhile, so
    /// that the run does not end leaving one behind. An
    /// error is not the only sign of a lost answer: a browser silently sends a request again
    /// when a reused connection drops before the answer starts, so a reservation can be made
    /// twice and the first one's process id never arrives (docs/reservations.md).
    async fn recover(&self) -> Result<()> {
        // Between looks, the queue is polled (from a second, doubling while idle).
        let mut idle_wait = 1_000.0f64;
        // (`waiting`: reservations of unknown owner, as the latest look counted them, whether
        // made here or by a drain's sweep.)
        let waiting = || self.progress.borrow().waiting;
        loop {
            let found = self.recover_round().await?;
            if self.aborted() {
                return Ok(());
            }
            // The sweep just made says whether rows of unknown owner are still waiting to
            // count as stranded; a round that found some goes round once more to be sure.
            if !found && waiting() == 0 {
                return Ok(());
            }
            while waiting() > 0 && !self.aborted() {
                // Waiting for them never stops the draining: free rows are taken meanwhile.
                let before = self.progress.borrow().batches;
                self.drain_all().await?;
                if waiting() == 0 {
                    // A sweep on the way settled them.
                    return Ok(());
                }
                let now = self.platform().now_ms();
                if now >= self.next_sweep_at.get() {
                    break;
                }
                idle_wait = if self.progress.borrow().batches == before {
                    (idle_wait * 2.0).min(30_000.0)
                } else {
                    1_000.0
                };
                let wait = (self.next_sweep_at.get() - now).clamp(50.0, idle_wait);
                if !self.pause(wait).await {
                    return Ok(());
                }
            }
        }
    }

    /// Waits `ms`, or less: a `wake()` or a graceful stop (the alarm), or an abort, ends it.
    /// Whether the run goes on.
    async fn pause(&self, ms: f64) -> bool {
        let sleep = self.platform().sleep(ms, self.signal);
        let woken = match self.alarm {
            Some(a) => race(sleep, a.rung()).await,
            None => Either::Left(sleep.await),
        };
        !matches!(woken, Either::Left(Err(_))) && !self.aborted()
    }

    /// One cycle: a look at unfinished reservations when one is due, then the queues until
    /// they are empty, and a look when one became due meanwhile (a lost answer brings it
    /// forward); a run that does not poll also waits until every reservation of unknown owner
    /// is found (and what it released, through the error queue). An idle cycle of a polling
    /// consumer is one request.
    async fn cycle(&self) -> Result<()> {
        if self.platform().now_ms() >= self.next_sweep_at.get() {
            self.recover_round().await?;
        }
        // A run that does not poll settles what it cannot account for before it ends. A
        // polling one never waits for it: its next sweep is brought forward to when the oldest
        // unknown reservation becomes stranded, and it drains meanwhile.
        let settle = self.opts.poll.is_none();
        loop {
            self.drain_all().await?;
            if self.platform().now_ms() >= self.next_sweep_at.get() && !self.aborted() {
                let found = self.recover_round().await?;
                if found && self.opts.errors != ErrorPolicy::Skip {
                    continue;
                }
            }
            if !settle || self.aborted() {
                return Ok(());
            }
            let released = self.progress.borrow().released;
            self.recover().await?;
            // What that look released waits in the error queue: the drain takes it in this run.
            if self.opts.errors == ErrorPolicy::Skip
                || self.aborted()
                || self.progress.borrow().released == released
            {
                return Ok(());
            }
        }
    }
}

/// Consumes the queue: recovers what a previous run left, drains the queue with `concurrency`
/// workers, then the error queue (per `errors`), sweeps for stranded reservations, and either
/// returns (nothing left) or, with `poll`, waits and goes again until aborted. A polling
/// consumer survives every failure that can pass by itself ([`survivable`]): it reports it,
/// waits, and goes on.
pub async fn consume<P: Platform>(
    flow: &Flow<'_, P>,
    handler: &dyn Handler<P::Data>,
    reporter: &dyn Reporter<P::Data>,
    opts: &Options,
    signal: Option<&P::Signal>,
    alarm: Option<&Alarm>,
) -> Result<Progress> {
    let run = Run {
        flow,
        handler,
        reporter,
        opts,
        signal,
        alarm,
        progress: RefCell::new(Progress::default()),
        seen: RefCell::new(Vec::new()),
        busy: RefCell::new(Vec::new()),
        handled: RefCell::new(Vec::new()),
        next_sweep_at: Cell::new(0.0),
        sweeping: Cell::new(false),
    };
    let polling = opts.poll.is_some();
    let survive = |e: B24Error| -> Result<bool> {
        if e.is(code::ABORTED) {
            return Ok(false);
        }
        if !(polling && survivable(&e)) {
            return Err(e);
        }
        run.progress.borrow_mut().errors += 1;
        run.log(
            Level::Warn,
            &concat(&["the consumer goes on after: ", &e.message()]),
            None,
        );
        reporter.error(&e);
        Ok(true)
    };
    match flow.queue.list(&ListArgs::default(), signal).await {
        Ok(page) => run.progress.borrow_mut().remaining = Some(page.total),
        Err(e) => {
            survive(e)?;
        }
    }
    let mut delay = opts.poll.map(|(first, _)| first).unwrap_or(0.0);
    while !run.aborted() {
        let before = run.progress.borrow().batches;
        run.handled.borrow_mut().clear();
        let failed = match run.cycle().await {
            Ok(()) => false,
            Err(e) => survive(e)?,
        };
        let Some((first, longest)) = opts.poll else {
            break;
        };
        let idle = failed || run.progress.borrow().batches == before;
        delay = if idle {
            (delay * 2.0).min(longest).max(first)
        } else {
            first
        };
        // No later than the next sweep that is due (a reservation of unknown owner stranded).
        let until_sweep = run.next_sweep_at.get() - run.platform().now_ms();
        if !run.pause(delay.min(until_sweep.max(0.0))).await {
            break;
        }
    }
    let stopped = if alarm.is_some_and(Alarm::closed) {
        "stopped"
    } else if run.aborted() {
        "aborted"
    } else {
        "empty"
    };
    let mut p = run.progress.into_inner();
    p.stopped = stopped;
    Ok(p)
}
