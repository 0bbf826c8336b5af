//! The offline event table and its rules (`docs/queue-rules.md`), indexed so that a million rows
//! still reserve a batch in microseconds.
//!
//! Rows are kept by id; free rows are also kept per scope (application, connector, error flag)
//! ordered by time and by id, reserved rows per process id, and every row under its merge key
//! (application, connector, message id). All operations run under the caller's lock, which is
//! what makes a reservation atomic and concurrent reservations disjoint.

use crate::filter::{Cond, Field, Op, Scalar};
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

pub type MsgId = [u8; 32];

/// Reserved rows older than this are deleted by the daily job.
pub const EXPIRY_S: i64 = 30 * 86_400;

#[derive(Debug, Clone)]
pub struct Row {
    pub id: u64,
    /// Unix seconds of the last change merged into the row.
    pub ts: i64,
    pub message_id: MsgId,
    pub app: u32,
    pub connector: u32,
    pub event: u32,
    pub error: bool,
    pub process: Option<Box<str>>,
    /// Compact JSON text, parsed only when the row is sent.
    pub data: Box<str>,
    /// Interned: `{"user_id":"1"}` repeats on most rows.
    pub additional: u32,
}

/// Small string table: event names and connector ids repeat on every row.
#[derive(Debug, Default)]
pub struct Interner {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map(|s| &**s).unwrap_or("")
    }
}

/// Rows by id. Ids only grow and the queue is consumed mostly from the front, so a deque with
/// holes for deleted rows is far smaller than a tree: leading holes are dropped as they appear.
#[derive(Debug, Default)]
struct Rows {
    slots: VecDeque<Option<Row>>,
    /// Id of `slots[0]`.
    base: u64,
    live: usize,
}

impl Rows {
    fn slot(&self, id: u64) -> Option<usize> {
        id.checked_sub(self.base)
            .map(|i| i as usize)
            .filter(|i| *i < self.slots.len())
    }

    fn get(&self, id: &u64) -> Option<&Row> {
        self.slot(*id).and_then(|i| self.slots[i].as_ref())
    }

    fn get_mut(&mut self, id: &u64) -> Option<&mut Row> {
        self.slot(*id).and_then(|i| self.slots[i].as_mut())
    }

    fn contains_key(&self, id: &u64) -> bool {
        self.get(id).is_some()
    }

    /// Ids must come in increasing order (they do: `next_id`).
    fn insert(&mut self, id: u64, row: Row) {
        if self.slots.is_empty() {
            self.base = id;
        }
        while self.base + (self.slots.len() as u64) < id {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(row));
        self.live += 1;
    }

    fn remove(&mut self, id: &u64) -> Option<Row> {
        let i = self.slot(*id)?;
        let row = self.slots[i].take()?;
        self.live -= 1;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(row)
    }

    fn len(&self) -> usize {
        self.live
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn values(&self) -> impl DoubleEndedIterator<Item = &Row> {
        self.slots.iter().flatten()
    }
}

impl std::ops::Index<&u64> for Rows {
    type Output = Row;
    fn index(&self, id: &u64) -> &Row {
        self.get(id).expect("a row the indexes point at exists")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Scope {
    app: u32,
    connector: u32,
    error: bool,
}

type MergeKey = (u32, u32, MsgId);

/// The rows under one merge-key hash: almost always one, so no allocation for it.
#[derive(Debug, Clone)]
enum Ids {
    One(u64),
    Many(Vec<u64>),
}

impl Ids {
    fn as_slice(&self) -> &[u64] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(v) => v,
        }
    }
}

/// The merge index is keyed by a hash of (app, connector, message id) rather than the 40-byte
/// key itself, which halves it at a million rows; lookups check the rows' real keys.
fn key_hash(key: &MergeKey) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key)
}

/// Which rows of an application a call sees.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub app: u32,
    pub connector: u32,
}

#[derive(Debug, Default)]
pub struct Queue {
    rows: Rows,
    next_id: u64,
    free_by_ts: HashMap<Scope, BTreeSet<(i64, u64)>>,
    free_by_id: HashMap<Scope, BTreeSet<u64>>,
    by_key: HashMap<u64, Ids>,
    processes: HashMap<Box<str>, BTreeSet<u64>>,
    per_target: HashMap<(u32, u32), usize>,
    pub events: Interner,
    pub connectors: Interner,
    pub additionals: Interner,
}

