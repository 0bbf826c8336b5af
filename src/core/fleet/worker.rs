//! One fleet worker: installs and uninstalls portals, routes their signals, and drains every
//! portal it holds the lease of with the reservation flow (`core::consume`), all in one future
//! ([`Fleet::run`]). Several workers (processes, machines) share one store: each portal is
//! drained by the holder of its lease, renewed every third of its life; a worker that cannot
//! renew stops taking batches from that portal, and once the lease runs out another worker
//! takes the portal over, with its journal. Handlers run behind one fair gate (a global cap,
//! first come first served, so a busy portal queues behind the others); each portal has its
//! own rate limiter, sized by its plan; an idle portal costs its one-request poll, backed off.

use super::super::auth::{Auth, Token};
use super::super::client::{Client, Config, Stats};
use super::super::consume::{
    consume, Batch, DeadReason, Flow, Handler, Outcome, Progress, Reporter,
};
use super::super::error::{code, B24Error, Result};
use super::super::joint::{race, Alarm, Crowd, Gate, LocalBoxFuture};
use super::super::journal::{Journal, Store};
use super::super::limiter::{Bucket, RateLimit};
use super::super::model::{Bound, OfflineEvent};
use super::super::offline::Queue;
use super::super::platform::{Context, Level, Platform};
use super::super::signal::{field, verify};
use super::install::{member_id, Install, Uninstall};
use super::oauth::{
    change_record, exchange, live_key, read_record, record_key, PortalTokens, SWAP_TRIES,
};
use super::record::Record;
use super::settings::Settings;
use super::store::{Fenced, FleetStore};
use crate::core::args::Tree;
use crate::core::text::concat;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Calls the app's code with a portal's batch.
pub trait PortalHandler<D>: 'static {
    fn handle(&self, portal: &PortalInfo, batch: &Batch<D>) -> LocalBoxFuture<'static, Outcome>;
}

/// Tells the app what happens, per portal.
pub trait FleetReporter<D>: 'static {
    fn progress(&self, portal: &PortalInfo, progress: &Progress);
    fn error(&self, portal: &PortalInfo, error: &B24Error);
    /// The portal is no longer drained: stopped (a dead refresh token, deleted, moved), or its
    /// lease went to another worker.
    fn stopped(&self, portal: &PortalInfo, error: Option<&B24Error>);
    fn dead_letters(&self, portal: &PortalInfo, events: &[OfflineEvent<D>], reason: DeadReason);
    fn malformed(&self, portal: &PortalInfo, rows: &[D]);
}

/// Which portal, as the app's code sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PortalInfo {
    pub member_id: String,
    /// Host (and port) of the portal.
    pub domain: String,
}

/// What an install did.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    pub portal: PortalInfo,
    /// A portal seen before (a repeated install event, a reinstall).
    pub known: bool,
    pub bound: Vec<Bound>,
    /// The onOfflineEvent receiver was bound now (false: already, or none configured).
    pub signal_bound: bool,
}

/// One portal this worker drains.
struct Portal<P: Platform + Clone> {
    info: PortalInfo,
    alarm: Alarm,
    /// Set when the worker lost the lease (the drain stops after its batch in hand).
    lost: Cell<bool>,
    /// Until when (this worker's clock) the lease is surely held: the last renewal plus the
    /// lease's life. A worker that cannot renew (its store unreachable) stops the drain before
    /// this passes, so that whoever takes the portal next is alone on it.
    held_until: Cell<f64>,
    /// The lease's fence when this worker took it: the portal's journal writes carry it.
    fence: u64,
    progress: RefCell<Progress>,
    last_error: RefCell<Option<B24Error>>,
    client: RefCell<Option<Rc<Client<P>>>>,
    tokens: RefCell<Option<PortalTokens<P>>>,
}

/// A portal's line in [`Fleet::stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct PortalStats {
    pub portal: PortalInfo,
    pub progress: Progress,
    pub client: Option<Stats>,
    pub last_error: Option<B24Error>,
}

struct Inner<P: Platform + Clone> {
    platform: P,
    store: Rc<dyn FleetStore>,
    settings: Settings,
    portals: RefCell<BTreeMap<String, Rc<Portal<P>>>>,
    crowd: Crowd<'static>,
    gate: Gate,
    /// Ends the scanner's wait (an install, a stop).
    scan: Alarm,
    closing: Cell<bool>,
    refreshes: Cell<u64>,
    /// Room for installs not yet proven (`installRate`).
    installs: RefCell<Bucket>,
}

