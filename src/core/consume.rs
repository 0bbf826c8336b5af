//! The reservation flow: reserve a batch (`clear=0` → process id), hand it to the app, then
//! acknowledge what succeeded (`event.offline.clear`) and send what failed to the error queue
//! (`event.offline.error`), with a journal so that nothing is lost or stranded on the way.
//!
//! ```text
//!            reserve (get clear=0)            handler(events)
//!  queue ───────────────────────▶ journal ───────────────────▶ outcome
//!    ▲                              │                             │
//!    │  failed: error (ERROR=1) ◀───┼──── failed ids ◀────────────┤
//!    │                              │                             │
//!    └── error pass (get error=1) ◀─┘     clear (acked ids) ◀─────┘
//!
//!  crash / reload ──▶ journal ──▶ re-select by process id ──▶ handler again
//!  lost get answer ──▶ list sweep: reserved rows nobody journaled, older than
//!                      `stranded_after_ms` ──▶ re-select by their process id
//! ```
//!
//! Delivery is at least once: a batch whose acknowledgement did not reach the portal is handed
//! over again, so handlers deduplicate by `messageId` (or by `id` for one exact row).

use super::args::Tree;
use super::error::{code, B24Error, Result};
use super::journal::{Entry, Journal};
use super::model::{Features, OfflineEvent};
use super::offline::{GetArgs, ListArgs, Queue, Selection};
use super::platform::{Level, Platform};
use super::retry::{classify, Kind};
use futures_util::future::LocalBoxFuture;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;

/// A reserved batch handed to the app.
#[derive(Debug, Clone)]
pub struct Batch<D> {
    pub process_id: String,
    pub events: Vec<OfflineEvent<D>>,
    /// Taken from the error queue.
    pub error: bool,
    /// Re-selected from the journal or found stranded, not freshly reserved.
    pub recovered: bool,
}

impl<D> Batch<D> {
    pub fn message_ids(&self) -> Vec<String> {
        self.events.iter().map(|e| e.message_id.clone()).collect()
    }
}

/// What the app's handler made of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Everything succeeded.
    Done,
    /// These message ids failed; the rest succeeded.
    Failed(Vec<String>),
    /// The handler threw: the whole batch failed.
    Threw(String),
}

pub trait Handler<D>: 'static {
    fn handle(&self, batch: &Batch<D>) -> LocalBoxFuture<'static, Outcome>;
}

/// Receives progress, and the events given up on.
pub trait Reporter<D>: 'static {
    fn progress(&self, progress: &Progress);
    fn dead_letters(&self, events: &[OfflineEvent<D>]);
}

/// What happens to events that fail again after coming from the error queue. The portal cannot
/// mark such a record again: `event.offline.error` leaves it reserved (and would delete newer
/// changes of the same object), so the library never calls it for them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorPolicy {
    /// Leave the error queue alone.
    Skip,
    /// Drain it after the main queue; what fails again stays reserved and journaled ("parked")
    /// and is handed over again at the next run.
    Include,
    /// Like `Include`, but after this many failed attempts the events are given up: cleared,
    /// and reported as dead letters.
    Retry(u32),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub limit: Option<f64>,
    pub concurrency: usize,
    pub errors: ErrorPolicy,
    /// Keep polling when the queue is empty: (first delay, longest delay) in ms.
    pub poll: Option<(f64, f64)>,
    /// A reserved row nobody journaled counts as stranded after this long.
    pub stranded_after_ms: f64,
    pub filter: Option<Tree>,
    pub order: Option<Tree>,
}

/// A reservation older than this, found by a sweep and journaled by nobody, is stranded.
pub const STRANDED_AFTER_MS: f64 = 10.0 * 60_000.0;

impl Default for Options {
    fn default() -> Options {
        Options {
            limit: None,
            concurrency: 1,
            errors: ErrorPolicy::Include,
            poll: None,
            stranded_after_ms: STRANDED_AFTER_MS,
            filter: None,
            order: None,
        }
    }
}

