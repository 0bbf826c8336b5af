//! The journal of open reservations: which process ids this app holds and which of their
//! messages are still unsettled, plus reserved rows of unknown owner seen by a sweep (with the
//! time first seen, so only those reserved long enough count as stranded).
//!
//! It lives in the app's store (localStorage, memory, or the app's own async store) as one
//! small text document, rewritten after every change under an async lock, so a crash or a
//! reload between "reserved" and "acknowledged" loses nothing: the next consumer re-selects
//! every journaled reservation by its process id.

use super::args::url_encode;
use super::error::{code, B24Error, Result};
use futures_util::future::LocalBoxFuture;
use futures_util::lock::Mutex;
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
    /// Messages not yet acknowledged or sent to the error queue.
    pub message_ids: Vec<String>,
    /// Taken from the error queue (`error=1`).
    pub error: bool,
    /// Local time (ms) of the reservation.
    pub at_ms: f64,
    /// How many times these events were handed to a handler and failed.
    pub attempts: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Doc {
    pub entries: Vec<Entry>,
    /// Reserved rows of unknown owner: (process id, first seen, local ms).
    pub suspects: Vec<(String, f64)>,
}

const HEADER: &str = "b24-offline-journal 1";

fn decode(s: &str) -> String {
    super::signal::url_decode(s)
}

impl Doc {
    /// `R pid error at attempts m1,m2` and `S pid first_seen` lines, values URL-encoded.
    pub fn to_text(&self) -> String {
        let mut out = String::from(HEADER);
        for e in &self.entries {
            out.push_str("\nR ");
            url_encode(&mut out, &e.process_id);
            out.push_str(if e.error { " 1 " } else { " 0 " });
            out.push_str(&(e.at_ms.max(0.0) as u64).to_string());
            out.push(' ');
            out.push_str(&e.attempts.to_string());
            out.push(' ');
            for (i, m) in e.message_ids.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                url_encode(&mut out, m);
            }
        }
        for (pid, seen) in &self.suspects {
            out.push_str("\nS ");
            url_encode(&mut out, pid);
            out.push(' ');
            out.push_str(&(seen.max(0.0) as u64).to_string());
        }
        out
    }

    /// Reads a journal; a document that is not one is an error rather than an empty journal.
    pub fn from_text(text: &str) -> Result<Doc> {
        let bad = || {
            B24Error::new(
                code::STORE_FAILED,
                "the stored journal is not in the expected format",
            )
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad());
        }
        let mut doc = Doc::default();
        for line in lines.filter(|l| !l.is_empty()) {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["R", pid, err, at, attempts, msgs] => doc.entries.push(Entry {
                    process_id: decode(pid),
                    error: *err == "1",
                    at_ms: at.parse::<u64>().map_err(|_| bad())? as f64,
                    attempts: attempts.parse().map_err(|_| bad())?,
                    message_ids: msgs
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(decode)
                        .collect(),
                }),
                ["S", pid, seen] => doc
                    .suspects
                    .push((decode(pid), seen.parse::<u64>().map_err(|_| bad())? as f64)),
                _ => return Err(bad()),
            }
        }
        Ok(doc)
    }
}

pub struct Journal {
    store: Rc<dyn Store>,
    key: String,
    doc: RefCell<Option<Doc>>,
    /// Serializes load-modify-write, so two writes never land out of order.
    lock: Mutex<()>,
}

impl Journal {
    pub fn new(store: Rc<dyn Store>, key: String) -> Journal {
        Journal {
            store,
            key,
            doc: RefCell::new(None),
            lock: Mutex::new(()),
        }
    }

    async fn loaded(&self) -> Result<()> {
        if self.doc.borrow().is_some() {
            return Ok(());
        }
        let text = self.store.get(&self.key).await?;
        let doc = match text {
            Some(t) if !t.is_empty() => Doc::from_text(&t)?,
            _ => Doc::default(),
        };
        *self.doc.borrow_mut() = Some(doc);
        Ok(())
    }

    /// The journal as it stands (loaded from the store on first use).
    pub async fn snapshot(&self) -> Result<Doc> {
        let _guard = self.lock.lock().await;
        self.loaded().await?;
        Ok(self.doc.borrow().clone().unwrap_or_default())
    }

