//! Reading one format-1 instruction in a single pass. serde's derive for
//! an internally tagged enum (`"kind"`) first copies every object into an
//! intermediate tree, because the tag may come after the fields: three
//! allocations and a second pass per instruction, a third of the cost of
//! decoding a one-instruction message. Here each field's name fixes its
//! type (`ids`, `uuids`, `keys`, `json`, `payloads`), so the fields are
//! read in any order straight into their types, and the kind then says
//! which fields it must have and which it must not. The errors are serde's
//! own: unknown kind, missing, unknown (for that kind) or duplicate field.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use uuid::Uuid;

use super::v1::Wire;

/// The value of `kind`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Kind {
    RefreshAll,
    RefreshIds,
    RefreshUuids,
    RefreshKeys,
    RemoveIds,
    RemoveUuids,
    RemoveKeys,
    RefreshJson,
    RefreshPayloads,
}

/// A field of an instruction object.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Kind,
    Ids,
    Uuids,
    Keys,
    Json,
    Payloads,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Kind => "kind",
            Field::Ids => "ids",
            Field::Uuids => "uuids",
            Field::Keys => "keys",
            Field::Json => "json",
            Field::Payloads => "payloads",
        }
    }
}

/// The fields read so far.
#[derive(Default)]
struct Fields {
    kind: Option<Kind>,
    ids: Option<Vec<i64>>,
    uuids: Option<Vec<Uuid>>,
    keys: Option<Vec<String>>,
    json: Option<serde_json::Value>,
    payloads: Option<Vec<serde_json::Value>>,
}

impl Fields {
    /// The one data field the kind takes, if any.
    fn takes(kind: Kind) -> Option<Field> {
        match kind {
            Kind::RefreshAll => None,
            Kind::RefreshIds | Kind::RemoveIds => Some(Field::Ids),
            Kind::RefreshUuids | Kind::RemoveUuids => Some(Field::Uuids),
            Kind::RefreshKeys | Kind::RemoveKeys => Some(Field::Keys),
            Kind::RefreshJson => Some(Field::Json),
            Kind::RefreshPayloads => Some(Field::Payloads),
        }
    }

    fn present(&self) -> [(Field, bool); 5] {
        [
            (Field::Ids, self.ids.is_some()),
            (Field::Uuids, self.uuids.is_some()),
            (Field::Keys, self.keys.is_some()),
            (Field::Json, self.json.is_some()),
            (Field::Payloads, self.payloads.is_some()),
        ]
    }

    fn into_wire<E: de::Error>(self) -> Result<Wire, E> {
        let kind = self.kind.ok_or_else(|| E::missing_field("kind"))?;
        let takes = Self::takes(kind);
        if let Some((extra, _)) = self
            .present()
            .into_iter()
            .find(|&(field, present)| present && Some(field) != takes)
        {
            let expected: &'static [&'static str] = match takes {
                None => &[],
                Some(Field::Ids) => &["ids"],
                Some(Field::Uuids) => &["uuids"],
                Some(Field::Keys) => &["keys"],
                Some(Field::Json) => &["json"],
                Some(_) => &["payloads"],
            };
            return Err(E::unknown_field(extra.name(), expected));
        }
        let missing = |field: Field| E::missing_field(field.name());
        Ok(match kind {
            Kind::RefreshAll => Wire::RefreshAll {},
            Kind::RefreshIds => Wire::RefreshIds {
                ids: self.ids.ok_or_else(|| missing(Field::Ids))?,
            },
            Kind::RemoveIds => Wire::RemoveIds {
                ids: self.ids.ok_or_else(|| missing(Field::Ids))?,
            },
            Kind::RefreshUuids => Wire::RefreshUuids {
                uuids: self.uuids.ok_or_else(|| missing(Field::Uuids))?,
            },
            Kind::RemoveUuids => Wire::RemoveUuids {
                uuids: self.uuids.ok_or_else(|| missing(Field::Uuids))?,
            },
            Kind::RefreshKeys => Wire::RefreshKeys {
                keys: self.keys.ok_or_else(|| missing(Field::Keys))?,
            },
            Kind::RemoveKeys => Wire::RemoveKeys {
                keys: self.keys.ok_or_else(|| missing(Field::Keys))?,
            },
            Kind::RefreshJson => Wire::RefreshJson {
                json: self.json.ok_or_else(|| missing(Field::Json))?,
            },
            Kind::RefreshPayloads => Wire::RefreshPayloads {
                payloads: self.payloads.ok_or_else(|| missing(Field::Payloads))?,
            },
        })
    }
}

impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(InstructionVisitor)
    }
}

struct InstructionVisitor;

/// Reads the next value into `slot`, refusing a second one.
fn once<'de, A, T>(map: &mut A, slot: &mut Option<T>, field: Field) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    if slot.is_some() {
        return Err(de::Error::duplicate_field(field.name()));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Visitor<'de> for InstructionVisitor {
    type Value = Wire;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an instruction: an object with a `kind`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire, A::Error> {
        let mut fields = Fields::default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Kind => once(&mut map, &mut fields.kind, field)?,
                Field::Ids => once(&mut map, &mut fields.ids, field)?,
                Field::Uuids => once(&mut map, &mut fields.uuids, field)?,
                Field::Keys => once(&mut map, &mut fields.keys, field)?,
                Field::Json => once(&mut map, &mut fields.json, field)?,
                Field::Payloads => once(&mut map, &mut fields.payloads, field)?,
            }
        }
        fields.into_wire()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Wire, String> {
        serde_json::from_str::<Wire>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn fields_in_any_order_and_every_kind() {
        assert!(matches!(
            read(r#"{"ids":[1,2],"kind":"remove_ids"}"#),
            Ok(Wire::RemoveIds { ids }) if ids == [1, 2]
        ));
        assert!(matches!(
            read(r#"{"kind":"refresh_all"}"#),
            Ok(Wire::RefreshAll {})
        ));
        assert!(matches!(
            read(r#"{"kind":"refresh_json","json":null}"#),
            Ok(Wire::RefreshJson {
                json: serde_json::Value::Null
            })
        ));
    }

    #[test]
    fn wrong_shapes_are_refused_with_serde_s_words() {
        let cases = [
            (r#"{"ids":[1]}"#, "missing field `kind`"),
            (r#"{"kind":"refresh_ids"}"#, "missing field `ids`"),
            (r#"{"kind":"refresh_json"}"#, "missing field `json`"),
            (
                r#"{"kind":"refresh_ids","ids":[1],"keys":["a"]}"#,
                "unknown field `keys`, expected `ids`",
            ),
            (r#"{"kind":"refresh_all","ids":[1]}"#, "unknown field `ids`"),
            (
                r#"{"kind":"refresh_ids","ids":[1],"ids":[2]}"#,
                "duplicate field `ids`",
            ),
            (
                r#"{"kind":"refresh_ids","kind":"refresh_ids","ids":[1]}"#,
                "duplicate field `kind`",
            ),
            (
                r#"{"kind":"Refresh_Ids","ids":[1]}"#,
                "unknown variant `Refresh_Ids`",
            ),
            (
                r#"{"kind":"refresh_ids","ids":[1],"extra":1}"#,
                "unknown field `extra`",
            ),
            (r#"{"kind":"refresh_ids","ids":[1.5]}"#, "invalid type"),
            (r#"[]"#, "invalid type: sequence, expected an instruction"),
        ];
        for (json, expected) in cases {
            let error = read(json)
                .err()
                .unwrap_or_else(|| panic!("{json} was accepted"));
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
