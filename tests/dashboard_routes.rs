//! Every page of the dashboard and its JSON twin, through the real router: what they show,
//! that target output stays inert text, and the plain errors for what does not exist.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;

use atropos::dashboard::{AppState, app};
use atropos::record::{Recovery, Replacement, RunEvent, TrialRecord, Verdict};
use atropos::store::{Recorder, Store, synthetic};
use atropos_injector::record::Line;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

const EVIL: &str = "<script>alert('pwned')</script>";

struct Fixture {
    _dir: tempfile::TempDir,
    state: AppState,
    experiment: String,
    evil_trial: String,
    regressed: (String, String),
}

/// Rewrites every trial of `events` with `f`.
fn each_trial(events: &mut [RunEvent], mut f: impl FnMut(usize, &mut TrialRecord)) {
    let mut i = 0;
    for event in events.iter_mut() {
        if let RunEvent::Trial(t) = event {
            let mut record = t.as_ref().clone();
            f(i, &mut record);
            *t = Arc::new(record);
            i += 1;
        }
    }
}

/// Two runs of one experiment with the same seed (so the same cells): the first all pass,
/// the second fails one trial; plus a third run whose trial prints a script tag.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("atropos.db");
    let exp = synthetic::experiment(7, 3, 3);
    let one = std::slice::from_ref(&exp);
    let mut a = synthetic::run("run-a", 1_000.0, 42, one, 3);
    let mut b = synthetic::run("run-b", 2_000.0, 42, one, 3);
    let mut evil = synthetic::run("run-evil", 3_000.0, 43, one, 1);
    let pass = |_: usize, t: &mut TrialRecord| {
        t.verdict = Verdict::Pass;
        t.reasons.clear();
    };
    each_trial(&mut a, pass);
    each_trial(&mut b, pass);
    let mut regressed = None;
    each_trial(&mut b, |i, t| {
        if i == 2 {
            t.verdict = Verdict::Fail;
            t.reasons = vec!["exit: expected exit code 0, but killed by SIGKILL".into()];
            regressed = Some((t.fault.clone(), t.injected_phase.clone().unwrap()));
        }
    });
    let mut evil_trial = String::new();
    each_trial(&mut evil, |i, t| {
        if i == 1 {
            t.verdict = Verdict::Fail;
            t.reasons = vec![format!(
                "stdout.not_contains[0]: expected no {EVIL}, but \"{EVIL}\""
            )];
            t.observation.stdout_tail.push(Line {
                at_ns: 5,
                text: EVIL.into(),
            });
            t.observation.stderr_tail.push(Line {
                at_ns: 6,
                text: "<img src=x onerror=alert(1)>".into(),
            });
            // A running service's recovery by its supervisor.
            t.recovery = Some(Recovery {
                phase: "ready".into(),
                reached_ns: Some(1_250_000_000),
                observation: t.observation.clone(),
                attached: Some(Replacement {
                    detected_ns: Some(42_000_000),
                    replaced_ns: Some(1_013_000_000),
                    pid: Some(4242),
                    survived: false,
                }),
            });
            evil_trial = t.id.clone();
        }
    });
    let mut recorder = Recorder::open(&db).await.unwrap();
    for events in [&a, &b, &evil] {
        recorder.record_batch(events).await.unwrap();
    }
    Fixture {
        state: AppState {
            store: Store::open(&db, false).await.unwrap(),
        },
        _dir: dir,
        experiment: exp.name,
        evil_trial,
        regressed: regressed.unwrap(),
    }
}

/// `text` as HTML-escaped by numeric (`&#60;`) or named (`&lt;`) entities.
fn escaped(text: &str, numeric: bool) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match (c, numeric) {
            ('<', true) => out.push_str("&#60;"),
            ('>', true) => out.push_str("&#62;"),
            ('\'', true) => out.push_str("&#39;"),
            ('"', true) => out.push_str("&#34;"),
            ('<', false) => out.push_str("&lt;"),
            ('>', false) => out.push_str("&gt;"),
            ('\'', false) => out.push_str("&#x27;"),
            ('"', false) => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, String, String) {
    let response = app(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let kind = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8(body.to_vec()).unwrap())
}

async fn page(state: &AppState, uri: &str) -> String {
    let (status, kind, body) = get(state, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert!(kind.starts_with("text/html"), "{uri}: {kind}");
    assert!(body.contains("<!doctype html>"), "{uri}");
    assert!(
        !body.contains("<script"),
        "{uri} must carry no script at all"
    );
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "{uri} loads nothing from elsewhere"
    );
    body
}

