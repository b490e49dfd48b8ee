//! `atropos-injector` on loopback, as separate processes with their own tokens and state
//! folders, and `atropos run` sending trials to them: spread by label, one injector killed
//! mid-run, the controller killed mid-run, wrong tokens, allow-lists, mutual TLS.
//!
//! Every process these tests signal is one they spawned (the injectors, `atropos`); every
//! leftover check looks for a token unique to the test, in argv or environment.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Group, Owned, atropos, processes_with, run_json, tempdir, token};

/// The built `atropos-injector`, beside `atropos`.
fn injector_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_atropos")).with_file_name("atropos-injector")
}

/// One injector this test started.
struct Injector {
    child: Owned,
    url: String,
    token: String,
    log: PathBuf,
}

impl Injector {
    /// Starts `atropos-injector` on a loopback port of its choosing, as node `name`.
    fn start(dir: &Path, name: &str, labels: &[&str], extra: &[&str]) -> Injector {
        let token = token(&format!("token-{name}"));
        let token_file = dir.join(format!("{name}.token"));
        std::fs::write(&token_file, &token).unwrap();
        let state = dir.join(format!("{name}.state"));
        let work = dir.join(format!("{name}.work"));
        std::fs::create_dir_all(&work).unwrap();
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(injector_bin());
        cmd.args(["--listen", "127.0.0.1:0", "--node", name])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--state-dir")
            .arg(&state)
            .arg("--work-dir")
            .arg(&work);
        for label in labels {
            cmd.args(["--label", label]);
        }
        cmd.args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("atropos-injector starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http"))
            .unwrap_or_else(|| {
                panic!(
                    "no address in {line:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_owned();
        Injector {
            child: Owned(child),
            url,
            token,
            log,
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.0.id()).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `host:port` of its URL.
    fn address(&self) -> String {
        self.url.split("://").nth(1).unwrap().to_owned()
    }
}

/// A plain HTTP/1.1 request; returns the status and the body.
fn http(address: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A trial request for `node` that runs `sh -c SCRIPT` once, `E2E_MARKER=marker` in its
/// environment, until `hold` after it said `ready` (then SIGTERM).
fn request(node: &str, id: &str, script: &str, marker: &str, hold: Duration) -> String {
    use atropos_injector::wire::TrialRequest;
    use atropos_injector::{Finish, PLAN_FORMAT, PhasePlan, RunTarget, Target, TrialPlan};
    let req = TrialRequest {
        format: PLAN_FORMAT,
        node: node.to_owned(),
        run: "test".into(),
        trial: TrialPlan {
            format: PLAN_FORMAT,
            id: id.to_owned(),
            target: Target::Run(RunTarget {
                argv: vec!["sh".into(), "-c".into(), script.to_owned()],
                env: vec![("E2E_MARKER".into(), marker.to_owned())],
                cwd: "/".into(),
            }),
            phases: vec![PhasePlan {
                name: "ready".into(),
                marker: atropos_injector::Marker::Stdout("^ready$".into()),
                within: None,
            }],
            steps: Vec::new(),
            watches: Vec::new(),
            finish: Finish::Stop,
            hold,
            grace: Duration::from_secs(5),
            timeout: hold + Duration::from_secs(10),
            sample_resources: false,
            tail_lines: 5,
            kill_orphans: true,
        },
        after: Default::default(),
        bind: Default::default(),
        select: None,
    };
    serde_json::to_string(&req).unwrap()
}

/// `atropos.yaml` declaring `injectors`: name, URL, token (written to a file beside it)
/// and more fields.
fn write_fleet(dir: &Path, injectors: &[(&str, &str, &str, &str)]) {
    let mut yaml = String::from("kind: Injectors\ninjectors:\n");
    for (name, url, token, extra) in injectors {
        let file = dir.join(format!("{name}.controller-token"));
        std::fs::write(&file, token).unwrap();
        yaml.push_str(&format!(
            "  - {{ name: {name}, url: \"{url}\", token_file: {}{extra} }}\n",
            file.display()
        ));
    }
    std::fs::write(dir.join("atropos.yaml"), yaml).unwrap();
}

/// An experiment whose target says `ready`, then lives `life` unless SIGTERMed `offset`
/// into `ready`; `placement` is its `target.node`/`target.nodes` line.
fn experiment(
    dir: &Path,
    tok: &str,
    placement: &str,
    life: &str,
    offset: &str,
    trials: u32,
) -> PathBuf {
    let path = dir.join("remote.yaml");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: remote }}
spec:
  target:
    {placement}
    run:
      command: ["sh", "-c", "echo ready; exec sleep {life}", "{tok}"]
      env: {{ E2E_MARKER: "{tok}" }}
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready$" }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready, offset: {offset} }} }}
  expect:
    exit: {{ signals: [SIGTERM], within: 2s }}
  trials: {trials}
  timeout: 50s
"#
        ),
    )
    .unwrap();
    path
}

