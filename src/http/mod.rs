//! The HTTP edge: state, router and layers. Handlers know our types only, never Kafka's.

pub mod admin;
pub mod auth;
pub mod docs;
pub mod edge;
pub mod error;
pub mod json;
pub mod ops;
pub mod orders;
pub mod page;
pub mod rate_limit;
pub mod server;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, Uri};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::history::History;
use crate::hub::Hub;
use crate::idempotency::Idempotency;
use crate::publisher::Publisher;
use crate::readiness::Readiness;
use crate::telemetry;
use crate::views::ClusterViews;
use edge::Edge;
use error::ApiError;

/// What every handler may use, behind one `Arc`: axum clones the state for each
/// middleware and extractor of every request, and one reference count is cheaper than one
/// per service (cloning and dropping the fields was 5% of a POST's CPU in the profile).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
pub struct Services {
    pub publisher: Arc<dyn Publisher>,
    pub hub: Arc<Hub>,
    pub readiness: Arc<Readiness>,
    /// Cancelled when the gateway shuts down; open streams end on it.
    pub shutdown: CancellationToken,
    pub stream_keep_alive: Duration,
    pub views: Arc<dyn ClusterViews>,
    /// The topic's history, for streams that resume from further back than the hub keeps.
    pub history: Arc<dyn History>,
    /// One permit per open stream (MAX_STREAMS).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Limits and policies applied to every request.
    pub edge: Arc<Edge>,
    /// Answers already given to `Idempotency-Key`s.
    pub idempotency: Arc<Idempotency>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "orders-gateway", description = "An HTTP front for an Apache Kafka orders topic."),
    components(schemas(stream::Overflow, stream::Gap, stream::Unavailable)),
    modifiers(&BearerSchemes),
    tags(
        (name = "orders", description = "Place orders and watch them being tracked"),
        (name = "operations", description = "Health and readiness"),
    )
)]
struct ApiDoc;

/// Declares the bearer schemes: `api_token` for placing orders, `admin_token` for the
/// admin views.
struct BearerSchemes;

impl utoipa::Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (name, description) in [
            (
                "api_token",
                "One of the API_TOKENS; needed only when API_TOKENS is set",
            ),
            (
                "admin_token",
                "The ADMIN_TOKEN the gateway was started with",
            ),
        ] {
            let scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description))
                .build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}

/// Every documented route; the router and the OpenAPI document both come from this list.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(orders::place_order))
        .routes(routes!(stream::stream_orders))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(admin::topic))
        .routes(routes!(admin::group))
        .routes(routes!(docs::openapi_document))
        .routes(routes!(page::live_page))
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    // One `layer` call for the whole stack: axum boxes every route once per call and
    // clones each box (nested ones included) on every request, so seven calls cost ~14
    // allocations per request, a sixth of a POST's. Inside `layer`, not around the
    // router, so `TrackHttpLayer` still sees the matched route.
    let middleware = tower::ServiceBuilder::new()
        // Outermost first: take or make an x-request-id (echoed on the answer), trace
        // inside its span, count, answer CORS, admit.
        .layer(telemetry::RequestIdLayer)
        .layer(telemetry::trace_layer())
        .layer(telemetry::TrackHttpLayer)
        .option_layer(state.edge.cors())
        .layer(edge::AdmitLayer::new(state.edge.clone()));
    router
        .merge(docs::swagger_ui())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware)
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}
