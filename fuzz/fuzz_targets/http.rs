//! Fuzz target: `cap4::fuzz::http` (what it feeds and checks is documented there).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cap4::fuzz::http(data));
