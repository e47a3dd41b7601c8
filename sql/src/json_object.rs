//! One JSON object read straight into a schema's column order: each named field's value is
//! deserialized as `T` (a `serde_json::Value`, or a borrowed [`super::chunk`] cell) in its
//! column's slot, keys are matched without being copied, and fields the schema does not name
//! are skipped unparsed. Contract: returns the slots (`None` for a field that is absent), or
//! `Err` for anything that is not a well-formed JSON object or a value `T` refuses; the caller
//! then builds its own error message.

use datafusion::arrow::datatypes::Fields;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// The field values of `data`, in the order of `fields`.
pub(crate) fn fields_in_order<'de, T: Deserialize<'de>>(
    data: &'de [u8],
    fields: &Fields,
) -> Result<Vec<Option<T>>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(data);
    let slots = ObjectSeed {
        fields,
        slot: PhantomData,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(slots)
}

struct ObjectSeed<'a, T> {
    fields: &'a Fields,
    slot: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for ObjectSeed<'_, T> {
    type Value = Vec<Option<T>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectSeed<'_, T> {
    type Value = Vec<Option<T>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None)
            .take(self.fields.len())
            .collect();
        while let Some(column) = map.next_key_seed(KeySeed {
            fields: self.fields,
        })? {
            match column {
                Some(i) => slots[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(slots)
    }
}

/// A key → the index of the column it names, if any.
struct KeySeed<'a> {
    fields: &'a Fields,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.fields.iter().position(|f| f.name() == key))
    }
}
