//! A small UBJSON (draft 12) reader, as a serde `Deserializer`.
//!
//! XGBoost saves models as UBJSON with big-endian numbers, length-prefixed
//! strings and optimized containers (`[$<type>#<count>` and `[#<count>`).
//! Deserializing straight into the loader's structs means a model in UBJSON
//! and the same model in JSON go through one code path, and no intermediate
//! tree of values is built. Model files are untrusted, so every count is
//! checked against the bytes still unread before anything is allocated or
//! iterated (typed containers of payload-free `Z`/`T`/`F` elements are
//! charged one byte per element, which XGBoost never writes), and nesting is
//! capped so that a crafted file cannot exhaust the stack.

use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};

/// Deeper nesting than this is refused; XGBoost's own documents stay under
/// ten levels.
const MAX_DEPTH: u32 = 128;

/// A malformed or unsupported UBJSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    fn at(offset: usize, message: impl fmt::Display) -> Self {
        Error {
            message: format!("{message} (at byte {offset})"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
        }
    }
}

/// Deserialize one UBJSON value that spans the whole of `bytes`.
pub fn from_slice<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Error> {
    let mut de = Deserializer {
        input: bytes,
        pos: 0,
        depth: 0,
    };
    let value = T::deserialize(&mut de)?;
    de.skip_noops();
    if de.pos != de.input.len() {
        return Err(Error::at(de.pos, "trailing bytes after the document"));
    }
    Ok(value)
}

/// Reads UBJSON from a byte slice; strings are borrowed from it.
pub struct Deserializer<'de> {
    input: &'de [u8],
    pos: usize,
    depth: u32,
}

/// Bytes of payload that follow a scalar marker inside a strongly typed
/// container, or `None` for markers whose payload has a variable length.
fn fixed_payload_len(marker: u8) -> Option<usize> {
    match marker {
        b'Z' | b'T' | b'F' => Some(0),
        b'i' | b'U' | b'C' => Some(1),
        b'I' => Some(2),
        b'l' | b'd' => Some(4),
        b'L' | b'D' => Some(8),
        _ => None,
    }
}

