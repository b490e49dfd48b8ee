//! The experiment format: the public YAML API of atropos.
//!
//! Every struct rejects unknown keys and documents each field; the doc comments become the
//! descriptions of `atropos schema`. Durations are humantime (`150ms`, `5s`), signals go by
//! name (`SIGTERM`, `TERM`, `15`). Parsing only checks shapes; [`super::validate`] checks
//! meaning (phase references, regexes, templates) and reports every problem at once.

use std::collections::BTreeMap;
use std::time::Duration;

use atropos_injector::Signal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::offset::Offset;
use super::size::ByteSize;

/// One experiment: a target, its phases, the faults to inject and what must hold after them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Experiment {
    /// Format version; always `atropos/v1`.
    pub api_version: String,
    /// Always `Experiment`.
    pub kind: String,
    /// Name and labels.
    pub metadata: Metadata,
    /// What to run, what to inject, what to expect.
    pub spec: Spec,
}

/// Name and labels of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique name, used in reports and in `--filter`: letters A-Z a-z, digits, `.`, `_`
    /// and `-`, starting with a letter or digit, at most 63 characters.
    pub name: String,
    /// Free-form labels (team, service, suite).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The body of an experiment (also the body of the Kubernetes custom resource).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// What faults hit.
    pub target: Target,
    /// Named stretches of the target's life, in order; `start` and `exited` are implicit.
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// The faults; each runs `trials` times against a fresh target.
    pub faults: Vec<Fault>,
    /// What must hold after every fault (and in the baseline trial).
    #[serde(default)]
    pub expect: Expect,
    /// Per-fault expectations, by fault name; each key given replaces the one in `expect`.
    #[serde(default)]
    pub overrides: BTreeMap<String, Expect>,
    /// Trials per fault.
    #[serde(default = "default_trials")]
    pub trials: u32,
    /// Seed of the run's random generator; `--seed` overrides it; random when absent.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Limit for one trial, from spawn to the end of the clean-up (default 30s).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// How long the baseline lets the last phase run before stopping the target with
    /// SIGTERM (default 200ms); also the window of `offset: random` in the last phase.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub hold: Option<Duration>,
    /// Cron line for the controller's scheduler (`0 14 * * FRI`, as crontab writes it; a
    /// sixth field in front counts seconds); ignored by `atropos run`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The IANA time zone `schedule`, `windows` and `blackouts` are read in
    /// (`Europe/Paris`); default UTC. A change to or from summer time neither skips nor
    /// repeats a run.
    #[serde(default)]
    pub timezone: Option<String>,
    /// What a tick does while a run of this experiment started by the schedule is still
    /// going: `forbid` (the tick is skipped, with why; the default), `allow` (both run), or
    /// `replace` (the running one is aborted, a new one starts).
    #[serde(default)]
    pub concurrency: Concurrency,
    /// How late a tick may still start (the controller was down, or busy): a later one is
    /// skipped with why. Default: no limit; after downtime the latest missed tick runs
    /// once, never a backlog.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub starting_deadline: Option<Duration>,
    /// Fire nothing on the schedule (manual triggers still run).
    #[serde(default)]
    pub suspend: bool,
    /// Periods in which scheduled runs may start (a game day: `{ cron: "0 14 * * FRI",
    /// for: 2h }`); none: any time.
    #[serde(default)]
    pub windows: Vec<Period>,
    /// Periods in which scheduled runs never start (a release freeze: `{ from: "2026-12-18
    /// 00:00", to: "2027-01-04 00:00" }`).
    #[serde(default)]
    pub blackouts: Vec<Period>,
    /// Stop conditions: health probes checked before the first trial (not healthy: the run
    /// is skipped), all through the run (`failure_threshold` failures in a row: the run is
    /// aborted, every paused process resumed, every target stopped), and after the last
    /// trial.
    #[serde(default)]
    pub abort: Vec<AbortProbe>,
}