#[derive(Clone)]
pub struct Fleet<P: Platform + Clone> {
    inner: Rc<Inner<P>>,
}

fn lease_name(prefix: &str, member: &str) -> String {
    concat(&[prefix, "lease/", member])
}

fn journal_key(prefix: &str, member: &str) -> String {
    concat(&[prefix, "journal/", member])
}

fn worker_key(prefix: &str, worker: &str) -> String {
    concat(&[prefix, "worker/", worker])
}

fn wake_key(prefix: &str, member: &str) -> String {
    concat(&[prefix, "wake/", member])
}

fn invalid(why: &str) -> B24Error {
    B24Error::new(code::INVALID_INSTALL, why)
}

/// Whether an error ends a portal for good (until a new install), rather than for a while.
fn fatal(e: &B24Error) -> bool {
    e.is(code::PORTAL_STOPPED)
        || e.is(code::INVALID_GRANT)
        || e.is(code::PORTAL_DELETED)
        || e.is(code::PORTAL_MOVED)
        || e.is(code::INVALID_TOKEN)
        || e.is(code::NO_AUTH_FOUND)
        || e.is(code::ACCESS_DENIED)
        || e.is(code::FEATURE_UNAVAILABLE)
}

impl<P: Platform + Clone> Fleet<P> {
    pub fn new(platform: P, store: Rc<dyn FleetStore>, settings: Settings) -> Fleet<P> {
        let gate = Gate::new(settings.concurrency);
        let installs = RefCell::new(Bucket::new(settings.install_rate));
        Fleet {
            inner: Rc::new(Inner {
                platform,
                store,
                settings,
                portals: RefCell::default(),
                crowd: Crowd::default(),
                gate,
                scan: Alarm::default(),
                closing: Cell::new(false),
                refreshes: Cell::new(0),
                installs,
            }),
        }
    }

    /// A client for a portal's record: its own limiter, the fleet's token source.
    fn client(&self, record: &Record) -> (Client<P>, PortalTokens<P>) {
        let me = &self.inner;
        let s = &me.settings;
        let mut config = Config::new(record.origin.clone());
        config.timeout_ms = s.timeout_ms;
        config.max_response_bytes = s.max_response_bytes;
        config.rate = Some(record.plan.unwrap_or(s.plan));
        config.connector = s.connector.clone();
        let tokens = PortalTokens::new(
            me.platform.clone(),
            me.store.clone(),
            &s.prefix,
            &record.member_id,
            &s.worker,
            s.app.clone(),
            s.trust.clone(),
            s.timeout_ms,
            record.generation,
        );
        let auth = Auth::new(
            Token {
                access: record.access_token.clone(),
                expires_at_ms: Some(record.expires_at_ms),
            },
            Some(Rc::new(tokens.clone())),
        );
        (Client::new(me.platform.clone(), config, auth), tokens)
    }

