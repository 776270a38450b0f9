//! Bounded, seeded fuzzing of every parser that reads a peer's or a file's bytes: the same
//! targets as `fuzz/` (included by path), run over the checked-in seed corpus and then over
//! random mutations of it. It runs in every `cargo test`, with or without cargo-fuzz, and
//! replays any crash input libFuzzer saved into fuzz/corpus/<target>/seed-regress-*.
//!
//! Knobs: `PGFUNNEL_FUZZ_SECS` (time per target, default 1.5), `PGFUNNEL_FUZZ_SEED`
//! (default fixed, so CI is reproducible; a failure prints the seed and the input).

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MAX_INPUTS_PER_TARGET: usize = 200_000;
const MAX_INPUT_LEN: usize = 4096;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {} missing: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).expect("read seed"))
        .collect();
    assert!(!seeds.is_empty(), "no seed-* files in {}", dir.display());
    seeds
}

/// One libFuzzer-style mutation (a few of its strategies: flips, interesting bytes,
/// insertions, deletions, duplication, splicing with another seed).
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    const INTERESTING: &[u8] = &[
        0, 1, 3, 4, 5, 0x7f, 0x80, 0xfe, 0xff, b'=', b',', b'\n', b'"',
    ];
    let rounds = rng.gen_range(1..=4);
    for _ in 0..rounds {
        let len = input.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                input.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(16));
                input.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(64));
                let chunk = input[i..i + n].to_vec();
                let at = rng.gen_range(0..=input.len());
                input.splice(at..at, chunk);
            }
            5 => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let cut = rng.gen_range(0..=input.len());
                let from = rng.gen_range(0..=other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            _ if len >= 4 => {
                // A big-endian length field somewhere: 0, tiny, huge, negative.
                let i = rng.gen_range(0..=len - 4);
                let v: u32 = [0, 3, 4, 5, 0x7fff_ffff, 0xffff_ffff, rng.gen()][rng.gen_range(0..7)];
                input[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => input.push(rng.gen()),
        }
    }
    input.truncate(MAX_INPUT_LEN);
}

fn run_one(name: &str, target: targets::Target, input: &[u8], seed: u64) {
    let result = std::panic::catch_unwind(|| target(input));
    if result.is_err() {
        panic!(
            "fuzz target {name} panicked (PGFUNNEL_FUZZ_SEED={seed}) on input {input:02x?}\n\
             save it as fuzz/corpus/{name}/seed-regress-<n> and fix the parser"
        );
    }
}

#[test]
fn every_parser_survives_seeded_random_input() {
    let secs: f64 = std::env::var("PGFUNNEL_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.5);
    let seed: u64 = std::env::var("PGFUNNEL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f022);
    let budget = Duration::from_secs_f64(secs);
    let mut report = Vec::new();
    for &(name, target) in targets::TARGETS {
        let seeds = corpus(name);
        for s in &seeds {
            run_one(name, target, s, seed);
        }
        let mut rng = StdRng::seed_from_u64(seed ^ name.len() as u64);
        let started = Instant::now();
        let mut runs = 0;
        while runs < MAX_INPUTS_PER_TARGET && started.elapsed() < budget {
            let mut input = seeds[rng.gen_range(0..seeds.len())].clone();
            mutate(&mut rng, &mut input, &seeds);
            run_one(name, target, &input, seed);
            runs += 1;
        }
        assert!(runs > 0 || budget.is_zero(), "{name}: no mutated input ran");
        report.push(format!("{name}: {} seeds + {runs} mutations", seeds.len()));
    }
    eprintln!("fuzz smoke (seed {seed}): {}", report.join(", "));
}
