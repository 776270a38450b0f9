#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pgfunnel_fuzz::rewriter(data));
