//! The askama templates of the pages (in `web/templates/`), with what each one draws.

use askama::Template;

use super::svg::{Histogram, Sparkline, Timeline};
use crate::store::query::{
    Compare, ExperimentPage, ExperimentSummary, Latency, Overview, RunBrief, RunList, RunPage,
    TrialView,
};

#[derive(Template)]
#[template(path = "overview.html")]
pub(super) struct OverviewHtml<'a> {
    pub page: &'a Overview,
    pub rows: Vec<(&'a ExperimentSummary, Sparkline)>,
}

#[derive(Template)]
#[template(path = "experiment.html")]
pub(super) struct ExperimentHtml<'a> {
    pub page: &'a ExperimentPage,
}

impl ExperimentHtml<'_> {
    /// Whether the matrix is limited to version `id`.
    fn is_shown(&self, id: impl std::borrow::Borrow<i64>) -> bool {
        self.page.version == Some(*id.borrow())
    }
}

#[derive(Template)]
#[template(path = "run.html")]
pub(super) struct RunHtml<'a> {
    pub page: &'a RunPage,
    pub trials: Vec<(&'a TrialView, Timeline)>,
    pub histogram: Histogram,
}

impl RunHtml<'_> {
    /// The query string of this page's filter at page `page`.
    fn query(&self, page: impl std::borrow::Borrow<u32>) -> String {
        let page = *page.borrow();
        let f = &self.page.filter;
        let mut parts = Vec::new();
        for (key, value) in [
            ("verdict", &f.verdict),
            ("fault", &f.fault),
            ("experiment", &f.experiment),
        ] {
            if let Some(v) = value {
                parts.push(format!("{key}={}", url_component(v)));
            }
        }
        if page > 1 {
            parts.push(format!("page={page}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

#[derive(Template)]
#[template(path = "trial.html")]
pub(super) struct TrialHtml<'a> {
    pub view: &'a TrialView,
    pub timeline: Timeline,
}

#[derive(Template)]
#[template(path = "runs.html")]
pub(super) struct RunsHtml<'a> {
    pub page: &'a RunList,
}

#[derive(Template)]
#[template(path = "latency.html")]
pub(super) struct LatencyHtml<'a> {
    pub run: &'a RunBrief,
    pub latency: &'a Latency,
    pub histogram: Histogram,
}

#[derive(Template)]
#[template(path = "compare.html")]
pub(super) struct CompareHtml<'a> {
    pub page: &'a Compare,
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(super) fn url_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
