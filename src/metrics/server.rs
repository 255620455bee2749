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

use crate::shared::Shared;

/// What prometheus-client writes: the `OpenMetrics` text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics`, `/healthz` and `/readyz` over plain HTTP on `bind`.
pub async fn serve(bind: SocketAddr, shared: Arc<Shared>) -> Result<(), std::io::Error> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(bind).await?;
    info!(%bind, "metrics and health endpoints listening");
    axum::serve(listener, app).await
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let requests = shared.requests.state();
    let text = shared.metrics.render(requests.iter().map(|r| &**r));
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// Ready once the caches are filled.
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet").into_response()
    }
}
