#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate::fuzzing::check_validator(data));
