//! `benches/compare` end to end in `--smoke` mode (tiny loads, 200 idle clients), so the
//! benchmark cannot rot: every row of its tables must be produced. Timings are never checked.
//! The floor relay (`examples/floor_relay.rs`) joins as a fourth target when cargo has
//! built it already (`cargo test` builds examples; `cargo test --test it` does not).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Scenario label and nominal client count of every row the throughput table must have.
const ROWS: [(&str, u32); 13] = [
    ("select-only, simple protocol", 10),
    ("select-only, simple protocol", 100),
    ("select-only, simple protocol", 1000),
    ("select-only, extended protocol", 10),
    ("select-only, extended protocol", 100),
    ("select-only, extended protocol", 1000),
    ("select-only, prepared protocol", 10),
    ("select-only, prepared protocol", 100),
    ("select-only, prepared protocol", 1000),
    ("TPC-B (pgbench default)", 50),
    ("connection storm (-C), select-only", 50),
    ("select-only, TLS from client", 100),
    ("select-only, TLS to server", 100),
];

const INSTALL_HINT: &str = "install it with: apt-get update && apt-get install -y pgbouncer \
     (scripts/test.sh does this)";

fn pgbouncer_installed() -> bool {
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("pgbouncer").is_file())
    });
    on_path || Path::new("/usr/sbin/pgbouncer").is_file()
}

/// Runs the script, stopping it (SIGTERM, so it cleans up, then SIGKILL) past `limit`.
fn run_compare(args: &[&str], limit: Duration) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/compare");
    let mut child = Command::new(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (it needs python3: apt-get install -y python3)",
                script.display()
            )
        });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let grace = Instant::now() + Duration::from_secs(20);
            while child.try_wait().expect("try_wait").is_none() && Instant::now() < grace {
                std::thread::sleep(POLL_INTERVAL);
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(s) if s.success() => (stdout, stderr),
        Some(s) => panic!(
            "benches/compare exited with {s}\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}"
        ),
        None => panic!("benches/compare still running after {limit:?}\n--- stderr ---\n{stderr}"),
    }
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect()
}

/// The floor relay built beside the pgfunnel binary, if cargo built the examples.
fn prebuilt_floor(pgfunnel: &str) -> Option<PathBuf> {
    let path = Path::new(pgfunnel).parent()?.join("examples/floor_relay");
    path.is_file().then_some(path)
}

/// Index of every column of the table whose header line starts with `prefix`.
fn columns(stdout: &str, prefix: &str) -> Option<Vec<String>> {
    stdout.lines().find(|l| l.starts_with(prefix)).map(cells)
}

fn col(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name:?} in {header:?}"))
}

fn is_number(cell: &str) -> bool {
    cell.replace(',', "").parse::<f64>().is_ok()
}

/// `avg / p99` with both numbers.
fn is_latency(cell: &str) -> bool {
    cell.split_once(" / ")
        .is_some_and(|(a, p)| is_number(a) && is_number(p))
}