/// A stop condition: one probe of the service's health, exactly one of `http`, `command`
/// or `prometheus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortProbe {
    /// Its name, in the run's record and the abort reason.
    pub name: String,
    /// An HTTP check.
    #[serde(default)]
    pub http: Option<HttpProbe>,
    /// A command that must exit 0 (program and arguments, run from the experiment's folder).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// A Prometheus instant query compared with a threshold.
    #[serde(default)]
    pub prometheus: Option<PrometheusProbe>,
    /// How often it is checked during the run (default 1s).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub interval: Option<Duration>,
    /// How long one check may take before it counts as failed (default 1s).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Failures in a row that stop the run (default 1).
    #[serde(default)]
    pub failure_threshold: Option<u32>,
}

/// An HTTP probe: a GET whose status (and body) must be as expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// The URL (`http://` or `https://`).
    pub url: String,
    /// Statuses that count as healthy: codes (`200`) or ranges (`"200-299"`); default 2xx.
    #[serde(default)]
    pub status: Vec<StatusValue>,
    /// A regex the body must match.
    #[serde(default)]
    pub body: Option<String>,
}

/// A Prometheus probe: an instant query whose first value must stay on one side of a
/// threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusProbe {
    /// The Prometheus server (`http://127.0.0.1:9090`).
    pub url: String,
    /// The PromQL instant query.
    pub query: String,
    /// Healthy while the value is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// Healthy while the value is above this.
    #[serde(default)]
    pub above: Option<f64>,
}

/// What a schedule's tick does while the run of an earlier tick is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// The tick is skipped, and the reason kept.
    #[default]
    Forbid,
    /// Both run.
    Allow,
    /// The running one is aborted and a new one starts.
    Replace,
}

/// A stretch of wall-clock time in the experiment's time zone: recurring (`cron` and `for`)
/// or once (`from` and `to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// When each recurring period begins, as a cron line (`0 14 * * FRI`).
    #[serde(default)]
    pub cron: Option<String>,
    /// How long each recurring period lasts (`2h`).
    #[serde(default, rename = "for", with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub lasts: Option<Duration>,
    /// When a one-off period begins (`2026-12-18 00:00`, local time).
    #[serde(default)]
    pub from: Option<String>,
    /// When it ends (`2027-01-04 00:00`, local time).
    #[serde(default)]
    pub to: Option<String>,
}

fn default_trials() -> u32 {
    1
}

/// What faults hit: exactly one of `run` and `attach`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A command spawned fresh for every trial.
    #[serde(default)]
    pub run: Option<RunSpec>,
    /// Running processes atropos did not start, selected from `/proc`.
    #[serde(default)]
    pub attach: Option<AttachSpec>,
    /// The injector node the trials run on (declared in `atropos.yaml` or given with
    /// `--injector`); with neither this nor `nodes`, they run in-process.
    #[serde(default)]
    pub node: Option<String>,
    /// The injector nodes whose labels include all of these: trials are spread over them.
    #[serde(default)]
    pub nodes: Option<std::collections::BTreeMap<String, String>>,
}

/// Running processes to aim at: every criterion given must hold (AND). Nothing is read by
/// running `ps`: `/proc` only.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachSpec {
    /// This process id.
    #[serde(default)]
    pub pid: Option<i32>,
    /// The process id written in this file (relative to the experiment file's folder).
    #[serde(default)]
    pub pidfile: Option<String>,
    /// The executable, as `/proc/PID/exe` names it.
    #[serde(default)]
    pub exe: Option<String>,
    /// The basename of the whole `argv[0]` (not the 15-byte `comm`).
    #[serde(default)]
    pub name: Option<String>,
    /// A regex over the command line, arguments joined by single spaces.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// A cgroup v2 path (`/system.slice/redis.service`), or `CONTROLLER:PATH` of a v1
    /// hierarchy; the process's cgroup must be it or below it.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// A systemd unit (`redis-server.service`), found in the process's cgroup path.
    #[serde(default)]
    pub systemd_unit: Option<String>,
    /// The user owning the process: a name or a uid.
    #[serde(default)]
    pub user: Option<Scalar>,
    /// Children of a process this selector matches (the nginx workers under their master).
    #[serde(default)]
    pub parent: Option<Box<AttachSpec>>,
    /// How many of the matches to aim at: `one` (default), `all`, a number, or a share
    /// such as `50%`; drawn with the run's seed.
    #[serde(default)]
    pub count: Option<Scalar>,
    /// The most processes that may match at all (default 1): more is an error that lists
    /// them, never a guess.
    #[serde(default)]
    pub max_targets: Option<u32>,
    /// The run's blast radius: the most signals it may send to attached processes in all
    /// (default: chosen targets × the steps of every trial); reaching it stops the run.
    #[serde(default)]
    pub max_signals: Option<u32>,
    /// Process ids never to aim at, whatever matches.
    #[serde(default)]
    pub protect: Vec<i32>,
    /// Users (names or uids) other than atropos's own whose processes may be selected.
    #[serde(default)]
    pub allow_users: Vec<Scalar>,
    /// The pause between two trials against the service (default 1s): trials run one after
    /// another, each once the last has ended and its recovery (if asked for) was measured.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub cooldown: Option<Duration>,
}

