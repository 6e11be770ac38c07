//! Tests of the UBJSON reader on hand-written documents.

use super::*;
use serde_json::{Value, json};

fn parse(bytes: &[u8]) -> Result<Value, Error> {
    from_slice::<Value>(bytes)
}

#[test]
fn scalars_and_strings() {
    assert_eq!(parse(b"T").unwrap(), json!(true));
    assert_eq!(parse(b"F").unwrap(), json!(false));
    assert_eq!(parse(b"Z").unwrap(), Value::Null);
    assert_eq!(parse(&[b'i', 0xff]).unwrap(), json!(-1));
    assert_eq!(parse(&[b'U', 0xff]).unwrap(), json!(255));
    assert_eq!(parse(&[b'I', 0x01, 0x00]).unwrap(), json!(256));
    assert_eq!(parse(&[b'l', 0xff, 0xff, 0xff, 0xfe]).unwrap(), json!(-2));
    assert_eq!(
        parse(&[b'L', 0, 0, 0, 1, 0, 0, 0, 0]).unwrap(),
        json!(1u64 << 32)
    );
    let mut f = vec![b'd'];
    f.extend_from_slice(&0.5f32.to_be_bytes());
    assert_eq!(parse(&f).unwrap(), json!(0.5));
    let mut d = vec![b'D'];
    d.extend_from_slice(&(-2.25f64).to_be_bytes());
    assert_eq!(parse(&d).unwrap(), json!(-2.25));
    assert_eq!(parse(b"Si\x03abc").unwrap(), json!("abc"));
    assert_eq!(parse(b"Ca").unwrap(), json!("a"));
}

#[test]
fn containers() {
    // Unsized, counted and typed forms, with no-op padding.
    assert_eq!(parse(b"[i\x01NU\x02]").unwrap(), json!([1, 2]));
    assert_eq!(parse(b"[#i\x02i\x01Si\x01x").unwrap(), json!([1, "x"]));
    assert_eq!(parse(b"[$U#i\x03\x01\x02\x03").unwrap(), json!([1, 2, 3]));
    assert_eq!(parse(b"[$S#i\x02i\x01ai\x01b").unwrap(), json!(["a", "b"]));
    assert_eq!(parse(b"[[$T#i\x01]").unwrap(), json!([[true]]));
    assert_eq!(parse(b"[#L\0\0\0\0\0\0\0\0").unwrap(), json!([]));
    assert_eq!(
        parse(b"{i\x01a[$i#U\x02\xff\x01i\x01b{}}").unwrap(),
        json!({"a": [-1, 1], "b": {}})
    );
    assert_eq!(parse(b"{#i\x01i\x01aSi\x01z").unwrap(), json!({"a": "z"}));
    assert_eq!(
        parse(b"{$U#i\x02i\x01a\x07i\x01b\x08").unwrap(),
        json!({"a": 7, "b": 8})
    );
}

#[test]
fn malformed_input_is_an_error() {
    let cases: &[&[u8]] = &[
        b"",
        b"[",
        b"{",
        b"{i\x01a",
        b"Si\x05ab",
        b"Si\xffab",
        b"[$l#i\x02\0\0\0\x01",
        // Counts far beyond the input, in every flavour.
        b"[#L\x7f\xff\xff\xff\xff\xff\xff\xff",
        b"[$d#L\x10\0\0\0\0\0\0\0",
        b"[$Z#L\0\0\0\0\xff\xff\xff\xff",
        // Payload-free elements still count one byte each.
        b"[$T#i\x02",
        b"{#l\x7f\xff\xff\xff",
        b"[#i\xff",
        b"[$[#i\x01]",
        b"[$i]",
        b"S\xff\x01a",
        b"Hi\x011",
        b"?",
        b"Si\x02\xc3\x28",
        b"TT",
        b"[i\x01}",
    ];
    for case in cases {
        assert!(parse(case).is_err(), "accepted {case:?}");
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let deep = vec![b'['; 100_000];
    let err = parse(&deep).unwrap_err();
    assert!(err.to_string().contains("nesting"), "{err}");
    let mut ok = vec![b'['; 100];
    ok.extend(std::iter::repeat_n(b']', 100));
    assert!(parse(&ok).is_ok());
}