impl<'de> Deserializer<'de> {
    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8], Error> {
        if n > self.remaining() {
            return Err(Error::at(
                self.pos,
                format!(
                    "unexpected end of input: {n} bytes needed, {} left",
                    self.remaining()
                ),
            ));
        }
        let bytes = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn skip_noops(&mut self) {
        while self.input.get(self.pos) == Some(&b'N') {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Result<u8, Error> {
        self.skip_noops();
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| Error::at(self.pos, "unexpected end of input"))
    }

    fn next_marker(&mut self) -> Result<u8, Error> {
        let marker = self.peek()?;
        self.pos += 1;
        Ok(marker)
    }

    fn int_payload(&mut self, marker: u8) -> Result<i64, Error> {
        Ok(match marker {
            b'i' => i64::from(i8::from_be_bytes(self.take_array()?)),
            b'U' => i64::from(u8::from_be_bytes(self.take_array()?)),
            b'I' => i64::from(i16::from_be_bytes(self.take_array()?)),
            b'l' => i64::from(i32::from_be_bytes(self.take_array()?)),
            b'L' => i64::from_be_bytes(self.take_array()?),
            other => {
                return Err(Error::at(
                    self.pos.saturating_sub(1),
                    format!("expected an integer marker, found {}", show_marker(other)),
                ));
            }
        })
    }

    /// A length or count: an integer of any width that must be non-negative.
    fn length(&mut self) -> Result<usize, Error> {
        let at = self.pos;
        let marker = self.next_marker()?;
        let n = self.int_payload(marker)?;
        usize::try_from(n).map_err(|_| Error::at(at, format!("invalid length {n}")))
    }

    fn str_payload(&mut self) -> Result<&'de str, Error> {
        let len = self.length()?;
        let at = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| Error::at(at, "string is not valid UTF-8"))
    }

    /// Reads the optional `$type` and `#count` that follow `[` or `{`, and
    /// checks the count against the input left so that a forged count can
    /// neither reserve memory nor spin through empty elements.
    fn container_header(&mut self) -> Result<(Option<u8>, Option<usize>), Error> {
        let mut ty = None;
        if self.input.get(self.pos) == Some(&b'$') {
            self.pos += 1;
            let at = self.pos;
            let marker = self.take(1)?[0];
            if fixed_payload_len(marker).is_none() && marker != b'S' {
                return Err(Error::at(
                    at,
                    format!(
                        "unsupported element type {} in a typed container",
                        show_marker(marker)
                    ),
                ));
            }
            ty = Some(marker);
            if self.input.get(self.pos) != Some(&b'#') {
                return Err(Error::at(self.pos, "typed container without a count"));
            }
        }
        if self.input.get(self.pos) != Some(&b'#') {
            return Ok((None, None));
        }
        self.pos += 1;
        let at = self.pos;
        let count = self.length()?;
        // Every element costs at least one byte, except in typed containers
        // of fixed-size payloads where the exact size is known; for
        // zero-size payloads (null, true, false) one byte is still demanded
        // so that the count stays bounded by the input.
        let per_element = match ty.and_then(fixed_payload_len) {
            Some(size) => size.max(1),
            None => 1,
        };
        if count
            .checked_mul(per_element)
            .is_none_or(|need| need > self.remaining())
        {
            return Err(Error::at(
                at,
                format!(
                    "container count {count} exceeds the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok((ty, Some(count)))
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::at(
                self.pos,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    /// Deserializes the value whose marker has already been read (or is
    /// implied by a typed container).
    fn value<V: Visitor<'de>>(&mut self, marker: u8, visitor: V) -> Result<V::Value, Error> {
        match marker {
            b'Z' => visitor.visit_unit(),
            b'T' => visitor.visit_bool(true),
            b'F' => visitor.visit_bool(false),
            b'i' => visitor.visit_i8(i8::from_be_bytes(self.take_array()?)),
            b'U' => visitor.visit_u8(u8::from_be_bytes(self.take_array()?)),
            b'I' => visitor.visit_i16(i16::from_be_bytes(self.take_array()?)),
            b'l' => visitor.visit_i32(i32::from_be_bytes(self.take_array()?)),
            b'L' => visitor.visit_i64(i64::from_be_bytes(self.take_array()?)),
            b'd' => visitor.visit_f32(f32::from_be_bytes(self.take_array()?)),
            b'D' => visitor.visit_f64(f64::from_be_bytes(self.take_array()?)),
            b'C' => visitor.visit_char(char::from(self.take(1)?[0])),
            b'S' => visitor.visit_borrowed_str(self.str_payload()?),
            b'[' => {
                self.enter()?;
                let (ty, count) = self.container_header()?;
                let mut access = Access {
                    de: self,
                    ty,
                    count,
                    done: false,
                };
                let value = visitor.visit_seq(&mut access)?;
                access.finish(b']')?;
                self.depth -= 1;
                Ok(value)
            }
            b'{' => {
                self.enter()?;
                let (ty, count) = self.container_header()?;
                let mut access = Access {
                    de: self,
                    ty,
                    count,
                    done: false,
                };
                let value = visitor.visit_map(&mut access)?;
                access.finish(b'}')?;
                self.depth -= 1;
                Ok(value)
            }
            b'H' => Err(Error::at(
                self.pos.saturating_sub(1),
                "high-precision numbers are not supported",
            )),
            other => Err(Error::at(
                self.pos.saturating_sub(1),
                format!("unexpected marker {}", show_marker(other)),
            )),
        }
    }
}

fn show_marker(marker: u8) -> String {
    if marker.is_ascii_graphic() {
        format!("'{}'", char::from(marker))
    } else {
        format!("0x{marker:02x}")
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let marker = self.next_marker()?;
        self.value(marker, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek()? == b'Z' {
            self.pos += 1;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// The elements of one typed container, deserialized without a marker each.
struct Typed<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    marker: u8,
}

impl<'de> de::Deserializer<'de> for Typed<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.de.value(self.marker, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.marker == b'Z' {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// Walks the elements (or key/value pairs) of one array or object.
struct Access<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    ty: Option<u8>,
    count: Option<usize>,
    done: bool,
}

impl<'de> Access<'_, 'de> {
    /// Whether another element follows, consuming the closing marker of an
    /// unsized container when it does not.
    fn has_next(&mut self, close: u8) -> Result<bool, Error> {
        if self.done {
            return Ok(false);
        }
        match &mut self.count {
            Some(0) => {
                self.done = true;
                Ok(false)
            }
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => {
                if self.de.peek()? == close {
                    self.de.pos += 1;
                    self.done = true;
                    Ok(false)
                } else {
                    Ok(true)
                }
            }
        }
    }

    /// Refuses elements that the visitor left unread, which would otherwise
    /// be misread as the next value.
    fn finish(&mut self, close: u8) -> Result<(), Error> {
        if self.has_next(close)? {
            return Err(Error::at(self.de.pos, "container has unread elements"));
        }
        Ok(())
    }

    fn element<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        match self.ty {
            Some(marker) => seed.deserialize(Typed {
                de: &mut *self.de,
                marker,
            }),
            None => seed.deserialize(&mut *self.de),
        }
    }
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if !self.has_next(b']')? {
            return Ok(None);
        }
        self.element(seed).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        self.count
    }
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if !self.has_next(b'}')? {
            return Ok(None);
        }
        // Object keys are strings without the 'S' marker.
        let key = self.de.str_payload()?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        self.element(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.count
    }
}

#[cfg(test)]
mod tests;
