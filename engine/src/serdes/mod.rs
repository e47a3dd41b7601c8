//! Serdes: how keys and values become bytes on topics, changelogs and repartition topics.
//!
//! A [`Serde<T>`] turns `T` into bytes and back. `None` bytes is Kafka's null (a null key, or a
//! tombstone value). Serdes are shared by every task of an application, so they are
//! `Send + Sync` and stateless. Built in: [`JsonSerde`] (serde_json, with a hand-written reader
//! in front for the common record, `json_fast`), [`StringSerde`] (UTF-8),
//! [`BytesSerde`], [`I64Serde`] / [`U64Serde`] / [`I32Serde`] (big-endian, as Kafka's
//! `LongSerializer` and `IntegerSerializer`) and [`UnitSerde`] (null keys). Implement the trait
//! for anything else.

mod json_fast;
pub mod json_scan;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Arc;

/// Turns values into bytes and back. Errors are messages naming what was wrong.
pub trait Serde<T>: Send + Sync {
    /// Appends the encoding of `value` to `out`; returns `false` for Kafka's null.
    ///
    /// # Errors
    ///
    /// A message saying why `value` cannot be encoded; an operator that gets it stops its task
    /// (`EngineError::TaskFailed`).
    fn serialize(&self, value: &T, out: &mut Vec<u8>) -> Result<bool, String>;
    /// Decodes `data` (`None`: Kafka's null).
    ///
    /// # Errors
    ///
    /// A message saying what is wrong with `data`; for an input record the runtime then fails the
    /// task (`EngineError::Deserialize`) or sends the record to the dead-letter topic, as
    /// [`OnDeserializeError`](crate::OnDeserializeError) says.
    fn deserialize(&self, data: Option<&[u8]>) -> Result<T, String>;
}

/// A shared serde.
pub type SerdeRef<T> = Arc<dyn Serde<T>>;

/// JSON through serde_json. A null value deserializes as JSON `null` (so `Option<T>` works).
/// Values are read by `json_fast` where it reads them as serde_json does (objects of numbers
/// and plain strings, the usual record), and by serde_json otherwise.
pub struct JsonSerde<T>(PhantomData<fn() -> T>);

impl<T> JsonSerde<T> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for JsonSerde<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Serde<T> for JsonSerde<T> {
    fn serialize(&self, value: &T, out: &mut Vec<u8>) -> Result<bool, String> {
        serde_json::to_writer(&mut *out, value).map_err(|e| e.to_string())?;
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<T, String> {
        let data = data.unwrap_or(b"null");
        if let Some(value) = json_fast::from_slice(data) {
            return Ok(value);
        }
        serde_json::from_slice(data).map_err(|e| format!("invalid JSON: {e}"))
    }
}

/// UTF-8 text.
#[derive(Clone, Copy, Default)]
pub struct StringSerde;

impl Serde<String> for StringSerde {
    fn serialize(&self, value: &String, out: &mut Vec<u8>) -> Result<bool, String> {
        out.extend_from_slice(value.as_bytes());
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<String, String> {
        let data = data.ok_or("null where text was expected")?;
        String::from_utf8(data.to_vec()).map_err(|e| format!("invalid UTF-8: {e}"))
    }
}

/// Raw bytes.
#[derive(Clone, Copy, Default)]
pub struct BytesSerde;

impl Serde<Bytes> for BytesSerde {
    fn serialize(&self, value: &Bytes, out: &mut Vec<u8>) -> Result<bool, String> {
        out.extend_from_slice(value);
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Bytes, String> {
        Ok(Bytes::copy_from_slice(
            data.ok_or("null where bytes were expected")?,
        ))
    }
}

/// Null keys (or values): always encodes as null and accepts anything.
#[derive(Clone, Copy, Default)]
pub struct UnitSerde;

impl Serde<()> for UnitSerde {
    fn serialize(&self, _: &(), _: &mut Vec<u8>) -> Result<bool, String> {
        Ok(false)
    }
    fn deserialize(&self, _: Option<&[u8]>) -> Result<(), String> {
        Ok(())
    }
}

macro_rules! big_endian_serde {
    ($name:ident, $t:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Default)]
        pub struct $name;

