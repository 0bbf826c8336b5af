//! What the fleet needs from its store beyond the journal's get/set/delete: a compare-and-swap
//! (a refresh is persisted only over the record it was made from), leases with fencing (one
//! worker per portal, one refresh per portal), and listing by prefix (the portals). The embedded
//! file store and the Redis adapter implement it in the binding; [`MemoryFleetStore`] here is
//! the reference the native tests hold the rules to.

use super::super::error::{code, B24Error, Result};
use super::super::joint::LocalBoxFuture;
use super::super::journal::Store;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// A lease held: by whom, until when (store time), and its fence.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub owner: String,
    pub until_ms: f64,
    /// Grows every time the lease passes to another owner (never for a renewal), so a worker
    /// that lost its lease can tell, and be told, that it is stale.
    pub fence: u64,
}

pub trait FleetStore: Store {
    /// Writes `value` (or deletes, for `None`) only if the key holds `expected` now (`None`:
    /// absent). Whether it did.
    fn swap(
        &self,
        key: &str,
        expected: Option<&str>,
        value: Option<String>,
    ) -> LocalBoxFuture<'static, Result<bool>>;
    /// Takes the lease `name` for `owner` for `ttl_ms`, or renews it if `owner` holds it: its
    /// fence when held now, `None` when another owner holds it. `now_ms` is the caller's wall
    /// clock (stores with their own clock, like Redis, use theirs).
    fn lease(
        &self,
        name: &str,
        owner: &str,
        ttl_ms: f64,
        now_ms: f64,
    ) -> LocalBoxFuture<'static, Result<Option<u64>>>;
    /// Writes `value` at `key` (deletes, for `None`) only if the lease `name` has not passed to
    /// another owner since it was handed out with `fence` (its fence is still `fence`, held or
    /// run out): a worker that lost a portal cannot write its journal, however late its write
    /// arrives. Whether it did.
    fn fenced(
        &self,
        name: &str,
        fence: u64,
        key: &str,
        value: Option<String>,
    ) -> LocalBoxFuture<'static, Result<bool>>;
    /// Gives the lease up if `owner` holds it.
    fn release(&self, name: &str, owner: &str) -> LocalBoxFuture<'static, Result<()>>;
    /// The keys that start with `prefix`, sorted.
    fn keys(&self, prefix: &str) -> LocalBoxFuture<'static, Result<Vec<String>>>;
}

/// Everything in memory: one process, nothing survives it (tests, and a fleet that needs no
/// persistence).
#[derive(Default)]
pub struct MemoryFleetStore {
    map: RefCell<BTreeMap<String, String>>,
    leases: RefCell<BTreeMap<String, Lease>>,
    fences: RefCell<BTreeMap<String, u64>>,
}

impl MemoryFleetStore {
    /// The lease `name` as held now (tests).
    pub fn holder(&self, name: &str, now_ms: f64) -> Option<Lease> {
        self.leases
            .borrow()
            .get(name)
            .filter(|l| l.until_ms > now_ms)
            .cloned()
    }
}

fn done<T: 'static>(v: T) -> LocalBoxFuture<'static, Result<T>> {
    Box::pin(async move { Ok(v) })
}

impl Store for MemoryFleetStore {
    fn get(&self, key: &str) -> LocalBoxFuture<'static, Result<Option<String>>> {
        done(self.map.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: String) -> LocalBoxFuture<'static, Result<()>> {
        self.map.borrow_mut().insert(key.to_string(), value);
        done(())
    }

    fn delete(&self, key: &str) -> LocalBoxFuture<'static, Result<()>> {
        self.map.borrow_mut().remove(key);
        done(())
    }
}