/// What `get` hands back: the process id (None with `clear=1`) and the selected rows.
pub struct Taken {
    pub process_id: Option<String>,
    pub rows: Vec<Row>,
}

impl Queue {
    pub fn new() -> Queue {
        let mut q = Queue {
            next_id: 1,
            ..Queue::default()
        };
        q.connectors.intern("");
        q
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn reserved_len(&self) -> usize {
        self.processes.values().map(|s| s.len()).sum()
    }

    pub fn clear_all(&mut self) {
        *self = Queue::new();
    }

    fn scope(row: &Row) -> Scope {
        Scope {
            app: row.app,
            connector: row.connector,
            error: row.error,
        }
    }

    fn index_free(&mut self, row_id: u64) {
        let row = &self.rows[&row_id];
        let scope = Queue::scope(row);
        self.free_by_ts
            .entry(scope)
            .or_default()
            .insert((row.ts, row.id));
        self.free_by_id.entry(scope).or_default().insert(row.id);
    }

    fn unindex_free(&mut self, row_id: u64) {
        let row = &self.rows[&row_id];
        let scope = Queue::scope(row);
        if let Some(set) = self.free_by_ts.get_mut(&scope) {
            set.remove(&(row.ts, row.id));
        }
        if let Some(set) = self.free_by_id.get_mut(&scope) {
            set.remove(&row.id);
        }
    }

    fn insert(&mut self, row: Row) {
        let id = row.id;
        let h = key_hash(&(row.app, row.connector, row.message_id));
        match self.by_key.get_mut(&h) {
            None => {
                self.by_key.insert(h, Ids::One(id));
            }
            Some(Ids::One(other)) => {
                let other = *other;
                self.by_key.insert(h, Ids::Many(vec![other, id]));
            }
            Some(Ids::Many(v)) => v.push(id),
        }
        *self.per_target.entry((row.app, row.connector)).or_default() += 1;
        let process = row.process.clone();
        self.rows.insert(id, row);
        match process {
            None => self.index_free(id),
            Some(p) => {
                self.processes.entry(p).or_default().insert(id);
            }
        }
    }

    fn delete(&mut self, id: u64) -> Option<Row> {
        if !self.rows.contains_key(&id) {
            return None;
        }
        if self.rows[&id].process.is_none() {
            self.unindex_free(id);
        }
        let row = self.rows.remove(&id)?;
        if let Some(p) = &row.process {
            self.detach_process(id, p);
        }
        let h = key_hash(&(row.app, row.connector, row.message_id));
        if let Some(entry) = self.by_key.get_mut(&h) {
            let next = match entry {
                Ids::One(_) => None,
                Ids::Many(v) => {
                    v.retain(|x| *x != id);
                    match v.as_slice() {
                        [] => None,
                        [one] => Some(Ids::One(*one)),
                        _ => Some(Ids::Many(std::mem::take(v))),
                    }
                }
            };
            match next {
                Some(ids) => *entry = ids,
                None => {
                    self.by_key.remove(&h);
                }
            }
        }
        if let Some(n) = self.per_target.get_mut(&(row.app, row.connector)) {
            *n -= 1;
        }
        Some(row)
    }

    fn detach_process(&mut self, id: u64, process_id: &str) {
        if let Some(set) = self.processes.get_mut(process_id) {
            set.remove(&id);
            if set.is_empty() {
                self.processes.remove(process_id);
            }
        }
    }

    /// Every row of one merge key.
    fn rows_of(&self, key: &MergeKey) -> Vec<u64> {
        let Some(ids) = self.by_key.get(&key_hash(key)) else {
            return Vec::new();
        };
        ids.as_slice()
            .iter()
            .copied()
            .filter(|id| {
                let r = &self.rows[id];
                (r.app, r.connector, r.message_id) == *key
            })
            .collect()
    }

    fn free_row_for(&self, key: &MergeKey) -> Option<u64> {
        self.rows_of(key)
            .into_iter()
            .find(|id| self.rows[id].process.is_none())
    }

    /// A change in the portal for one binding: merged into the free row of the same object, or
    /// a new free row when there is none (the object's row may be reserved right now).
    pub fn produce(
        &mut self,
        now_s: i64,
        target: Target,
        event: &str,
        message_id: MsgId,
        data: &str,
        additional: &str,
    ) {
        let key = (target.app, target.connector, message_id);
        if let Some(id) = self.free_row_for(&key) {
            self.unindex_free(id);
            let additional = self.additionals.intern(additional);
            if let Some(row) = self.rows.get_mut(&id) {
                row.ts = now_s;
                row.data = data.into();
                row.additional = additional;
            }
            self.index_free(id);
            return;
        }
        let event = self.events.intern(event);
        let additional = self.additionals.intern(additional);
        let row = Row {
            id: self.next_id,
            ts: now_s,
            message_id,
            app: target.app,
            connector: target.connector,
            event,
            error: false,
            process: None,
            data: data.into(),
            additional,
        };
        self.next_id += 1;
        self.insert(row);
    }

    fn field_cmp(&self, row: &Row, field: Field, value: &Scalar) -> Option<Ordering> {
        Some(match (field, value) {
            (Field::Id, Scalar::Int(v)) => (row.id as i64).cmp(v),
            (Field::TimestampX, Scalar::Int(v)) => row.ts.cmp(v),
            (Field::Error, Scalar::Int(v)) => (row.error as i64).cmp(v),
            (Field::EventName, Scalar::Str(v)) => self.events.name(row.event).cmp(v.as_str()),
            (Field::MessageId, Scalar::Str(v)) => row.message_id.as_slice().cmp(v.as_bytes()),
            (Field::ProcessId, Scalar::Str(v)) => {
                row.process.as_deref().unwrap_or("").cmp(v.as_str())
            }
            _ => return None,
        })
    }

    fn matches(&self, row: &Row, conds: &[Cond]) -> bool {
        conds.iter().all(|c| {
            let hit = |v: &Scalar| {
                self.field_cmp(row, c.field, v)
                    .map(|o| c.op.holds(o))
                    .unwrap_or(false)
            };
            match c.op {
                // `!ID => [1,2]` is NOT IN: every value must differ.
                Op::Ne => c.values.iter().all(hit),
                _ => c.values.iter().any(hit),
            }
        })
    }

    fn row_cmp(&self, a: &Row, b: &Row, order: &[(Field, bool)]) -> Ordering {
        for (field, desc) in order {
            let o = match field {
                Field::Id => a.id.cmp(&b.id),
                Field::TimestampX => a.ts.cmp(&b.ts),
                Field::Error => a.error.cmp(&b.error),
                Field::EventName => self.events.name(a.event).cmp(self.events.name(b.event)),
                Field::MessageId => a.message_id.cmp(&b.message_id),
                Field::ProcessId => a.process.cmp(&b.process),
            };
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.id.cmp(&b.id)
    }

    /// Ids of the rows matching `conds` among `ids`, sorted by `order`, at most `limit`.
    fn pick(
        &self,
        ids: impl Iterator<Item = u64>,
        conds: &[Cond],
        order: &[(Field, bool)],
        limit: usize,
    ) -> Vec<u64> {
        let mut hits: Vec<&Row> = ids
            .filter_map(|id| self.rows.get(&id))
            .filter(|r| self.matches(r, conds))
            .collect();
        hits.sort_by(|a, b| self.row_cmp(a, b, order));
        hits.into_iter().take(limit).map(|r| r.id).collect()
    }

    /// The first `limit` free rows of a scope: walks an index when the order allows, so the cost
    /// does not grow with the queue; any other order sorts the scope.
    fn select_free(
        &self,
        scope: Scope,
        conds: &[Cond],
        order: &[(Field, bool)],
        limit: usize,
    ) -> Vec<u64> {
        let take = |iter: &mut dyn Iterator<Item = u64>| -> Vec<u64> {
            let mut out = Vec::with_capacity(limit.min(1024));
            for id in iter {
                if out.len() >= limit {
                    break;
                }
                if let Some(row) = self.rows.get(&id) {
                    if self.matches(row, conds) {
                        out.push(id);
                    }
                }
            }
            out
        };
        let empty_ts = BTreeSet::new();
        let empty_id = BTreeSet::new();
        let by_ts = self.free_by_ts.get(&scope).unwrap_or(&empty_ts);
        let by_id = self.free_by_id.get(&scope).unwrap_or(&empty_id);
        match order {
            [(Field::TimestampX, false)] | [(Field::TimestampX, false), (Field::Id, false)] => {
                take(&mut by_ts.iter().map(|(_, id)| *id))
            }
            [(Field::TimestampX, true)] | [(Field::TimestampX, true), (Field::Id, true)] => {
                take(&mut by_ts.iter().rev().map(|(_, id)| *id))
            }
            [(Field::Id, false), ..] => take(&mut by_id.iter().copied()),
            [(Field::Id, true), ..] => take(&mut by_id.iter().rev().copied()),
            _ => self.pick(by_id.iter().copied(), conds, order, limit),
        }
    }

    /// `event.offline.get`: reserve (or re-select, or destructively read) a batch.
    #[allow(clippy::too_many_arguments)]
    pub fn take(
        &mut self,
        target: Target,
        error: bool,
        conds: &[Cond],
        order: &[(Field, bool)],
        limit: usize,
        clear: bool,
        process_id: Option<&str>,
        fresh_process_id: impl FnOnce() -> String,
    ) -> Taken {
        let scope = Scope {
            app: target.app,
            connector: target.connector,
            error,
        };
        let (ids, pid) = match process_id {
            Some(pid) => {
                let own = self
                    .processes
                    .get(pid)
                    .map(|s| s.iter().copied().collect::<Vec<_>>())
                    .unwrap_or_default();
                let in_scope = own.into_iter().filter(|id| {
                    self.rows
                        .get(id)
                        .map(|r| Queue::scope(r) == scope)
                        .unwrap_or(false)
                });
                (self.pick(in_scope, conds, order, limit), pid.to_string())
            }
            None => {
                let ids = self.select_free(scope, conds, order, limit);
                let pid = if clear {
                    String::new()
                } else {
                    fresh_process_id()
                };
                if !clear {
                    for id in &ids {
                        self.unindex_free(*id);
                        if let Some(row) = self.rows.get_mut(id) {
                            row.process = Some(pid.as_str().into());
                        }
                        self.processes
                            .entry(pid.as_str().into())
                            .or_default()
                            .insert(*id);
                    }
                }
                (ids, pid)
            }
        };
        if clear {
            let rows = ids.iter().filter_map(|id| self.delete(*id)).collect();
            return Taken {
                process_id: None,
                rows,
            };
        }
        let rows = ids
            .iter()
            .filter_map(|id| self.rows.get(id).cloned())
            .collect();
        Taken {
            process_id: Some(pid),
            rows,
        }
    }

    fn process_rows(&self, target: Target, process_id: &str) -> Vec<u64> {
        self.processes
            .get(process_id)
            .map(|set| {
                set.iter()
                    .copied()
                    .filter(|id| {
                        self.rows
                            .get(id)
                            .map(|r| r.app == target.app && r.connector == target.connector)
                            .unwrap_or(false)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `event.offline.clear`: delete rows reserved under `process_id` (an empty one: the free
    /// rows), narrowed by message ids (checked first, as the server's code does) or else by
    /// record ids. Returns how many went.
    pub fn clear(
        &mut self,
        target: Target,
        process_id: &str,
        message_ids: Option<&[String]>,
        ids: Option<&[u64]>,
    ) -> usize {
        let mut victims = if process_id.is_empty() {
            // The portal's delete matches the process id column: empty means free.
            self.rows
                .values()
                .filter(|r| {
                    r.process.is_none() && r.app == target.app && r.connector == target.connector
                })
                .map(|r| r.id)
                .collect()
        } else {
            self.process_rows(target, process_id)
        };
        if let Some(msgs) = message_ids {
            let wanted: HashSet<&[u8]> = msgs.iter().map(|m| m.as_bytes()).collect();
            victims.retain(|id| wanted.contains(self.rows[id].message_id.as_slice()));
        } else if let Some(ids) = ids {
            let wanted: HashSet<u64> = ids.iter().copied().collect();
            victims.retain(|id| wanted.contains(id));
        }
        victims
            .into_iter()
            .filter(|id| self.delete(*id).is_some())
            .count()
    }

    /// `event.offline.error`: rows of the listed messages with `ERROR=0` become free error
    /// records when reserved under `process_id`, and are deleted otherwise; rows already marked
    /// as errors are left alone.
    pub fn fail(&mut self, target: Target, process_id: &str, message_ids: &[String]) {
        for msg in message_ids {
            let Ok(msg) = <MsgId>::try_from(msg.as_bytes()) else {
                continue;
            };
            let key = (target.app, target.connector, msg);
            let rows: Vec<(u64, bool, bool)> = self
                .rows_of(&key)
                .into_iter()
                .map(|id| {
                    let r = &self.rows[&id];
                    (id, r.error, r.process.as_deref() == Some(process_id))
                })
                .collect();
            // Other rows of the object go first, so the merge below only meets error records.
            for (id, _, _) in rows.iter().filter(|(_, error, mine)| !error && !mine) {
                self.delete(*id);
            }
            for (id, _, _) in rows.iter().filter(|(_, error, mine)| !error && *mine) {
                let id = *id;
                let existing = self.free_row_for(&key);
                let row = self.rows.get_mut(&id).expect("row listed under its key");
                let pid = row.process.take();
                row.error = true;
                if let Some(p) = pid {
                    self.detach_process(id, &p);
                }
                self.index_free(id);
                // A free error record of the same object may already stand: keep the newer data.
                if let Some(other) = existing {
                    let older = if self.rows[&other].ts > self.rows[&id].ts {
                        id
                    } else {
                        other
                    };
                    self.delete(older);
                }
            }
        }
    }

    /// `event.offline.list`: one page of this application's and connector's rows.
    pub fn list(
        &self,
        target: Target,
        conds: &[Cond],
        order: &[(Field, bool)],
        start: usize,
        page: usize,
    ) -> (Vec<Row>, usize) {
        let in_target = |r: &&Row| r.app == target.app && r.connector == target.connector;
        if conds.is_empty() && matches!(order, [(Field::Id, _)]) {
            let total = self
                .per_target
                .get(&(target.app, target.connector))
                .copied()
                .unwrap_or(0);
            let iter: Box<dyn Iterator<Item = &Row>> = if order[0].1 {
                Box::new(self.rows.values().rev())
            } else {
                Box::new(self.rows.values())
            };
            let rows = iter
                .filter(in_target)
                .skip(start)
                .take(page)
                .cloned()
                .collect();
            return (rows, total);
        }
        let mut hits: Vec<&Row> = self
            .rows
            .values()
            .filter(in_target)
            .filter(|r| self.matches(r, conds))
            .collect();
        let total = hits.len();
        hits.sort_by(|a, b| self.row_cmp(a, b, order));
        (
            hits.into_iter().skip(start).take(page).cloned().collect(),
            total,
        )
    }

    /// The daily job: reserved rows untouched for 30 days are deleted. Returns how many.
    pub fn expire(&mut self, now_s: i64) -> usize {
        let cutoff = now_s - EXPIRY_S;
        let stale: Vec<u64> = self
            .processes
            .values()
            .flat_map(|s| s.iter().copied())
            .filter(|id| self.rows[id].ts < cutoff)
            .collect();
        stale
            .into_iter()
            .filter(|id| self.delete(*id).is_some())
            .count()
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    /// Removes every row of an application (on uninstall or reset of one app).
    pub fn remove_app(&mut self, app: u32) {
        let ids: Vec<u64> = self
            .rows
            .values()
            .filter(|r| r.app == app)
            .map(|r| r.id)
            .collect();
        for id in ids {
            self.delete(id);
        }
    }

    /// JSON of a row as `event.offline.get` sends it (numbers as strings).
    pub fn row_json(&self, row: &Row, with_state: bool) -> Value {
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Bool(false));
        let mut v = json!({
            "ID": row.id.to_string(),
            "TIMESTAMP_X": crate::clock::iso(row.ts),
            "EVENT_NAME": self.events.name(row.event),
            "EVENT_DATA": parse(&row.data),
            "EVENT_ADDITIONAL": parse(self.additionals.name(row.additional)),
            "MESSAGE_ID": String::from_utf8_lossy(&row.message_id),
        });
        if with_state {
            v["PROCESS_ID"] = Value::String(row.process.as_deref().unwrap_or("").to_string());
            v["ERROR"] = Value::String(if row.error { "1" } else { "0" }.to_string());
        }
        v
    }
}

/// md5 of `EVENT_NAME|json(EVENT_DATA)` in lower-case hex: same object and event, same id.
pub fn message_id(event: &str, data_json: &str) -> MsgId {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(event.as_bytes());
    h.update(b"|");
    h.update(data_json.as_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in digest.iter().enumerate() {
        out[i * 2] = HEX[(b >> 4) as usize];
        out[i * 2 + 1] = HEX[(b & 15) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Target = Target {
        app: 1,
        connector: 0,
    };
    const ORDER: &[(Field, bool)] = &[(Field::TimestampX, false)];

    fn pid(n: &str) -> impl FnOnce() -> String + '_ {
        move || n.to_string()
    }

    fn produce(q: &mut Queue, ts: i64, obj: u32) {
        let data = format!("{{\"FIELDS\":{{\"ID\":\"{obj}\"}}}}");
        q.produce(
            ts,
            T,
            "ONCRMDEALUPDATE",
            message_id("ONCRMDEALUPDATE", &data),
            &data,
            "{}",
        );
    }

    #[test]
    fn merge_and_new_row_while_reserved() {
        let mut q = Queue::new();
        for ts in 0..1000 {
            produce(&mut q, ts, 7);
        }
        assert_eq!(q.len(), 1);
        let t = q.take(T, false, &[], ORDER, 50, false, None, pid("p1"));
        assert_eq!(t.rows.len(), 1);
        produce(&mut q, 2000, 7);
        assert_eq!(
            q.len(),
            2,
            "a change during processing makes a new free row"
        );
        let again = q.take(T, false, &[], ORDER, 50, false, Some("p1"), pid("unused"));
        assert_eq!(again.rows.len(), 1);
        assert_eq!(again.rows[0].id, t.rows[0].id);
    }

    #[test]
    fn fail_moves_to_error_queue_and_deletes_others() {
        let mut q = Queue::new();
        produce(&mut q, 1, 1);
        let t = q.take(T, false, &[], ORDER, 50, false, None, pid("p1"));
        produce(&mut q, 2, 1);
        let msg = String::from_utf8(t.rows[0].message_id.to_vec()).unwrap();
        q.fail(T, "p1", std::slice::from_ref(&msg));
        assert_eq!(
            q.len(),
            1,
            "the free duplicate is deleted, the error record stands for the object"
        );
        let e = q.take(T, true, &[], ORDER, 50, false, None, pid("p2"));
        assert_eq!(e.rows.len(), 1);
        assert!(e.rows[0].error);
        // Failing an error record again leaves it reserved.
        q.fail(T, "p2", std::slice::from_ref(&msg));
        assert_eq!(q.reserved_len(), 1);
        assert_eq!(q.clear(T, "p2", None, None), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn rows_drop_leading_holes_and_keep_id_order() {
        let mut q = Queue::new();
        for obj in 0..5 {
            produce(&mut q, obj as i64, obj);
        }
        let taken = q.take(T, false, &[], ORDER, 2, true, None, pid("unused"));
        assert_eq!(
            taken.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(q.rows.base, 3, "leading holes are dropped");
        q.delete(4);
        assert_eq!(
            q.rows.slots.len(),
            3,
            "a hole in the middle stays until the front clears"
        );
        assert_eq!(q.rows().map(|r| r.id).collect::<Vec<_>>(), vec![3, 5]);
        assert!(!q.rows.contains_key(&4) && q.rows.get(&99).is_none() && q.rows.get(&0).is_none());
        produce(&mut q, 9, 77);
        assert_eq!(q.rows().map(|r| r.id).collect::<Vec<_>>(), vec![3, 5, 6]);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn expiry_only_touches_reserved_rows() {
        let mut q = Queue::new();
        produce(&mut q, 0, 1);
        produce(&mut q, 0, 2);
        q.take(T, false, &[], ORDER, 1, false, None, pid("p"));
        assert_eq!(q.expire(EXPIRY_S + 1), 1);
        assert_eq!(q.len(), 1);
    }
}
