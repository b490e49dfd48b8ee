//! Attach selection against real services from Debian, started by this test in a temp folder
//! on loopback ports: a Redis found by its pidfile, and the nginx workers found as the
//! children of the master its pidfile names. Both rewrite their process titles, so their
//! command lines carry no token of ours: every selector here is scoped by a pidfile in this
//! test's own folder. `.ci/run` installs the packages; without them these tests fail rather
//! than skip. The services are stopped through the processes this test spawned.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{attach_dry_run, attach_experiment, tempdir};

/// A service this test spawned: stopped with `signal` (its own graceful stop), then reaped.
struct Service {
    child: Child,
    stop: nix::sys::signal::Signal,
}

impl Drop for Service {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // Our own child, not yet reaped: its number is still its own.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = nix::sys::signal::kill(pid, self.stop);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pid_in(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn dry_run(dir: &Path, attach: &str) -> (i32, String, String) {
    let out = attach_dry_run(dir, &attach_experiment(attach, ""), &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_redis_is_selected_by_its_pidfile_and_its_whole_name() {
    let dir = tempdir();
    let pidfile = dir.path().join("redis.pid");
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir.path())
        .arg("--pidfile")
        .arg(&pidfile)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (.ci/run installs it)");
    let redis = Service {
        child,
        stop: nix::sys::signal::Signal::SIGTERM,
    };
    wait_for("redis", || pid_in(&pidfile).is_some());
    assert_eq!(pid_in(&pidfile), Some(redis.child.id() as i32));
    let (code, stdout, stderr) = dry_run(
        dir.path(),
        &format!(
            "{{ pidfile: {:?}, name: redis-server }}",
            pidfile.display().to_string()
        ),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("pid {} ·", redis.child.id())),
        "{stdout}"
    );
    assert!(stdout.contains("1 of 1 matching"), "{stdout}");
    // Its title is rewritten into argv[0] (`redis-server 127.0.0.1:PORT`, one word with
    // spaces): `name` takes the title's first word, and nothing less.
    let (code, _, stderr) = dry_run(
        dir.path(),
        &format!(
            "{{ pidfile: {:?}, name: redis }}",
            pidfile.display().to_string()
        ),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no process matches"), "{stderr}");
}

/// An nginx master with two workers, started by this test in `prefix` on a loopback port;
/// returns it with its pidfile and port. Dropped: SIGQUIT (its graceful stop), then reaped.
fn start_nginx(prefix: &Path) -> (Service, std::path::PathBuf, u16) {
    let port = free_port();
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let pidfile = prefix.join("nginx.pid");
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "worker_processes 2;\n\
             pid {pid};\n\
             error_log {prefix}/logs/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n  \
             proxy_temp_path {prefix}/proxy;\n  fastcgi_temp_path {prefix}/fastcgi;\n  \
             uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n  \
             server {{ listen 127.0.0.1:{port}; return 204; }}\n}}\n",
            pid = pidfile.display(),
            prefix = prefix.display(),
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed (.ci/run installs it)");
    let master = Service {
        child,
        stop: nix::sys::signal::Signal::SIGQUIT,
    };
    let master_pid = master.child.id() as i32;
    wait_for("nginx and its two workers", || {
        pid_in(&pidfile) == Some(master_pid) && workers_of(master_pid).len() == 2
    });
    (master, pidfile, port)
}

/// The children of `pid`, as `/proc` lists them.
fn workers_of(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|c| c.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[test]
fn nginx_workers_are_selected_as_the_children_of_the_master_its_pidfile_names() {
    let dir = tempdir();
    let prefix = dir.path();
    let (master, pidfile, _) = start_nginx(prefix);
    let master_pid = master.child.id() as i32;
    let workers = workers_of(master_pid);
    let parent = format!("{{ pidfile: {:?} }}", pidfile.display().to_string());
    // The workers run as `nobody`: another user's processes are refused unless allowed.
    let (code, _, stderr) = dry_run(prefix, &format!("{{ parent: {parent} }}"));
    assert_eq!(code, 2, "{stderr}");
    for w in &workers {
        assert!(
            stderr.contains(&format!("{w} (owned by uid 65534, not this user")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("need `allow_users:`"), "{stderr}");
    let parent = format!("{parent}, allow_users: [nobody]");
    // By default one target at most: two workers match, so it refuses and lists both.
    let (code, _, stderr) = dry_run(prefix, &format!("{{ parent: {parent} }}"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("2 processes match, but at most 1 may"),
        "{stderr}"
    );
    for w in &workers {
        assert!(
            stderr.contains(&format!("{w} (nginx: worker process)")),
            "{stderr}"
        );
    }
    // One drawn of the two, with the run's seed.
    let (code, stdout, stderr) = dry_run(
        prefix,
        &format!("{{ parent: {parent}, count: one, max_targets: 2 }}"),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("1 of 2 matching (max_targets 2)"),
        "{stdout}"
    );
    let chosen = workers
        .iter()
        .filter(|w| stdout.contains(&format!("pid {w} ·")))
        .count();
    assert_eq!(chosen, 1, "{stdout}");
    assert!(
        !stdout.contains(&format!("pid {master_pid} ·")),
        "the master is not its own child: {stdout}"
    );
}

/// A runit `runsv` this test spawned for one service folder; dropped: the service is
/// brought down and runsv told to exit, through its own control pipe.
struct Supervised {
    runsv: Child,
    service: std::path::PathBuf,
}

impl Supervised {
    fn start(service: &Path) -> Supervised {
        let runsv = Command::new("runsv")
            .arg(service)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("runit is installed (.ci/run installs it)");
        Supervised {
            runsv,
            service: service.to_owned(),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        use std::io::Write;
        let control = self.service.join("supervise/control");
        if let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(control) {
            // `d`: down (SIGTERM, then SIGCONT, to the service); `x`: exit once it is down.
            let _ = pipe.write_all(b"dx");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.runsv.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.runsv.kill();
        let _ = self.runsv.wait();
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli comes with redis-server");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `atropos run --json` of `yaml` with its store in `dir`: exit code, report, stderr.
fn run(dir: &Path, yaml: &str) -> (Option<i32>, serde_json::Value, String) {
    let path = dir.join("experiment.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (out, report) = common::run_json(&[path.to_str().unwrap()], dir);
    (
        out.status.code(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A Redis under a `runsv` of this test's, in `d`, on a loopback port; saving on shutdown.
struct RunitRedis {
    _runit: Supervised,
    port: u16,
    pidfile: std::path::PathBuf,
    log: std::path::PathBuf,
}

fn start_redis_under_runit(d: &Path) -> RunitRedis {
    let port = free_port();
    let service = d.join("sv/redis");
    std::fs::create_dir_all(&service).unwrap();
    std::fs::create_dir_all(d.join("data")).unwrap();
    let (pidfile, log) = (d.join("redis.pid"), d.join("redis.log"));
    let run_script = service.join("run");
    std::fs::write(
        &run_script,
        format!(
            "#!/bin/sh\nexec redis-server --port {port} --bind 127.0.0.1 --dir {data} \
             --pidfile {pid} --logfile {log} --save '3600 1' --appendonly no \
             --daemonize no --enable-debug-command local\n",
            data = d.join("data").display(),
            pid = pidfile.display(),
            log = log.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run_script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let runit = Supervised::start(&service);
    wait_for("redis under runsv", || redis_cli(port, &["ping"]) == "PONG");
    RunitRedis {
        _runit: runit,
        port,
        pidfile,
        log,
    }
}

#[test]
fn a_redis_under_runit_saves_on_sigterm_and_is_ready_again_with_no_key_lost() {
    let dir = tempdir();
    let d = dir.path();
    let redis = start_redis_under_runit(d);
    let (port, pidfile, log) = (redis.port, &redis.pidfile, &redis.log);
    assert_eq!(redis_cli(port, &["debug", "populate", "1000"]), "OK");
    let first = pid_in(pidfile).unwrap();
    // Nothing lost: every key back after the restart, and the save logged on each stop.
    let check = d.join("check.sh");
    std::fs::write(
        &check,
        format!(
            "test \"$(redis-cli -h 127.0.0.1 -p {port} dbsize)\" = 1000 && \
             grep -c 'DB saved on disk' '{}'\n",
            log.display()
        ),
    )
    .unwrap();
    let yaml = format!(
        r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: redis-under-runit }}
spec:
  target:
    attach: {{ pidfile: {pidfile:?}, name: redis-server, cooldown: 100ms }}
  phases:
    - {{ name: ready, marker: {{ log: {{ path: {log:?}, regex: "Ready to accept connections" }} }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready, offset: 20ms }} }}
  expect:
    exit: {{ within: 5s }}
    recover: {{ reaches: ready, within: 10s }}
    check: {{ command: ["sh", {check:?}] }}
  trials: 2
  timeout: 15s
"#,
        pidfile = pidfile.display().to_string(),
        log = log.display().to_string(),
        check = check.display().to_string(),
    );
    let (code, report, stderr) = run(d, &yaml);
    assert_eq!(code, Some(0), "{stderr}\n{report:#}");
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2, "{report:#}");
    let mut hit = Vec::new();
    for t in trials {
        assert_eq!(t["verdict"], "pass", "{t:#}");
        let obs = &t["observation"];
        hit.push(obs["pid"].as_i64().unwrap());
        // Up when selected: its "ready" line was in the log already.
        let evidence = obs["phases"][0]["evidence"].as_str().unwrap();
        assert!(
            evidence.starts_with("already reached at selection: in the log: ")
                && evidence.ends_with("Ready to accept connections"),
            "{obs:#}"
        );
        assert_eq!(obs["deliveries"][0]["outcome"], "delivered");
        assert_eq!(obs["stop"], "exited");
        let recovery = &t["recovery"];
        let times = &recovery["attached"];
        let replacement = times["pid"].as_i64().unwrap();
        assert_ne!(replacement, obs["pid"].as_i64().unwrap(), "{recovery:#}");
        assert!(times["detected_ns"].as_u64().is_some(), "{recovery:#}");
        let (replaced, reached) = (
            times["replaced_ns"].as_u64().unwrap(),
            recovery["reached_ns"].as_u64().unwrap(),
        );
        assert!(replaced <= reached, "{recovery:#}");
        eprintln!(
            "recovery of pid {}: detected {} ns, replaced {replaced} ns, ready {reached} ns",
            obs["pid"], times["detected_ns"]
        );
        assert!(
            recovery["observation"]["phases"][0]["evidence"]
                .as_str()
                .unwrap()
                .contains("Ready to accept connections"),
            "{recovery:#}"
        );
        let check = &t["check"];
        assert_eq!(check["code"], 0, "{check:#}");
    }
    // Each trial selected afresh: the second hit the process that replaced the first.
    assert_eq!(hit[0], i64::from(first));
    assert_eq!(hit[1], trials[0]["recovery"]["attached"]["pid"]);
    assert_eq!(redis_cli(port, &["dbsize"]), "1000");
}

#[test]
fn nginx_replaces_a_killed_worker_reloads_on_sighup_and_stops_gracefully_on_sigquit() {
    let dir = tempdir();
    let prefix = dir.path();
    let (mut master, pidfile, port) = start_nginx(prefix);
    let master_pid = master.child.id() as i32;
    let experiment = |attach: String, fault: &str, expect: &str| {
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: nginx }}
spec:
  target:
    attach: {attach}
  phases:
    - {{ name: ready, marker: {{ listen: {port} }} }}
  faults:
    - {{ name: f, signal: {fault}, at: {{ phase: ready, offset: 10ms }} }}
  expect: {expect}
  trials: 1
  timeout: 10s
"#
        )
    };
    let pidfile = format!("{:?}", pidfile.display().to_string());

    // A worker, drawn of the two, SIGKILLed: the master forks a new one at once.
    let before = workers_of(master_pid);
    let (code, report, stderr) = run(
        prefix,
        &experiment(
            format!(
                "{{ parent: {{ pidfile: {pidfile} }}, allow_users: [nobody], count: one, \
                 max_targets: 2 }}"
            ),
            "SIGKILL",
            "{ exit: { within: 2s }, recover: { reaches: ready, within: 5s } }",
        ),
    );
    assert_eq!(code, Some(0), "{stderr}\n{report:#}");
    let t = &report["trials"][0];
    let killed = t["observation"]["pid"].as_i64().unwrap().to_string();
    assert!(before.contains(&killed), "{before:?} {t:#}");
    let replacement = t["recovery"]["attached"]["pid"]
        .as_i64()
        .unwrap()
        .to_string();
    let after = workers_of(master_pid);
    assert!(
        !after.contains(&killed) && after.contains(&replacement),
        "{after:?}"
    );
    assert_eq!(after.len(), 2, "{after:?}");
    eprintln!(
        "nginx worker recovery: replaced {} ns, ready {} ns",
        t["recovery"]["attached"]["replaced_ns"], t["recovery"]["reached_ns"]
    );

    // SIGHUP to the master: it reloads; new workers, the old ones gone; it keeps running.
    let old = workers_of(master_pid).join(" ");
    let check = prefix.join("reloaded.sh");
    std::fs::write(
        &check,
        format!(
            "for _ in $(seq 100); do\n  now=$(cat /proc/{master_pid}/task/{master_pid}/children)\n  \
             set -- $now\n  stale=0\n  for w in {old}; do case \" $now \" in *\" $w \"*) stale=1;; esac; done\n  \
             [ $# -eq 2 ] && [ $stale -eq 0 ] && exit 0\n  sleep 0.05\ndone\nexit 1\n"
        ),
    )
    .unwrap();
    let (code, report, stderr) = run(
        prefix,
        &experiment(
            format!("{{ pidfile: {pidfile}, name: nginx }}"),
            "SIGHUP",
            &format!(
                "{{ check: {{ command: [sh, {:?}] }} }}",
                check.display().to_string()
            ),
        ),
    );
    assert_eq!(code, Some(0), "{stderr}\n{report:#}");
    let t = &report["trials"][0];
    assert_eq!(t["observation"]["stop"], "observed", "{t:#}");
    assert_eq!(t["observation"]["pid"], master_pid);
    assert!(master.child.try_wait().unwrap().is_none(), "still running");

    // SIGQUIT to the master: a graceful stop, within the time asked.
    let (code, report, stderr) = run(
        prefix,
        &experiment(
            format!("{{ pidfile: {pidfile}, name: nginx }}"),
            "SIGQUIT",
            "{ exit: { within: 5s } }",
        ),
    );
    assert_eq!(code, Some(0), "{stderr}\n{report:#}");
    let t = &report["trials"][0];
    assert_eq!(t["observation"]["stop"], "exited", "{t:#}");
    assert_eq!(
        t["observation"]["exit"]["code"],
        serde_json::Value::Null,
        "unknowable to atropos"
    );
    // Its parent, this test, learns the status: 0.
    let status = master.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(workers_of(master_pid).is_empty());
}

#[test]
fn a_redis_killed_while_it_loads_a_large_rdb_still_reaches_ready_after_its_restart() {
    const KEYS: &str = "1500000";
    let dir = tempdir();
    let d = dir.path();
    let redis = start_redis_under_runit(d);
    let (port, pidfile, log) = (redis.port, &redis.pidfile, &redis.log);
    assert_eq!(redis_cli(port, &["debug", "populate", KEYS]), "OK");
    assert_eq!(redis_cli(port, &["save"]), "OK");
    let check = d.join("check.sh");
    std::fs::write(
        &check,
        format!("test \"$(redis-cli -h 127.0.0.1 -p {port} dbsize)\" = {KEYS}\n"),
    )
    .unwrap();
    // Each process writes its pid at the head of its log lines: `${target.pid}` keeps a
    // former process's "Ready" line, still in the file, from counting for the new one.
    // The first fault stops the service; the second trial selects the process runsv starts
    // next, while it loads, and kills it there.
    let yaml = format!(
        r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: redis-loading }}
spec:
  target:
    attach: {{ pidfile: {pidfile:?}, name: redis-server, cooldown: 0s, max_signals: 2 }}
  phases:
    - {{ name: loading, marker: {{ log: {{ path: {log:?}, regex: "^${{target.pid}}:M .*Loading RDB" }} }} }}
    - {{ name: ready, marker: {{ log: {{ path: {log:?}, regex: "^${{target.pid}}:M .*Ready to accept connections" }} }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready }} }}
    - {{ name: kill-loading, signal: SIGKILL, at: {{ phase: loading, offset: 50ms }} }}
  expect:
    exit: {{ within: 15s }}
  overrides:
    kill-loading:
      exit: {{ within: 2s }}
      recover: {{ reaches: ready, within: 30s }}
      check: {{ command: ["sh", {check:?}] }}
  trials: 1
  timeout: 30s
"#,
        pidfile = pidfile.display().to_string(),
        log = log.display().to_string(),
        check = check.display().to_string(),
    );
    let (code, report, stderr) = run(d, &yaml);
    assert_eq!(code, Some(0), "{stderr}\n{report:#}");
    let trials = report["trials"].as_array().unwrap();
    let kill = trials
        .iter()
        .find(|t| t["fault"] == "kill-loading")
        .unwrap();
    let delivery = &kill["observation"]["deliveries"][0];
    assert_eq!(delivery["phase"], "loading", "{kill:#}");
    assert_eq!(delivery["outcome"], "delivered");
    // Killed before it could be ready: its own "Ready" line never came.
    assert_eq!(
        kill["observation"]["phases"][1]["entered_ns"],
        serde_json::Value::Null,
        "{kill:#}"
    );
    let recovery = &kill["recovery"];
    assert!(recovery["reached_ns"].as_u64().is_some(), "{recovery:#}");
    assert_eq!(kill["check"]["code"], 0, "{kill:#}");
    eprintln!(
        "killed while loading at {} ns after selection; ready again {} ns after the exit",
        delivery["delivered_ns"], recovery["reached_ns"]
    );
    let text = std::fs::read_to_string(log).unwrap();
    let loaded: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("DB loaded from disk"))
        .collect();
    eprintln!("{loaded:?}");
}
