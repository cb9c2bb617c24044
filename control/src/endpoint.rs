//! The Prometheus endpoint: `GET /metrics` over HTTP/1.1 on `[metrics] listen`, answered from
//! the registry at each scrape. Served on the API thread's runtime.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use vfn_config::MetricsConfig;

use crate::stats::Metrics;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
#[error("metrics.listen {address}: {source}")]
pub struct EndpointError {
    address: SocketAddr,
    source: std::io::Error,
}

/// The endpoint's socket, bound at start so that a taken port stops the start.
pub struct MetricsEndpoint {
    listener: std::net::TcpListener,
}

impl MetricsEndpoint {
    /// Binds `config.listen`; `None` when the endpoint is disabled.
    pub fn bind(config: &MetricsConfig) -> Result<Option<MetricsEndpoint>, EndpointError> {
        if !config.enabled {
            return Ok(None);
        }
        let error = |source| EndpointError {
            address: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(error)?;
        listener.set_nonblocking(true).map_err(error)?;
        tracing::info!(address = %config.listen, "metrics endpoint listening");
        Ok(Some(MetricsEndpoint { listener }))
    }

    /// Answers scrapes until `stopping` turns true.
    pub async fn serve(
        self,
        metrics: Arc<Metrics>,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        let listener = match tokio::net::TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "the metrics endpoint");
                return;
            }
        };
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a metrics connection");
                        continue;
                    }
                },
                _ = stopping.changed() => return,
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let answer = respond(&request, &metrics);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

fn respond(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if request.method() == Method::GET && request.uri().path() == "/metrics" {
            (StatusCode::OK, CONTENT_TYPE, metrics.render())
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain",
                "GET /metrics\n".to_owned(),
            )
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