/// `atropos run EXP -j JOBS --no-db --json JSON` in the background, stderr to `stderr`.
fn spawn_run(exp: &Path, jobs: u32, json: &Path, stderr: Stdio) -> std::process::Child {
    atropos()
        .arg("run")
        .arg(exp)
        .args(["-j", &jobs.to_string(), "--no-db", "--json"])
        .arg(json)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// The JSON report at `path`.
fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Waits up to `limit` for no process to carry `tok`.
fn nothing_left(tok: &str, limit: Duration, what: &str) {
    wait_until(limit, what, || processes_with(tok).is_empty());
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn an_experiment_spreads_over_the_injectors_its_labels_pick_and_one_lost_costs_only_its_trials() {
    let dir = tempdir();
    let tok = token("spread");
    let n1 = Injector::start(dir.path(), "n1", &["role=cache"], &["--max-trials", "2"]);
    let n2 = Injector::start(dir.path(), "n2", &["role=cache"], &["--max-trials", "2"]);
    let n3 = Injector::start(dir.path(), "n3", &["role=db"], &[]);
    write_fleet(
        dir.path(),
        &[
            ("n1", &n1.url, &n1.token, ""),
            ("n2", &n2.url, &n2.token, ""),
            ("n3", &n3.url, &n3.token, ""),
        ],
    );
    // Targets that would live 2 s; the fault ends them 300 ms into `ready`, so that n2 has
    // trials in flight whenever it is killed.
    let exp = experiment(dir.path(), &tok, "nodes: { role: cache }", "2", "300ms", 24);
    let json = dir.path().join("report.json");
    let mut run = spawn_run(&exp, 4, &json, Stdio::piped());
    // n2 dies while it runs trials: once it has started a few.
    wait_until(Duration::from_secs(20), "n2 to start trials", || {
        n2.log().matches("trial started").count() >= 3
    });
    kill(n2.pid());
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    run.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let report: serde_json::Value = read_report(&json);
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(
        trials.len(),
        25,
        "the baseline and 24 trials ran; stderr:\n{stderr}"
    );
    let on = |node: &str| {
        trials
            .iter()
            .filter(|t| t["node"] == node)
            .collect::<Vec<_>>()
    };
    assert!(on("n3").is_empty(), "n3 is role=db: nothing goes there");
    assert!(
        !on("n1").is_empty() && !on("n2").is_empty(),
        "both cache nodes took trials"
    );
    for t in on("n1") {
        assert_eq!(t["verdict"], "pass", "n1's verdicts are intact: {t}");
    }
    let lost: Vec<_> = on("n2")
        .into_iter()
        .filter(|t| t["verdict"] != "pass")
        .collect();
    assert!(!lost.is_empty(), "n2's trials in flight were lost");
    assert!(
        lost.len() <= 2,
        "at most its --max-trials were in flight: {lost:?}"
    );
    for t in &lost {
        assert_eq!(t["verdict"], "error");
        let reasons = common::reasons(t);
        assert!(reasons.contains("injector `n2` lost"), "{reasons}");
    }
    assert_eq!(
        status.code(),
        Some(3),
        "a lost injector is a harness error; stderr:\n{stderr}"
    );
    // n2's guardian killed what it spawned; n1 ended its own: nothing left on any node.
    nothing_left(&tok, Duration::from_secs(1), "no target left on any node");
}

#[test]
fn killing_the_controller_mid_run_leaves_no_target_on_any_injector_within_a_second() {
    let dir = tempdir();
    let tok = token("ctl-kill");
    let n1 = Injector::start(dir.path(), "n1", &["role=cache"], &[]);
    let n2 = Injector::start(dir.path(), "n2", &["role=cache"], &[]);
    write_fleet(
        dir.path(),
        &[
            ("n1", &n1.url, &n1.token, ""),
            ("n2", &n2.url, &n2.token, ""),
        ],
    );
    // Trials that wait 45 s for their fault: they run when the controller dies.
    let exp = experiment(dir.path(), &tok, "nodes: { role: cache }", "60", "45s", 4);
    let mut run = spawn_run(&exp, 4, &dir.path().join("report.json"), Stdio::null());
    wait_until(Duration::from_secs(20), "a target on a node", || {
        !processes_with(&tok).is_empty()
    });
    kill(i32::try_from(run.id()).unwrap());
    run.wait().unwrap();
    let killed = Instant::now();
    nothing_left(
        &tok,
        Duration::from_secs(1),
        "the injectors to kill the targets",
    );
    eprintln!(
        "targets gone {:?} after the controller's SIGKILL",
        killed.elapsed()
    );
    for inj in [&n1, &n2] {
        wait_until(
            Duration::from_secs(1),
            "the injector to count none running",
            || {
                let (status, body) = http(&inj.address(), "GET", "/v1/info", Some(&inj.token), "");
                status == 200 && body.contains("\"running\":0")
            },
        );
    }
}

#[test]
fn a_wrong_token_is_refused_with_401_and_nothing_starts() {
    let dir = tempdir();
    let n1 = Injector::start(dir.path(), "n1", &[], &[]);
    let marker = dir.path().join("started");
    let body = request(
        "n1",
        "t-401",
        &format!("touch {}; echo ready", marker.display()),
        "-",
        Duration::ZERO,
    );
    for token in [None, Some("wrong-token-of-the-right-shape"), Some("")] {
        let (status, answer) = http(&n1.address(), "POST", "/v1/trials", token, &body);
        assert_eq!(status, 401, "{answer}");
        assert!(answer.contains("bearer token"), "{answer}");
    }
    let (status, _) = http(&n1.address(), "GET", "/v1/info", Some("nope"), "");
    assert_eq!(status, 401);
    let (status, _) = http(&n1.address(), "GET", "/metrics", None, "");
    assert_eq!(status, 401);
    let (status, answer) = http(&n1.address(), "GET", "/healthz", None, "");
    assert_eq!((status, answer.trim()), (200, "ok"));
    // The controller with a wrong token stops before any trial, exit 2.
    let tok = token("wrong-token");
    let wrong = "x".repeat(32);
    write_fleet(dir.path(), &[("n1", &n1.url, &wrong, "")]);
    let exp = experiment(dir.path(), &tok, "node: n1", "0.2", "50ms", 1);
    let out = atropos()
        .arg("run")
        .arg(&exp)
        .arg("--no-db")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!n1.log().contains("trial started"), "{}", n1.log());
    assert!(!marker.exists(), "nothing ran");
}

#[test]
fn a_command_outside_the_allow_list_gets_403_and_nothing_runs() {
    let dir = tempdir();
    let n1 = Injector::start(
        dir.path(),
        "n1",
        &[],
        &["--allow-command", "sh -c echo ready; exec sleep 10"],
    );
    let marker = dir.path().join("started");
    let body = request(
        "n1",
        "t-403",
        &format!("touch {}; echo ready", marker.display()),
        "-",
        Duration::ZERO,
    );
    let (status, answer) = http(&n1.address(), "POST", "/v1/trials", Some(&n1.token), &body);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("--allow-command"), "{answer}");
    assert!(!marker.exists(), "nothing ran");
    // The allowed command runs, and streams its phase and its end.
    let body = request(
        "n1",
        "t-ok",
        "echo ready; exec sleep 10",
        "-",
        Duration::ZERO,
    );
    let (status, answer) = http(&n1.address(), "POST", "/v1/trials", Some(&n1.token), &body);
    assert_eq!(status, 200, "{answer}");
    let lines: Vec<serde_json::Value> = answer
        .lines()
        .filter(|l| l.starts_with('{') || l.starts_with('"'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines[0]["started"]["node"] == "n1", "{answer}");
    assert!(
        lines.iter().any(|l| l["phase"]["name"] == "ready"),
        "{answer}"
    );
    let done = &lines.last().unwrap()["done"];
    assert_eq!(done["observation"]["exit"]["signal"], "SIGTERM", "{answer}");
    assert_eq!(done["node"], "n1");
    // Another format, another node: 409 with both versions; a stranger field: 422.
    let other = body.replacen("\"format\":1", "\"format\":99", 1);
    let (status, answer) = http(&n1.address(), "POST", "/v1/trials", Some(&n1.token), &other);
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer.contains("99") && answer.contains("format 1"),
        "{answer}"
    );
    let other = body.replacen("\"node\":\"n1\"", "\"node\":\"n9\"", 1);
    let (status, _) = http(&n1.address(), "POST", "/v1/trials", Some(&n1.token), &other);
    assert_eq!(status, 409);
    let other = body.replacen('{', "{\"surprise\":1,", 1);
    let (status, _) = http(&n1.address(), "POST", "/v1/trials", Some(&n1.token), &other);
    assert_eq!(status, 422);
    let (status, metrics) = http(&n1.address(), "GET", "/metrics", Some(&n1.token), "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("atropos_injector_trials_running 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("atropos_injector_injection_latency_seconds"),
        "{metrics}"
    );
}

