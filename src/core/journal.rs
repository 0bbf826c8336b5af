//! The journal of open reservations: for each process id this app holds, who holds it, until
//! when, and which of its messages are still unsettled; plus reserved rows of unknown owner seen
//! by a sweep (with the time first seen, so only those reserved long enough count as stranded).
//!
//! Every reservation is its own record in the store (`<key>/<process id>`), read and rewritten
//! on its own, never from a cached copy: two queue objects, two tabs or two processes sharing a
//! store never overwrite each other's reservations. A small index (`<key>`) lists the process
//! ids and the suspects; it is a hint (the sweep finds reservations whose index line was lost
//! to a concurrent write), never the only copy of anything. `docs/reservations.md` explains the
//! ownership rules built on it.

use super::args::url_encode;
use super::digits::{decimal, parse};
use super::error::{code, B24Error, Result};
use super::joint::{LocalBoxFuture, Lock};
use super::signal::url_decode;
use super::text::split;
use std::cell::RefCell;
use std::rc::Rc;

/// Where the journal is kept. Implementations may be synchronous underneath.
pub trait Store: 'static {
    fn get(&self, key: &str) -> LocalBoxFuture<'static, Result<Option<String>>>;
    fn set(&self, key: &str, value: String) -> LocalBoxFuture<'static, Result<()>>;
    fn delete(&self, key: &str) -> LocalBoxFuture<'static, Result<()>>;
}

/// A store in memory: the default where nothing survives the process anyway.
#[derive(Default)]
pub struct MemoryStore {
    map: RefCell<Vec<(String, String)>>,
}

impl MemoryStore {
    /// How many keys it holds (for tests of what is left behind).
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.borrow().is_empty()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> LocalBoxFuture<'static, Result<Option<String>>> {
        let v = self
            .map
            .borrow()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone());
        Box::pin(async move { Ok(v) })
    }

    fn set(&self, key: &str, value: String) -> LocalBoxFuture<'static, Result<()>> {
        let mut map = self.map.borrow_mut();
        match map.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => map.push((key.to_string(), value)),
        }
        Box::pin(async { Ok(()) })
    }

    fn delete(&self, key: &str) -> LocalBoxFuture<'static, Result<()>> {
        self.map.borrow_mut().retain(|(k, _)| k != key);
        Box::pin(async { Ok(()) })
    }
}

/// One open reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub process_id: String,
    /// The consumer working on it (a queue object's id, or the app's `consumerId`).
    pub owner: String,
    /// Local time (ms) the reserving request was sent: the portal reserved the rows after it.
    pub reserved_at_ms: f64,
    /// Until this local time (ms) nobody but the owner touches the reservation; after it the
    /// reservation counts as stranded.
    pub hold_until_ms: f64,
    /// Written by a consumer holding the queue's exclusive lock: whoever holds the lock next
    /// may take it over at once (its writer has finished or is gone).
    pub locked: bool,
    /// The owner holds a Web Lock named after it for as long as it lives: where locks can be
    /// queried, its absence means the owner is gone.
    pub signed: bool,
    /// Taken from the error queue (`error=1`).
    pub error: bool,
    /// How many times these events were handed to a handler and failed.
    pub attempts: u32,
    /// Rows of this reservation that could not be read and were left in place (reported once).
    pub malformed: u32,
    /// Messages not yet acknowledged or sent to the error queue.
    pub message_ids: Vec<String>,
}

impl Entry {
    /// Nothing of it is left to settle or to keep.
    pub fn done(&self) -> bool {
        self.message_ids.is_empty() && self.malformed == 0
    }

    const HEADER: &'static str = "b24-offline-entry 2";

