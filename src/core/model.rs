//! What the portal sends, as typed values: read from the portal's shapes (`ID` as `"2"`,
//! `ERROR` as `"0"`) and written in the shapes JavaScript code expects (`id: 2`, `error: false`).
//! `D` is the platform's opaque JSON value: event data is handed to the app untouched.

use super::digits::signed;
use super::platform::Platform;
use super::read::{field_text, field_uint, flag};

/// One queued record.
#[derive(Debug, Clone, PartialEq)]
pub struct OfflineEvent<D> {
    pub id: u64,
    pub message_id: String,
    pub name: String,
    /// ISO 8601 with the portal's offset, as sent.
    pub timestamp: String,
    pub data: D,
    pub additional: D,
    /// Only in `list` items: the reservation holding the row, `None` when free.
    pub process_id: Option<String>,
    /// Only in `list` items: whether the row is in the error queue.
    pub error: Option<bool>,
}

impl<D: Clone> OfflineEvent<D> {
    /// Reads `{ID, MESSAGE_ID, EVENT_NAME, TIMESTAMP_X, EVENT_DATA, EVENT_ADDITIONAL,
    /// PROCESS_ID?, ERROR?}`; `None` when a required field is missing or malformed.
    pub fn read<P: Platform<Data = D>>(v: &D) -> Option<OfflineEvent<D>> {
        Some(OfflineEvent {
            id: field_uint::<P>(v, "ID")?,
            message_id: field_text::<P>(v, "MESSAGE_ID")?,
            name: field_text::<P>(v, "EVENT_NAME")?,
            timestamp: field_text::<P>(v, "TIMESTAMP_X").unwrap_or_default(),
            data: P::field(v, "EVENT_DATA").unwrap_or_else(P::null),
            additional: P::field(v, "EVENT_ADDITIONAL").unwrap_or_else(P::null),
            process_id: field_text::<P>(v, "PROCESS_ID").filter(|p| !p.is_empty()),
            error: P::field(v, "ERROR").map(|e| flag::<P>(&e)),
        })
    }

    /// A list of events, and the items that are not readable events (kept as sent, so that
    /// one bad row costs only itself); `None` if it is not a list at all.
    pub fn read_all<P: Platform<Data = D>>(v: &D) -> Option<Rows<D>> {
        let mut rows = Rows {
            events: Vec::new(),
            malformed: Vec::new(),
        };
        for item in P::items(v)? {
            match OfflineEvent::read::<P>(&item) {
                Some(e) => rows.events.push(e),
                None => rows.malformed.push(item),
            }
        }
        Some(rows)
    }
}

/// Rows of an answer: the readable events and the malformed items.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows<D> {
    pub events: Vec<OfflineEvent<D>>,
    pub malformed: Vec<D>,
}

/// `event.offline.get`'s result.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken<D> {
    pub process_id: Option<String>,
    pub events: Vec<OfflineEvent<D>>,
    /// Rows that came back but are not readable events (still reserved with the others).
    pub malformed: Vec<D>,
}

impl<D: Clone> Taken<D> {
    pub fn read<P: Platform<Data = D>>(v: &D) -> Option<Taken<D>> {
        let rows = match P::field(v, "events") {
            Some(list) => OfflineEvent::read_all::<P>(&list)?,
            None => Rows {
                events: Vec::new(),
                malformed: Vec::new(),
            },
        };
        Some(Taken {
            process_id: field_text::<P>(v, "process_id").filter(|p| !p.is_empty()),
            events: rows.events,
            malformed: rows.malformed,
        })
    }

    /// Nothing came back at all.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.malformed.is_empty()
    }
}

/// One page of `event.offline.list`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage<D> {
    pub events: Vec<OfflineEvent<D>>,
    pub total: u64,
    /// Offset of the next page, `None` on the last one.
    pub next: Option<u64>,
    /// Items of the page that are not readable events.
    pub malformed: Vec<D>,
}

