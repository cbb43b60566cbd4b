//! The API's own description: the OpenAPI document and the offline Swagger UI page.

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_swagger_ui::SwaggerUi;

/// The OpenAPI document as served and as committed in `openapi/openapi.json`.
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        // Serialising a document built from our own types cannot fail.
        let mut json = super::openapi().to_pretty_json().unwrap_or_default();
        json.push('\n');
        json
    })
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)))]
pub async fn openapi_document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

/// `GET /docs`: Swagger UI with every asset inside the binary, so it works offline.
pub fn swagger_ui<S: Clone + Send + Sync + 'static>() -> Router<S> {
    SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::from("/openapi.json"))
        .into()
}
