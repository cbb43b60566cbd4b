//! `GET /`: the live tracker page, one self-contained HTML file inside the binary.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("assets/index.html");

/// The live tracker page: watches `/orders/stream` and places orders through `POST /orders`.
#[utoipa::path(get, path = "/", tag = "orders",
    responses((status = 200, description = "The live page (HTML, no external assets)", content_type = "text/html", body = String)))]
pub async fn live_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything is inline; nothing may be loaded from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
}