/// One event of a `bind()`: `created` is false when it was bound already.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub event: String,
    pub created: bool,
}

/// One entry of `event.get`.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub event: String,
    pub offline: bool,
    pub connector: Option<String>,
    pub handler: Option<String>,
    pub auth_type: Option<String>,
}

impl Binding {
    pub fn read<P: Platform>(v: &P::Data) -> Option<Binding> {
        let auth_type = P::field(v, "auth_type")
            .and_then(|a| P::text(&a).or_else(|| P::number(&a).map(|n| signed(n as i64))));
        Some(Binding {
            event: field_text::<P>(v, "event")?,
            offline: P::field(v, "offline")
                .map(|o| flag::<P>(&o))
                .unwrap_or(false),
            connector: field_text::<P>(v, "connector_id"),
            handler: field_text::<P>(v, "handler"),
            auth_type,
        })
    }
}

/// What the portal's plan offers for offline events (`feature.get`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `rest_offline_extended`: reservation (`clear=0`), `process_id`, the error queue.
    pub extended: bool,
    /// `rest_auth_connector`: separate queues per `auth_connector`.
    pub connector: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::Fake;
    use serde_json::json;

    #[test]
    fn events_read_portal_shapes_and_write_js_shapes() {
        let raw = json!({"ID": "2", "TIMESTAMP_X": "2024-07-18T12:32:31+02:00", "EVENT_NAME": "ONCRMDEALUPDATE",
            "EVENT_DATA": {"FIELDS": {"ID": "42"}}, "EVENT_ADDITIONAL": false, "MESSAGE_ID": "a".repeat(32),
            "PROCESS_ID": "", "ERROR": "1"});
        let ev = OfflineEvent::read::<Fake>(&raw).unwrap();
        assert_eq!(ev.id, 2);
        assert_eq!(ev.process_id, None);
        assert_eq!(ev.error, Some(true));
        let out = crate::core::testkit::to_value(&ev);
        assert_eq!(out["id"], json!(2));
        assert_eq!(out["messageId"], json!("a".repeat(32)));
        assert_eq!(out["data"]["FIELDS"]["ID"], json!("42"));
        assert!(out.get("processId").is_none());
        let numeric = json!({"ID": 7, "TIMESTAMP_X": "", "EVENT_NAME": "X", "EVENT_DATA": null, "EVENT_ADDITIONAL": null, "MESSAGE_ID": "m"});
        let ev = OfflineEvent::read::<Fake>(&numeric).unwrap();
        assert_eq!((ev.id, ev.error), (7, None));
        assert!(OfflineEvent::read::<Fake>(&json!({"ID": "x"})).is_none());
        assert!(OfflineEvent::read::<Fake>(
            &json!({"ID": "-1", "MESSAGE_ID": "m", "EVENT_NAME": "X"})
        )
        .is_none());
        let rows = OfflineEvent::read_all::<Fake>(
            &json!([numeric, {"ID": 1}, {"ID": "2", "MESSAGE_ID": null, "EVENT_NAME": "X"}]),
        )
        .unwrap();
        assert_eq!(
            (rows.events.len(), rows.malformed.len()),
            (1, 2),
            "one bad row costs only itself"
        );
        assert!(OfflineEvent::read_all::<Fake>(&json!({"ID": 1})).is_none());
    }

    #[test]
    fn bindings() {
        let b: Vec<Binding> = [json!({"event": "ONCRMDEALADD", "connector_id": "c1", "offline": 1}), json!({"event": "ONOFFLINEEVENT", "handler": "https://x/h", "auth_type": "0", "offline": "0"})]
            .iter()
            .map(|v| Binding::read::<Fake>(v).unwrap())
            .collect();
        assert!(b[0].offline && !b[1].offline);
        assert_eq!(b[0].connector.as_deref(), Some("c1"));
        assert_eq!(b[1].auth_type.as_deref(), Some("0"));
    }
}