impl FleetStore for MemoryFleetStore {
    fn swap(
        &self,
        key: &str,
        expected: Option<&str>,
        value: Option<String>,
    ) -> LocalBoxFuture<'static, Result<bool>> {
        let mut map = self.map.borrow_mut();
        if map.get(key).map(String::as_str) != expected {
            return done(false);
        }
        match value {
            Some(v) => map.insert(key.to_string(), v),
            None => map.remove(key),
        };
        done(true)
    }

    fn lease(
        &self,
        name: &str,
        owner: &str,
        ttl_ms: f64,
        now_ms: f64,
    ) -> LocalBoxFuture<'static, Result<Option<u64>>> {
        let mut leases = self.leases.borrow_mut();
        let held = leases.get(name).filter(|l| l.until_ms > now_ms).cloned();
        let fence = match held {
            Some(l) if l.owner != owner => return done(None),
            Some(l) => l.fence,
            None => {
                let mut fences = self.fences.borrow_mut();
                let f = fences.entry(name.to_string()).or_insert(0);
                *f += 1;
                *f
            }
        };
        leases.insert(
            name.to_string(),
            Lease {
                owner: owner.to_string(),
                until_ms: now_ms + ttl_ms,
                fence,
            },
        );
        done(Some(fence))
    }

    fn fenced(
        &self,
        name: &str,
        fence: u64,
        key: &str,
        value: Option<String>,
    ) -> LocalBoxFuture<'static, Result<bool>> {
        if self.fences.borrow().get(name) != Some(&fence) {
            return done(false);
        }
        let mut map = self.map.borrow_mut();
        match value {
            Some(v) => map.insert(key.to_string(), v),
            None => map.remove(key),
        };
        done(true)
    }

    fn release(&self, name: &str, owner: &str) -> LocalBoxFuture<'static, Result<()>> {
        let mut leases = self.leases.borrow_mut();
        if leases.get(name).is_some_and(|l| l.owner == owner) {
            leases.remove(name);
        }
        done(())
    }

    fn keys(&self, prefix: &str) -> LocalBoxFuture<'static, Result<Vec<String>>> {
        done(
            self.map
                .borrow()
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect(),
        )
    }
}

/// A portal's journal as its lease holder writes it: reads pass through, every write is fenced
/// by the lease it was taken under, and a refused write fails with `LEASE_LOST`.
pub struct Fenced {
    pub store: Rc<dyn FleetStore>,
    pub lease: String,
    pub fence: u64,
}

impl Fenced {
    fn write(&self, key: &str, value: Option<String>) -> LocalBoxFuture<'static, Result<()>> {
        let f = self.store.fenced(&self.lease, self.fence, key, value);
        Box::pin(async move {
            if f.await? {
                Ok(())
            } else {
                Err(B24Error::new(
                    code::LEASE_LOST,
                    "another worker holds the portal now: this worker's journal write was refused",
                ))
            }
        })
    }
}

impl Store for Fenced {
    fn get(&self, key: &str) -> LocalBoxFuture<'static, Result<Option<String>>> {
        self.store.get(key)
    }

    fn set(&self, key: &str, value: String) -> LocalBoxFuture<'static, Result<()>> {
        self.write(key, Some(value))
    }

    fn delete(&self, key: &str) -> LocalBoxFuture<'static, Result<()>> {
        self.write(key, None)
    }
}

/// A memory store whose `swap` and `lease` a test can intercept (a store write that fails, a
/// concurrent writer, a lease that passed to another): a hook answers in the store's place, or
/// `None` to let the store act.
#[cfg(all(test, not(target_arch = "wasm32")))]
#[derive(Default)]
pub struct Hooked {
    pub inner: Rc<MemoryFleetStore>,
    #[allow(clippy::type_complexity)]
    pub on_swap: RefCell<
        Option<Box<dyn FnMut(&MemoryFleetStore, &str, &Option<String>) -> Option<Result<bool>>>>,
    >,
    #[allow(clippy::type_complexity)]
    pub on_lease: RefCell<Option<Box<dyn FnMut(&str) -> Option<Option<u64>>>>>,
}