    /// Takes an install (the `ONAPPINSTALL` event or the install page's POST). Anyone can send
    /// one, so nothing in it is believed until the OAuth server the app trusts proves it: the
    /// install's refresh token is exchanged there (the only request an unproven install
    /// causes, and only within `installRate`), and the answer must name the same `member_id`
    /// and portal. Then the app's events and the onOfflineEvent receiver are bound with the
    /// new token, and only then is the portal stored (replacing what was stored for it, its
    /// plan kept) and listed as live. See docs/fleet.md, threat model.
    pub async fn install(&self, payload: &Tree) -> Result<Installed> {
        let me = &self.inner;
        let s = &me.settings;
        let install = Install::read(payload, &s.trust)?;
        let key = record_key(&s.prefix, &install.member_id);
        let before = read_record(&*me.store, &key).await?;
        let live = before.as_ref().is_some_and(|(_, r)| r.stopped.is_none());
        if !live {
            let count = me.store.keys(&concat(&[&s.prefix, "live/"])).await?.len();
            if count >= s.max_portals {
                return Err(B24Error::new(
                    code::PORTAL_LIMIT,
                    "the fleet holds maxPortals live portals already; the install was refused",
                ));
            }
        }
        if me
            .installs
            .borrow_mut()
            .try_take(me.platform.now_ms())
            .is_err()
        {
            return Err(B24Error::new(
                code::INSTALL_LIMITED,
                "too many installs to prove at once (installRate); the install was refused before anything was sent",
            ));
        }
        let grant = exchange(
            &me.platform,
            &s.app,
            &install.oauth,
            &install.refresh_token,
            s.trust.allow_http,
            s.timeout_ms,
        )
        .await
        .map_err(|e| {
            if e.is(code::INVALID_GRANT) || e.status != 0 {
                invalid(&concat(&[
                    "the OAuth server did not accept the install's refresh token (",
                    &e.code,
                    ")",
                ]))
            } else {
                e
            }
        })?;
        if grant.member_id.as_deref() != Some(install.member_id.as_str()) {
            return Err(invalid(
                "the OAuth server's answer is for another portal (member_id)",
            ));
        }
        if grant.portal.as_ref() != Some(&install.origin) {
            return Err(invalid(
                "the OAuth server's answer names another REST address for the portal (client_endpoint)",
            ));
        }
        // Proven: an install that is this app's, for this portal, at this address.
        me.installs.borrow_mut().give_back();
        let record = Record::installed(&install, &grant, me.platform.now_ms());
        let (client, _) = self.client(&record);
        let queue = Queue {
            client: &client,
            connector: s.connector.as_deref(),
        };
        let bound = if s.events.is_empty() {
            Vec::new()
        } else {
            queue.bind(&s.events, None).await?
        };
        let signal_bound = match &s.signal_url {
            Some(url) => queue.notify_at(url, None, None).await?,
            None => false,
        };
        let mut stored = None;
        for _ in 0..SWAP_TRIES {
            let now_known = read_record(&*me.store, &key).await?;
            let mut next = record.clone();
            if let Some((_, old)) = &now_known {
                next.generation = old.generation + 1;
                next.plan = old.plan;
                if next.application_token.is_none() {
                    next.application_token = old.application_token.clone();
                }
            }
            let expected = now_known.as_ref().map(|(t, _)| t.as_str());
            if me.store.swap(&key, expected, Some(next.to_text())).await? {
                stored = Some(now_known.is_some());
                break;
            }
        }
        let known = stored.ok_or_else(|| {
            B24Error::new(
                code::STORE_FAILED,
                "the portal record kept changing during the install; send it again",
            )
        })?;
        me.store
            .set(&live_key(&s.prefix, &record.member_id), "1".into())
            .await?;
        // A drain here started from the old record (another address, a pair now replaced)
        // starts again from the new one at the next scan.
        let here = me.portals.borrow().get(&record.member_id).cloned();
        if let Some(p) = here.filter(|p| p.info.domain != record.origin.host) {
            p.alarm.close();
        }
        me.scan.ring();
        Ok(Installed {
            portal: PortalInfo {
                member_id: record.member_id.clone(),
                domain: record.origin.host.clone(),
            },
            known,
            bound,
            signal_bound,
        })
    }

