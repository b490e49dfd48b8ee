//! The agent's API against its own OpenAPI document, by schemathesis (from PyPI; `.ci/run`
//! installs it): every operation, with generated and mutated requests, the bearer token
//! given; its allow-lists let nothing run, and nothing does.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::io::BufRead;
use std::process::{Command, Stdio};

#[test]
fn schemathesis_finds_the_api_as_its_document_says_and_nothing_runs() {
    if Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is missing; .ci/run installs it (python3 -m pip install schemathesis)"
        );
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis)");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_atropos-injector");
    let dir = tempfile::tempdir().unwrap();
    let doc = Command::new(bin).arg("--openapi").output().unwrap();
    assert!(doc.status.success());
    let schema = dir.path().join("openapi.json");
    std::fs::write(&schema, &doc.stdout).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
    let paths: Vec<&String> = parsed["paths"].as_object().unwrap().keys().collect();
    assert_eq!(
        paths,
        [
            "/healthz",
            "/metrics",
            "/v1/info",
            "/v1/openapi.json",
            "/v1/trials",
            "/v1/trials/{id}"
        ]
    );
    let token = format!("schemathesis-token-{}", std::process::id());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--node", "fuzzed"])
        .args(["--allow-command", "atropos-never-matches-anything"])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--work-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap()
        .to_owned();
    let out = Command::new("schemathesis")
        // Its cache goes into the working folder: the test's, not the work tree.
        .current_dir(dir.path())
        .arg("run")
        .arg(&schema)
        .args(["--url", &url])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        // Valid plans are refused here on purpose (403: the allow-list), not accepted.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "25", "--seed", "1", "--no-color"])
        .output()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agent.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    );
    // It stops on SIGTERM, whatever the requests asked it to wait for (a selection asking to
    // wait for ever once kept it running after its SIGTERM).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let stopped = loop {
        if agent.try_wait().unwrap().is_some() {
            break true;
        }
        if std::time::Instant::now() >= deadline {
            let _ = agent.kill();
            let _ = agent.wait();
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        stopped,
        "the agent did not stop within 5 s of its SIGTERM:\n{log}"
    );
    assert!(
        !log.contains("trial started"),
        "a generated request ran a trial:\n{log}"
    );
    assert!(
        log.contains("refused a trial"),
        "the requests reached the API:\n{log}"
    );
}
