//! Step 3 of the offline-event workflow: the current state of the objects a batch's events
//! name, fetched before the handler sees the batch (`consume({ objects })`).
//!
//! The queue keeps one row per changed object with only its id (`{FIELDS: {ID}}`), so the app
//! must read every object again; one `crm.deal.get` per event would spend 50 requests of the
//! rate limit on a batch of 50. Here the gets of a batch go out as commands of one `batch`
//! request (50 a request, the portal's maximum), one per distinct object, and each event gets
//! its object back: found, deleted (the event is a deletion: nothing to fetch), gone (the
//! portal no longer has it) or failed (the portal refused that one get). Only a failure of the
//! whole request is an error. The rules per event are in `docs/objects.md`.

use super::args::Tree;
use super::batch::{self, Command};
use super::client::Client;
use super::digits::decimal;
use super::envelope::shape;
use super::error::{B24Error, Result};
use super::model::OfflineEvent;
use super::platform::Platform;
use super::read::uint;
use super::text::{concat, split, trim};
use super::validate;

/// How the object of one kind of event is fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub method: String,
    /// Where the object's id is in the event's data, dotted (`FIELDS.ID`).
    pub id: String,
    /// The method's parameter that takes the id (`id`, `taskId`, `ID`).
    pub param: String,
    /// Where the object is in the method's result (`task` for `tasks.task.get`); the result
    /// itself when absent. A list there (as `user.get` answers) stands for its first row.
    pub result: Option<String>,
    /// More parameters for every get (`select`).
    pub params: Vec<(String, Tree)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    Fetch(Source),
    /// The event is a deletion: its object is gone by definition, nothing is fetched.
    Deleted,
    /// The app's `false`: no object for this event.
    Skip,
}

/// What an event's object turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Found<D> {
    Object(D),
    Deleted,
    /// The portal no longer has it (not found, or an empty answer).
    Gone,
    /// The portal refused this one get, or the event has no readable id.
    Failed(B24Error),
}

impl<D> Found<D> {
    /// The state as JavaScript sees it (`objectState`).
    pub fn state(&self) -> &'static str {
        match self {
            Found::Object(_) => "found",
            Found::Deleted => "deleted",
            Found::Gone => "gone",
            Found::Failed(_) => "failed",
        }
    }
}

/// The rules by event name: the app's, then the built-in ones (the first match wins).
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    rules: Vec<(String, Rule)>,
}

/// The most rules an app may give (a mistake, not a mapping, beyond that).
const MAX_RULES: usize = 500;

fn fetch(method: &str, id: &str, param: &str, result: Option<&str>) -> Rule {
    Rule::Fetch(Source {
        method: method.to_string(),
        id: id.to_string(),
        param: param.to_string(),
        result: result.map(str::to_string),
        params: Vec::new(),
    })
}

/// The common event families: CRM deals, leads, contacts and companies, tasks, new users.
fn built_in(rules: &mut Vec<(String, Rule)>) {
    for entity in ["deal", "lead", "contact", "company"] {
        let name = concat(&["ONCRM", &entity.to_ascii_uppercase()]);
        let get = fetch(&concat(&["crm.", entity, ".get"]), "FIELDS.ID", "id", None);
        rules.push((concat(&[&name, "ADD"]), get.clone()));
        rules.push((concat(&[&name, "UPDATE"]), get));
        rules.push((concat(&[&name, "DELETE"]), Rule::Deleted));
    }
    let task = fetch("tasks.task.get", "FIELDS_AFTER.ID", "taskId", Some("task"));
    rules.push(("ONTASKADD".into(), task.clone()));
    rules.push(("ONTASKUPDATE".into(), task));
    rules.push(("ONTASKDELETE".into(), Rule::Deleted));
    rules.push(("ONUSERADD".into(), fetch("user.get", "ID", "ID", None)));
}

/// A string field of a rule: `Some(None)` when absent, `None` when not a usable string.
fn text_of<'t>(spec: &'t Tree, key: &str) -> Option<Option<&'t str>> {
    match spec.get(key) {
        None | Some(Tree::Null) => Some(None),
        Some(Tree::Str(s)) if !s.is_empty() && s.len() <= 128 => Some(Some(s)),
        Some(_) => None,
    }
}

/// One rule of the app: `false`, `{ deleted: true }`, or `{ method, id?, param?, result?,
/// params? }` (`None`: none of these).
fn rule(spec: &Tree) -> Option<Rule> {
    if *spec == Tree::Bool(false) {
        return Some(Rule::Skip);
    }
    if let Some(deleted) = spec.get("deleted") {
        let alone = matches!(spec, Tree::Map(m) if m.len() == 1);
        return (alone && *deleted == Tree::Bool(true)).then_some(Rule::Deleted);
    }
    let method = text_of(spec, "method")??;
    let id = text_of(spec, "id")?.unwrap_or("FIELDS.ID");
    let param = text_of(spec, "param")?.unwrap_or("id");
    let params = match spec.get("params") {
        None | Some(Tree::Null) => Vec::new(),
        Some(Tree::Map(m)) if !m.iter().any(|(k, _)| k == param) => m.clone(),
        Some(_) => return None,
    };
    if validate::method_name(method).is_err() || split(id, b'.').any(str::is_empty) {
        return None;
    }
    let mut rule = fetch(method, id, param, text_of(spec, "result")?);
    if let Rule::Fetch(src) = &mut rule {
        src.params = params;
    }
    Some(rule)
}