    /// Applies `change` and writes the result back.
    pub async fn update(&self, change: impl FnOnce(&mut Doc)) -> Result<()> {
        let _guard = self.lock.lock().await;
        self.loaded().await?;
        let text = {
            let mut doc = self.doc.borrow_mut();
            let doc = doc.get_or_insert_with(Doc::default);
            change(doc);
            doc.entries.retain(|e| !e.message_ids.is_empty());
            (!doc.entries.is_empty() || !doc.suspects.is_empty()).then(|| doc.to_text())
        };
        match text {
            Some(t) => self.store.set(&self.key, t).await,
            None => self.store.delete(&self.key).await,
        }
    }

    pub async fn open(&self, entry: Entry) -> Result<()> {
        self.update(|d| {
            d.suspects.retain(|(p, _)| *p != entry.process_id);
            match d
                .entries
                .iter_mut()
                .find(|e| e.process_id == entry.process_id)
            {
                Some(e) => *e = entry,
                None => d.entries.push(entry),
            }
        })
        .await
    }

    /// These messages of the reservation are settled (acknowledged or in the error queue).
    pub async fn settle(&self, process_id: &str, message_ids: &[String]) -> Result<()> {
        self.update(|d| {
            if let Some(e) = d.entries.iter_mut().find(|e| e.process_id == process_id) {
                e.message_ids.retain(|m| !message_ids.contains(m));
            }
        })
        .await
    }

    pub async fn close(&self, process_id: &str) -> Result<()> {
        self.update(|d| d.entries.retain(|e| e.process_id != process_id))
            .await
    }

    /// One more failed attempt of the reservation's events.
    pub async fn failed_attempt(&self, process_id: &str) -> Result<u32> {
        let mut n = 0;
        self.update(|d| {
            if let Some(e) = d.entries.iter_mut().find(|e| e.process_id == process_id) {
                e.attempts += 1;
                n = e.attempts;
            }
        })
        .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;

    fn entry(pid: &str, msgs: &[&str]) -> Entry {
        Entry {
            process_id: pid.into(),
            message_ids: msgs.iter().map(|m| m.to_string()).collect(),
            error: false,
            at_ms: 5.0,
            attempts: 0,
        }
    }

    #[test]
    fn text_round_trip_with_odd_characters() {
        let doc = Doc {
            entries: vec![Entry {
                process_id: "p 1".into(),
                message_ids: vec!["a,b".into(), "c%d".into()],
                error: true,
                at_ms: 1700000000123.0,
                attempts: 2,
            }],
            suspects: vec![("q".into(), 42.0)],
        };
        let text = doc.to_text();
        assert_eq!(Doc::from_text(&text).unwrap(), doc);
        assert_eq!(
            Doc::from_text("garbage").unwrap_err().code,
            code::STORE_FAILED
        );
        assert_eq!(
            Doc::from_text(&[HEADER, "R x"].join("\n"))
                .unwrap_err()
                .code,
            code::STORE_FAILED
        );
    }

    #[test]
    fn entries_settle_and_disappear_and_survive_a_new_journal() {
        let store: Rc<dyn Store> = Rc::new(MemoryStore::default());
        let j = Journal::new(store.clone(), "k".into());
        block_on(j.open(entry("p1", &["m1", "m2"]))).unwrap();
        block_on(j.open(entry("p2", &["m3"]))).unwrap();
        block_on(j.settle("p1", &["m1".into()])).unwrap();
        // A reload: a new journal on the same store sees what is still open.
        let again = Journal::new(store.clone(), "k".into());
        let doc = block_on(again.snapshot()).unwrap();
        assert_eq!(doc.entries.len(), 2);
        assert_eq!(doc.entries[0].message_ids, vec!["m2".to_string()]);
        block_on(again.settle("p1", &["m2".into()])).unwrap();
        block_on(again.close("p2")).unwrap();
        assert_eq!(
            block_on(store.get("k")).unwrap(),
            None,
            "an empty journal is deleted from the store"
        );
    }
}