/// A YAML scalar kept as text: a number or a string (`user: 1000`, `user: redis`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(with = "serde_json::Value")]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar_text(d, "a number or a string").map(Scalar)
    }
}

/// A command atropos spawns for every trial, in its own process group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Program and arguments; a relative program path is taken from `cwd`.
    /// May use `${trial.port}`, `${trial.dir}`, `${trial.id}`.
    pub command: Vec<String>,
    /// Extra environment variables (templates allowed in values).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the experiment file's folder (default: that folder).
    #[serde(default)]
    pub cwd: Option<String>,
}

/// A named phase and the marker that shows it has been entered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Phase name (`init.db`, `ready`): letters A-Z a-z, digits, `.`, `_` and `-`, starting
    /// with a letter or digit, at most 63 characters; not `start` or `exited`.
    pub name: String,
    /// What shows the phase has been entered.
    pub marker: Marker,
    /// Deadline for entering this phase, counted from the target's start: a start-up SLO
    /// such as "ready within 2s". Missing it fails the trial at once, naming the phase the
    /// target was still in. Must be more than 0 and at most the trial's `timeout`.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub within: Option<Duration>,
}

/// What shows that a phase has been entered: a map with exactly one of these keys.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Marker {
    /// A line on stdout matching this regex.
    Stdout(String),
    /// A line on stderr matching this regex.
    Stderr(String),
    /// A line appended to a log file matching a regex.
    Log(LogMarker),
    /// An entry a systemd unit logged to the journal, its message matching a regex (read
    /// with `journalctl`, which must be installed where the trial runs).
    Journald(JournaldMarker),
    /// A TCP port listening (a number, or `${trial.port}`).
    Listen(PortValue),
    /// An HTTP URL answering 2xx (plain http on this machine).
    Http(String),
    /// A file existing.
    File(String),
    /// A delay since the spawn.
    Delay(
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        Duration,
    ),
}

/// A log file and the regex a new line must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogMarker {
    /// The log file (relative to the target's cwd).
    pub path: String,
    /// The regex.
    pub regex: String,
}

/// A systemd unit's journal and the regex a new entry's message must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournaldMarker {
    /// The unit whose entries count (`redis-server.service`).
    pub unit: String,
    /// The regex the entry's message must match.
    pub regex: String,
    /// The journal's folder when it is not the system's (`journalctl --directory`, relative
    /// to the target's cwd): a container's journal, or one copied from another machine.
    #[serde(default)]
    pub directory: Option<String>,
}

/// An HTTP status or a range of them (`200`, `"200-299"`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(with = "serde_json::Value")]
pub struct StatusValue(pub String);

impl<'de> Deserialize<'de> for StatusValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar_text(d, "a status such as 200, or a range such as \"200-299\"").map(StatusValue)
    }
}

/// A TCP port: a number or a template such as `${trial.port}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(with = "serde_json::Value")]
pub struct PortValue(pub String);

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar_text(d, "a port number or a template like \"${trial.port}\"").map(PortValue)
    }
}

