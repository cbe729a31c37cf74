//! Rows of non-aggregate queries and the naming of select items (spec §7.7).
//!
//! `SELECT *` returns the document itself. A projection builds one flat object per twin:
//! the key is the alias, else the last path segment in the twin's stored casing, else `$1`,
//! `$2`, … numbered over the unnamed items in select-list order (the Cosmos DB convention).
//! Items that evaluate to undefined are left out of the row. When two items produce the
//! same key the first one keeps it.

use serde_json::{Map, Value};

use crate::ast::{Collection, Expr, Projection, Select, SelectItem};
use crate::document::Document;
use crate::eval::eval;

/// How a select item's key is chosen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ItemName<'q> {
    Alias(&'q str),
    /// The stored key of the path's last segment, known only per twin.
    LastSegment,
    /// `$1`, `$2`, … for an unaliased non-path item.
    Positional(String),
}

/// A select item with its naming rule decided.
#[derive(Debug, Clone)]
pub(crate) struct NamedItem<'q> {
    pub(crate) value: &'q Projection,
    pub(crate) name: ItemName<'q>,
}

/// Decides the naming rule of every item of the select list (empty for `SELECT *`).
pub(crate) fn name_items(select: &Select) -> Vec<NamedItem<'_>> {
    let items: &[SelectItem] = match select {
        Select::All => &[],
        Select::Items(items) => items,
    };
    let mut unnamed = 0;
    items
        .iter()
        .map(|item| {
            let name = match (&item.alias, &item.value) {
                (Some(alias), _) => ItemName::Alias(alias),
                (None, Projection::Expr(Expr::Path(_))) => ItemName::LastSegment,
                (None, _) => {
                    unnamed += 1;
                    ItemName::Positional(format!("${unnamed}"))
                }
            };
            NamedItem {
                value: &item.value,
                name,
            }
        })
        .collect()
}

/// True when `document` belongs to `collection`: `devices` never yields module twins and
/// `devices.modules` only yields them (spec §5). Job records are the source's business.
pub(crate) fn admits<D: Document + ?Sized>(collection: Collection, document: &D) -> bool {
    if !document.is_object() {
        return false;
    }
    let is_module = document.member("moduleId").is_some_and(|m| !m.is_null());
    match collection {
        Collection::Devices => !is_module,
        Collection::Modules => is_module,
        Collection::Jobs => true,
    }
}

/// The projected row of one twin. Aggregate items (impossible in a validated
/// non-aggregate query) are skipped.
pub(crate) fn project<D: Document + ?Sized>(items: &[NamedItem<'_>], twin: &D) -> Value {
    let mut row = Map::new();
    for item in items {
        let Projection::Expr(expr) = item.value else {
            continue;
        };
        let entry = match (expr, &item.name) {
            // Paths keep the stored value untouched (e.g. `80` stays an integer) and give
            // the stored key for naming.
            (Expr::Path(path), name) => twin.resolve(path.segments()).map(|(key, value)| {
                let key = match name {
                    ItemName::Alias(alias) => (*alias).to_owned(),
                    ItemName::Positional(p) => p.clone(),
                    ItemName::LastSegment => key.into_owned(),
                };
                (key, value.into_json())
            }),
            (expr, name) => eval(expr, twin).to_json().map(|value| {
                let key = match name {
                    ItemName::Alias(alias) => (*alias).to_owned(),
                    ItemName::Positional(p) => p.clone(),
                    ItemName::LastSegment => String::new(),
                };
                (key, value)
            }),
        };
        if let Some((key, value)) = entry {
            row.entry(key).or_insert(value);
        }
    }
    Value::Object(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Query;
    use serde_json::json;

    fn rows(text: &str, twin: &Value) -> Vec<Value> {
        let query: Query = text.parse().unwrap();
        crate::evaluate(&query, [twin])
    }

    #[test]
    fn keys_are_alias_then_stored_last_segment_then_positional() {
        let twin = json!({"deviceId": "d1", "tags": {"Plant": "P1", "n": 2}});
        let got = rows(
            "SELECT DEVICEID, tags.plant, tags.n + 1, tags.n AS twice, tags.n * 2, 'k' AS [[a b]] FROM devices",
            &twin,
        );
        assert_eq!(
            got,
            vec![
                json!({"deviceId": "d1", "Plant": "P1", "$1": 3, "twice": 2, "$2": 4, "a b": "k"})
            ]
        );
        let keys: Vec<&String> = got[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["deviceId", "Plant", "$1", "twice", "$2", "a b"]);
    }

    #[test]
    fn undefined_items_are_omitted_not_null() {
        let twin = json!({"deviceId": "d1", "tags": {"x": null}});
        assert_eq!(
            rows(
                "SELECT deviceId, tags.missing, tags.x, tags.missing + 1 AS y FROM devices",
                &twin
            ),
            vec![json!({"deviceId": "d1", "x": null})]
        );
    }

    #[test]
    fn projecting_an_object_returns_it_whole() {
        let twin = json!({"deviceId": "d1", "properties": {"reported": {"a": 1, "$version": 3}}});
        assert_eq!(
            rows("SELECT properties.reported FROM devices", &twin),
            vec![json!({"reported": {"a": 1, "$version": 3}})]
        );
    }

    #[test]
    fn first_item_keeps_a_duplicate_key() {
        let twin = json!({"deviceId": "d1", "tags": {"a": 1}, "properties": {"a": 2}});
        assert_eq!(
            rows("SELECT tags.a, properties.a FROM devices", &twin),
            vec![json!({"a": 1})]
        );
    }

    #[test]
    fn collections_split_device_and_module_twins() {
        let device = json!({"deviceId": "d"});
        let module = json!({"deviceId": "d", "moduleId": "m"});
        assert!(admits(Collection::Devices, &device));
        assert!(!admits(Collection::Devices, &module));
        assert!(admits(Collection::Modules, &module));
        assert!(!admits(Collection::Modules, &device));
        assert!(!admits(Collection::Devices, &json!(3)));
    }
}
