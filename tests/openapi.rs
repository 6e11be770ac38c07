//! The committed OpenAPI document must be what the code generates.

#[test]
fn committed_openapi_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = infergate::api::openapi_json();
    assert!(
        committed == generated,
        "openapi/openapi.json is not up to date with the code; regenerate it with\n\n    \
         cargo run --quiet -- openapi > openapi/openapi.json\n"
    );
}