    /// `owner reserved hold locked signed error attempts malformed`, then the message ids;
    /// text URL-encoded.
    pub fn to_text(&self) -> String {
        let mut out = String::from(Entry::HEADER);
        out.push('\n');
        url_encode(&mut out, &self.owner);
        for n in [
            ms(self.reserved_at_ms),
            ms(self.hold_until_ms),
            self.locked as u64,
            self.signed as u64,
            self.error as u64,
            self.attempts as u64,
            self.malformed as u64,
        ] {
            out.push(' ');
            out.push_str(&decimal(n));
        }
        out.push('\n');
        for (i, m) in self.message_ids.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            url_encode(&mut out, m);
        }
        out
    }

    /// Reads an entry; anything else is `STORE_FAILED` rather than a guess.
    pub fn from_text(process_id: &str, text: &str) -> Result<Entry> {
        let mut lines = split(text, b'\n');
        if lines.next() != Some(Entry::HEADER) {
            return Err(corrupt());
        }
        let fields: Vec<&str> = split(lines.next().unwrap_or(""), b' ').collect();
        let [owner, reserved, hold, locked, signed, error, attempts, malformed] = fields[..] else {
            return Err(corrupt());
        };
        let n = |s: &str| parse(s).ok_or_else(corrupt);
        let flag = |s: &str| match s {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(corrupt()),
        };
        Ok(Entry {
            process_id: process_id.to_string(),
            owner: url_decode(owner),
            reserved_at_ms: n(reserved)? as f64,
            hold_until_ms: n(hold)? as f64,
            locked: flag(locked)?,
            signed: flag(signed)?,
            error: flag(error)?,
            attempts: u32::try_from(n(attempts)?).map_err(|_| corrupt())?,
            malformed: u32::try_from(n(malformed)?).map_err(|_| corrupt())?,
            message_ids: split(lines.next().unwrap_or(""), b',')
                .filter(|m| !m.is_empty())
                .map(url_decode)
                .collect(),
        })
    }
}

/// A time as whole milliseconds (negative and non-finite times are 0).
fn ms(t: f64) -> u64 {
    if t.is_finite() && t > 0.0 {
        t as u64
    } else {
        0
    }
}

fn corrupt() -> B24Error {
    B24Error::new(
        code::STORE_FAILED,
        "the stored journal is not in the expected format",
    )
}

/// The index: process ids with an entry, and reserved rows of unknown owner (process id, first
/// seen, local ms).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Index {
    pub reserved: Vec<String>,
    pub suspects: Vec<(String, f64)>,
}

impl Index {
    const HEADER: &'static str = "b24-offline-journal 2";

    pub fn to_text(&self) -> String {
        let mut out = String::from(Index::HEADER);
        for pid in &self.reserved {
            out.push_str("\nR ");
            url_encode(&mut out, pid);
        }
        for (pid, seen) in &self.suspects {
            out.push_str("\nS ");
            url_encode(&mut out, pid);
            out.push(' ');
            out.push_str(&decimal(ms(*seen)));
        }
        out
    }

    pub fn from_text(text: &str) -> Result<Index> {
        let mut lines = split(text, b'\n');
        if lines.next() != Some(Index::HEADER) {
            return Err(corrupt());
        }
        let mut index = Index::default();
        for line in lines.filter(|l| !l.is_empty()) {
            match split(line, b' ').collect::<Vec<_>>()[..] {
                ["R", pid] => index.reserved.push(url_decode(pid)),
                ["S", pid, seen] => index
                    .suspects
                    .push((url_decode(pid), parse(seen).ok_or_else(corrupt)? as f64)),
                _ => return Err(corrupt()),
            }
        }
        Ok(index)
    }

    fn is_empty(&self) -> bool {
        self.reserved.is_empty() && self.suspects.is_empty()
    }
}

pub struct Journal {
    store: Rc<dyn Store>,
    key: String,
    /// Keeps this object's read-modify-write steps from interleaving with each other.
    lock: Lock,
}

impl Journal {
    pub fn new(store: Rc<dyn Store>, key: String) -> Journal {
        Journal {
            store,
            key,
            lock: Lock::default(),
        }
    }

    fn entry_key(&self, process_id: &str) -> String {
        let mut k = String::with_capacity(self.key.len() + process_id.len() + 1);
        k.push_str(&self.key);
        k.push('/');
        url_encode(&mut k, process_id);
        k
    }

