//! The static assets, compiled into the binary from `web/static/`.

use axum::http::header;
use axum::response::IntoResponse;

const STYLE: &str = include_str!("../../../web/static/style.css");
const FAVICON: &str = include_str!("../../../web/static/favicon.svg");

pub(super) async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
}

pub(super) async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
}