    /// Takes an `ONAPPUNINSTALL`: proven by the application token, it deletes the portal's
    /// record (over concurrent changes), then, under the portal's lease (so that no drain can
    /// write it afterwards), its journal and wake flag. Resolves with the member id only when
    /// all of it is gone; rejects otherwise (the record is deleted first, so the portal is
    /// drained no more either way).
    pub async fn uninstall(&self, payload: &Tree) -> Result<String> {
        let me = &self.inner;
        let s = &me.settings;
        let u = Uninstall::read(payload)?;
        let key = record_key(&s.prefix, &u.member_id);
        let mut deleted = false;
        for _ in 0..SWAP_TRIES {
            let Some((text, record)) = read_record(&*me.store, &key).await? else {
                return Err(invalid("no such portal in the store"));
            };
            if !record
                .application_token
                .as_deref()
                .is_some_and(|t| u.matches(t))
            {
                return Err(invalid(
                    "auth[application_token] is not the portal's (or none was stored: the install event never arrived)",
                ));
            }
            if me.store.swap(&key, Some(&text), None).await? {
                deleted = true;
                break;
            }
        }
        if !deleted {
            return Err(B24Error::new(
                code::STORE_FAILED,
                "the portal record kept changing during the uninstall; send it again",
            ));
        }
        me.store.delete(&live_key(&s.prefix, &u.member_id)).await?;
        let here = me.portals.borrow().get(&u.member_id).cloned();
        if let Some(p) = here {
            p.alarm.close();
        }
        // The portal's lease, taken anew (a new fence): a drain still running anywhere can no
        // longer write the journal. Its holder lets go at its next scan (it sees the record
        // gone), this worker's own drain after its batch in hand.
        let lease = lease_name(&s.prefix, &u.member_id);
        let give_up = me.platform.now_ms() + s.lease_ms + s.timeout_ms;
        let fence = loop {
            let now = me.platform.now_ms();
            let mine = me.portals.borrow().contains_key(&u.member_id);
            if !mine {
                if let Some(f) = me.store.lease(&lease, &s.worker, s.lease_ms, now).await? {
                    break f;
                }
            }
            if now > give_up {
                return Err(B24Error::new(
                    code::STORE_FAILED,
                    "the portal's record is deleted, but its lease stayed held: its journal is left; send the uninstall again",
                ));
            }
            me.platform.sleep(200.0, None).await?;
        };
        let journal = journal_key(&s.prefix, &u.member_id);
        let mut left = Ok(());
        for k in me.store.keys(&journal).await? {
            if !me.store.fenced(&lease, fence, &k, None).await? {
                left = Err(B24Error::new(
                    code::STORE_FAILED,
                    "another worker took the portal's lease during the uninstall; send it again",
                ));
                break;
            }
        }
        me.store.delete(&wake_key(&s.prefix, &u.member_id)).await?;
        me.store.release(&lease, &s.worker).await?;
        left.map(|()| u.member_id)
    }

    /// Takes an onOfflineEvent POST: the portal by `member_id`, its application token compared
    /// in constant time; wakes its drain here, or tells the worker that holds it (at its next
    /// scan). Returns the member id.
    pub async fn signal(&self, payload: &Tree) -> Result<String> {
        let me = &self.inner;
        let s = &me.settings;
        let member = member_id(field(payload, "auth", Some("member_id")))
            .map_err(|_| B24Error::new(code::INVALID_SIGNAL, "no usable auth[member_id]"))?;
        let (_, record) = read_record(&*me.store, &record_key(&s.prefix, &member))
            .await?
            .ok_or_else(|| B24Error::new(code::INVALID_SIGNAL, "no such portal"))?;
        let token = record.application_token.as_deref().unwrap_or("");
        if token.is_empty() {
            return Err(B24Error::new(
                code::INVALID_SIGNAL,
                "the portal's application token is unknown (the install event never arrived)",
            ));
        }
        verify(payload, token)?;
        let here = me.portals.borrow().get(&member).cloned();
        match here {
            Some(p) => p.alarm.ring(),
            None => {
                let now = me.platform.now_ms();
                me.store
                    .set(
                        &wake_key(&s.prefix, &member),
                        super::super::digits::decimal(now as u64),
                    )
                    .await?
            }
        }
        Ok(member)
    }

    /// Sets a portal's request rate (its plan: `standard`, `enterprise`, or its own), for every
    /// worker: kept in its record; a drain running here starts again with it.
    pub async fn set_plan(&self, member: &str, plan: RateLimit) -> Result<()> {
        let me = &self.inner;
        let member = member_id(Some(member))
            .map_err(|_| B24Error::invalid("memberId", "is not 32 hex digits"))?;
        if !(plan.burst >= 1.0 && plan.drain_per_sec > 0.0) {
            return Err(B24Error::invalid(
                "plan",
                "needs burst >= 1 and drainPerSec > 0",
            ));
        }
        change_record(&*me.store, &record_key(&me.settings.prefix, &member), |r| {
            r.plan = Some(plan);
            true
        })
        .await?
        .ok_or_else(|| B24Error::invalid("memberId", "no such portal"))?;
        let here = me.portals.borrow().get(&member).cloned();
        if let Some(p) = here {
            // Closed, it ends after its batch in hand; the next scan starts it with the plan.
            p.alarm.close();
        }
        Ok(())
    }

    /// Portals this worker drains now, with their counters.
    pub fn stats(&self) -> Vec<PortalStats> {
        self.inner
            .portals
            .borrow()
            .values()
            .map(|p| PortalStats {
                portal: p.info.clone(),
                progress: p.progress.borrow().clone(),
                client: p.client.borrow().as_ref().map(|c| c.stats().clone()),
                last_error: p.last_error.borrow().clone(),
            })
            .collect()
    }

