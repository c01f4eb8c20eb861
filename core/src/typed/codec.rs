//! Codecs: how a typed message becomes a payload and back. Pure: no I/O.
//!
//! A codec is a small value (the ones here are unit structs) implementing
//! [`Codec<T>`] for the message types it can carry:
//!
//! | codec | messages | feature |
//! |---|---|---|
//! | [`Postcard`] (the default) | `Serialize + DeserializeOwned` | always on |
//! | [`Json`] | `Serialize + DeserializeOwned` | `json` |
//! | [`Prost`] | `prost::Message + Default` (protobuf) | `prost` |
//!
//! Both ends of a channel must use the same codec and message types: the
//! payload carries no type tag. Decoding is strict where the format allows
//! it: bytes left over after a postcard value are an error, not ignored.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Turns messages of type `T` into payload bytes and back.
///
/// Implement it for your own format with a unit struct:
///
/// ```
/// use domi_core::typed::{Codec, CodecError};
///
/// /// UTF-8 text as is.
/// struct Text;
///
/// impl Codec<String> for Text {
///     const NAME: &'static str = "text";
///
///     fn encode(&self, value: &String, out: &mut Vec<u8>) -> Result<(), CodecError> {
///         out.extend_from_slice(value.as_bytes());
///         Ok(())
///     }
///
///     fn decode(&self, bytes: &[u8]) -> Result<String, CodecError> {
///         String::from_utf8(bytes.to_vec()).map_err(|e| CodecError::decode::<String, Self>(bytes, e))
///     }
/// }
///
/// let mut out = Vec::new();
/// Text.encode(&"hi".to_string(), &mut out)?;
/// assert_eq!(Text.decode(&out)?, "hi");
/// # Ok::<(), CodecError>(())
/// ```
pub trait Codec<T>: Send + Sync + 'static {
    /// The codec's name, as errors report it.
    const NAME: &'static str;

    /// Appends the encoding of `value` to `out`. On error, what was
    /// appended is unspecified: discard `out`.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes a whole payload: bytes that are not exactly one `T` are an error.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// Why a codec could not encode or decode a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded (e.g. a JSON map with non-string keys).
    #[error("{codec} could not encode the message: {detail}")]
    Encode {
        /// The codec's [`Codec::NAME`].
        codec: &'static str,
        /// What the codec said.
        detail: String,
    },
    /// The bytes are not a message of the expected type in this codec.
    #[error("{codec} could not decode {len} bytes: {detail}")]
    Decode {
        /// The codec's [`Codec::NAME`].
        codec: &'static str,
        /// What the codec said.
        detail: String,
        /// How many bytes there were.
        len: usize,
    },
}

impl CodecError {
    /// An [`CodecError::Encode`] of codec `C` for type `T`.
    pub fn encode<T, C: Codec<T>>(error: impl std::fmt::Display) -> CodecError {
        CodecError::Encode {
            codec: C::NAME,
            detail: error.to_string(),
        }
    }

    /// A [`CodecError::Decode`] of codec `C` for type `T`, of `bytes`.
    pub fn decode<T, C: Codec<T>>(bytes: &[u8], error: impl std::fmt::Display) -> CodecError {
        CodecError::Decode {
            codec: C::NAME,
            detail: error.to_string(),
            len: bytes.len(),
        }
    }
}

/// The default codec: [postcard](https://docs.rs/postcard), a compact
/// binary serde format (varint integers, length-prefixed strings; no field
/// names, so both ends must agree on the type's fields and their order).
///
/// ```
/// use domi_core::typed::{Codec, Postcard};
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Order { item: String, quantity: u32 }
///
/// let mut out = Vec::new();
/// Postcard.encode(&Order { item: "tea".into(), quantity: 2 }, &mut out)?;
/// assert_eq!(out, [3, b't', b'e', b'a', 2]);
/// let back: Order = Postcard.decode(&out)?;
/// assert_eq!(back, Order { item: "tea".into(), quantity: 2 });
/// # Ok::<(), domi_core::typed::CodecError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Postcard;

impl<T: Serialize + DeserializeOwned> Codec<T> for Postcard {
    const NAME: &'static str = "postcard";

    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        postcard::to_io(value, out)
            .map(|_| ())
            .map_err(CodecError::encode::<T, Self>)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        match postcard::take_from_bytes(bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(CodecError::decode::<T, Self>(
                bytes,
                format_args!("{} bytes left over after the message", rest.len()),
            )),
            Err(e) => Err(CodecError::decode::<T, Self>(bytes, e)),
        }
    }
}

/// JSON through [serde_json](https://docs.rs/serde_json) (feature `json`):
/// self-describing and readable, larger and slower than [`Postcard`].
#[cfg(feature = "json")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json;

#[cfg(feature = "json")]
impl<T: Serialize + DeserializeOwned> Codec<T> for Json {
    const NAME: &'static str = "json";

    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(CodecError::encode::<T, Self>)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::decode::<T, Self>(bytes, e))
    }
}

/// Protobuf through [prost](https://docs.rs/prost) (feature `prost`): any
/// `prost::Message`, generated by `prost-build` or derived by hand with
/// `#[derive(prost::Message)]`. Protobuf decodes leniently: unknown fields
/// are skipped and missing ones take their defaults.
#[cfg(feature = "prost")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prost;