/// Counters reported as the run goes and returned at the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub batches: u64,
    /// Events freshly reserved.
    pub reserved: u64,
    /// Events re-selected from the journal or from stranded reservations.
    pub recovered: u64,
    pub acked: u64,
    /// Events sent to the error queue.
    pub failed: u64,
    /// Error-queue events that failed again and stay reserved for the next run.
    pub parked: u64,
    /// Error-queue events given up after the retry policy's attempts.
    pub dead: u64,
    /// Events handed over more than once (the same row id) during this run, deliberate retries
    /// from the error queue not counted.
    pub duplicates: u64,
    /// Events in the queue when the run started, less those settled since (an estimate: new
    /// changes keep arriving).
    pub remaining: Option<u64>,
    /// Calls to acknowledge or fail that did not go through; their events stay journaled.
    pub unsettled: u64,
    /// "empty" (nothing left to do), "aborted".
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

/// Re-selecting a reservation returns at most this many rows per call.
const RESELECT_LIMIT: f64 = 5000.0;

/// The reservation operations, with the journal kept in step.
pub struct Flow<'a, P: Platform> {
    pub queue: Queue<'a, P>,
    pub journal: &'a Journal,
}

impl<P: Platform> Flow<'_, P> {
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
        let taken = self.queue.get(&args, signal).await?;
        let batch = Batch {
            process_id: taken.process_id.unwrap_or_default(),
            events: taken.events,
            error: args.error,
            recovered: false,
        };
        if !batch.events.is_empty() {
            let entry = Entry {
                process_id: batch.process_id.clone(),
                message_ids: batch.message_ids(),
                error: batch.error,
                at_ms: self.queue.client.platform.now_ms(),
                attempts: 0,
            };
            self.journal.open(entry).await?;
        }
        Ok(batch)
    }

    /// The rows still reserved under a process id; the journal follows what is found (an empty
    /// reservation is closed).
    pub async fn reselect(
        &self,
        process_id: &str,
        error: bool,
        signal: Option<&P::Signal>,
    ) -> Result<Batch<P::Data>> {
        let args = GetArgs {
            process_id: Some(process_id.to_string()),
            error,
            limit: Some(RESELECT_LIMIT),
            ..GetArgs::default()
        };
        let taken = self.queue.get(&args, signal).await?;
        let batch = Batch {
            process_id: process_id.to_string(),
            events: taken.events,
            error,
            recovered: true,
        };
        if batch.events.is_empty() {
            self.journal.close(process_id).await?;
        } else {
            let attempts = self
                .journal
                .snapshot()
                .await?
                .entries
                .iter()
                .find(|e| e.process_id == process_id)
                .map(|e| e.attempts)
                .unwrap_or(0);
            let at_ms = self.queue.client.platform.now_ms();
            self.journal
                .open(Entry {
                    process_id: process_id.to_string(),
                    message_ids: batch.message_ids(),
                    error,
                    at_ms,
                    attempts,
                })
                .await?;
        }
        Ok(batch)
    }

    /// Acknowledges these messages of the reservation (`clear` by message id: idempotent).
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

    /// Sends failed messages of a main-queue reservation to the error queue. For an error-queue
    /// reservation it only counts the failed attempt (the events stay reserved and journaled)
    /// and returns how many attempts there have been.
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
        self.queue.error(process_id, message_ids, None).await?;
        self.journal.settle(process_id, message_ids).await?;
        Ok(0)
    }

    /// Every reserved row of this app and connector, grouped by process id, with its error flag.
    async fn reserved(&self, signal: Option<&P::Signal>) -> Result<Vec<(String, bool)>> {
        let mut found: Vec<(String, bool)> = Vec::new();
        let mut after = 0u64;
        loop {
            let filter = Tree::Map(vec![
                ("!PROCESS_ID".into(), Tree::Str(String::new())),
                (">ID".into(), Tree::Num(after as f64)),
            ]);
            let order = Tree::Map(vec![("ID".into(), Tree::Str("ASC".into()))]);
            let page = self
                .queue
                .list(
                    &ListArgs {
                        filter: Some(filter),
                        order: Some(order),
                        start: None,
                    },
                    signal,
                )
                .await?;
            for ev in &page.events {
                if let Some(pid) = &ev.process_id {
                    if !found.iter().any(|(p, _)| p == pid) {
                        found.push((pid.clone(), ev.error.unwrap_or(false)));
                    }
                }
            }
            match page.events.last() {
                Some(last) if page.next.is_some() => after = last.id,
                _ => return Ok(found),
            }
        }
    }

    /// Looks for reservations nobody journaled. Returns those reserved (first seen) at least
    /// `stranded_after_ms` ago, and how many younger ones there are. `busy` are process ids
    /// this process is working on right now.
    pub async fn sweep(
        &self,
        stranded_after_ms: f64,
        busy: &[String],
        signal: Option<&P::Signal>,
    ) -> Result<(Vec<(String, bool)>, usize)> {
        let reserved = self.reserved(signal).await?;
        let known = self.journal.snapshot().await?;
        let unknown: Vec<(String, bool)> = reserved
            .into_iter()
            .filter(|(pid, _)| {
                !busy.contains(pid) && !known.entries.iter().any(|e| &e.process_id == pid)
            })
            .collect();
        let now = self.queue.client.platform.now_ms();
        let mut seen: Vec<(String, f64)> = Vec::with_capacity(unknown.len());
        for (pid, _) in &unknown {
            let first = known
                .suspects
                .iter()
                .find(|(p, _)| p == pid)
                .map(|(_, t)| *t)
                .unwrap_or(now);
            seen.push((pid.clone(), first));
        }
        let stranded: Vec<(String, bool)> = unknown
            .iter()
            .filter(|(pid, _)| {
                seen.iter()
                    .any(|(p, t)| p == pid && now - t >= stranded_after_ms)
            })
            .cloned()
            .collect();
        let young = unknown.len() - stranded.len();
        if seen != known.suspects {
            self.journal.update(|d| d.suspects = seen).await?;
        }
        Ok((stranded, young))
    }

    /// Every reservation left unfinished: the journal's, and stranded ones found by a sweep;
    /// with how many reservations of unknown owner are not old enough yet to count as stranded.
    pub async fn recoverable(
        &self,
        stranded_after_ms: f64,
        busy: &[String],
        signal: Option<&P::Signal>,
    ) -> Result<(Vec<Batch<P::Data>>, usize)> {
        let mut out = Vec::new();
        let mut pids: Vec<(String, bool)> = self
            .journal
            .snapshot()
            .await?
            .entries
            .iter()
            .map(|e| (e.process_id.clone(), e.error))
            .collect();
        pids.retain(|(pid, _)| !busy.contains(pid));
        let (stranded, young) = self.sweep(stranded_after_ms, busy, signal).await?;
        pids.extend(stranded);
        for (pid, error) in pids {
            let batch = self.reselect(&pid, error, signal).await?;
            if !batch.events.is_empty() {
                out.push(batch);
            }
        }
        Ok((out, young))
    }
}