#[test]
fn compare_script_produces_every_row_in_smoke_mode() {
    assert!(
        pgbouncer_installed(),
        "PgBouncer is not installed; {INSTALL_HINT}"
    );
    let pgfunnel = env!("CARGO_BIN_EXE_pgfunnel");
    let floor = prebuilt_floor(pgfunnel);
    // Session mode: what pgfunnel pools in today. Switch to transaction mode (the script's
    // default) once it lands, keeping the prepared rows' expectations in mind.
    let mut args = vec![
        "--smoke",
        "--no-install",
        "--pool-mode",
        "session",
        "--pgfunnel-bin",
        pgfunnel,
    ];
    if let Some(path) = floor.as_deref().and_then(Path::to_str) {
        args.extend(["--floor-bin", path]);
    }
    let (stdout, stderr) = run_compare(&args, Duration::from_secs(180));
    let context = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(!stdout.contains("failed"), "a run failed\n{context}");

    // Throughput table: scenario | clients | TPS ×3 | TPS × | latency ×3 | × | CPU ×2 | CPU ×
    // (| TPS floor | CPU µs/tx floor with the floor).
    let header = columns(&stdout, "| scenario | clients | TPS direct")
        .unwrap_or_else(|| panic!("no throughput table\n{context}"));
    assert_eq!(
        header.len(),
        13 + 2 * usize::from(floor.is_some()),
        "{context}"
    );
    let mut found = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with("| ")) {
        let c = cells(line);
        if c.len() != header.len() || c[0] == "scenario" {
            continue;
        }
        let nominal: u32 = match c[1].split_once(" (") {
            Some((_, n)) => n.trim_end_matches(')').parse().expect("nominal clients"),
            None => c[1].parse().expect("clients"),
        };
        let tls = c[0].contains("TLS");
        // Direct Postgres always runs; the poolers too, except TLS rows where a pooler
        // lacks TLS (reported n/a after a live probe).
        assert!(
            is_number(&c[2]) && is_latency(&c[6]),
            "direct cells in {line}\n{context}"
        );
        for (tps, lat, cpu) in [(3, 7, 10), (4, 8, 11)] {
            if tls && c[tps] == "n/a" {
                continue;
            }
            assert!(
                is_number(&c[tps]) && is_latency(&c[lat]) && is_number(&c[cpu]),
                "pooler cells {tps}/{lat}/{cpu} in {line}\n{context}"
            );
        }
        if c[4] != "n/a" && c[3] != "n/a" {
            // A CPU ratio needs PgBouncer's CPU above zero, which tiny runs may not reach.
            assert!(
                is_number(&c[5]) && (is_number(&c[12]) || c[12] == "—"),
                "ratios in {line}\n{context}"
            );
        }
        if floor.is_some() {
            let (tps, cpu) = (col(&header, "TPS floor"), col(&header, "CPU µs/tx floor"));
            // The floor has no TLS and cannot run named prepared statements.
            let runs = !tls && !c[0].contains("prepared");
            assert!(
                if runs {
                    is_number(&c[tps]) && is_number(&c[cpu])
                } else {
                    c[tps] == "n/a" && c[cpu] == "n/a"
                },
                "floor cells in {line}\n{context}"
            );
        }
        found.push((c[0].clone(), nominal));
    }
    let expected: Vec<(String, u32)> = ROWS.iter().map(|(l, n)| (l.to_string(), *n)).collect();
    assert_eq!(found, expected, "throughput rows\n{context}");

    // CPU split table: user and system µs/tx of every pooler that ran the row.
    let split = columns(&stdout, "| scenario | clients | user PgBouncer")
        .unwrap_or_else(|| panic!("no CPU split table\n{context}"));
    let mut split_rows = 0;
    for line in stdout.lines().filter(|l| l.starts_with("| ")) {
        let c = cells(line);
        if c.len() != split.len() || c[0] == "scenario" {
            continue;
        }
        for name in ["PgBouncer", "pgfunnel"] {
            let (user, sys) = (
                col(&split, &format!("user {name}")),
                col(&split, &format!("sys {name}")),
            );
            assert!(
                (is_number(&c[user]) && is_number(&c[sys]))
                    || (c[user] == "n/a" && c[sys] == "n/a"),
                "{name} user/sys in {line}\n{context}"
            );
        }
        split_rows += 1;
    }
    assert_eq!(split_rows, ROWS.len(), "CPU split rows\n{context}");

    // Memory table: every idle client held by both poolers, a per-client figure for each.
    let held = stdout
        .lines()
        .find(|l| l.starts_with("| idle clients held"))
        .unwrap_or_else(|| panic!("no idle-clients row\n{context}"));
    assert_eq!(
        cells(held)[1..3],
        ["200 / 200", "200 / 200"],
        "idle clients held\n{context}"
    );
    // The same for idle TLS clients (certificates are made whenever openssl is there).
    if let Some(held) = stdout
        .lines()
        .find(|l| l.starts_with("| idle TLS clients held"))
    {
        assert_eq!(
            cells(held)[1..3],
            ["200 / 200", "200 / 200"],
            "idle TLS clients held\n{context}"
        );
    }
    for label in [
        "| RSS per idle client (kB)",
        "| RSS after they leave (MB)",
        "| RSS per idle TLS client (kB)",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label}\n{context}"));
        let c = cells(row);
        assert!(is_number(&c[1]) && is_number(&c[2]), "{row}\n{context}");
    }
}