async fn api(state: &AppState, uri: &str) -> serde_json::Value {
    let (status, kind, body) = get(state, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert!(kind.starts_with("application/json"), "{uri}: {kind}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn the_overview_lists_each_experiment_with_verdict_rate_coverage_and_trend() {
    let f = fixture().await;
    let html = page(&f.state, "/").await;
    assert!(html.contains(&format!("/experiments/{}", f.experiment)));
    assert!(html.contains("class=\"spark\""), "a trend sparkline");
    assert!(html.contains("cells"), "coverage");
    assert!(html.contains("badge fail"), "the last run failed");
    let json = api(&f.state, "/api/overview").await;
    let e = &json["experiments"][0];
    assert_eq!(e["name"], f.experiment.as_str());
    assert_eq!(e["trend"].as_array().unwrap().len(), 3);
    assert_eq!(e["last"]["run"], "run-evil");
    assert!(e["coverage_percent"].as_u64().is_some());
    assert_eq!(json["runs"], 3);
}

/// How askama escapes text.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

#[tokio::test]
async fn the_experiment_page_shows_the_matrix_with_gaps_marked_and_the_run_history() {
    let f = fixture().await;
    let uri = format!("/experiments/{}", f.experiment);
    let html = page(&f.state, &uri).await;
    assert!(html.contains("id=\"coverage\""));
    assert!(html.contains("not covered"), "uncovered cells are marked");
    assert!(html.contains("class=\"cell fail\""));
    assert!(html.contains("class=\"cell pass\""));
    for run in ["run-a", "run-b", "run-evil"] {
        assert!(html.contains(run), "{run} in the history");
    }
    let json = api(&f.state, &format!("/api/experiments/{}", f.experiment)).await;
    let rows = json["matrix"]["rows"].as_array().unwrap();
    assert_eq!(rows.first().unwrap()["phase"], "start");
    assert_eq!(rows.last().unwrap()["phase"], "exited");
    assert_eq!(rows.len(), 5);
    assert_eq!(json["matrix"]["kinds"].as_array().unwrap().len(), 3);
    let gaps = json["matrix"]["gaps"].as_array().unwrap();
    let required = json["matrix"]["required"].as_u64().unwrap();
    let covered = json["matrix"]["covered"].as_u64().unwrap();
    assert_eq!(
        gaps.len() as u64,
        required - covered,
        "one gap per uncovered cell"
    );
    assert!(!gaps.is_empty(), "the fixture leaves gaps");
    let fix = gaps[0]["fix"].as_str().unwrap();
    assert!(fix.contains("at: {phase: "), "{fix}");
    assert!(
        html.contains(&html_escape(fix)),
        "the page shows the fix: {fix}"
    );
    assert_eq!(json["runs"].as_array().unwrap().len(), 3);
    let version = json["versions"][0]["id"].as_i64().unwrap();
    let one = api(&f.state, &format!("/api{uri}?version={version}")).await;
    assert_eq!(one["version"], version);
    page(&f.state, &format!("{uri}?version={version}")).await;
}

#[tokio::test]
async fn the_run_page_draws_each_trial_and_filters_by_verdict_and_fault() {
    let f = fixture().await;
    let html = page(&f.state, "/runs/run-b").await;
    assert!(
        html.contains("<svg class=\"timeline\""),
        "a timeline per trial"
    );
    assert!(
        html.contains("class=\"mark inject\""),
        "the injection point"
    );
    assert!(html.contains("latency"), "with its latency");
    assert!(html.contains("class=\"mark exit\""), "and the exit");
    assert!(
        html.contains("killed by SIGKILL"),
        "the failed expectation's reason"
    );
    assert!(
        html.contains("<svg class=\"histogram\""),
        "the latency histogram"
    );
    let all = api(&f.state, "/api/runs/run-b").await;
    assert_eq!(all["matching"], 10);
    assert_eq!(
        all["trials"][0]["record"]["verdict"], "fail",
        "failures come first"
    );
    let failed = api(&f.state, "/api/runs/run-b?verdict=fail").await;
    assert_eq!(failed["matching"], 1);
    let fault = &f.regressed.0;
    let by_fault = api(&f.state, &format!("/api/runs/run-b?fault={fault}&verdict=")).await;
    assert_eq!(by_fault["matching"], 3);
    assert!(
        by_fault["trials"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["record"]["fault"] == fault.as_str())
    );
    let html = page(&f.state, &format!("/runs/run-b?verdict=pass&fault={fault}")).await;
    assert!(html.contains("2 trials match"));
}

#[tokio::test]
async fn target_output_with_markup_is_shown_as_inert_text() {
    let f = fixture().await;
    for uri in [
        "/runs/run-evil".to_owned(),
        format!("/trials/{}", f.evil_trial),
    ] {
        let html = page(&f.state, &uri).await;
        for text in [EVIL, "<img src=x onerror=alert(1)>"] {
            assert!(
                html.contains(&escaped(text, true)) || html.contains(&escaped(text, false)),
                "{uri}: {text} appears escaped"
            );
        }
        assert!(
            !html.contains(EVIL) && !html.contains("<img src=x"),
            "{uri}"
        );
    }
    let json = api(&f.state, &format!("/api/trials/{}", f.evil_trial)).await;
    let tail = json["record"]["observation"]["stdout_tail"]
        .as_array()
        .unwrap();
    assert_eq!(
        tail.last().unwrap()["text"],
        EVIL,
        "JSON carries the text as it was"
    );
}

#[tokio::test]
async fn comparing_two_runs_shows_the_cell_that_went_from_pass_to_fail_and_back() {
    let f = fixture().await;
    let name = &f.experiment;
    let html = page(
        &f.state,
        &format!("/experiments/{name}/compare?a=run-a&b=run-b"),
    )
    .await;
    assert!(html.contains("1 cells went from pass to fail"));
    assert!(html.contains("class=\"cell regressed\""));
    let json = api(
        &f.state,
        &format!("/api/experiments/{name}/compare?a=run-a&b=run-b"),
    )
    .await;
    assert_eq!(
        (json["regressed"].as_u64(), json["fixed"].as_u64()),
        (Some(1), Some(0))
    );
    let (fault, phase) = &f.regressed;
    let row = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["phase"] == phase.as_str())
        .unwrap();
    let cell = row["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["fault"] == fault.as_str())
        .unwrap();
    assert_eq!(cell["change"], "regressed");
    let back = api(
        &f.state,
        &format!("/api/experiments/{name}/compare?a=run-b&b=run-a"),
    )
    .await;
    assert_eq!(
        (back["regressed"].as_u64(), back["fixed"].as_u64()),
        (Some(0), Some(1))
    );
    // Without runs: the latest two.
    let latest = api(&f.state, &format!("/api/experiments/{name}/compare")).await;
    assert_eq!(
        (latest["a"]["uid"].as_str(), latest["b"]["uid"].as_str()),
        (Some("run-b"), Some("run-evil"))
    );
    page(&f.state, &format!("/experiments/{name}/compare")).await;
}

#[tokio::test]
async fn the_latency_page_and_the_runs_list_have_json_twins() {
    let f = fixture().await;
    let html = page(&f.state, "/runs/run-a/latency").await;
    assert!(html.contains("<svg class=\"histogram\""));
    let json = api(&f.state, "/api/runs/run-a/latency").await;
    assert_eq!(json["latency"]["count"], 9);
    let buckets = json["latency"]["buckets"].as_array().unwrap();
    let total: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 9);
    let html = page(&f.state, "/runs").await;
    assert!(html.contains("run-evil") && html.contains("run-a"));
    let json = api(
        &f.state,
        &format!("/api/runs?experiment={}&limit=2", f.experiment),
    )
    .await;
    assert_eq!(json["runs"].as_array().unwrap().len(), 2);
    assert_eq!(json["runs"][0]["uid"], "run-evil");
}

#[tokio::test]
async fn the_trial_page_has_a_json_twin_with_the_whole_record() {
    let f = fixture().await;
    let html = page(&f.state, &format!("/trials/{}", f.evil_trial)).await;
    assert!(html.contains("<svg class=\"timeline\""));
    for shown in [
        "time to detect</dt><dd>42ms",
        "time to replace</dt><dd>1.01s <small>(exit → new process, pid 4242)",
        "time to recover</dt><dd>1.25s <small>(exit → ready)",
    ] {
        assert!(html.contains(shown), "{shown} in {html}");
    }
    let run = page(&f.state, "/runs/run-evil").await;
    assert!(run.contains("recovered 1.25s"), "{run}");
    let json = api(&f.state, &format!("/api/trials/{}", f.evil_trial)).await;
    assert_eq!(
        json["record"]["recovery"]["attached"]["replaced_ns"],
        1_013_000_000
    );
    assert_eq!(json["run"], "run-evil");
    assert_eq!(json["record"]["id"], f.evil_trial.as_str());
    assert!(json["record"]["expectations"].as_array().unwrap().len() >= 3);
}

#[tokio::test]
async fn what_does_not_exist_gets_a_plain_404_and_bad_queries_a_plain_400() {
    let f = fixture().await;
    for uri in [
        "/experiments/nope",
        "/api/experiments/nope",
        "/runs/nope",
        "/api/runs/nope",
        "/runs/nope/latency",
        "/trials/nope",
        "/api/trials/nope",
        "/no/such/page",
    ] {
        let (status, kind, body) = get(&f.state, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(kind.starts_with("text/plain"), "{uri}: {kind}");
        assert!(body.starts_with("not found"), "{uri}: {body}");
    }
    for uri in [
        "/runs/run-a?page=abc",
        "/runs/run-a?colour=red",
        "/api/experiments/x/compare?a=run-a",
        "/experiments/x?version=v1",
    ] {
        let (status, kind, body) = get(&f.state, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(kind.starts_with("text/plain"), "{uri}: {kind}");
    }
}

#[tokio::test]
async fn assets_are_embedded_and_an_empty_store_says_how_to_fill_it() {
    let f = fixture().await;
    let (status, kind, css) = get(&f.state, "/static/style.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/css") && css.contains(".matrix"));
    let (status, kind, _) = get(&f.state, "/favicon.svg").await;
    assert_eq!((status, kind.as_str()), (StatusCode::OK, "image/svg+xml"));
    let dir = tempfile::tempdir().unwrap();
    let empty = AppState {
        store: Store::open(&dir.path().join("empty.db"), true)
            .await
            .unwrap(),
    };
    assert!(page(&empty, "/").await.contains("No runs yet"));
    assert_eq!(api(&empty, "/api/overview").await["runs"], 0);
}