    /// Refreshes made by this worker's portals.
    pub fn refreshes(&self) -> u64 {
        self.inner.refreshes.get()
            + self
                .inner
                .portals
                .borrow()
                .values()
                .filter_map(|p| p.client.borrow().as_ref().map(|c| c.auth.refreshes()))
                .sum::<u64>()
    }

    /// Asks the run to end: every portal finishes the batch in hand and acknowledges it, then
    /// the leases are given back and [`Fleet::run`] returns.
    pub fn stop(&self) {
        let me = &self.inner;
        me.closing.set(true);
        for p in me.portals.borrow().values() {
            p.alarm.close();
        }
        me.scan.close();
    }

    /// Runs the worker until [`Fleet::stop`]: holds leases, drains held portals.
    pub async fn run(
        &self,
        handler: Rc<dyn PortalHandler<P::Data>>,
        reporter: Rc<dyn FleetReporter<P::Data>>,
    ) {
        if let Err(e) = self.list_live().await {
            self.inner.platform.log(
                Level::Warn,
                &concat(&["the fleet could not list its live portals: ", &e.message()]),
                &Context::default(),
            );
        }
        let scanner = self.clone();
        let (h, r) = (handler.clone(), reporter.clone());
        self.inner.crowd.add(Box::pin(async move {
            scanner.scan_loop(h, r).await;
        }));
        self.inner.crowd.run().await;
    }

    /// Lists every stored portal that is not stopped as live, once at start: stores written
    /// before the live index existed hold records only.
    async fn list_live(&self) -> Result<()> {
        let me = &self.inner;
        let s = &me.settings;
        let live = concat(&[&s.prefix, "live/"]);
        if !me.store.keys(&live).await?.is_empty() {
            return Ok(());
        }
        let prefix = concat(&[&s.prefix, "portal/"]);
        for k in me.store.keys(&prefix).await? {
            let Some(m) = k.strip_prefix(&prefix) else {
                continue;
            };
            if let Some((_, r)) = read_record(&*me.store, &k).await? {
                if r.stopped.is_none() {
                    me.store.set(&live_key(&s.prefix, m), "1".into()).await?;
                }
            }
        }
        Ok(())
    }

    async fn scan_loop(
        &self,
        handler: Rc<dyn PortalHandler<P::Data>>,
        reporter: Rc<dyn FleetReporter<P::Data>>,
    ) {
        let me = &self.inner;
        while !me.closing.get() {
            self.let_go_of_expiring();
            if let Err(e) = self.scan(&handler, &reporter).await {
                me.platform.log(
                    Level::Warn,
                    &concat(&["the fleet's scan failed: ", &e.message()]),
                    &Context::default(),
                );
            }
            let wait = me.platform.sleep(me.settings.scan_ms, None);
            let _ = race(wait, me.scan.rung()).await;
        }
        // Stopping: every drain ends after its batch in hand (their tasks are in the crowd);
        // then the leases go back.
        while me.crowd.running() > 1 {
            let _ = me.platform.sleep(50.0, None).await;
        }
        let _ = me
            .store
            .delete(&worker_key(&me.settings.prefix, &me.settings.worker))
            .await;
        let held: Vec<String> = me.portals.borrow().keys().cloned().collect();
        for m in held {
            let _ = me
                .store
                .release(&lease_name(&me.settings.prefix, &m), &me.settings.worker)
                .await;
        }
    }

    /// Stops the drains whose lease could not be renewed and would run out before the next
    /// scan: the store may be unreachable, and the lease then passes to another worker.
    fn let_go_of_expiring(&self) {
        let me = &self.inner;
        let now = me.platform.now_ms();
        for p in me.portals.borrow().values() {
            if now + me.settings.scan_ms >= p.held_until.get() && !p.alarm.closed() {
                p.lost.set(true);
                p.alarm.close();
            }
        }
    }

