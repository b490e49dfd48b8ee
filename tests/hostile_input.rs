//! Hostile experiment files are refused with exit 2, a location and a reason, in at most
//! 100 ms of CPU and 50 MiB of memory, and nothing runs.
//!
//! The cases are the small files of `tests/hostile/` (each with its expected message and
//! place below; a file without an entry fails the test) and the big ones generated here
//! rather than committed: 60 KB and 150 KB of nested brackets, a big string aliased 999 and
//! 20,000 times, a flat list of 500,000 values, 260,000 blank lines, files past the size
//! limit.
//!
//! Each case runs `atropos validate` once, measured with getrusage(RUSAGE_CHILDREN): CPU is
//! the difference before and after (the cases run one after another, and this test binary
//! holds only this one test, so no other child is counted), peak RSS is the largest child
//! so far, so an increase shows the case's own peak and no increase bounds it.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{atropos, tempdir};
use nix::sys::resource::{UsageWho, getrusage};

const MAX_CPU: Duration = Duration::from_millis(100);
const MAX_RSS_KIB: i64 = 50 * 1024;

/// A committed case: its file under `tests/hostile/`, what stderr must say, and where.
const CORPUS: &[(&str, &str, &str)] = &[
    (
        "alias-laughs.yaml",
        "more than 10000 values once its aliases are expanded",
        ":11:",
    ),
    (
        "control-character.yaml",
        "the control character U+0007 at byte offset 100",
        ":4:23:",
    ),
    ("duplicate-key.yaml", "duplicate field `trials`", ":15:3:"),
    ("empty.yaml", "empty.yaml: no experiment in this file", ""),
    (
        "en-dash-phase.yaml",
        "character 3 is U+2013 EN DASH",
        ":8:16:",
    ),
    (
        "ideographic-indentation.yaml",
        "U+3000 IDEOGRAPHIC SPACE in the indentation",
        ":11:1:",
    ),
    (
        "ideographic-space-name.yaml",
        "character 4 is U+3000 IDEOGRAPHIC SPACE",
        ":4:13:",
    ),
    (
        "latin1.yaml",
        "invalid UTF-8 at byte offset 344 (byte 0xe9)",
        ":11:33:",
    ),
    ("long-value.yaml", "expected u32", ":11:11:"),
    ("merge-key.yaml", "unknown field `<<`", ":14:3:"),
    (
        "nested-brackets.yaml",
        "nesting deeper than 32 levels",
        ":11:41:",
    ),
    (
        "nested-dashes.yaml",
        "nesting deeper than 32 levels",
        ":12:",
    ),
    (
        "nested-indentation.yaml",
        "nesting deeper than 32 levels",
        ":43:",
    ),
    (
        "no-break-space-after-colon.yaml",
        "U+00A0 NO-BREAK SPACE after `:`",
        ":11:10:",
    ),
    (
        "no-break-space-fault.yaml",
        "character 5 is U+00A0 NO-BREAK SPACE",
        ":10:15:",
    ),
    (
        "only-comments.yaml",
        "only-comments.yaml: no experiment in this file",
        "",
    ),
    ("tab-indentation.yaml", "a tab in the indentation", ":9:1:"),
    ("tag-custom.yaml", "the tag `!meta`", ":4:11:"),
    ("tag-directive.yaml", "a %TAG directive", ":1:1:"),
    ("tag-null.yaml", "the tag `!!null`", ":11:11:"),
    ("utf16.yaml", "it looks like UTF-16", ":1:1:"),
];

fn hostile_dir() -> PathBuf {
    common::root().join("tests/hostile")
}

/// A valid experiment to make bad in one place.
fn experiment() -> String {
    std::fs::read_to_string(hostile_dir().join("accepted/anchors.yaml")).unwrap()
}

fn aliased(len: usize, uses: usize) -> String {
    let mut text = format!("a: &big {}\nb:\n", "x".repeat(len));
    for _ in 0..uses {
        text.push_str("  - *big\n");
    }
    text
}

