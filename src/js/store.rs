//! Where the journal is kept in JavaScript: `localStorage` in browsers, memory elsewhere, or an
//! app-supplied `{ get, set, delete }` (each may return a promise; one that does not settle
//! within the client's request timeout fails as `STORE_FAILED`). Queues of the same store and key in one page share
//! one journal object; others (tabs, processes) share the store entry by entry.

use super::convert::field;
use crate::core::error::{code, B24Error, Result};
use crate::core::joint::LocalBoxFuture;
use crate::core::journal::{Journal, MemoryStore, Store};
use crate::core::text::concat;
use js_sys::{Function, Promise};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/src/js/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = callAsync)]
    pub fn call_async(f: &Function, a: &JsValue, b: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = callStore)]
    fn call_store(f: &Function, key: &JsValue, value: &JsValue, timeout_ms: f64) -> Promise;
}

fn failed(what: &str) -> B24Error {
    B24Error::new(
        code::STORE_FAILED,
        concat(&["the journal store failed to ", what]),
    )
}

/// `window.localStorage`; reads and writes are synchronous underneath.
struct LocalStorage(web_sys::Storage);

impl Store for LocalStorage {
    fn get(&self, key: &str) -> LocalBoxFuture<'static, Result<Option<String>>> {
        let r = self.0.get_item(key).map_err(|_| failed("read"));
        Box::pin(async move { r })
    }

    fn set(&self, key: &str, value: String) -> LocalBoxFuture<'static, Result<()>> {
        let r = self
            .0
            .set_item(key, &value)
            .map_err(|_| failed("write (quota?)"));
        Box::pin(async move { r })
    }

    fn delete(&self, key: &str) -> LocalBoxFuture<'static, Result<()>> {
        let r = self.0.remove_item(key).map_err(|_| failed("delete"));
        Box::pin(async move { r })
    }
}

/// The app's own store object.
struct AppStore {
    obj: JsValue,
    /// How long one call may take before it counts as failed (the client's request timeout).
    timeout_ms: f64,
    get: Function,
    set: Function,
    delete: Function,
}

impl AppStore {
    fn call(
        &self,
        f: &Function,
        key: &str,
        value: Option<String>,
        what: &'static str,
    ) -> LocalBoxFuture<'static, Result<JsValue>> {
        let bound = f.bind0(&self.obj);
        let value = value
            .map(|v| JsValue::from_str(&v))
            .unwrap_or(JsValue::UNDEFINED);
        let p = call_store(&bound, &JsValue::from_str(key), &value, self.timeout_ms);
        Box::pin(async move { JsFuture::from(p).await.map_err(|_| failed(what)) })
    }
}

impl Store for AppStore {
    fn get(&self, key: &str) -> LocalBoxFuture<'static, Result<Option<String>>> {
        let f = self.call(&self.get, key, None, "read");
        Box::pin(async move {
            let v = f.await?;
            if v.is_undefined() || v.is_null() {
                return Ok(None);
            }
            v.as_string()
                .map(Some)
                .ok_or_else(|| failed("return a string from get()"))
        })
    }

    fn set(&self, key: &str, value: String) -> LocalBoxFuture<'static, Result<()>> {
        let f = self.call(&self.set, key, Some(value), "write");
        Box::pin(async move { f.await.map(|_| ()) })
    }

    fn delete(&self, key: &str) -> LocalBoxFuture<'static, Result<()>> {
        let f = self.call(&self.delete, key, None, "delete");
        Box::pin(async move { f.await.map(|_| ()) })
    }
}

/// Which store: identity for sharing journals.
#[derive(Clone, PartialEq)]
enum Which {
    Local,
    Memory,
    App(JsValue),
}

thread_local! {
    static MEMORY: Rc<MemoryStore> = Rc::new(MemoryStore::default());
    static JOURNALS: RefCell<Vec<(Which, String, Weak<Journal>)>> = const { RefCell::new(Vec::new()) };
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

fn which(store: Option<&JsValue>) -> Result<Which> {
    let Some(v) = store else {
        return Ok(if local_storage().is_some() {
            Which::Local
        } else {
            Which::Memory
        });
    };
    match v.as_string().as_deref() {
        Some("local") => Ok(Which::Local),
        Some("memory") => Ok(Which::Memory),
        Some(_) => Err(B24Error::invalid(
            "store",
            "must be 'local', 'memory' or an object { get, set, delete }",
        )),
        None => Ok(Which::App(v.clone())),
    }
}

fn backing(which: &Which, timeout_ms: f64) -> Result<Rc<dyn Store>> {
    Ok(match which {
        Which::Local => Rc::new(LocalStorage(local_storage().ok_or_else(|| {
            B24Error::invalid(
                "store",
                "localStorage is not available here; use 'memory' or your own store",
            )
        })?)),
        Which::Memory => MEMORY.with(|m| m.clone()),
        Which::App(obj) => {
            let method = |name: &str| field(obj, name).and_then(|f| f.dyn_into::<Function>().ok());
            match (method("get"), method("set"), method("delete")) {
                (Some(get), Some(set), Some(delete)) => Rc::new(AppStore {
                    obj: obj.clone(),
                    timeout_ms,
                    get,
                    set,
                    delete,
                }),
                _ => {
                    return Err(B24Error::invalid(
                        "store",
                        "a store object needs get(key), set(key, value) and delete(key)",
                    ))
                }
            }
        }
    })
}

/// Checks the `store` option (as given) without opening a journal.
pub fn check(store: Option<&JsValue>) -> Result<()> {
    backing(&which(store)?, 0.0).map(|_| ())
}

/// The journal for `store` (the option as given) under `key`; an app store's calls may take
/// `timeout_ms` each.
pub fn journal(store: Option<JsValue>, key: &str, timeout_ms: f64) -> Result<Rc<Journal>> {
    let which = which(store.as_ref())?;
    let existing = JOURNALS.with(|j| {
        let mut list = j.borrow_mut();
        list.retain(|(_, _, w)| w.strong_count() > 0);
        list.iter()
            .find(|(w, k, _)| *w == which && k == key)
            .and_then(|(_, _, j)| j.upgrade())
    });
    if let Some(j) = existing {
        return Ok(j);
    }
    let journal = Rc::new(Journal::new(backing(&which, timeout_ms)?, key.to_string()));
    JOURNALS.with(|j| {
        j.borrow_mut()
            .push((which, key.to_string(), Rc::downgrade(&journal)))
    });
    Ok(journal)
}