    /// One look at the store: say this worker is alive, renew what is held, give up what is
    /// lost, and take free portals up to this worker's share (the portals over the live
    /// workers, rounded up); a worker over its share gives the excess back (after their batch
    /// in hand), so that a worker that joins gets portals within a scan or two.
    async fn scan(
        &self,
        handler: &Rc<dyn PortalHandler<P::Data>>,
        reporter: &Rc<dyn FleetReporter<P::Data>>,
    ) -> Result<()> {
        let me = &self.inner;
        let s = &me.settings;
        let now = me.platform.now_ms();
        me.store
            .set(
                &worker_key(&s.prefix, &s.worker),
                super::super::digits::decimal((now + s.lease_ms) as u64),
            )
            .await?;
        let workers = self.live_workers(now).await?.max(1);
        let prefix = concat(&[&s.prefix, "live/"]);
        let members: Vec<String> = me
            .store
            .keys(&prefix)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect();
        let share = members.len().div_ceil(workers);
        // What is held: renewed, or let go when gone from the store or lost to another worker.
        let held: Vec<(String, Rc<Portal<P>>)> = me
            .portals
            .borrow()
            .iter()
            .map(|(m, p)| (m.clone(), p.clone()))
            .collect();
        for (m, p) in &held {
            if p.alarm.closed() {
                continue;
            }
            if !members.contains(m) {
                p.alarm.close();
                continue;
            }
            let now = me.platform.now_ms();
            match me
                .store
                .lease(&lease_name(&s.prefix, m), &s.worker, s.lease_ms, now)
                .await?
            {
                None => {
                    p.lost.set(true);
                    p.alarm.close();
                }
                // Run out and taken anew: someone may have held it in between (their journal
                // writes are newer than this drain's view). Let go; a later scan starts afresh.
                Some(f) if f != p.fence => p.alarm.close(),
                Some(_) => {
                    p.held_until.set(now + s.lease_ms);
                    // A pair the OAuth server gave whose write failed: written now.
                    let tokens = p.tokens.borrow().clone();
                    if let Some(t) = tokens.filter(|t| t.unsaved()) {
                        if let Err(e) = t.flush().await {
                            *p.last_error.borrow_mut() = Some(e);
                        }
                    }
                    if me.store.get(&wake_key(&s.prefix, m)).await?.is_some() {
                        me.store.delete(&wake_key(&s.prefix, m)).await?;
                        p.alarm.ring();
                    }
                }
            }
        }
        let active = |me: &Inner<P>| {
            me.portals
                .borrow()
                .values()
                .filter(|p| !p.alarm.closed())
                .count()
        };
        // Over the share: the excess goes back.
        let mut over = active(me).saturating_sub(share);
        for (_, p) in held.iter().rev() {
            if over == 0 {
                break;
            }
            if !p.alarm.closed() {
                p.alarm.close();
                over -= 1;
            }
        }
        // Under it: free portals, starting at a place of this worker's own so that workers
        // starting together do not all try the same ones first.
        let start = s
            .worker
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        let n = members.len();
        for i in 0..n {
            if me.closing.get() || active(me) >= share {
                break;
            }
            let m = &members[(start + i) % n];
            if me.portals.borrow().contains_key(m) {
                continue;
            }
            let now = me.platform.now_ms();
            let Some(fence) = me
                .store
                .lease(&lease_name(&s.prefix, m), &s.worker, s.lease_ms, now)
                .await?
            else {
                continue;
            };
            match read_record(&*me.store, &record_key(&s.prefix, m)).await? {
                Some((_, record)) if record.stopped.is_none() => {
                    self.start(record, fence, handler.clone(), reporter.clone())
                }
                // Gone, or stopped until a new install: nothing to drain, and no longer live.
                _ => {
                    me.store.delete(&live_key(&s.prefix, m)).await?;
                    me.store
                        .release(&lease_name(&s.prefix, m), &s.worker)
                        .await?
                }
            }
        }
        Ok(())
    }

    /// Workers whose heartbeat has not run out; heartbeats long dead are removed.
    async fn live_workers(&self, now: f64) -> Result<usize> {
        let me = &self.inner;
        let prefix = concat(&[&me.settings.prefix, "worker/"]);
        let mut live = 0;
        for k in me.store.keys(&prefix).await? {
            let until = me
                .store
                .get(&k)
                .await?
                .and_then(|v| v.parse::<u64>().ok())
                .map(|u| u as f64)
                .unwrap_or(0.0);
            if until > now {
                live += 1;
            } else if until + 10.0 * me.settings.lease_ms < now {
                me.store.delete(&k).await?;
            }
        }
        Ok(live)
    }