        impl Serde<$t> for $name {
            fn serialize(&self, value: &$t, out: &mut Vec<u8>) -> Result<bool, String> {
                out.extend_from_slice(&value.to_be_bytes());
                Ok(true)
            }
            fn deserialize(&self, data: Option<&[u8]>) -> Result<$t, String> {
                let data = data.ok_or("null where a number was expected")?;
                let arr = data.try_into().map_err(|_| {
                    format!(
                        "expected {} bytes for a {}, found {}",
                        size_of::<$t>(),
                        stringify!($t),
                        data.len()
                    )
                })?;
                Ok(<$t>::from_be_bytes(arr))
            }
        }
    };
}

big_endian_serde!(
    I64Serde,
    i64,
    "8-byte big-endian signed integers (Kafka's `LongSerde`)."
);
big_endian_serde!(U64Serde, u64, "8-byte big-endian unsigned integers.");
big_endian_serde!(
    I32Serde,
    i32,
    "4-byte big-endian signed integers (Kafka's `IntegerSerde`)."
);
big_endian_serde!(
    F64Serde,
    f64,
    "8-byte big-endian IEEE 754 doubles (Kafka's `DoubleSerde`)."
);

/// The serde a type uses unless told otherwise, so simple DSL calls need no serde arguments.
pub trait DefaultSerde: Sized + 'static {
    fn default_serde() -> SerdeRef<Self>;
}

macro_rules! default_serde {
    ($t:ty, $s:expr) => {
        impl DefaultSerde for $t {
            fn default_serde() -> SerdeRef<Self> {
                Arc::new($s)
            }
        }
    };
}
default_serde!(String, StringSerde);
default_serde!(Bytes, BytesSerde);
default_serde!((), UnitSerde);
default_serde!(i64, I64Serde);
default_serde!(u64, U64Serde);
default_serde!(i32, I32Serde);
default_serde!(f64, F64Serde);
default_serde!(serde_json::Value, JsonSerde::<serde_json::Value>::new());

/// A JSON serde as a [`SerdeRef`].
pub fn json<T: Serialize + DeserializeOwned + 'static>() -> SerdeRef<T> {
    Arc::new(JsonSerde::<T>::new())
}

/// `Option<T>` over a serde of `T`: `None` is Kafka's null (a tombstone).
pub struct OptionSerde<T>(pub SerdeRef<T>);

impl<T: 'static> OptionSerde<T> {
    pub fn of(inner: impl Serde<T> + 'static) -> Self {
        Self(Arc::new(inner))
    }
}

impl<T: 'static> Serde<Option<T>> for OptionSerde<T> {
    fn serialize(&self, value: &Option<T>, out: &mut Vec<u8>) -> Result<bool, String> {
        match value {
            Some(v) => self.0.serialize(v, out),
            None => Ok(false),
        }
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Option<T>, String> {
        data.map(|d| self.0.deserialize(Some(d))).transpose()
    }
}

/// A window key: the key's bytes, then the window start and end as big-endian i64s.
pub struct WindowedSerde<K>(pub SerdeRef<K>);

impl<K: 'static> Serde<crate::record::Windowed<K>> for WindowedSerde<K> {
    fn serialize(
        &self,
        value: &crate::record::Windowed<K>,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        self.0.serialize(&value.key, out)?;
        out.extend_from_slice(&value.window.start.to_be_bytes());
        out.extend_from_slice(&value.window.end.to_be_bytes());
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<crate::record::Windowed<K>, String> {
        let data = data.ok_or("null where a windowed key was expected")?;
        let split = data
            .len()
            .checked_sub(16)
            .ok_or("windowed key shorter than 16 bytes")?;
        let t = |at: usize| i64::from_be_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        Ok(crate::record::Windowed {
            key: self.0.deserialize(Some(&data[..split]))?,
            window: crate::record::Window {
                start: t(split),
                end: t(split + 8),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_errors_name_the_problem() {
        let mut b = Vec::new();
        assert!(I64Serde.serialize(&-5, &mut b).unwrap());
        assert_eq!(I64Serde.deserialize(Some(&b)).unwrap(), -5);
        assert!(
            I64Serde
                .deserialize(Some(b"abc"))
                .unwrap_err()
                .contains("8 bytes")
        );
        assert!(
            StringSerde
                .deserialize(Some(&[0xff]))
                .unwrap_err()
                .contains("UTF-8")
        );
        let j = JsonSerde::<Option<u32>>::new();
        assert_eq!(j.deserialize(None).unwrap(), None);
        assert!(!UnitSerde.serialize(&(), &mut b).unwrap());
    }
}
