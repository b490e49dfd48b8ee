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
