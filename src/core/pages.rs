//! Every row of any `*.list` method, page by page (`fetchList`, `callList`).
//!
//! The portal pages lists by offset (`start`, 50 rows a page), and counts the whole list for
//! every page: slow on large lists, and rows deleted between two pages shift the rest, so a
//! row can be skipped. Where the order allows it (no `order`, or ascending by the id key), the
//! pager pages by key instead, as the portal's own documentation advises for large volumes:
//! `order: { ID: 'ASC' }`, `filter: { '>ID': last id seen }` and `start: -1` (no count). With
//! any other order it pages by offset, following the portal's `next`.

use super::args::{Arg, Body};
use super::envelope::{shape, Reply};
use super::error::{B24Error, Result};
use super::platform::Platform;
use super::read::uint;
use super::text::{concat, trim};
use super::validate;

/// Rows a list method answers at most per page (every method of the REST API).
pub const PAGE: usize = 50;

#[derive(Debug, Clone)]
pub struct ListPager<D> {
    method: String,
    /// The app's parameters, sent as they are (`start`, and in keyset paging `filter` and
    /// `order`, set over them).
    params: Option<D>,
    /// The app's filter, read for keyset paging (its entries, `>ID` set over them).
    filter: Vec<(String, D)>,
    id_key: String,
    /// Where the rows are in the result (`tasks` for `tasks.task.list`); the result itself
    /// when absent.
    result_key: Option<String>,
    /// Pages by key (`>ID`), else by offset.
    by_key: bool,
}

/// The parts of the app's parameters the pager looks into.
pub struct ListParams<D> {
    pub params: Option<D>,
    pub filter: Option<D>,
    pub order: Option<D>,
    /// The app set `start` (the pager sets it).
    pub start: bool,
}

/// Whether an order allows keyset paging: none, or ascending by the id key alone.
fn keyset_order<P: Platform>(order: Option<&P::Data>, id_key: &str) -> bool {
    let Some(order) = order else { return true };
    match P::entries(order) {
        Some(m) => {
            m.len() == 1
                && trim(&m[0].0).eq_ignore_ascii_case(id_key)
                && P::text(&m[0].1).is_some_and(|d| d.eq_ignore_ascii_case("asc"))
        }
        None => false,
    }
}

impl<D: Clone> ListPager<D> {
    /// A pager over `method` with the app's parameters. `id_key` is the rows' id field
    /// (default `ID`; `id` for `tasks.task.list`), `result_key` where the rows are in the
    /// result, for methods that wrap them.
    pub fn new<P: Platform<Data = D>>(
        method: &str,
        given: ListParams<D>,
        id_key: Option<String>,
        result_key: Option<String>,
    ) -> Result<ListPager<D>> {
        validate::method_name(method)?;
        let id_key = id_key.unwrap_or_else(|| "ID".into());
        if id_key.is_empty() || result_key.as_deref().is_some_and(str::is_empty) {
            return Err(B24Error::invalid("idKey/resultKey", "must not be empty"));
        }
        if given.start {
            return Err(B24Error::invalid("start", "is the pager's to set"));
        }
        let filter = match &given.filter {
            None => Vec::new(),
            Some(f) => {
                P::entries(f).ok_or_else(|| B24Error::invalid("filter", "must be an object"))?
            }
        };
        let by_key = keyset_order::<P>(given.order.as_ref(), &id_key);
        Ok(ListPager {
            method: method.to_string(),
            params: given.params,
            filter,
            id_key,
            result_key,
            by_key,
        })
    }

    /// Whether it pages by key (rather than by offset).
    pub fn by_key(&self) -> bool {
        self.by_key
    }

    /// The request for the page at `at` (0 for the first): after the id `at` (by key), or from
    /// the offset `at`. The position is all the state there is, so the caller holds it (the
    /// JavaScript iterator, between its `next()` calls) and sends the request itself (through
    /// the one call path of `call`/`callPage`).
    pub fn request<P: Platform<Data = D>>(&self, at: u64) -> Body<D> {
        let mut body = Body::of(self.params.clone());
        if !self.by_key {
            body.set("start", Arg::Int(at as i64));
            return body;
        }
        // The app's filter with `>ID` set to the last id seen (an app's own `>ID` stays the
        // floor).
        let gt = concat(&[">", &self.id_key]);
        let mut floor = at;
        let mut filter: Vec<(String, Arg<D>)> = Vec::with_capacity(self.filter.len() + 1);
        for (k, v) in &self.filter {
            if trim(k).eq_ignore_ascii_case(&gt) {
                floor = floor.max(uint::<P>(v).unwrap_or(0));
            } else {
                filter.push((k.clone(), Arg::Data(v.clone())));
            }
        }
        filter.push((gt, Arg::Int(floor as i64)));
        body.set("filter", Arg::Map(filter));
        body.set(
            "order",
            Arg::Map(vec![(self.id_key.clone(), Arg::Str("ASC".into()))]),
        );
        body.set("start", Arg::Int(-1));
        body
    }