#[cfg(feature = "prost")]
impl<T: prost::Message + Default> Codec<T> for Prost {
    const NAME: &'static str = "prost";

    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        // A `Vec` grows as needed: prost's only encode error cannot happen.
        value.encode(out).map_err(CodecError::encode::<T, Self>)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        T::decode(bytes).map_err(|e| CodecError::decode::<T, Self>(bytes, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    enum Kind {
        Plain,
        Tagged(String),
        Sized { w: u32, h: u32 },
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Msg {
        id: u64,
        delta: i32,
        name: String,
        bytes: Vec<u8>,
        maybe: Option<i64>,
        kinds: Vec<Kind>,
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Plain),
            ".{0,8}".prop_map(Kind::Tagged),
            (any::<u32>(), any::<u32>()).prop_map(|(w, h)| Kind::Sized { w, h }),
        ]
    }

    fn msg() -> impl Strategy<Value = Msg> {
        (
            any::<u64>(),
            any::<i32>(),
            ".{0,16}",
            proptest::collection::vec(any::<u8>(), 0..32),
            any::<Option<i64>>(),
            proptest::collection::vec(kind(), 0..4),
        )
            .prop_map(|(id, delta, name, bytes, maybe, kinds)| Msg {
                id,
                delta,
                name,
                bytes,
                maybe,
                kinds,
            })
    }

    fn round_trip<C: Codec<Msg>>(codec: C, m: &Msg) -> Result<Msg, CodecError> {
        let mut out = vec![0xAA]; // encode appends
        codec.encode(m, &mut out)?;
        assert_eq!(out[0], 0xAA);
        codec.decode(&out[1..])
    }

    proptest! {
        #[test]
        fn postcard_round_trips(m in msg()) {
            prop_assert_eq!(round_trip(Postcard, &m), Ok(m));
        }

        #[cfg(feature = "json")]
        #[test]
        fn json_round_trips(m in msg()) {
            prop_assert_eq!(round_trip(Json, &m), Ok(m));
        }

        /// Garbage never panics a decoder; it decodes or is a `Decode` error
        /// that counts the bytes.
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            match Postcard.decode(&bytes) as Result<Msg, _> {
                Ok(_) => {}
                Err(CodecError::Decode { codec, len, .. }) => {
                    prop_assert_eq!(codec, "postcard");
                    prop_assert_eq!(len, bytes.len());
                }
                Err(e) => prop_assert!(false, "{e:?}"),
            }
        }
    }

    #[test]
    fn postcard_is_strict_about_length() {
        let mut out = Vec::new();
        Postcard.encode(&"hi".to_string(), &mut out).unwrap();
        assert_eq!(out, [2, b'h', b'i']);
        // One byte more: left over, an error (not silently ignored).
        out.push(0);
        assert!(matches!(
            Postcard.decode(&out) as Result<String, _>,
            Err(CodecError::Decode {
                codec: "postcard",
                len: 4,
                ..
            })
        ));
        // One byte less: short.
        assert!(matches!(
            Postcard.decode(&out[..2]) as Result<String, _>,
            Err(CodecError::Decode { len: 2, .. })
        ));
        // An unfinished varint.
        assert!(matches!(
            Postcard.decode(&[0xff; 4]) as Result<u64, _>,
            Err(CodecError::Decode { len: 4, .. })
        ));
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_errors_are_typed() {
        use std::collections::BTreeMap;
        // Maps with non-string keys have no JSON form.
        let map: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(matches!(
            Json.encode(&map, &mut Vec::new()),
            Err(CodecError::Encode { codec: "json", .. })
        ));
        assert!(matches!(
            Json.decode(b"{\"id\":") as Result<Msg, _>,
            Err(CodecError::Decode {
                codec: "json",
                len: 6,
                ..
            })
        ));
        let mut out = Vec::new();
        Json.encode(&Kind::Sized { w: 1, h: 2 }, &mut out).unwrap();
        assert_eq!(out, br#"{"Sized":{"w":1,"h":2}}"#);
    }

    #[cfg(feature = "prost")]
    #[test]
    fn prost_round_trips_and_reports_bad_bytes() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Item {
            #[prost(string, tag = "1")]
            name: String,
            #[prost(int64, tag = "2")]
            count: i64,
            #[prost(bytes = "vec", tag = "3")]
            blob: Vec<u8>,
            #[prost(string, repeated, tag = "4")]
            tags: Vec<String>,
        }
        let item = Item {
            name: "tea".into(),
            count: -3,
            blob: vec![0, 1, 2],
            tags: vec!["a".into(), "b".into()],
        };
        let mut out = Vec::new();
        Prost.encode(&item, &mut out).unwrap();
        assert_eq!(Prost.decode(&out), Ok(item));
        // A field header announcing 100 bytes of string, then 1.
        assert!(matches!(
            Prost.decode(&[0x0a, 100, b'x']) as Result<Item, _>,
            Err(CodecError::Decode {
                codec: "prost",
                len: 3,
                ..
            })
        ));
    }
}