/// Polls every future until all are done; the first error wins (the others still finish).
/// A few lines instead of `join_all`, whose general machinery costs kilobytes in wasm.
async fn join(mut futures: Vec<LocalBoxFuture<'_, Result<()>>>) -> Result<()> {
    let mut outcome = Ok(());
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(r) => {
                if outcome.is_ok() {
                    outcome = r;
                }
                false
            }
            std::task::Poll::Pending => true,
        });
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outcome
}

/// State shared by the workers of one `consume` run.
struct Run<'a, P: Platform> {
    flow: &'a Flow<'a, P>,
    handler: &'a dyn Handler<P::Data>,
    reporter: &'a dyn Reporter<P::Data>,
    opts: &'a Options,
    signal: Option<&'a P::Signal>,
    progress: RefCell<Progress>,
    seen: RefCell<HashSet<u64>>,
    busy: RefCell<Vec<String>>,
    /// Process ids handled in this cycle: not handed over again before the next one.
    handled: RefCell<Vec<String>>,
    /// Reservations whose answer was lost (their rows are reserved under an unknown id).
    lost: Cell<u32>,
}

impl<P: Platform> Run<'_, P> {
    fn aborted(&self) -> bool {
        self.signal
            .map(|s| self.flow.queue.client.platform.aborted(s))
            .unwrap_or(false)
    }

    fn log(&self, level: Level, message: &str) {
        self.flow.queue.client.platform.log(level, message);
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

    /// Hands one batch to the handler and settles it.
    async fn process(&self, batch: Batch<P::Data>) {
        let n = batch.events.len() as u64;
        self.busy.borrow_mut().push(batch.process_id.clone());
        self.handled.borrow_mut().push(batch.process_id.clone());
        {
            let mut p = self.progress.borrow_mut();
            p.batches += 1;
            if batch.recovered {
                p.recovered += n;
            } else {
                p.reserved += n;
            }
            // A row handed over again from the error queue is a deliberate retry, not a duplicate.
            if !batch.error {
                let mut seen = self.seen.borrow_mut();
                p.duplicates += batch.events.iter().filter(|e| !seen.insert(e.id)).count() as u64;
            }
        }
        let all = batch.message_ids();
        let failed: Vec<String> = match self.handler.handle(&batch).await {
            Outcome::Done => Vec::new(),
            Outcome::Failed(ids) => all.iter().filter(|m| ids.contains(m)).cloned().collect(),
            Outcome::Threw(why) => {
                self.log(
                    Level::Warn,
                    &["the handler threw; the whole batch failed: ", &why].concat(),
                );
                all.clone()
            }
        };
        let succeeded: Vec<String> = all
            .iter()
            .filter(|m| !failed.contains(m))
            .cloned()
            .collect();
        // Settling does not take the abort signal: finished work is acknowledged even when the
        // run is being stopped.
        match self.flow.ack(&batch.process_id, &succeeded).await {
            Ok(()) => {
                self.progress.borrow_mut().acked += succeeded.len() as u64;
                self.settled(succeeded.len());
            }
            Err(e) => self.unsettled(succeeded.len(), &e),
        }
        if !failed.is_empty() {
            self.fail(&batch, &failed).await;
        }
        self.busy.borrow_mut().retain(|p| *p != batch.process_id);
        self.report();
    }

    fn unsettled(&self, n: usize, e: &B24Error) {
        self.progress.borrow_mut().unsettled += n as u64;
        self.log(
            Level::Warn,
            &[
                "could not settle events; they stay journaled and come back: ",
                &e.message(),
            ]
            .concat(),
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
        match self.opts.errors {
            ErrorPolicy::Retry(max) if attempts >= max => {
                let dead: Vec<OfflineEvent<P::Data>> = batch
                    .events
                    .iter()
                    .filter(|e| failed.contains(&e.message_id))
                    .cloned()
                    .collect();
                match self.flow.ack(&batch.process_id, failed).await {
                    Ok(()) => {
                        self.progress.borrow_mut().dead += n;
                        self.settled(failed.len());
                        self.reporter.dead_letters(&dead);
                    }
                    Err(e) => self.unsettled(failed.len(), &e),
                }
            }
            _ => self.progress.borrow_mut().parked += n,
        }
    }

    /// Reserves and processes batches until the queue (or the error queue) is empty.
    async fn drain(&self, error: bool) -> Result<()> {
        let args = GetArgs {
            filter: self.opts.filter.clone(),
            order: self.opts.order.clone(),
            limit: self.opts.limit,
            error,
            ..GetArgs::default()
        };
        let mut failures = 0u32;
        while !self.aborted() {
            match self.flow.reserve(&args, self.signal).await {
                Ok(batch) if batch.events.is_empty() => return Ok(()),
                Ok(batch) => {
                    failures = 0;
                    self.process(batch).await;
                }
                Err(e) if e.is(code::ABORTED) => return Ok(()),
                Err(e) if classify(&e) == Kind::Transient => {
                    // The portal may have reserved rows whose process id never reached us.
                    self.lost.set(self.lost.get() + 1);
                    failures += 1;
                    self.log(
                        Level::Warn,
                        &[
                            "a reservation's answer was lost; a sweep will find its rows: ",
                            &e.message(),
                        ]
                        .concat(),
                    );
                    let platform = &self.flow.queue.client.platform;
                    let delay = self
                        .flow
                        .queue
                        .client
                        .config
                        .retry
                        .backoff_ms(failures.min(6), platform.random());
                    if platform.sleep(delay, self.signal).await.is_err() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Runs `concurrency` drains side by side.
    async fn drain_all(&self, error: bool) -> Result<()> {
        let workers = (0..self.opts.concurrency.max(1))
            .map(|_| Box::pin(self.drain(error)) as LocalBoxFuture<'_, Result<()>>)
            .collect();
        join(workers).await
    }

    /// Recovers what is unfinished; when this run lost reservations, waits for their rows to
    /// count as stranded so that the run does not end leaving them behind.
    async fn recover(&self) -> Result<()> {
        loop {
            let skip: Vec<String> = self
                .busy
                .borrow()
                .iter()
                .chain(self.handled.borrow().iter())
                .cloned()
                .collect();
            let (batches, young) = self
                .flow
                .recoverable(self.opts.stranded_after_ms, &skip, self.signal)
                .await?;
            let found = !batches.is_empty();
            for batch in batches {
                if self.aborted() {
                    return Ok(());
                }
                self.process(batch).await;
            }
            if self.lost.get() == 0 || self.aborted() {
                return Ok(());
            }
            // The sweep just made says whether rows of unknown owner are still waiting to
            // count as stranded; a round that found some goes round once more to be sure.
            if !found && young == 0 {
                self.lost.set(0);
                return Ok(());
            }
            if young > 0 {
                let wait = (self.opts.stranded_after_ms / 4.0).clamp(50.0, 30_000.0);
                if self
                    .flow
                    .queue
                    .client
                    .platform
                    .sleep(wait, self.signal)
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
    }
}

/// Consumes the queue: recovers what a previous run left, drains the queue with `concurrency`
/// workers, then the error queue (per `errors`), sweeps for stranded reservations, and either
/// returns (nothing left) or, with `poll`, waits and goes again until aborted.
pub async fn consume<P: Platform>(
    flow: &Flow<'_, P>,
    handler: &dyn Handler<P::Data>,
    reporter: &dyn Reporter<P::Data>,
    opts: &Options,
    signal: Option<&P::Signal>,
) -> Result<Progress> {
    let run = Run {
        flow,
        handler,
        reporter,
        opts,
        signal,
        progress: RefCell::new(Progress::default()),
        seen: RefCell::new(HashSet::new()),
        busy: RefCell::new(Vec::new()),
        handled: RefCell::new(Vec::new()),
        lost: Cell::new(0),
    };
    match flow.queue.list(&ListArgs::default(), signal).await {
        Ok(page) => run.progress.borrow_mut().remaining = Some(page.total),
        Err(e) if e.is(code::ABORTED) => {}
        Err(e) => return Err(e),
    }
    let mut delay = opts.poll.map(|(first, _)| first).unwrap_or(0.0);
    while !run.aborted() {
        let before = run.progress.borrow().batches;
        run.handled.borrow_mut().clear();
        run.recover()
            .await
            .or_else(|e| if e.is(code::ABORTED) { Ok(()) } else { Err(e) })?;
        run.drain_all(false).await?;
        if opts.errors != ErrorPolicy::Skip {
            run.drain_all(true).await?;
        }
        run.recover()
            .await
            .or_else(|e| if e.is(code::ABORTED) { Ok(()) } else { Err(e) })?;
        let Some((first, longest)) = opts.poll else {
            break;
        };
        let idle = run.progress.borrow().batches == before;
        delay = if idle {
            (delay * 2.0).min(longest).max(first)
        } else {
            first
        };
        if flow
            .queue
            .client
            .platform
            .sleep(delay, signal)
            .await
            .is_err()
        {
            break;
        }
    }
    let mut p = run.progress.into_inner();
    p.stopped = if signal
        .map(|s| flow.queue.client.platform.aborted(s))
        .unwrap_or(false)
    {
        "aborted"
    } else {
        "empty"
    };
    Ok(p)
}