    /// The rows of the answer to `request(at)`, and where the next page is (`None` after the
    /// last).
    pub fn read<P: Platform<Data = D>>(
        &self,
        at: u64,
        reply: Reply<D>,
    ) -> Result<(Vec<D>, Option<u64>)> {
        let next = reply.next;
        let result = reply.into_result()?;
        let rows = match &self.result_key {
            Some(k) => P::field(&result, k),
            None => Some(result),
        }
        .and_then(|r| P::items(&r))
        .ok_or_else(|| {
            shape("no list of rows in the result (resultKey?)").with_method(&self.method)
        })?;
        let next = if self.by_key {
            let mut last = at;
            for row in &rows {
                let id = P::field(row, &self.id_key)
                    .and_then(|v| uint::<P>(&v))
                    .ok_or_else(|| shape("a row without its idKey").with_method(&self.method))?;
                last = last.max(id);
            }
            // A short page is the last; a page that does not move forward would be read
            // forever.
            (rows.len() == PAGE && last > at).then_some(last)
        } else {
            next.filter(|n| *n > at && !rows.is_empty())
        };
        Ok((rows, next))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::core::client::CallOptions;
    use crate::core::retry::Idempotency;
    use crate::core::testkit::{block_on, client, Fake};
    use crate::core::testworld::{Net, World};
    use serde_json::{json, Value};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A portal with `n` deals, and every `crm.deal.list` body it received.
    fn portal(n: u32, net: fn(&str) -> Net) -> (World, Rc<RefCell<Vec<Value>>>) {
        let seen: Rc<RefCell<Vec<Value>>> = Rc::default();
        let log = seen.clone();
        let world = World::new(Rc::new(RefCell::new(move |method: &str, body: &Value| {
            if method == "crm.deal.list" {
                log.borrow_mut().push(body.clone());
            }
            net(method)
        })));
        let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
        for i in 1..=n {
            let body = Body::new().with(
                "fields",
                Arg::Map(vec![(
                    "TITLE".into(),
                    Arg::Str(concat(&["deal ", &decimal(i as u64)])),
                )]),
            );
            block_on(c.call(
                "crm.deal.add",
                &body,
                &CallOptions::new(Idempotency::Unsafe),
            ))
            .unwrap();
        }
        (world, seen)
    }

    fn pass(_: &str) -> Net {
        Net::Pass
    }

    /// The app's parameters as the binding reads them.
    fn given(params: Option<Value>) -> ListParams<Value> {
        let part = |k: &str| params.as_ref().and_then(|p| p.get(k)).cloned();
        ListParams {
            filter: part("filter"),
            order: part("order"),
            start: params.as_ref().is_some_and(|p| p.get("start").is_some()),
            params,
        }
    }

    /// One page, as `fetchList` gets it: the request, through the client, and its rows.
    fn page(
        p: &ListPager<Value>,
        at: u64,
        c: &crate::core::client::Client<Fake>,
    ) -> crate::core::error::Result<(Vec<Value>, Option<u64>)> {
        let opts = CallOptions::new(Idempotency::Safe);
        let reply = block_on(c.call("crm.deal.list", &p.request::<Fake>(at), &opts))?;
        p.read::<Fake>(at, reply)
    }

    /// Every page of a pager, as the ids of their rows.
    fn read_all(world: &World, p: ListPager<Value>) -> crate::core::error::Result<Vec<Vec<u64>>> {
        let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
        let mut pages = Vec::new();
        let mut at = Some(0);
        while let Some(from) = at {
            let (rows, next) = page(&p, from, &c)?;
            pages.push(ids(&rows));
            at = next;
        }
        Ok(pages)
    }

    fn ids(rows: &[Value]) -> Vec<u64> {
        rows.iter()
            .map(|r| r["ID"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    use crate::core::digits::decimal;

    #[test]
    fn pages_by_id_without_counting_and_stops_at_a_short_page() {
        let (world, seen) = portal(120, pass);
        let p = ListPager::new::<Fake>(
            "crm.deal.list",
            given(Some(json!({ "select": ["ID", "TITLE"] }))),
            None,
            None,
        )
        .unwrap();
        assert!(p.by_key());
        let pages = read_all(&world, p).unwrap();
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![50, 50, 20]
        );
        let all: Vec<u64> = pages.concat();
        assert_eq!(all, (1..=120).collect::<Vec<_>>());
        let bodies = seen.borrow();
        assert_eq!(bodies.len(), 3, "three requests, no empty last page");
        assert_eq!(bodies[1]["start"], json!(-1));
        assert_eq!(bodies[1]["order"], json!({ "ID": "ASC" }));
        assert_eq!(bodies[1]["filter"], json!({ ">ID": 50 }));
        assert_eq!(bodies[2]["select"], json!(["ID", "TITLE"]));
    }

    #[test]
    fn rows_deleted_between_pages_do_not_hide_others() {
        let (world, _) = portal(120, pass);
        let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
        let p = ListPager::new::<Fake>("crm.deal.list", given(None), None, None).unwrap();
        let (first, mut at) = page(&p, 0, &c).unwrap();
        assert_eq!((first.len(), at), (50, Some(50)));
        for id in 10..=30 {
            let body = Body::new().with("id", Arg::Int(id));
            block_on(c.call(
                "crm.deal.delete",
                &body,
                &CallOptions::new(Idempotency::Unsafe),
            ))
            .unwrap();
        }
        let mut rest = Vec::new();
        while let Some(from) = at {
            let (rows, next) = page(&p, from, &c).unwrap();
            rest.extend(ids(&rows));
            at = next;
        }
        assert_eq!(
            rest,
            (51..=120).collect::<Vec<_>>(),
            "nothing skipped after the deletions"
        );
    }

    #[test]
    fn the_apps_filter_and_floor_stay_and_another_order_pages_by_offset() {
        let (world, seen) = portal(120, pass);
        let p = ListPager::new::<Fake>(
            "crm.deal.list",
            given(Some(json!({ "filter": { ">ID": 100 } }))),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            read_all(&world, p).unwrap().concat(),
            (101..=120).collect::<Vec<_>>()
        );
        let p = ListPager::new::<Fake>(
            "crm.deal.list",
            given(Some(json!({ "order": { "TITLE": "DESC" } }))),
            None,
            None,
        )
        .unwrap();
        assert!(!p.by_key());
        let pages = read_all(&world, p).unwrap();
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![50, 50, 20]
        );
        let mut all = pages.concat();
        all.sort();
        assert_eq!(all, (1..=120).collect::<Vec<_>>());
        let bodies = seen.borrow();
        assert_eq!(bodies.last().unwrap()["start"], json!(100));
        assert_eq!(bodies.last().unwrap()["order"], json!({ "TITLE": "DESC" }));
    }

    #[test]
    fn bad_arguments_are_refused_before_any_request() {
        for (params, id_key, result_key, field) in [
            (Some(json!({ "start": 50 })), None, None, "start"),
            (Some(json!({ "filter": "ID>1" })), None, None, "filter"),
            (None, Some(""), None, "idKey"),
            (None, None, Some(""), "idKey/resultKey"),
        ] {
            let e = ListPager::new::<Fake>(
                "crm.deal.list",
                given(params),
                id_key.map(str::to_string),
                result_key.map(str::to_string),
            )
            .unwrap_err();
            assert!(
                e.description.starts_with(field),
                "{field}: {}",
                e.description
            );
        }
        assert!(ListPager::new::<Fake>("crm deal list", given(None), None, None).is_err());
    }

    fn not_a_list(method: &str) -> Net {
        if method == "crm.deal.list" {
            Net::Alter(|v| v["result"] = json!({ "items": v["result"].clone() }))
        } else {
            Net::Pass
        }
    }

    fn same_ids(method: &str) -> Net {
        if method == "crm.deal.list" {
            Net::Alter(|v| {
                for row in v["result"].as_array_mut().unwrap() {
                    row["ID"] = json!("5");
                }
            })
        } else {
            Net::Pass
        }
    }

    fn no_ids(method: &str) -> Net {
        if method == "crm.deal.list" {
            Net::Alter(|v| {
                for row in v["result"].as_array_mut().unwrap() {
                    row.as_object_mut().unwrap().remove("ID");
                }
            })
        } else {
            Net::Pass
        }
    }

    #[test]
    fn hostile_answers_end_in_a_typed_error_or_the_last_page_never_a_loop() {
        // Rows wrapped in an object: found with resultKey, a clear error without it.
        let (world, _) = portal(60, not_a_list);
        let e = read_all(
            &world,
            ListPager::new::<Fake>("crm.deal.list", given(None), None, None).unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            (e.code.as_ref(), e.method.as_str()),
            ("BAD_RESPONSE", "crm.deal.list")
        );
        let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
        let p = ListPager::new::<Fake>("crm.deal.list", given(None), None, Some("items".into()))
            .unwrap();
        assert_eq!(page(&p, 0, &c).unwrap().0.len(), 50);
        // The same ids again and again: two pages, then done.
        let (world, seen) = portal(120, same_ids);
        let pages = read_all(
            &world,
            ListPager::new::<Fake>("crm.deal.list", given(None), None, None).unwrap(),
        )
        .unwrap();
        assert_eq!(pages.len(), 2);
        assert_eq!(seen.borrow().len(), 2);
        // Rows without their id cannot be paged by it.
        let (world, _) = portal(10, no_ids);
        let e = read_all(
            &world,
            ListPager::new::<Fake>("crm.deal.list", given(None), None, None).unwrap(),
        )
        .unwrap_err();
        assert!(
            e.description.contains("without its idKey"),
            "{}",
            e.description
        );
    }
}