#[test]
fn more_trials_than_max_trials_get_429() {
    let dir = tempdir();
    let n1 = Injector::start(dir.path(), "n1", &[], &["--max-trials", "1"]);
    let tok = token("busy");
    let long = request(
        "n1",
        "t-long",
        "echo ready; exec sleep 30",
        &tok,
        Duration::from_secs(30),
    );
    let address = n1.address();
    let holder = {
        let token = n1.token.clone();
        std::thread::spawn(move || http(&address, "POST", "/v1/trials", Some(&token), &long))
    };
    wait_until(Duration::from_secs(10), "the first trial", || {
        !processes_with(&tok).is_empty()
    });
    let body = request("n1", "t-second", "echo ready", "-", Duration::ZERO);
    let (status, answer) = http(&n1.address(), "POST", "/v1/trials", Some(&n1.token), &body);
    assert_eq!(status, 429, "{answer}");
    let (status, _) = http(
        &n1.address(),
        "DELETE",
        "/v1/trials/t-long",
        Some(&n1.token),
        "",
    );
    assert_eq!(status, 204);
    let (status, answer) = holder.join().unwrap();
    assert_eq!(status, 200);
    assert!(answer.contains("\"stop\":\"interrupted\""), "{answer}");
    assert!(processes_with(&tok).is_empty());
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn certificates(dir: &Path) -> [PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let server = server.signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["controller".to_owned()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server.key", server_key.serialize_pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ];
    files.map(|(name, text)| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    })
}

#[test]
fn mutual_tls_takes_a_client_the_ca_signed_and_refuses_one_without_a_certificate() {
    let dir = tempdir();
    let [ca, cert, key, client, client_key] = certificates(dir.path());
    let tls = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--client-ca",
        ca.to_str().unwrap(),
    ];
    let n1 = Injector::start(dir.path(), "n1", &["role=secure"], &tls);
    assert!(n1.url.starts_with("https://"), "{}", n1.url);
    let tok = token("mtls");
    let with_cert = format!(
        ", ca: {}, client_cert: {}, client_key: {}",
        ca.display(),
        client.display(),
        client_key.display()
    );
    write_fleet(dir.path(), &[("n1", &n1.url, &n1.token, &with_cert)]);
    let exp = experiment(dir.path(), &tok, "node: n1", "5", "50ms", 2);
    let (out, report) = run_json(&[exp.to_str().unwrap()], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 3);
    assert!(
        trials
            .iter()
            .all(|t| t["node"] == "n1" && t["verdict"] == "pass")
    );
    // The store keeps the node, and the dashboard says where the trial ran.
    let id = trials[1]["id"].as_str().unwrap();
    let mut serve = atropos()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("atropos.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = common::served_address(&mut serve);
    let _serve = Owned(serve);
    let (status, page) = http(&served, "GET", &format!("/trials/{id}"), None, "");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(r#"ran on injector node <strong class="node">n1</strong>"#),
        "{page}"
    );
    let (status, api) = http(&served, "GET", &format!("/api/trials/{id}"), None, "");
    assert_eq!(status, 200);
    assert!(api.contains(r#""node":"n1""#), "{api}");
    // Without a client certificate: refused at the handshake, before any trial, exit 2.
    let without = format!(", ca: {}", ca.display());
    write_fleet(dir.path(), &[("n1", &n1.url, &n1.token, &without)]);
    let before = n1.log().matches("trial started").count();
    let out = atropos()
        .arg("run")
        .arg(&exp)
        .arg("--no-db")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("injector `n1`"), "{stderr}");
    assert_eq!(n1.log().matches("trial started").count(), before);
    assert!(
        n1.log().contains("refused a TLS connection"),
        "{}",
        n1.log()
    );
}

#[test]
fn bad_injector_declarations_are_refused_with_their_place_and_exit_2() {
    let dir = tempdir();
    let tok = token("bad-decl");
    let exp = experiment(dir.path(), &tok, "node: n1", "0.1", "50ms", 1);
    let cases = [
        (
            "kind: Injectors\ninjectors:\n  - { name: n1, url: \"http://127.0.0.1:1\", token_file: t, colour: red }\n",
            "atropos.yaml:3:",
            "unknown field `colour`",
        ),
        (
            "kind: Injectors\ninjectors:\n  - { name: n1, url: \"127.0.0.1:1\", token_env: T }\n",
            "injectors[0].url",
            "expected http://",
        ),
        (
            "kind: Nodes\ninjectors: []\n",
            "atropos.yaml:1:",
            "expected `Injectors`",
        ),
        (
            "kind: Injectors\ninjectors:\n  - { name: n2, url: \"http://127.0.0.1:1\", token_env: T }\n",
            "",
            "target.node `n1` matches no injector",
        ),
    ];
    for (yaml, place, message) in cases {
        std::fs::write(dir.path().join("atropos.yaml"), yaml).unwrap();
        let out = atropos()
            .arg("run")
            .arg(&exp)
            .arg("--no-db")
            .env("T", "a-token-long-enough-to-pass")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {stderr}");
        assert!(
            stderr.contains(place) && stderr.contains(message),
            "{yaml}: {stderr}"
        );
    }
}

fn state_of(pid: i32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next()?.trim_start().chars().next())
        .unwrap_or('?')
}

#[test]
fn an_injector_killed_during_a_pause_resumes_the_paused_process_when_it_comes_back() {
    use atropos_injector::wire::TrialRequest;
    use atropos_injector::{
        Action, Aim, AttachTarget, Finish, Identity, Marker, PLAN_FORMAT, PhasePlan, StepPlan,
        Target, TrialPlan, When,
    };
    let dir = tempdir();
    let tok = token("paused");
    // A process this test started, the only one the injector may attach to.
    let mut service = Owned(
        Command::new("sleep")
            .arg("120")
            .env("E2E_MARKER", &tok)
            .spawn()
            .unwrap(),
    );
    let pid = i32::try_from(service.0.id()).unwrap();
    let starttime = atropos_injector::procfs::ProcStat::read(pid)
        .unwrap()
        .starttime;
    let allow = ["--allow-attach", "sleep 120"];
    let n1 = Injector::start(dir.path(), "n1", &[], &allow);
    let req = TrialRequest {
        format: PLAN_FORMAT,
        node: "n1".into(),
        run: "test".into(),
        trial: TrialPlan {
            format: PLAN_FORMAT,
            id: "t-pause".into(),
            target: Target::Attach(AttachTarget {
                processes: vec![Identity { pid, starttime }],
                boot_id: atropos_injector::journal::boot_id().to_owned(),
                cwd: "/".into(),
                cgroup: None,
                spare: Vec::new(),
            }),
            phases: vec![PhasePlan {
                name: "up".into(),
                marker: Marker::Delay(Duration::from_millis(10)),
                within: None,
            }],
            steps: vec![StepPlan {
                action: Action::Pause(Duration::from_secs(60)),
                aim: Aim::Main,
                when: When::Phase {
                    index: 0,
                    offset: Duration::ZERO,
                },
            }],
            watches: Vec::new(),
            finish: Finish::Observe,
            hold: Duration::ZERO,
            grace: Duration::from_secs(1),
            timeout: Duration::from_secs(90),
            sample_resources: false,
            tail_lines: 5,
            kill_orphans: false,
        },
        after: Default::default(),
        bind: Default::default(),
        select: None,
    };
    let body = serde_json::to_string(&req).unwrap();
    let (address, token) = (n1.address(), n1.token.clone());
    let _stream =
        std::thread::spawn(move || http(&address, "POST", "/v1/trials", Some(&token), &body));
    wait_until(Duration::from_secs(10), "the pause", || {
        state_of(pid) == 'T'
    });
    kill(n1.pid());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        state_of(pid),
        'T',
        "nothing resumed it yet: its injector is dead"
    );
    // The same node comes back with the same state folder: the journal names the pause.
    let token_file = dir.path().join("n1.token");
    let back = Owned(
        Command::new(injector_bin())
            .args(["--listen", "127.0.0.1:0", "--node", "n1"])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--state-dir")
            .arg(dir.path().join("n1.state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(5), "the pause to be resumed", || {
        state_of(pid) != 'T'
    });
    assert!(
        service.0.try_wait().unwrap().is_none(),
        "it runs on, resumed"
    );
    drop(back);
    let _ = service.0.kill();
}

#[test]
fn a_hung_injector_is_timed_out_with_the_reason_and_cleans_up_once_it_runs_again() {
    let dir = tempdir();
    let tok = token("hung");
    let n1 = Injector::start(dir.path(), "n1", &[], &[]);
    write_fleet(dir.path(), &[("n1", &n1.url, &n1.token, "")]);
    let exp = experiment(dir.path(), &tok, "node: n1", "60", "45s", 1);
    let json = dir.path().join("report.json");
    let mut run = spawn_run(&exp, 1, &json, Stdio::null());
    wait_until(Duration::from_secs(20), "a trial's target", || {
        n1.log().matches("trial started").count() >= 2 && !processes_with(&tok).is_empty()
    });
    let stop = |sig| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(n1.pid()), sig).unwrap();
    };
    stop(nix::sys::signal::Signal::SIGSTOP);
    let hung = Instant::now();
    let status = run.wait().unwrap();
    let gave_up = hung.elapsed();
    stop(nix::sys::signal::Signal::SIGCONT);
    let report: serde_json::Value = read_report(&json);
    let trial = report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["fault"] == "term-ready")
        .unwrap()
        .clone();
    assert_eq!(trial["verdict"], "error");
    let reasons = common::reasons(&trial);
    assert!(
        reasons.contains("injector `n1` lost: it said nothing for 3s"),
        "{reasons}"
    );
    assert_eq!(status.code(), Some(3));
    assert!(
        gave_up < Duration::from_secs(6),
        "gave up after {gave_up:?}"
    );
    // Running again, the injector finds its controller gone and kills the target.
    nothing_left(&tok, Duration::from_secs(2), "the target to be killed");
}