    async fn read_index(&self) -> Result<Index> {
        match self.store.get(&self.key).await? {
            Some(t) if !t.is_empty() => Index::from_text(&t),
            _ => Ok(Index::default()),
        }
    }

    /// Applies `change` to the index as stored now, and writes it back. (`dyn`: one copy of
    /// this future for every change, not one per caller.)
    async fn change_index(&self, change: &mut dyn FnMut(&mut Index)) -> Result<()> {
        let mut index = self.read_index().await?;
        let before = index.clone();
        change(&mut index);
        if index == before {
            return Ok(());
        }
        if index.is_empty() {
            self.store.delete(&self.key).await
        } else {
            self.store.set(&self.key, index.to_text()).await
        }
    }

    async fn read_entry(&self, process_id: &str) -> Result<Option<Entry>> {
        match self.store.get(&self.entry_key(process_id)).await? {
            Some(t) if !t.is_empty() => Entry::from_text(process_id, &t).map(Some),
            _ => Ok(None),
        }
    }

    async fn write(&self, entry: &Entry) -> Result<()> {
        if entry.done() {
            return self.forget(&entry.process_id).await;
        }
        self.store
            .set(&self.entry_key(&entry.process_id), entry.to_text())
            .await?;
        let pid = &entry.process_id;
        self.change_index(&mut |i| {
            i.suspects.retain(|(p, _)| p != pid);
            if !i.reserved.contains(pid) {
                i.reserved.push(pid.clone());
            }
        })
        .await
    }

    /// Deletes the entry of a reservation and takes it out of the index.
    async fn forget(&self, process_id: &str) -> Result<()> {
        self.store.delete(&self.entry_key(process_id)).await?;
        self.change_index(&mut |i| {
            i.reserved.retain(|p| p != process_id);
            i.suspects.retain(|(p, _)| p != process_id);
        })
        .await
    }

    /// The index as stored now.
    pub async fn index(&self) -> Result<Index> {
        let _guard = self.lock.lock().await;
        self.read_index().await
    }

    /// The entry of a reservation as stored now.
    pub async fn entry(&self, process_id: &str) -> Result<Option<Entry>> {
        let _guard = self.lock.lock().await;
        self.read_entry(process_id).await
    }

    /// Writes an entry whole (a new reservation, or one taken over); a done one is removed.
    pub async fn put(&self, entry: &Entry) -> Result<()> {
        let _guard = self.lock.lock().await;
        self.write(entry).await
    }

    /// Changes the stored entry of `process_id` (if there is one) and writes it back; returns it.
    pub async fn update(
        &self,
        process_id: &str,
        change: &mut dyn FnMut(&mut Entry),
    ) -> Result<Option<Entry>> {
        let _guard = self.lock.lock().await;
        let Some(mut entry) = self.read_entry(process_id).await? else {
            return Ok(None);
        };
        change(&mut entry);
        self.write(&entry).await?;
        Ok(Some(entry))
    }

    /// These messages of the reservation are settled (acknowledged or in the error queue).
    pub async fn settle(&self, process_id: &str, message_ids: &[String]) -> Result<()> {
        self.update(process_id, &mut |e| {
            e.message_ids.retain(|m| !message_ids.contains(m))
        })
        .await
        .map(|_| ())
    }

    /// Forgets a reservation (settled, or no longer reserved on the portal).
    pub async fn remove(&self, process_id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        self.forget(process_id).await
    }

    /// One more failed attempt of the reservation's events; returns how many there have been.
    pub async fn failed_attempt(&self, process_id: &str) -> Result<u32> {
        Ok(self
            .update(process_id, &mut |e| e.attempts += 1)
            .await?
            .map(|e| e.attempts)
            .unwrap_or(1))
    }