/// A YAML number or string as text; `expecting` says what else was wanted.
fn scalar_text<'de, D: serde::Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<String, D::Error> {
    struct V(&'static str);
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }
    d.deserialize_any(V(expecting))
}

/// A fault: one step (given inline) or a sequence of `steps` run in order in one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Unique name within the experiment: letters A-Z a-z, digits, `.`, `_` and `-`,
    /// starting with a letter or digit, at most 63 characters; not `baseline`.
    pub name: String,
    /// Signal to send (single-step fault).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub signal: Option<Signal>,
    /// SIGSTOP, then SIGCONT after this long (single-step fault).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub pause: Option<Duration>,
    /// At whom (default `main`).
    #[serde(default)]
    pub to: Option<Aim>,
    /// When (single-step fault).
    #[serde(default)]
    pub at: Option<At>,
    /// Steps of a multi-step fault, instead of `signal`/`pause`/`to`/`at`.
    #[serde(default)]
    pub steps: Option<Vec<Step>>,
}

/// One step of a multi-step fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Signal to send.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub signal: Option<Signal>,
    /// SIGSTOP, then SIGCONT after this long.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub pause: Option<Duration>,
    /// At whom (default `main`).
    #[serde(default)]
    pub to: Option<Aim>,
    /// When: at a phase, or after the target exited. The first step needs it.
    #[serde(default)]
    pub at: Option<At>,
    /// When: this long after the previous step.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub after: Option<Duration>,
}

/// At whom a step is aimed: `main`, `group`, or `{ descendant: REGEX }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aim {
    /// The main process.
    Main,
    /// The main process's process group.
    Group,
    /// Descendants whose name or command line matches this regex.
    Descendant(String),
}

/// When a step fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct At {
    /// Fire when this phase is entered (plus `offset`).
    #[serde(default)]
    pub phase: Option<String>,
    /// Delay after the phase marker: `100ms`, `random` (within the phase, as long as the
    /// baseline trial measured it), or `random(10ms..200ms)`.
    #[serde(default)]
    pub offset: Option<Offset>,
    /// Fire after the target exited: `zombie` (not reaped yet) or `reaped`.
    #[serde(default)]
    pub exited: Option<ExitedAt>,
}