#[test]
fn the_whole_trial_runs_on_the_node_files_check_recovery_port_and_folder() {
    let dir = tempdir();
    let tok = token("after");
    let n1 = Injector::start(dir.path(), "n1", &[], &[]);
    // The target writes its state into ${trial.dir} and listens on ${trial.port}; the
    // check and the file expectations look there, and the recovery starts it again.
    let path = dir.path().join("after.yaml");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: after }}
spec:
  target:
    node: n1
    run:
      command: ["sh", "-c", "echo port=$1 > ${{trial.dir}}/state; echo ready; exec sleep 30", "{tok}", "${{trial.port}}"]
      env: {{ E2E_MARKER: "{tok}" }}
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready$" }} }}
  faults:
    - {{ name: kill-ready, signal: SIGKILL, at: {{ phase: ready, offset: 10ms }} }}
  expect:
    exit: {{ signals: [SIGKILL, SIGTERM], within: 2s }}
    files: {{ present: ["${{trial.dir}}/state"], absent: ["${{trial.dir}}/state.tmp"] }}
    check: {{ command: ["sh", "-c", "grep -qx port=${{trial.port}} ${{trial.dir}}/state && echo checked-${{trial.port}}"] }}
    recover: {{ reaches: ready, within: 2s }}
  trials: 2