/// The generated cases: name, text, what stderr must say, where.
fn generated() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        (
            "brackets-60k",
            format!("a: {}", "[".repeat(60_000)),
            "nesting deeper than 32 levels",
            ":1:35:",
        ),
        (
            "brackets-150k",
            format!("a: {}", "[".repeat(150_000)),
            "nesting deeper than 32 levels",
            ":1:35:",
        ),
        (
            "braces-150k",
            format!("a: {}", "{a: ".repeat(37_000)),
            "nesting deeper than 32 levels",
            ":1:",
        ),
        (
            "dashes-1m",
            format!("{}x\n", "- ".repeat(500_000)),
            "the file is 1000002 bytes",
            "",
        ),
        (
            "dashes-200k",
            format!("{}x\n", "- ".repeat(100_000)),
            "nesting deeper than 32 levels",
            ":1:",
        ),
        (
            "string-1m-aliased-999",
            aliased(1_000_000, 999),
            "expected an experiment file of at most 262144 bytes",
            "",
        ),
        (
            "string-1m-aliased-20000",
            aliased(1_000_000, 20_000),
            "expected an experiment file of at most 262144 bytes",
            "",
        ),
        (
            "string-200k-aliased-999",
            aliased(200_000, 999),
            "KiB of text once its aliases are expanded",
            ":1:4:",
        ),
        (
            "string-10k-aliased-20000",
            aliased(10_000, 20_000),
            "more than 10000 values in one document",
            ":",
        ),
        (
            "string-10k-aliased-5000",
            aliased(10_000, 5_000),
            "KiB of text once its aliases are expanded",
            ":1:4:",
        ),
        (
            "flat-500k",
            format!("a: [{}]\n", "a,".repeat(500_000)),
            "the file is",
            "",
        ),
        (
            "flat-100k",
            format!("a: [{}]\n", "a,".repeat(100_000)),
            "more than 10000 values in one document",
            ":1:",
        ),
        (
            "string-250k-in-a-number",
            experiment().replace(
                "  faults:",
                &format!("  trials: \"{}\"\n  faults:", "x".repeat(250_000)),
            ),
            "invalid type: string",
            ":",
        ),
        (
            "faults-1000-broken",
            experiment().split("  faults:").next().unwrap().to_owned()
                + "  faults:\n"
                + &(0..1000)
                    .map(|i| {
                        format!("    - {{ name: f{i}, signal: TERM, at: {{ phase: nope }} }}\n")
                    })
                    .collect::<String>(),
            "and 990 more problems in experiment `anchors`",
            ":1:1:",
        ),
        (
            "blank-lines-260k",
            "\n".repeat(260_000),
            "no experiment in this file",
            "",
        ),
        (
            "comment-lines-130k",
            "#\n".repeat(130_000),
            "no experiment in this file",
            "",
        ),
        (
            "string-250k-api-version",
            experiment().replace("atropos/v1", &"x".repeat(250_000)),
            "is not supported; expected atropos/v1",
            ":2:13:",
        ),
    ]
}

struct Measured {
    cpu: Duration,
    wall: Duration,
    peak_rss_kib: i64,
}

fn validate(path: &Path) -> (std::process::Output, Measured) {
    let before = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let start = Instant::now();
    let out = atropos().arg("validate").arg(path).output().unwrap();
    let wall = start.elapsed();
    let after = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let cpu = |r: &nix::sys::resource::Usage| {
        let micros = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
        };
        micros(r.user_time()) + micros(r.system_time())
    };
    (
        out,
        Measured {
            cpu: cpu(&after) - cpu(&before),
            wall,
            peak_rss_kib: after.max_rss(),
        },
    )
}

fn check(name: &str, path: &Path, expected: &str, place: &str, figures: &mut Vec<String>) {
    let (out, m) = validate(path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
    assert!(
        stderr.contains(expected),
        "{name}: expected `{expected}` in:\n{stderr}"
    );
    assert!(stderr.contains("nothing was run"), "{name}: {stderr}");
    if !place.is_empty() {
        let located = format!("{}{place}", path.display());
        assert!(
            stderr.contains(&located),
            "{name}: expected `{located}` in:\n{stderr}"
        );
    }
    assert!(
        stderr.len() < 2000,
        "{name}: {} bytes of errors",
        stderr.len()
    );
    figures.push(format!(
        "{name:<34} cpu {:>6.1} ms  wall {:>6.1} ms  peak rss so far {:>6.1} MiB",
        m.cpu.as_secs_f64() * 1e3,
        m.wall.as_secs_f64() * 1e3,
        m.peak_rss_kib as f64 / 1024.0
    ));
    assert!(m.cpu <= MAX_CPU, "{name}: {:?} of CPU to reject", m.cpu);
    // Wall time is shared with whatever else the machine runs; CPU is the figure that
    // holds. The wall bound only catches a rejection that waits on something.
    assert!(
        m.wall <= Duration::from_secs(2),
        "{name}: {:?} to reject",
        m.wall
    );
    assert!(
        m.peak_rss_kib <= MAX_RSS_KIB,
        "{name}: a peak of {} KiB",
        m.peak_rss_kib
    );
}

/// One test only (see the module doc), ending with the files that must pass: directives,
/// a byte order mark, CRLF line ends, anchors within the budget, and scalars and comments
/// full of brackets, `!`, `&` and `*`.
#[test]
fn hostile_files_are_refused_with_their_place_within_100ms_of_cpu_and_50mib_and_benign_oddities_pass()
 {
    let mut committed: Vec<String> = std::fs::read_dir(hostile_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    let listed: Vec<&str> = CORPUS.iter().map(|c| c.0).collect();
    assert_eq!(
        committed, listed,
        "every file of tests/hostile/ has its expectation here"
    );

    let mut figures = Vec::new();
    for (file, expected, place) in CORPUS {
        check(
            file,
            &hostile_dir().join(file),
            expected,
            place,
            &mut figures,
        );
    }
    let dir = tempdir();
    let cases = generated();
    assert_eq!(cases.len(), 17);
    for (name, text, expected, place) in cases {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        check(name, &path, expected, place, &mut figures);
    }
    // A hostile file in a folder stops the whole run: nothing is run, not even the others.
    let out = atropos()
        .args(["run", "--no-db"])
        .arg(hostile_dir().join("tag-null.yaml"))
        .arg(dir.path().join("brackets-150k.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the tag `!!null`") && stderr.contains("nesting deeper"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 problems found; nothing was run"),
        "{stderr}"
    );
    eprintln!("{}", figures.join("\n"));

    // In the same test, after the measured ones: a second test would spawn at the same time.
    let out = atropos()
        .arg("validate")
        .arg(hostile_dir().join("accepted"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok: 7 experiments in 6 files"
    );
}
