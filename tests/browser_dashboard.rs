//! The dashboard in real headless Chromium (Debian's `chromium` and `chromium-driver`): the
//! overview, a click through to an experiment whose matrix cells match the store, a run with
//! its SVG timelines. Screenshots land in `target/screenshots/` for review.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atropos::dashboard::{AppState, app};
use atropos::store::query;
use atropos::store::{Recorder, Store, synthetic};
use common::Owned;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Our chromedriver, ended when dropped (it ends the browsers it started), and its URL.
async fn chromedriver() -> (Owned, String) {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
        "the browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    );
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Owned(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (driver, url)
}

async fn browser(driver: &str, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1100",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .unwrap()
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// A store of three experiments with four runs each, served on a free loopback port.
async fn dashboard(dir: &std::path::Path) -> (Store, String) {
    let db = dir.join("atropos.db");
    let mut recorder = Recorder::open(&db).await.unwrap();
    let exps: Vec<_> = (0..3).map(|i| synthetic::experiment(i, 4, 5)).collect();
    for r in 0..12u64 {
        let exp = &exps[(r % 3) as usize];
        let events = synthetic::run(
            &format!("run-{r:02}"),
            1_764_000_000.0 + 3_600.0 * r as f64,
            r * 7 + 1,
            std::slice::from_ref(exp),
            3,
        );
        recorder.record_batch(&events).await.unwrap();
    }
    let store = Store::open(&db, false).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState {
        store: store.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, app(state)).await });
    (store, format!("http://{addr}"))
}

async fn walk(client: &Client, store: &Store, base: &str) {
    // The overview.
    client.goto(&format!("{base}/")).await.unwrap();
    let names = client.find_all(Locator::Css("a.name")).await.unwrap();
    assert_eq!(names.len(), 3);
    assert_eq!(
        client
            .find_all(Locator::Css("svg.spark"))
            .await
            .unwrap()
            .len(),
        3
    );
    shot(client, "overview").await;

    // Follow the link to the second experiment.
    let name = names[1].text().await.unwrap();
    names[1].click().await.unwrap();
    client
        .wait()
        .for_element(Locator::Css("table#coverage"))
        .await
        .unwrap();
    let url = client.current_url().await.unwrap();
    assert_eq!(url.path(), format!("/experiments/{name}"));
    shot(client, "experiment").await;

    // Every cell of the matrix as the browser shows it, against the store.
    let page = query::experiment(store, &name, None).await.unwrap();
    let mut shown = HashMap::new();
    for cell in client
        .find_all(Locator::Css("td.cell[data-phase]"))
        .await
        .unwrap()
    {
        let attr = |a: &'static str| {
            let cell = cell.clone();
            async move { cell.attr(a).await.unwrap().unwrap() }
        };
        let key = (attr("data-phase").await, attr("data-kind").await);
        let counts: Vec<u64> = [
            attr("data-pass").await,
            attr("data-fail").await,
            attr("data-error").await,
        ]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
        let class = cell.attr("class").await.unwrap().unwrap();
        shown.insert(key, (counts, class));
    }
    let cov = &page.matrix.coverage;
    assert!(!cov.kinds.is_empty());
    assert_eq!(shown.len(), cov.rows.len() * cov.kinds.len());
    for row in &cov.rows {
        for cell in &row.cells {
            let (counts, class) = &shown[&(row.phase.clone(), cell.kind.key().to_owned())];
            assert_eq!(
                counts,
                &vec![cell.counts.pass, cell.counts.fail, cell.counts.error],
                "{} × {}",
                row.phase,
                cell.kind
            );
            let optional = if cell.required { "" } else { " optional" };
            assert_eq!(
                class,
                &format!("cell {}{optional}", cell.state),
                "{} × {}",
                row.phase,
                cell.kind
            );
        }
    }
    let uncovered = client
        .find_all(Locator::Css("td.cell.uncovered:not(.optional)"))
        .await
        .unwrap();
    // Required cells not covered say so, and each is listed as a gap with its fix.
    assert_eq!(uncovered.len(), cov.gaps.len());
    assert!(!uncovered.is_empty());
    assert!(uncovered[0].text().await.unwrap().contains("not covered"));
    let gaps = client.find_all(Locator::Css("ul#gaps li")).await.unwrap();
    assert_eq!(gaps.len(), cov.gaps.len());
    let first = gaps[0].text().await.unwrap();
    assert!(first.contains(&cov.gaps[0].fix), "{first}");

    // Open its latest run and find the timelines.
    let run = client
        .find(Locator::Css("table.runs tbody a[href^='/runs/']"))
        .await
        .unwrap();
    run.click().await.unwrap();
    client
        .wait()
        .for_element(Locator::Css("svg.timeline"))
        .await
        .unwrap();
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/runs/")
    );
    let timelines = client.find_all(Locator::Css("svg.timeline")).await.unwrap();
    assert_eq!(
        timelines.len(),
        16,
        "one per trial: a baseline and 5 faults × 3"
    );
    let marks = client
        .find_all(Locator::Css(
            "details[open] svg.timeline g.mark.inject, details[open] svg.timeline g.mark.exit",
        ))
        .await
        .unwrap();
    let failures = client
        .find_all(Locator::Css("details.trial.fail"))
        .await
        .unwrap();
    if !failures.is_empty() {
        assert!(
            !marks.is_empty(),
            "an open failed trial shows its injection and exit"
        );
    }
    shot(client, "run").await;
    // Open a passing trial too (a <details>: no script needed), then look.
    let closed = client
        .find_all(Locator::Css("details.trial:not([open]) > summary"))
        .await
        .unwrap();
    closed[0].click().await.unwrap();
    shot(client, "run-trial-opened").await;
    let svg = client
        .find(Locator::Css("details[open] svg.timeline"))
        .await
        .unwrap();
    std::fs::write(
        screenshots().join("timeline.png"),
        svg.screenshot().await.unwrap(),
    )
    .unwrap();

    // The comparison of the experiment's last two runs.
    client
        .goto(&format!("{base}/experiments/{name}/compare"))
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Css("table#compare"))
        .await
        .unwrap();
    shot(client, "compare").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_well_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (store, base) = dashboard(dir.path()).await;
    let (_driver, driver_url) = chromedriver().await;
    let client = browser(&driver_url, &dir.path().join("profile")).await;
    let walked = tokio::time::timeout(Duration::from_secs(120), walk(&client, &store, &base)).await;
    let _ = client.close().await;
    walked.expect("the walk through the dashboard took too long");
}