#[cfg(all(test, not(target_arch = "wasm32")))]
impl Store for Hooked {
    fn get(&self, key: &str) -> LocalBoxFuture<'static, Result<Option<String>>> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: String) -> LocalBoxFuture<'static, Result<()>> {
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> LocalBoxFuture<'static, Result<()>> {
        self.inner.delete(key)
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
impl FleetStore for Hooked {
    fn swap(
        &self,
        key: &str,
        expected: Option<&str>,
        value: Option<String>,
    ) -> LocalBoxFuture<'static, Result<bool>> {
        if let Some(hook) = self.on_swap.borrow_mut().as_mut() {
            if let Some(answer) = hook(&self.inner, key, &value) {
                return Box::pin(async move { answer });
            }
        }
        self.inner.swap(key, expected, value)
    }
    fn lease(
        &self,
        name: &str,
        owner: &str,
        ttl_ms: f64,
        now_ms: f64,
    ) -> LocalBoxFuture<'static, Result<Option<u64>>> {
        if let Some(hook) = self.on_lease.borrow_mut().as_mut() {
            if let Some(answer) = hook(name) {
                return done(answer);
            }
        }
        self.inner.lease(name, owner, ttl_ms, now_ms)
    }
    fn fenced(
        &self,
        name: &str,
        fence: u64,
        key: &str,
        value: Option<String>,
    ) -> LocalBoxFuture<'static, Result<bool>> {
        self.inner.fenced(name, fence, key, value)
    }
    fn release(&self, name: &str, owner: &str) -> LocalBoxFuture<'static, Result<()>> {
        self.inner.release(name, owner)
    }
    fn keys(&self, prefix: &str) -> LocalBoxFuture<'static, Result<Vec<String>>> {
        self.inner.keys(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_executor::block_on;

    #[test]
    fn swap_writes_only_over_what_was_read() {
        let s = MemoryFleetStore::default();
        assert!(block_on(s.swap("k", None, Some("a".into()))).unwrap());
        assert!(!block_on(s.swap("k", None, Some("b".into()))).unwrap());
        assert!(!block_on(s.swap("k", Some("x"), Some("b".into()))).unwrap());
        assert!(block_on(s.swap("k", Some("a"), Some("b".into()))).unwrap());
        assert_eq!(block_on(s.get("k")).unwrap().as_deref(), Some("b"));
        assert!(block_on(s.swap("k", Some("b"), None)).unwrap());
        assert_eq!(block_on(s.get("k")).unwrap(), None);
    }

    #[test]
    fn a_lease_has_one_holder_and_a_new_fence_per_holder() {
        let s = MemoryFleetStore::default();
        let f1 = block_on(s.lease("p", "w1", 1000.0, 0.0)).unwrap().unwrap();
        assert_eq!(block_on(s.lease("p", "w2", 1000.0, 500.0)).unwrap(), None);
        // Renewed by its holder: same fence, longer life.
        assert_eq!(
            block_on(s.lease("p", "w1", 1000.0, 900.0)).unwrap(),
            Some(f1)
        );
        assert_eq!(block_on(s.lease("p", "w2", 1000.0, 1500.0)).unwrap(), None);
        // Expired: the next holder gets a higher fence; the old one cannot renew it.
        let f2 = block_on(s.lease("p", "w2", 1000.0, 2000.0))
            .unwrap()
            .unwrap();
        assert!(f2 > f1);
        assert_eq!(block_on(s.lease("p", "w1", 1000.0, 2100.0)).unwrap(), None);
        // Released only by its holder.
        block_on(s.release("p", "w1")).unwrap();
        assert_eq!(s.holder("p", 2200.0).unwrap().owner, "w2");
        block_on(s.release("p", "w2")).unwrap();
        assert_eq!(s.holder("p", 2200.0), None);
        let f3 = block_on(s.lease("p", "w1", 1000.0, 2300.0))
            .unwrap()
            .unwrap();
        assert!(f3 > f2);
    }

    #[test]
    fn a_fenced_write_lands_only_under_the_fence_it_was_taken_with() {
        let s = Rc::new(MemoryFleetStore::default());
        let journal = |fence| Fenced {
            store: s.clone(),
            lease: "p".into(),
            fence,
        };
        // No lease ever taken: nothing is written.
        assert!(block_on(journal(1).set("j", "x".into())).is_err());
        let f1 = block_on(s.lease("p", "w1", 1000.0, 0.0)).unwrap().unwrap();
        block_on(journal(f1).set("j", "a".into())).unwrap();
        // Run out but not taken by anyone: still this holder's (nobody else wrote meanwhile).
        block_on(journal(f1).set("j", "b".into())).unwrap();
        let f2 = block_on(s.lease("p", "w2", 1000.0, 5000.0))
            .unwrap()
            .unwrap();
        let late = block_on(journal(f1).set("j", "stale".into())).unwrap_err();
        assert_eq!(late.code, code::LEASE_LOST);
        assert!(block_on(journal(f1).delete("j")).is_err());
        assert_eq!(block_on(s.get("j")).unwrap().as_deref(), Some("b"));
        block_on(journal(f2).delete("j")).unwrap();
        assert_eq!(block_on(journal(f1).get("j")).unwrap(), None);
    }
}