"#
        ),
    )
    .unwrap();
    // From the command line this time: NAME=URL, the token from the environment.
    let json = dir.path().join("report.json");
    let out = atropos()
        .arg("run")
        .arg(&path)
        .args(["--no-db", "--injector"])
        .arg(format!("n1={}", n1.url))
        .arg("--json")
        .arg(&json)
        .env("ATROPOS_INJECTOR_TOKEN", &n1.token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = read_report(&json);
    let trials = common::trials_n(&report, "after", "kill-ready", 2);
    for t in trials {
        assert_eq!(t["node"], "n1");
        assert_eq!(t["verdict"], "pass", "{}", common::reasons(t));
        let check = t["check"]["output"].to_string();
        assert!(check.contains("checked-"), "{check}");
        // The port was the node's, filled into the command, the check and nothing else.
        assert!(!check.contains("trial.port"), "{check}");
        assert!(
            t["recovery"]["reached_ns"].as_u64().is_some(),
            "the restart on the node reached ready: {t}"
        );
    }
    // The node removed the trial folders, and nothing of the trials runs.
    let ids: Vec<&str> = report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let left: Vec<_> = walk(&dir.path().join("n1.work"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| ids.iter().any(|id| n.to_string_lossy().starts_with(id)))
        })
        .collect();
    assert!(left.is_empty(), "trial folders left on the node: {left:?}");
    // Its metrics counted the two SIGKILLs.
    let (_, metrics) = http(&n1.address(), "GET", "/metrics", Some(&n1.token), "");
    assert!(
        metrics.contains(r#"atropos_injector_deliveries_total{outcome="delivered"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("atropos_injector_injection_latency_seconds_count 2"),
        "{metrics}"
    );
    assert!(processes_with(&tok).is_empty());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn an_oversized_or_slowly_sent_request_is_refused_and_nothing_runs() {
    let dir = tempdir();
    let n1 = Injector::start(dir.path(), "n1", &[], &[]);
    let huge = format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(atropos_injector::agent::MAX_BODY + 1)
    );
    let (status, answer) = http(&n1.address(), "POST", "/v1/trials", Some(&n1.token), &huge);
    assert_eq!(status, 413, "{answer}");
    // Half a body, then silence: refused once its time is up.
    let mut stream = std::net::TcpStream::connect(n1.address()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /v1/trials HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 100\r\n\r\n{{\"format\":",
        n1.token
    )
    .unwrap();
    let asked = Instant::now();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let waited = asked.elapsed();
    assert!(
        waited >= atropos_injector::agent::BODY_TIMEOUT - Duration::from_millis(100)
            && waited < atropos_injector::agent::BODY_TIMEOUT + Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(!n1.log().contains("trial started"));
}

#[test]
fn sigint_mid_run_cancels_the_remote_trials_and_records_them_interrupted() {
    let dir = tempdir();
    let tok = token("remote-int");
    let n1 = Injector::start(dir.path(), "n1", &["role=cache"], &[]);
    write_fleet(dir.path(), &[("n1", &n1.url, &n1.token, "")]);
    let exp = experiment(dir.path(), &tok, "nodes: { role: cache }", "60", "45s", 2);
    let json = dir.path().join("report.json");
    let mut run = spawn_run(&exp, 2, &json, Stdio::null());
    wait_until(Duration::from_secs(20), "both trials' targets", || {
        processes_with(&tok).len() >= 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(run.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(3), "an interrupted run exits 3");
    nothing_left(&tok, Duration::from_secs(1), "the targets to be killed");
    let report = read_report(&json);
    let trials = common::trials_n(&report, "remote", "term-ready", 2);
    for t in trials {
        // The injector cancelled it (DELETE) and sent its observation back.
        assert_eq!(t["observation"]["stop"], "interrupted", "{t}");
        assert_eq!(t["node"], "n1");
    }
    assert!(
        n1.log().contains("trial cancelled by its controller"),
        "{}",
        n1.log()
    );
    let (_, metrics) = http(&n1.address(), "GET", "/metrics", Some(&n1.token), "");
    assert!(
        metrics.contains("atropos_injector_trials_running 0"),
        "{metrics}"
    );
}

#[test]
fn an_attach_target_on_every_cache_node_is_selected_and_hit_by_each_node() {
    let dir = tempdir();
    // Two services of this test's own, told apart from everything else by a unique number.
    let tag = common::numeric_tag();
    let arg = format!("3000.{tag}");
    let mut services: Vec<Owned> = (0..2)
        .map(|_| Owned(Command::new("sleep").arg(&arg).spawn().unwrap()))
        .collect();
    let allow = ["--allow-attach", &format!("sleep 3000\\.{tag}")];
    let n1 = Injector::start(dir.path(), "n1", &["role=cache"], &allow);
    let n2 = Injector::start(dir.path(), "n2", &["role=cache"], &allow);
    let n3 = Injector::start(dir.path(), "n3", &["role=db"], &allow);
    write_fleet(
        dir.path(),
        &[
            ("n1", &n1.url, &n1.token, ""),
            ("n2", &n2.url, &n2.token, ""),
            ("n3", &n3.url, &n3.token, ""),
        ],
    );
    let path = dir.path().join("attach-nodes.yaml");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: attach-nodes }}
spec:
  target:
    nodes: {{ role: cache }}
    attach: {{ cmdline: "^sleep 3000\\.{tag}$", count: one, max_targets: 2, cooldown: 10ms }}
  phases:
    - {{ name: up, marker: {{ delay: 10ms }} }}
  faults:
    - {{ name: term-up, signal: SIGTERM, at: {{ phase: up }} }}
  expect:
    exit: {{ within: 2s }}
  trials: 1
"#
        ),
    )
    .unwrap();
    let (out, report) = run_json(&[path.to_str().unwrap(), "--no-db"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let trials = common::trials_n(&report, "attach-nodes", "term-up", 2);
    let nodes: Vec<&str> = trials.iter().map(|t| t["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["n1", "n2"], "one trial per cache node, none on n3");
    for t in &trials {
        assert_eq!(t["verdict"], "pass", "{}", common::reasons(t));
        assert!(
            t["id"]
                .as_str()
                .unwrap()
                .ends_with(t["node"].as_str().unwrap())
        );
    }
    // Each node hit one of the two (the second one the first left), and nothing else.
    let hit: Vec<i64> = trials
        .iter()
        .map(|t| t["observation"]["pid"].as_i64().unwrap())
        .collect();
    assert_ne!(hit[0], hit[1]);
    for service in &mut services {
        let status = service.0.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15),
            "killed by the SIGTERM of a node"
        );
    }
    assert!(!n3.log().contains("trial started"));
}

#[test]
fn a_selection_that_waits_does_not_keep_the_agent_from_stopping() {
    use atropos_injector::wire::SelectPlan;
    let dir = tempdir();
    let tok = token("waits");
    let n1 = Injector::start(dir.path(), "n1", &[], &["--allow-attach", "sleep 1"]);
    // Nothing matches this selector: the node waits for a match, as long as it is let.
    let mut req: atropos_injector::wire::TrialRequest =
        serde_json::from_str(&request("n1", "t-wait", "unused", "-", Duration::ZERO)).unwrap();
    req.trial.target = atropos_injector::Target::Attach(atropos_injector::AttachTarget {
        processes: Vec::new(),
        boot_id: String::new(),
        cwd: "/".into(),
        cgroup: None,
        spare: Vec::new(),
    });
    req.select = Some(SelectPlan {
        selector: atropos_injector::attach::Selector {
            cmdline: Some(regex::Regex::new(&format!("^{tok}$")).unwrap()),
            ..Default::default()
        },
        guard: Default::default(),
        count: atropos_injector::attach::Count::One,
        max_targets: 1,
        seed: 1,
        wait_ns: u64::MAX,
    });
    let body = serde_json::to_string(&req).unwrap();
    let (address, token) = (n1.address(), n1.token.clone());
    let _waiting =
        std::thread::spawn(move || http(&address, "POST", "/v1/trials", Some(&token), &body));
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(n1.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut n1 = n1;
    let asked = Instant::now();
    wait_until(Duration::from_millis(1500), "the agent to stop", || {
        n1.child.0.try_wait().unwrap().is_some()
    });
    eprintln!(
        "stopped {:?} after its SIGTERM; log:\n{}",
        asked.elapsed(),
        n1.log()
    );
}

#[test]
fn a_service_on_a_node_is_recovered_by_its_supervisor_and_measured_there() {
    let dir = tempdir();
    let tag = common::numeric_tag();
    // A supervisor of this test's own: it starts the service again whenever it ends; each
    // service process logs `PID ready` (written by the process the sleep then becomes).
    let log = dir.path().join("service.log");
    let script = format!(
        "while :; do sh -c 'echo \"$$ ready\" >> {log}; exec sleep 3000.{tag}'; sleep 0.2; done",
        log = log.display()
    );
    let _supervisor = Group(
        Command::new("sh")
            .args(["-c", &script])
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let allow = ["--allow-attach", &format!("sleep 3000\\.{tag}")];
    let n1 = Injector::start(dir.path(), "n1", &["role=cache"], &allow);
    write_fleet(dir.path(), &[("n1", &n1.url, &n1.token, "")]);
    let path = dir.path().join("recover-on-node.yaml");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: recover-on-node }}
spec:
  target:
    nodes: {{ role: cache }}
    attach: {{ cmdline: "^sleep 3000\\.{tag}$", cooldown: 10ms }}
  phases:
    - {{ name: ready, marker: {{ log: {{ path: {log:?}, regex: "^${{target.pid}} ready" }} }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready }} }}
  expect:
    exit: {{ within: 2s }}
    recover: {{ reaches: ready, within: 5s }}
  trials: 2
"#,
            log = log.display().to_string()
        ),
    )
    .unwrap();
    let (out, report) = run_json(&[path.to_str().unwrap(), "--no-db"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let trials = common::trials_n(&report, "recover-on-node", "term-ready", 2);
    for t in &trials {
        assert_eq!(t["verdict"], "pass", "{}", common::reasons(t));
        assert_eq!(t["node"], "n1");
        let recovery = &t["recovery"];
        let times = &recovery["attached"];
        let (detected, replaced, reached) = (
            times["detected_ns"].as_u64().unwrap(),
            times["replaced_ns"].as_u64().unwrap(),
            recovery["reached_ns"].as_u64().unwrap(),
        );
        // The supervisor waits 200 ms before it starts the service again.
        assert!(replaced >= 150_000_000, "{recovery:#}");
        assert!(
            reached >= replaced && detected < 2_000_000_000,
            "{recovery:#}"
        );
        assert_ne!(times["pid"], t["observation"]["pid"], "{recovery:#}");
    }
    // The second trial hit the first one's replacement, found on the node.
    assert_eq!(
        trials[1]["observation"]["pid"],
        trials[0]["recovery"]["attached"]["pid"]
    );
    assert!(n1.log().contains("trial started"));
}

#[test]
fn a_node_never_takes_a_cgroup_from_the_request_so_orphans_kill_spares_what_it_does_not_allow() {
    use atropos_injector::{Action, Aim, Finish, Marker, PhasePlan, StepPlan, Target, When};
    let dir = tempdir();
    let tok = token("remote-cgroup");
    let tag = common::numeric_tag();
    // One process the node may attach to, one it may not; both in a cgroup of the test's.
    let cgroup = common::OwnCgroup::new(&tok);
    let mut allowed = Owned(
        Command::new("sleep")
            .arg(format!("3000.{tag}"))
            .spawn()
            .unwrap(),
    );
    let mut other = Owned(
        Command::new("sleep")
            .arg(format!("3001.{tag}"))
            .spawn()
            .unwrap(),
    );
    cgroup.adopt(allowed.0.id());
    cgroup.adopt(other.0.id());
    let n1 = Injector::start(
        dir.path(),
        "n1",
        &[],
        &["--allow-attach", &format!("sleep 3000\\.{tag}")],
    );
    let starttime = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = stat.rsplit(')').next().unwrap();
        rest.split_whitespace()
            .nth(19)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let mut req: atropos_injector::wire::TrialRequest =
        serde_json::from_str(&request("n1", "t-cgroup", "unused", "-", Duration::ZERO)).unwrap();
    // The request names the whole cgroup as the service and asks for orphans killed: the
    // other process would be a member of the target's cgroup, and killed.
    req.trial.target = Target::Attach(atropos_injector::AttachTarget {
        processes: vec![atropos_injector::Identity {
            pid: i32::try_from(allowed.0.id()).unwrap(),
            starttime: starttime(allowed.0.id()),
        }],
        boot_id: atropos_injector::journal::boot_id().to_owned(),
        cwd: "/".into(),
        cgroup: Some(cgroup.path.clone()),
        spare: Vec::new(),
    });
    req.trial.phases = vec![PhasePlan {
        name: "up".into(),
        marker: Marker::Delay(Duration::from_millis(10)),
        within: None,
    }];
    req.trial.steps = vec![StepPlan {
        action: Action::Signal(atropos_injector::Signal::KILL),
        aim: Aim::Main,
        when: When::Phase {
            index: 0,
            offset: Duration::ZERO,
        },
    }];
    req.trial.finish = Finish::Observe;
    req.trial.kill_orphans = true;
    let body = serde_json::to_string(&req).unwrap();
    let (status, answer) = http(&n1.address(), "POST", "/v1/trials", Some(&n1.token), &body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"done\""), "{answer}");
    allowed.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        other.0.try_wait().unwrap().is_none(),
        "the node killed a process --allow-attach does not name: {answer}"
    );
    drop(other);
}

#[test]
fn a_service_recovery_waiting_for_a_phase_the_trial_lacks_is_refused_and_nothing_runs() {
    let dir = tempdir();
    let n1 = Injector::start(dir.path(), "n1", &[], &[]);
    let mut req: atropos_injector::wire::TrialRequest =
        serde_json::from_str(&request("n1", "t-phase", "echo ready", "-", Duration::ZERO)).unwrap();
    req.after.service = Some(atropos_injector::attach::service::ServiceRecoveryPlan {
        phase: "ready".into(),
        index: 5,
        within_ns: 1_000_000_000,
        selector: atropos_injector::attach::Selector {
            name: Some("x".into()),
            ..Default::default()
        },
        guard: Default::default(),
        seed: 1,
    });
    let body = serde_json::to_string(&req).unwrap();
    let (status, answer) = http(&n1.address(), "POST", "/v1/trials", Some(&n1.token), &body);
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("phase 5 of a trial with 1"), "{answer}");
    assert!(!n1.log().contains("trial started"));
}
