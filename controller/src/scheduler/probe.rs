//! Stop conditions (`abort:`): probes of the service's health that decide whether a run
//! may start, and stop it when the service gets hurt.
//!
//! A run checks every probe once before its first trial: one that fails means the service
//! is not in its steady state, and the run is skipped with why. During the run each probe is
//! checked every `interval`; `failure_threshold` failures in a row are a breach: the run
//! stops starting trials and cancels the running ones (which resumes every paused process
//! and stops every target, as an interrupted run does) and ends `aborted` with the probe,
//! its last answers and the time. After the last trial each probe is checked once more. Every
//! answer is kept (at most [`KEPT`] per probe, the failures first) for the run's record.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atropos_injector::CancellationToken;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::spec::{AbortProbe, Spec};

/// How many answers of one probe a run keeps.
pub const KEPT: usize = 200;

/// Default time between checks.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Default time one check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The most of an HTTP probe's body that is read (and matched).
const MAX_BODY: usize = 64 * 1024;

/// What is checked.
#[derive(Debug, Clone)]
enum Kind {
    Http {
        url: String,
        statuses: Vec<(u16, u16)>,
        body: Option<Regex>,
    },
    Command {
        argv: Vec<String>,
        cwd: PathBuf,
    },
    Prometheus {
        url: String,
        query: String,
        below: Option<f64>,
        above: Option<f64>,
    },
}

/// One checked probe.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Its name.
    pub name: String,
    kind: Kind,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Failures in a row that stop the run.
    pub failure_threshold: u32,
}

/// One answer of a probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The probe.
    pub probe: String,
    /// When, seconds since the Unix epoch.
    pub at: f64,
    /// Whether the service was healthy.
    pub ok: bool,
    /// What the probe said (`200 OK`, `exit 1`, `value 12.5`, or why it could not ask).
    pub said: String,
    /// When in the run it was taken: `before`, `during` or `after`.
    pub stage: String,
}

/// A run's verdict on its stop conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// The probe.
    pub probe: String,
    /// Why, with its last answers.
    pub reason: String,
}

/// A status set entry: `200` or `200-299`.
fn status_range(text: &str) -> Result<(u16, u16), String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("`{t}` is not an HTTP status; expected 100 to 599"))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("`{text}`: the range ends before it begins"));
            }
            Ok((a, b))
        }
        None => parse(text).map(|c| (c, c)),
    }
}

