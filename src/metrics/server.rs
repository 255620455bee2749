//! The plain-HTTP endpoints beside the metrics: `/metrics`, `/healthz` and
//! `/readyz`, served on every replica.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::info;

/// What prometheus-client writes: the `OpenMetrics` text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints show.
pub trait Exposed: Send + Sync + 'static {
    /// The metrics, in the text format.
    fn render(&self) -> String;
    /// Whether the replica can serve (its caches are filled).
    fn is_ready(&self) -> bool;
}

/// Serves `/metrics`, `/healthz` and `/readyz` over plain HTTP on `bind`.
pub async fn serve<E: Exposed>(bind: SocketAddr, exposed: Arc<E>) -> Result<(), std::io::Error> {
    let app = Router::new()
        .route("/metrics", get(metrics::<E>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<E>))
        .with_state(exposed);
    let listener = tokio::net::TcpListener::bind(bind).await?;
    info!(%bind, "metrics and health endpoints listening");
    axum::serve(listener, app).await
}

async fn metrics<E: Exposed>(State(exposed): State<Arc<E>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        exposed.render(),
    )
        .into_response()
}

/// Ready once the caches are filled.
async fn readyz<E: Exposed>(State(exposed): State<Arc<E>>) -> Response {
    if exposed.is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet").into_response()
    }
}
