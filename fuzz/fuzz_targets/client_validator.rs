#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pgfunnel_fuzz::client_validator(data));