/// The probes of `spec`, its folder `dir`; every problem with its field (below `spec.`).
pub fn probes_of(spec: &Spec, dir: &Path) -> Result<Vec<Probe>, Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, p) in spec.abort.iter().enumerate() {
        match probe(p, dir) {
            Ok(probe) => out.push(probe),
            Err((field, why)) => problems.push((format!("abort[{i}].{field}"), why)),
        }
    }
    let mut names: Vec<&str> = spec.abort.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        problems.push((
            "abort".to_owned(),
            format!("probe `{}` is defined twice; expected unique names", w[0]),
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn probe(p: &AbortProbe, dir: &Path) -> Result<Probe, (&'static str, String)> {
    if p.name.is_empty() || p.name.len() > 64 {
        return Err(("name", "expected 1 to 64 characters".into()));
    }
    let kind = match (&p.http, &p.command, &p.prometheus) {
        (Some(http), None, None) => {
            if !(http.url.starts_with("http://") || http.url.starts_with("https://")) {
                return Err((
                    "http",
                    format!("`{}` is not an http:// or https:// URL", http.url),
                ));
            }
            let statuses = if http.status.is_empty() {
                vec![(200, 299)]
            } else {
                http.status
                    .iter()
                    .map(|s| status_range(&s.0))
                    .collect::<Result<_, _>>()
                    .map_err(|e| ("status", e))?
            };
            let body = http
                .body
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| ("body", format!("not a valid regex: {e}")))?;
            Kind::Http {
                url: http.url.clone(),
                statuses,
                body,
            }
        }
        (None, Some(argv), None) => {
            if argv.is_empty() {
                return Err((
                    "command",
                    "an empty command; expected [PROGRAM, ARGS...]".into(),
                ));
            }
            Kind::Command {
                argv: argv.clone(),
                cwd: dir.to_owned(),
            }
        }
        (None, None, Some(prom)) => {
            if prom.below.is_none() == prom.above.is_none() {
                return Err((
                    "prometheus",
                    "expected exactly one of `below` and `above`".into(),
                ));
            }
            if !(prom.url.starts_with("http://") || prom.url.starts_with("https://")) {
                return Err((
                    "prometheus",
                    format!("`{}` is not an http(s) URL", prom.url),
                ));
            }
            Kind::Prometheus {
                url: prom.url.trim_end_matches('/').to_owned(),
                query: prom.query.clone(),
                below: prom.below,
                above: prom.above,
            }
        }
        _ => {
            return Err((
                "name",
                format!(
                    "probe `{}`: expected exactly one of `http`, `command`, `prometheus`",
                    p.name
                ),
            ));
        }
    };
    let positive = |d: Option<Duration>, default: Duration, key| match d {
        Some(d) if d.is_zero() => Err((key, "0s; expected a positive duration".to_owned())),
        Some(d) => Ok(d),
        None => Ok(default),
    };
    Ok(Probe {
        name: p.name.clone(),
        kind,
        interval: positive(p.interval, DEFAULT_INTERVAL, "interval")?,
        timeout: positive(p.timeout, DEFAULT_TIMEOUT, "timeout")?,
        failure_threshold: match p.failure_threshold {
            Some(0) => return Err(("failure_threshold", "0; expected at least 1".into())),
            Some(n) => n,
            None => 1,
        },
    })
}

/// The HTTP client of the probes.
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

impl Probe {
    /// Asks once: healthy or not, and what was said.
    pub async fn check(&self, client: &reqwest::Client) -> (bool, String) {
        match tokio::time::timeout(self.timeout, self.ask(client)).await {
            Ok(answer) => answer,
            Err(_) => (false, format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn ask(&self, client: &reqwest::Client) -> (bool, String) {
        match &self.kind {
            Kind::Http {
                url,
                statuses,
                body,
            } => {
                let mut response = match client.get(url).send().await {
                    Ok(r) => r,
                    Err(e) => return (false, format!("GET {url}: {e}")),
                };
                let status = response.status();
                let code = status.as_u16();
                let in_set = statuses.iter().any(|(a, b)| (*a..=*b).contains(&code));
                // At most MAX_BODY of the body is read: a health answer is short.
                let mut body_read = Vec::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    body_read.extend_from_slice(&chunk);
                    if body_read.len() >= MAX_BODY {
                        body_read.truncate(MAX_BODY);
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&body_read);
                let body_ok = body.as_ref().is_none_or(|re| re.is_match(&text));
                let said = if body_ok || !in_set {
                    format!("{status}")
                } else {
                    format!("{status}, but the body does not match")
                };
                (in_set && body_ok, said)
            }
            Kind::Command { argv, cwd } => {
                let out = tokio::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .current_dir(cwd)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output()
                    .await;
                match out {
                    Ok(out) => {
                        let line = String::from_utf8_lossy(&out.stdout)
                            .lines()
                            .chain(String::from_utf8_lossy(&out.stderr).lines())
                            .next()
                            .map(|l| format!(": {}", crate::spec::clip(l, 200)))
                            .unwrap_or_default();
                        (out.status.success(), format!("{}{line}", out.status))
                    }
                    Err(e) => (false, format!("cannot run `{}`: {e}", argv[0])),
                }
            }
            Kind::Prometheus {
                url,
                query,
                below,
                above,
            } => {
                let asked = client
                    .get(format!(
                        "{url}/api/v1/query?query={}",
                        super::percent_encode(query)
                    ))
                    .send()
                    .await;
                let values = match asked {
                    Ok(r) => r.text().await.ok().and_then(|t: String| instant_values(&t)),
                    Err(e) => return (false, format!("query {url}: {e}")),
                };
                let Some(values) = values else {
                    return (false, "not an instant-query answer".into());
                };
                // Every series must be on the healthy side. No series at all: nothing is
                // above a `below` limit (no errors yet), and nothing is above an `above` one.
                if values.is_empty() {
                    return (below.is_some(), "no series".into());
                }
                let bad = values
                    .iter()
                    .find(|v| !(below.is_none_or(|b| **v < b) && above.is_none_or(|a| **v > a)));
                match bad {
                    Some(v) => (false, format!("value {v} ({} series)", values.len())),
                    None => (true, format!("values {values:?}")),
                }
            }
        }
    }
}

/// Every sample's value of a Prometheus instant-query answer (`None`: not one).
fn instant_values(body: &str) -> Option<Vec<f64>> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let data = &v["data"];
    let number = |v: &serde_json::Value| v.as_str()?.parse::<f64>().ok();
    match data["resultType"].as_str()? {
        "vector" => data["result"]
            .as_array()?
            .iter()
            .map(|s| number(&s["value"][1]))
            .collect(),
        "scalar" => Some(vec![number(&data["result"][1])?]),
        _ => None,
    }
}

/// The answers of a run's probes, shared between the watch and the run's end.
#[derive(Debug, Default, Clone)]
pub struct Answers(Arc<Mutex<Vec<Answer>>>);

impl Answers {
    fn push(&self, answer: Answer) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let of_probe = all.iter().filter(|a| a.probe == answer.probe).count();
        if of_probe >= KEPT {
            // Keep the failures: drop this probe's oldest healthy answer.
            if let Some(i) = all.iter().position(|a| a.probe == answer.probe && a.ok) {
                all.remove(i);
            } else {
                return;
            }
        }
        all.push(answer);
    }

    /// Every answer kept, in order.
    pub fn all(&self) -> Vec<Answer> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Checks every probe once (`stage`: `before` or `after`); the first that fails, with why.
pub async fn check_all(probes: &[Probe], stage: &str, answers: &Answers) -> Option<Breach> {
    // Most runs have no stop condition: they build no HTTP client.
    if probes.is_empty() {
        return None;
    }
    let client = client();
    let mut breach = None;
    for probe in probes {
        let (ok, said) = probe.check(&client).await;
        answers.push(Answer {
            probe: probe.name.clone(),
            at: crate::record::unix_now(),
            ok,
            said: said.clone(),
            stage: stage.to_owned(),
        });
        if !ok && breach.is_none() {
            breach = Some(Breach {
                probe: probe.name.clone(),
                reason: format!("probe `{}` {stage} the trials: {said}", probe.name),
            });
        }
    }
    breach
}

/// Watches every probe until `stop`; on a breach, records it and cancels `run`.
pub async fn watch(
    probes: Vec<Probe>,
    answers: Answers,
    run: CancellationToken,
    stop: CancellationToken,
    breach: Arc<Mutex<Option<Breach>>>,
) {
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for probe in probes {
        let (client, answers, run, stop, breach) = (
            client.clone(),
            answers.clone(),
            run.clone(),
            stop.clone(),
            breach.clone(),
        );
        tasks.spawn(async move {
            let mut failures: Vec<String> = Vec::new();
            let mut tick = tokio::time::interval(probe.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (ok, said) = probe.check(&client).await;
                let at = crate::record::unix_now();
                answers.push(Answer {
                    probe: probe.name.clone(),
                    at,
                    ok,
                    said: said.clone(),
                    stage: "during".to_owned(),
                });
                if ok {
                    failures.clear();
                    continue;
                }
                failures.push(said);
                if failures.len() >= probe.failure_threshold as usize {
                    let reason = format!(
                        "probe `{}` failed {} time(s) in a row during the run (at {}): {}",
                        probe.name,
                        failures.len(),
                        crate::dashboard::format::time(at),
                        failures.join("; ")
                    );
                    tracing::warn!(%reason, "stop condition breached: aborting the run");
                    breach
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(Breach {
                            probe: probe.name.clone(),
                            reason,
                        });
                    run.cancel();
                    return;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn a_prometheus_answer_gives_every_series_value() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"i":"a"},"value":[1700000000.1,"12.5"]},{"metric":{"i":"b"},"value":[1700000000.1,"0.5"]}]}}"#;
        assert_eq!(instant_values(vector), Some(vec![12.5, 0.5]));
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"3"]}}"#;
        assert_eq!(instant_values(scalar), Some(vec![3.0]));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(instant_values(empty), Some(Vec::new()));
        assert_eq!(instant_values("<html>"), None);
    }

    #[test]
    fn statuses_are_codes_or_ranges() {
        assert_eq!(status_range("200"), Ok((200, 200)));
        assert_eq!(status_range("200-299"), Ok((200, 299)));
        assert!(status_range("299-200").is_err());
        assert!(status_range("700").is_err());
        assert!(status_range("ok").is_err());
    }

    #[test]
    fn answers_keep_the_failures_when_a_probe_said_too_much() {
        let answers = Answers::default();
        let answer = |ok, i: usize| Answer {
            probe: "p".into(),
            at: i as f64,
            ok,
            said: i.to_string(),
            stage: "during".into(),
        };
        answers.push(answer(false, 0));
        for i in 1..=KEPT + 50 {
            answers.push(answer(true, i));
        }
        let all = answers.all();
        assert_eq!(all.len(), KEPT);
        assert!(!all[0].ok, "the failure is kept");
        assert_eq!(all.last().unwrap().said, (KEPT + 50).to_string());
    }
}