    fn start(
        &self,
        record: Record,
        fence: u64,
        handler: Rc<dyn PortalHandler<P::Data>>,
        reporter: Rc<dyn FleetReporter<P::Data>>,
    ) {
        let portal = Rc::new(Portal {
            info: PortalInfo {
                member_id: record.member_id.clone(),
                domain: record.origin.host.clone(),
            },
            alarm: Alarm::default(),
            lost: Cell::new(false),
            held_until: Cell::new(self.inner.platform.now_ms() + self.inner.settings.lease_ms),
            fence,
            progress: RefCell::default(),
            last_error: RefCell::default(),
            client: RefCell::default(),
            tokens: RefCell::default(),
        });
        #[cfg(test)]
        eprintln!(
            "start {} closing {}",
            record.member_id,
            self.inner.closing.get()
        );
        if self.inner.closing.get() {
            // Taken during the scan that a stop interrupted: it ends at once, lease given back.
            portal.alarm.close();
        }
        self.inner
            .portals
            .borrow_mut()
            .insert(record.member_id.clone(), portal.clone());
        let fleet = self.clone();
        self.inner.crowd.add(Box::pin(async move {
            fleet.drain(record, portal, handler, reporter).await;
        }));
    }

    /// A held portal, drained until stopped, lost, or stopped for good by an error.
    async fn drain(
        &self,
        record: Record,
        portal: Rc<Portal<P>>,
        handler: Rc<dyn PortalHandler<P::Data>>,
        reporter: Rc<dyn FleetReporter<P::Data>>,
    ) {
        let me = &self.inner;
        let s = &me.settings;
        let member = record.member_id.clone();
        let (client, tokens) = self.client(&record);
        let client = Rc::new(client);
        *portal.client.borrow_mut() = Some(client.clone());
        *portal.tokens.borrow_mut() = Some(tokens.clone());
        let fenced = Fenced {
            store: me.store.clone(),
            lease: lease_name(&s.prefix, &member),
            fence: portal.fence,
        };
        let journal = Journal::new(
            Rc::new(fenced) as Rc<dyn Store>,
            journal_key(&s.prefix, &member),
        );
        let flow = Flow {
            queue: Queue {
                client: &client,
                connector: s.connector.as_deref(),
            },
            journal: &journal,
            owner: &s.worker,
            locked: false,
            flag: false,
            signed: false,
            liveness: None,
            hold_ms: s.holds.hold_ms,
            // The lease holder is the portal's only consumer, and every batch is journaled (under
            // the lease's fence) before a handler sees it: a reservation nobody journaled is a
            // lost answer, its own or an earlier holder's, and no handler ever had it. Released
            // once an answer still in flight has surely arrived or timed out, and the journal
            // write after it too (a request timeout each), so it cannot be delivered twice.
            unknown_ms: (2.0 * s.timeout_ms).min(s.holds.hold_ms),
            handle_ms: s.holds.handle_ms(s.timeout_ms),
        };
        let gated = Gated {
            fleet: self.clone(),
            portal: portal.clone(),
            handler,
        };
        let told = Told {
            portal: portal.clone(),
            reporter: reporter.clone(),
        };
        let mut options = s.options.clone();
        if options.poll.is_none() {
            options.poll = Some((1000.0, 30_000.0));
        }
        let mut stop_error = None;
        while !portal.alarm.closed() {
            match consume(&flow, &gated, &told, &options, None, Some(&portal.alarm)).await {
                Ok(p) => *portal.progress.borrow_mut() = p,
                // Another worker has the portal: nothing more to do here, nothing to report.
                Err(e) if e.is(code::LEASE_LOST) => {
                    portal.lost.set(true);
                    break;
                }
                Err(e) if fatal(&e) => {
                    stop_error = Some(e);
                    break;
                }
                Err(e) => {
                    reporter.error(&portal.info, &e);
                    *portal.last_error.borrow_mut() = Some(e);
                    let wait = me.platform.sleep(s.scan_ms, None);
                    let _ = race(wait, portal.alarm.rung()).await;
                }
            }
        }
        // An uninstall revokes the tokens before its POST arrives: a drain that meets a refused
        // token first waits a moment for it (the uninstall closes the drain's alarm), and a
        // portal whose record is gone was uninstalled, which is no error.
        if stop_error.as_ref().is_some_and(|e| {
            e.is(code::INVALID_TOKEN) || e.is(code::NO_AUTH_FOUND) || e.is(code::PORTAL_STOPPED)
        }) {
            if !portal.alarm.closed() {
                let wait = me.platform.sleep(s.scan_ms.min(5_000.0), None);
                let _ = race(wait, portal.alarm.until_closed()).await;
            }
            if let Ok(None) = read_record(&*me.store, &record_key(&s.prefix, &member)).await {
                stop_error = None;
            }
        }
        if let Some(e) = &stop_error {
            *portal.last_error.borrow_mut() = Some(e.clone());
            // Kept in the store, so that no worker takes the portal up again until a new install.
            if !e.is(code::PORTAL_STOPPED) {
                let moved = e.moved_to.clone();
                let why = e.code.to_string();
                let origin = record.origin.clone();
                let stopped = change_record(&*me.store, &record_key(&s.prefix, &member), |r| {
                    // A new install at another address meanwhile is not this drain's to stop.
                    if r.origin != origin {
                        return false;
                    }
                    r.stopped = Some(why.clone());
                    if moved.is_some() {
                        r.moved_to = moved.clone();
                    }
                    true
                })
                .await;
                // Out of every worker's scan until a new install lists it again.
                if let Ok(Some(r)) = stopped {
                    if r.stopped.is_some() {
                        let _ = me.store.delete(&live_key(&s.prefix, &member)).await;
                    }
                }
            } else {
                let _ = me.store.delete(&live_key(&s.prefix, &member)).await;
            }
        }
        me.refreshes
            .set(me.refreshes.get() + client.auth.refreshes());
        me.portals.borrow_mut().remove(&member);
        if !portal.lost.get() {
            let _ = me
                .store
                .release(&lease_name(&s.prefix, &member), &s.worker)
                .await;
        }
        reporter.stopped(&portal.info, stop_error.as_ref().map(stopped_by).as_ref());
    }
}

