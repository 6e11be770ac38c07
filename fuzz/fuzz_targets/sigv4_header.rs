#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate::fuzzing::check_sigv4_header(data));
