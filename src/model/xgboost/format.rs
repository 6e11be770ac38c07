//! Format sniffing (JSON, UBJSON, gzip) and unpacking of SageMaker's
//! `model.tar.gz`; the format is told from the bytes, and pickles, legacy
//! binary models and anything else are refused with advice.

use std::io::{Cursor, Read};

use super::document::RawDocument;
use super::{LoadError, ubjson};

/// Decompressed size allowed for a model inside an archive, so that a small
/// gzip bomb cannot take the process down.
const MAX_MEMBER_BYTES: u64 = 1 << 30;

const RESAVE_HINT: &str = "load it with xgboost >= 1.0 and re-save it as JSON or UBJSON, \
     e.g. `booster.save_model(\"model.json\")`";

/// Parses a bare JSON or UBJSON document (a gzip stream here can only be
/// an archive's member).
pub(super) fn read_document(bytes: &[u8]) -> Result<RawDocument, LoadError> {
    let raw: RawDocument = match sniff(bytes) {
        Sniffed::Json => {
            serde_json::from_slice(strip_bom(bytes)).map_err(|e| LoadError::Parse {
                format: "JSON",
                message: e.to_string(),
            })?
        }
        Sniffed::Ubjson => ubjson::from_slice(bytes).map_err(|e| LoadError::Parse {
            format: "UBJSON",
            message: e.to_string(),
        })?,
        Sniffed::Gzip => {
            return Err(LoadError::Archive(
                "the archive member is itself gzip-compressed; expected a JSON or UBJSON \
                 model"
                    .into(),
            ));
        }
        Sniffed::Empty => return Err(LoadError::Format("the model file is empty".into())),
        Sniffed::Pickle => {
            return Err(LoadError::Format(
                "this is a Python pickle (as older SageMaker XGBoost containers wrote), not \
                 an XGBoost model file: unpickle the Booster with the xgboost version that \
                 saved it and save it as JSON or UBJSON, e.g. \
                 `booster.save_model(\"model.json\")`"
                    .into(),
            ));
        }
        Sniffed::Other => {
            return Err(LoadError::Format(format!(
                "not an XGBoost JSON or UBJSON model (nor a model.tar.gz holding one). \
                 XGBoost's legacy binary format (xgboost < 1.0, or `save_model` to a \
                 name without a .json/.ubj extension before xgboost 2.0) is not \
                 supported: {RESAVE_HINT}"
            )));
        }
    };
    Ok(raw)
}

enum Sniffed {
    Empty,
    Gzip,
    Json,
    Ubjson,
    Pickle,
    Other,
}

pub(super) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Tells the model encodings apart by their first bytes. JSON and UBJSON
/// documents both open with `{`; after it, UBJSON has the integer marker of
/// the first key's length (or `}`, `$`, `#`, a no-op), never whitespace or a
/// quote as JSON does.
fn sniff(bytes: &[u8]) -> Sniffed {
    if bytes.is_empty() {
        return Sniffed::Empty;
    }
    if is_gzip(bytes) {
        return Sniffed::Gzip;
    }
    if bytes[0] == b'{'
        && matches!(
            bytes.get(1),
            Some(b'i' | b'U' | b'I' | b'l' | b'L' | b'$' | b'#' | b'N')
        )
    {
        return Sniffed::Ubjson;
    }
    match strip_bom(bytes).iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Sniffed::Json,
        _ if bytes[0] == 0x80 => Sniffed::Pickle,
        _ => Sniffed::Other,
    }
}

/// Editors on Windows like to prefix JSON with a byte-order mark, which the
/// JSON parser does not accept.
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
}

/// The model document inside a gzip stream: a tar (SageMaker's
/// `model.tar.gz`) or, leniently, a gzipped model file.
pub(super) fn unpack_gzip(bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
    let mut gz = flate2::read::GzDecoder::new(bytes);
    let mut head = Vec::with_capacity(512);
    (&mut gz)
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| LoadError::Archive(format!("cannot decompress: {e}")))?;
    if matches!(sniff(&head), Sniffed::Json | Sniffed::Ubjson) {
        return read_capped(Cursor::new(head).chain(gz), "the gzipped model");
    }
    let mut archive = tar::Archive::new(Cursor::new(head).chain(gz));
    let entries = archive
        .entries()
        .map_err(|e| LoadError::Archive(format!("not a tar archive: {e}")))?;
    let mut members = Vec::new();
    let mut candidates = 0usize;
    let mut candidate = None;
    for entry in entries {
        let entry = entry.map_err(|e| LoadError::Archive(format!("damaged tar archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| LoadError::Archive(format!("bad member name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let base = name.rsplit('/').next().unwrap_or(&name).to_string();
        members.push(name.clone());
        // Resource forks that macOS tar adds next to every file.
        if base.starts_with("._") {
            continue;
        }
        if base == "xgboost-model" {
            return read_capped(entry, &name);
        }
        if base.ends_with(".json") || base.ends_with(".ubj") {
            candidates += 1;
            candidate = if candidates == 1 {
                Some(read_capped(entry, &name)?)
            } else {
                None
            };
        }
    }
    match candidate {
        Some(bytes) if candidates == 1 => Ok(bytes),
        _ => {
            const SHOWN: usize = 20;
            let mut listing = members
                .iter()
                .take(SHOWN)
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            if members.len() > SHOWN {
                listing.push_str(&format!(" and {} more", members.len() - SHOWN));
            }
            if listing.is_empty() {
                listing = "none".into();
            }
            Err(LoadError::Archive(format!(
                "expected a member named `xgboost-model` or exactly one *.json or *.ubj \
                 model, found {candidates} candidates; members: {listing}"
            )))
        }
    }
}

fn read_capped(reader: impl Read, what: &str) -> Result<Vec<u8>, LoadError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_MEMBER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LoadError::Archive(format!("cannot read {what}: {e}")))?;
    if bytes.len() as u64 > MAX_MEMBER_BYTES {
        return Err(LoadError::Archive(format!(
            "{what} is larger than {MAX_MEMBER_BYTES} bytes once decompressed"
        )));
    }
    Ok(bytes)
}