    /// Replaces the reserved rows of unknown owner with those seen now.
    pub async fn set_suspects(&self, mut suspects: Vec<(String, f64)>) -> Result<()> {
        let _guard = self.lock.lock().await;
        self.change_index(&mut |i| i.suspects = std::mem::take(&mut suspects))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;

    fn entry(pid: &str, owner: &str, msgs: &[&str]) -> Entry {
        Entry {
            process_id: pid.into(),
            owner: owner.into(),
            reserved_at_ms: 5.0,
            hold_until_ms: 600_005.0,
            locked: false,
            signed: false,
            error: false,
            attempts: 0,
            malformed: 0,
            message_ids: msgs.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn text_round_trip_with_odd_characters() {
        let e = Entry {
            owner: "c 1/%".into(),
            message_ids: vec!["a,b".into(), "c%d".into()],
            error: true,
            locked: true,
            signed: true,
            reserved_at_ms: 1_700_000_000_123.0,
            attempts: 2,
            malformed: 1,
            ..entry("p 1", "x", &[])
        };
        assert_eq!(Entry::from_text("p 1", &e.to_text()).unwrap(), e);
        let i = Index {
            reserved: vec!["p 1".into()],
            suspects: vec![("q\n".into(), 42.0)],
        };
        assert_eq!(Index::from_text(&i.to_text()).unwrap(), i);
        for bad in [
            "garbage",
            "b24-offline-entry 2\nowner 1 2 0 0 0 0",
            "b24-offline-entry 2\nowner 1 2 3 0 0 0 0\n",
            "b24-offline-entry 2\nowner x 2 0 0 0 0 0\n",
            "b24-offline-entry 2\nowner 1 2 0 0 0 99999999999 0\n",
        ] {
            assert_eq!(
                Entry::from_text("p", bad).unwrap_err().code,
                code::STORE_FAILED,
                "{bad}"
            );
        }
        assert!(Index::from_text("b24-offline-journal 2\nR").is_err());
        assert!(Index::from_text("b24-offline-journal 1\nR x").is_err());
    }

    #[test]
    fn entries_settle_and_disappear_and_survive_a_new_journal() {
        let store = Rc::new(MemoryStore::default());
        let j = Journal::new(store.clone(), "k".into());
        block_on(j.put(&entry("p1", "a", &["m1", "m2"]))).unwrap();
        block_on(j.put(&entry("p2", "a", &["m3"]))).unwrap();
        block_on(j.settle("p1", &["m1".into()])).unwrap();
        // A reload: a new journal on the same store sees what is still open.
        let again = Journal::new(store.clone(), "k".into());
        let index = block_on(again.index()).unwrap();
        assert_eq!(index.reserved, vec!["p1".to_string(), "p2".to_string()]);
        let p1 = block_on(again.entry("p1")).unwrap().unwrap();
        assert_eq!(p1.message_ids, vec!["m2".to_string()]);
        block_on(again.settle("p1", &["m2".into()])).unwrap();
        block_on(again.remove("p2")).unwrap();
        assert!(
            store.is_empty(),
            "an empty journal leaves nothing in the store"
        );
    }

    /// Two journal objects on one store (two tabs, two processes): each writes only its own
    /// reservations, so neither erases the other's, whatever the interleaving.
    #[test]
    fn two_journals_on_one_store_keep_each_others_entries() {
        let store = Rc::new(MemoryStore::default());
        let a = Journal::new(store.clone(), "k".into());
        let b = Journal::new(store.clone(), "k".into());
        block_on(a.put(&entry("pa", "a", &["m1"]))).unwrap();
        block_on(b.put(&entry("pb", "b", &["m2"]))).unwrap();
        block_on(a.settle("pa", &[])).unwrap();
        block_on(b.failed_attempt("pb")).unwrap();
        block_on(a.set_suspects(vec![("px".into(), 1.0)])).unwrap();
        for j in [&a, &b] {
            assert_eq!(block_on(j.entry("pa")).unwrap().unwrap().owner, "a");
            assert_eq!(block_on(j.entry("pb")).unwrap().unwrap().attempts, 1);
        }
        // Even with the index lost, the entries are still there by key.
        block_on(store.delete("k")).unwrap();
        assert!(block_on(b.entry("pa")).unwrap().is_some());
    }
}