/// A stopped portal's error as the app sees it: `PORTAL_STOPPED`, naming the cause.
fn stopped_by(e: &B24Error) -> B24Error {
    if e.is(code::PORTAL_STOPPED) {
        return e.clone();
    }
    let mut out = B24Error::new(
        code::PORTAL_STOPPED,
        concat(&[
            "the portal is stopped (",
            &e.code,
            ": ",
            &e.description,
            "); a new install of the app brings it back",
        ]),
    );
    out.moved_to = e.moved_to.clone();
    out
}

/// The app's handler behind the fleet's gate.
struct Gated<P: Platform + Clone> {
    fleet: Fleet<P>,
    portal: Rc<Portal<P>>,
    handler: Rc<dyn PortalHandler<P::Data>>,
}

impl<P: Platform + Clone> Handler<P::Data> for Gated<P> {
    fn handle(&self, batch: &Batch<P::Data>) -> LocalBoxFuture<'static, Outcome> {
        let fleet = self.fleet.clone();
        let portal = self.portal.clone();
        let handler = self.handler.clone();
        let batch = batch.clone();
        Box::pin(async move {
            let _pass = fleet.inner.gate.enter().await;
            handler.handle(&portal.info, &batch).await
        })
    }
}

/// The reporter of one portal's consumer.
struct Told<P: Platform + Clone> {
    portal: Rc<Portal<P>>,
    reporter: Rc<dyn FleetReporter<P::Data>>,
}

impl<P: Platform + Clone> Reporter<P::Data> for Told<P> {
    fn progress(&self, progress: &Progress) {
        *self.portal.progress.borrow_mut() = progress.clone();
        self.reporter.progress(&self.portal.info, progress);
    }
    fn dead_letters(&self, events: &[OfflineEvent<P::Data>], reason: DeadReason) {
        self.reporter
            .dead_letters(&self.portal.info, events, reason);
    }
    fn malformed(&self, rows: &[P::Data]) {
        self.reporter.malformed(&self.portal.info, rows);
    }
    fn error(&self, error: &B24Error) {
        if error.is(code::LEASE_LOST) {
            self.portal.lost.set(true);
            self.portal.alarm.close();
            return;
        }
        *self.portal.last_error.borrow_mut() = Some(error.clone());
        self.reporter.error(&self.portal.info, error);
    }
}
