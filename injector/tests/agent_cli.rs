//! The `atropos-injector` binary's own promises: what it is built from, and bad input
//! refused with exit code 2 before it listens. (Its API is tested end to end with the
//! controller in the workspace's `tests/injectors.rs`.)
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::process::Command;

#[test]
fn the_node_agent_is_built_without_sql_kubernetes_or_templates() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "atropos-injector",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.contains("atropos-injector"), "{tree}");
    assert!(tree.contains("rustls"), "the tree is the real one: {tree}");
    for banned in [
        "sqlx",
        "libsqlite3",
        "kube",
        "k8s-openapi",
        "askama",
        "tera",
        "handlebars",
    ] {
        let found: Vec<&str> = tree
            .lines()
            .filter(|l| {
                l.split_whitespace().next() == Some(banned) || l.starts_with(&format!("{banned}-"))
            })
            .collect();
        assert!(
            found.is_empty(),
            "{banned} is in the injector's tree: {found:?}"
        );
    }
}

#[test]
fn bad_input_exits_2_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.token");
    std::fs::write(&short, "abc").unwrap();
    let good = dir.path().join("good.token");
    std::fs::write(&good, "a-token-long-enough-for-the-agent").unwrap();
    let missing = dir.path().join("missing.token");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--token-file".into(),
                missing.display().to_string(),
            ],
            "--token-file",
        ),
        (
            vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--token-file".into(),
                short.display().to_string(),
            ],
            "at least 16 characters",
        ),
        (
            vec!["--listen".into(), "127.0.0.1:0".into()],
            "--token-file",
        ),
        (
            vec![
                "--listen".into(),
                "not-an-address".into(),
                "--token-file".into(),
                good.display().to_string(),
            ],
            "--listen",
        ),
        (
            vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--token-file".into(),
                good.display().to_string(),
                "--allow-command".into(),
                "(unclosed".into(),
            ],
            "--allow-command",
        ),
        (
            vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--token-file".into(),
                good.display().to_string(),
                "--tls-cert".into(),
                good.display().to_string(),
                "--tls-key".into(),
                good.display().to_string(),
            ],
            "not a PEM certificate",
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_atropos-injector"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn the_systemd_unit_is_hardened_and_its_command_line_is_one_the_agent_takes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit =
        std::fs::read_to_string(root.join("deploy/systemd/atropos-injector.service")).unwrap();
    for line in [
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_KILL CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
        "AmbientCapabilities=",
        "Delegate=yes",
        "ProtectSystem=full",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    // Every flag of its ExecStart is one the binary knows.
    let help = Command::new(env!("CARGO_BIN_EXE_atropos-injector"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let exec = unit
        .split("ExecStart=")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .take_while(|l| !l.contains('='))
        .collect::<Vec<_>>()
        .join(" ");
    let flags: Vec<&str> = exec
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(flags.len() >= 6, "{exec}");
    for flag in flags {
        assert!(help.contains(flag), "{flag} is not in the agent's --help");
    }
    // systemd's own check, where it is installed: the unit parses and its command exists.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let dir = tempfile::tempdir().unwrap();
        let local = unit.replace(
            "/usr/local/bin/atropos-injector",
            env!("CARGO_BIN_EXE_atropos-injector"),
        );
        let path = dir.path().join("atropos-injector.service");
        std::fs::write(&path, local).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "{said}");
    }
}