impl Objects {
    /// The `objects` option: `true` (the built-in rules), or an object of rules by event name
    /// over them. `None` for `false` or absent.
    pub fn resolve(given: Option<&Tree>) -> Result<Option<Objects>> {
        let mut rules = Vec::new();
        match given {
            None | Some(Tree::Null) | Some(Tree::Bool(false)) => return Ok(None),
            Some(Tree::Bool(true)) => {}
            Some(Tree::Map(m)) if m.len() <= MAX_RULES => {
                for (name, spec) in m {
                    let rule = rule(spec).ok_or_else(|| {
                        B24Error::invalid(
                            &concat(&["objects.", name]),
                            "must be false, { deleted: true } or { method, id?, param?, result?, params? } (a REST method; id a dotted path such as FIELDS.ID; params an object without the id's parameter)",
                        )
                    })?;
                    rules.push((trim(name).to_string(), rule));
                }
            }
            Some(_) => {
                return Err(B24Error::invalid(
                    "objects",
                    "must be true, false or an object of at most 500 rules by event name",
                ))
            }
        }
        built_in(&mut rules);
        Ok(Some(Objects { rules }))
    }

    /// The rule for an event name (the app's first).
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        let name = trim(name);
        self.rules
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, r)| r)
    }
}

/// The value at a dotted path of event data.
fn at<P: Platform>(data: &P::Data, path: &str) -> Option<P::Data> {
    let mut v = data.clone();
    for key in split(path, b'.') {
        v = P::field(&v, key)?;
    }
    Some(v)
}

/// Whether a portal error says the object does not exist (`crm.*.get`: "Not found", with
/// `NOT_FOUND` or no code). Nothing else is: `ERROR_METHOD_NOT_FOUND` (a module not installed,
/// a typo in a rule) or any other refusal says nothing of the object, and an app that deletes
/// its copy on `gone` must not do so for it.
fn not_found(e: &B24Error) -> bool {
    matches!(
        &*e.code,
        "NOT_FOUND" | "ERROR_NOT_FOUND" | "ERROR_ENTITY_NOT_FOUND"
    ) || (e.code.is_empty() && e.description.trim().eq_ignore_ascii_case("not found"))
}

/// What one command's result says of the object: an object is found; nothing, `null`,
/// `false` or an empty list is gone; anything else is a bad answer.
fn object<P: Platform>(result: Option<P::Data>, src: &Source) -> Found<P::Data> {
    let mut v = result;
    if let (Some(k), Some(r)) = (&src.result, &v) {
        if P::entries(r).is_some() {
            v = P::field(r, k);
        }
    }
    let Some(mut v) = v else { return Found::Gone };
    if let Some(rows) = P::items(&v) {
        match rows.into_iter().next() {
            Some(first) => v = first,
            None => return Found::Gone,
        }
    }
    if P::entries(&v).is_some() {
        Found::Object(v)
    } else if P::text(&v).is_some() || P::number(&v).is_some() || P::boolean(&v) == Some(true) {
        Found::Failed(shape("the result is not an object").with_method(&src.method))
    } else {
        Found::Gone
    }
}

/// The objects of `events`, one per event (`None`: no rule, or the app's `false`), fetched
/// with one command per distinct object, 50 a request.
pub async fn fetch_objects<P: Platform>(
    client: &Client<P>,
    objects: &Objects,
    events: &[OfflineEvent<P::Data>],
    signal: Option<&P::Signal>,
    connector: Option<&str>,
) -> Result<Vec<Option<Found<P::Data>>>> {
    let mut found: Vec<Option<Found<P::Data>>> = Vec::with_capacity(events.len());
    // Per event waiting for an object: its place, and the command that fetches it.
    let mut wanted: Vec<(usize, usize)> = Vec::new();
    // Per command: the source and the id (events of one object that the same source fetches,
    // an ADD and an UPDATE, share it).
    let mut gets: Vec<(&Source, u64)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        found.push(match objects.rule(&e.name) {
            Some(Rule::Fetch(src)) => {
                match at::<P>(&e.data, &src.id)
                    .and_then(|v| uint::<P>(&v))
                    .filter(|id| *id > 0)
                {
                    Some(id) => {
                        let cmd = match gets.iter().position(|(s, n)| *n == id && *s == src) {
                            Some(c) => c,
                            None => {
                                gets.push((src, id));
                                gets.len() - 1
                            }
                        };
                        wanted.push((i, cmd));
                        None
                    }
                    None => Some(Found::Failed(
                        shape(&concat(&["the event's data has no id at ", &src.id]))
                            .with_method(&src.method),
                    )),
                }
            }
            Some(Rule::Deleted) => Some(Found::Deleted),
            _ => None,
        });
    }
    if gets.is_empty() {
        return Ok(found);
    }
    let commands = gets
        .iter()
        .enumerate()
        .map(|(c, (src, id))| {
            let mut params = vec![(src.param.clone(), Tree::Num(*id as f64))];
            params.extend(src.params.iter().cloned());
            Command {
                name: decimal(c as u64),
                method: src.method.clone(),
                params: Some(Tree::Map(params)),
            }
        })
        .collect();
    let items = batch::run(client, commands, false, signal, connector).await?;
    let fetched: Vec<Found<P::Data>> = items
        .into_iter()
        .zip(&gets)
        .map(|(item, (src, _))| match item.result {
            Ok(v) => object::<P>(v, src),
            Err(e) if not_found(&e) => Found::Gone,
            Err(e) => Found::Failed(e),
        })
        .collect();
    for (i, c) in wanted {
        found[i] = Some(fetched[c].clone());
    }
    Ok(found)
}