impl<'de> Deserialize<'de> for Marker {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const KEYS: &[&str] = &[
            "stdout", "stderr", "log", "journald", "listen", "http", "file", "delay",
        ];
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Marker;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a map with one of: stdout, stderr, log, journald, listen, http, file, delay",
                )
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Marker, A::Error> {
                use serde::de::Error;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(
                        "empty marker; expected one of stdout, stderr, log, journald, listen, http, file, delay",
                    ));
                };
                let marker = match key.as_str() {
                    "stdout" => Marker::Stdout(map.next_value()?),
                    "stderr" => Marker::Stderr(map.next_value()?),
                    "log" => Marker::Log(map.next_value()?),
                    "journald" => Marker::Journald(map.next_value()?),
                    "listen" => Marker::Listen(map.next_value()?),
                    "http" => Marker::Http(map.next_value()?),
                    "file" => Marker::File(map.next_value()?),
                    "delay" => Marker::Delay(
                        map.next_value::<humantime_serde::Serde<Duration>>()?
                            .into_inner(),
                    ),
                    other => return Err(A::Error::unknown_field(other, KEYS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "`{key}` and `{extra}` in one marker; expected exactly one"
                    )));
                }
                Ok(marker)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Aim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Aim;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`main`, `group`, or `{ descendant: REGEX }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Aim, E> {
                match v {
                    "main" => Ok(Aim::Main),
                    "group" => Ok(Aim::Group),
                    other => Err(E::unknown_variant(other, &["main", "group", "descendant"])),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Aim, A::Error> {
                use serde::de::Error;
                match map.next_key::<String>()?.as_deref() {
                    Some("descendant") => {
                        let aim = Aim::Descendant(map.next_value()?);
                        if map.next_key::<String>()?.is_some() {
                            return Err(A::Error::custom(
                                "expected only `descendant: REGEX` in `to`",
                            ));
                        }
                        Ok(aim)
                    }
                    Some(other) => Err(A::Error::unknown_field(other, &["descendant"])),
                    None => Err(A::Error::custom(
                        "empty `to`; expected main, group or { descendant: REGEX }",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Which side of reaping an after-exit step fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitedAt {
    /// The target exited and is not reaped yet.
    Zombie,
    /// The target exited and has been reaped.
    Reaped,
}

/// What must hold after a fault. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// How the target must exit, and how long it has after the last step (grace).
    #[serde(default)]
    pub exit: Option<ExitExpect>,
    /// Phases that must be entered.
    #[serde(default)]
    pub reaches: Option<Vec<String>>,
    /// Patterns stdout must and must not show.
    #[serde(default)]
    pub stdout: Option<OutputExpect>,
    /// Patterns stderr must and must not show.
    #[serde(default)]
    pub stderr: Option<OutputExpect>,
    /// `none`: no descendant may outlive the main process. `allowed`: report only.
    #[serde(default)]
    pub orphans: Option<OrphanPolicy>,
    /// Files that must exist or not once the target is gone.
    #[serde(default)]
    pub files: Option<FilesExpect>,
    /// Restart the target: it must reach a phase within a time.
    #[serde(default)]
    pub recover: Option<Recover>,
    /// A command that must exit 0 (your own "nothing lost" probe).
    #[serde(default)]
    pub check: Option<Check>,
    /// Peak threads and memory of the main process.
    #[serde(default)]
    pub resources: Option<ResourceLimits>,
}

/// How the target must exit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExitExpect {
    /// Accepted exit codes.
    #[serde(default)]
    pub codes: Vec<i32>,
    /// Accepted terminating signals.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub signals: Vec<Signal>,
    /// Grace after the last step (or the baseline's SIGTERM) before SIGKILL and "hung"
    /// (default 5s).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub within: Option<Duration>,
}

/// Regexes matched against every line of one stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputExpect {
    /// Each must match at least one line.
    #[serde(default)]
    pub contains: Vec<String>,
    /// None may match any line.
    #[serde(default)]
    pub not_contains: Vec<String>,
}

/// Whether descendants may outlive the main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrphanPolicy {
    /// Any descendant alive after the main process exited fails the trial.
    None,
    /// Orphans are reported (and killed) but do not fail the trial.
    Allowed,
    /// Orphans are reported and killed, also those of an attached target (whose orphans
    /// are otherwise left running), and do not fail the trial.
    Kill,
}

/// Files checked once the target is gone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesExpect {
    /// Must exist.
    #[serde(default)]
    pub present: Vec<String>,
    /// Must not exist.
    #[serde(default)]
    pub absent: Vec<String>,
}

/// A restart that must reach a phase in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// The phase the restarted target must reach.
    pub reaches: String,
    /// How long it has.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub within: Duration,
}

/// A command that must exit 0 after the trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Program and arguments (templates allowed), run in the target's cwd.
    pub command: Vec<String>,
    /// How long it may take (default 10s).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub within: Option<Duration>,
}

/// Peak resource limits of the main process, sampled every 10ms from /proc.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// Most threads allowed.
    #[serde(default)]
    pub max_threads: Option<u64>,
    /// Largest RSS allowed (`64MiB`, `1GiB`).
    #[serde(default)]
    pub max_rss: Option<ByteSize>,
}

impl Expect {
    /// `self` with every key that `over` sets replaced by `over`'s.
    pub fn overridden_by(&self, over: &Expect) -> Expect {
        Expect {
            exit: over.exit.clone().or_else(|| self.exit.clone()),
            reaches: over.reaches.clone().or_else(|| self.reaches.clone()),
            stdout: over.stdout.clone().or_else(|| self.stdout.clone()),
            stderr: over.stderr.clone().or_else(|| self.stderr.clone()),
            orphans: over.orphans.or(self.orphans),
            files: over.files.clone().or_else(|| self.files.clone()),
            recover: over.recover.clone().or_else(|| self.recover.clone()),
            check: over.check.clone().or_else(|| self.check.clone()),
            resources: over.resources.clone().or_else(|| self.resources.clone()),
        }
    }
}
