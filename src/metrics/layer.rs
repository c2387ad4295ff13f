//! One middleware counting every call and its latency, per door: native gRPC, gRPC-Web,
//! the v0.1.0 HTTP routes and the WebSocket upgrade. A call ends when its response body
//! does (a stream's whole life); gRPC calls are labelled by their final status.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderMap, HeaderName, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, RwLock};

use metrics::{counter, histogram, Counter, Histogram, Label};

use super::{REQUESTS, REQUEST_SECONDS};

/// The middleware, as a tower layer over the whole router (`Router::layer(CountLayer)`):
/// a plain service and future, no boxed future or cloned `Next` per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountLayer;

impl<S> tower::Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count { inner }
    }
}

/// [`CountLayer`]'s service.
#[derive(Debug, Clone)]
pub struct Count<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Count<S>
where
    S: tower::Service<Request, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = CountFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let start = Instant::now();
        let labels = Some(Labels::of(&request));
        CountFuture {
            inner: self.inner.call(request),
            start,
            labels,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a counted call, its body wrapped to record the call when it ends.
    pub struct CountFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        labels: Option<Labels>,
    }
}

impl<F, E> std::future::Future for CountFuture<F>
where
    F: std::future::Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let Some(labels) = this.labels.take() else {
            return Poll::Ready(Ok(response));
        };
        Poll::Ready(Ok(meter(response, *this.start, labels)))
    }
}

fn meter(response: Response<Body>, start: Instant, labels: Labels) -> Response<Body> {
    let code = match labels.door {
        Door::Grpc | Door::GrpcWeb => grpc_status(response.headers()),
        Door::Http | Door::Ws => Some(status_name(response.status().as_u16())),
    };
    response.map(|inner| {
        Body::new(Metered {
            inner,
            start,
            labels,
            code,
            recorded: false,
        })
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Door {
    Grpc,
    GrpcWeb,
    Http,
    Ws,
}

impl Door {
    fn name(self) -> &'static str {
        match self {
            Door::Grpc => "grpc",
            Door::GrpcWeb => "grpc-web",
            Door::Http => "http",
            Door::Ws => "ws",
        }
    }
}

/// Labels known at the request: door, service and method. Service and method are taken
/// from the path only when a route matched, so unknown paths add no series; matched paths
/// are few (one per RPC and route), so they are interned once and copied as `&'static str`.
#[derive(Debug)]
struct Labels {
    door: Door,
    service: &'static str,
    method: &'static str,
}

impl Labels {
    fn of(request: &Request) -> Self {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let matched = request.extensions().get::<MatchedPath>();
        let door = if content_type.starts_with(b"application/grpc-web") {
            Door::GrpcWeb
        } else if content_type.starts_with(b"application/grpc") {
            Door::Grpc
        } else if request.headers().contains_key(header::UPGRADE) {
            Door::Ws
        } else {
            Door::Http
        };
        const UNMATCHED: (&str, &str) = ("unmatched", "unmatched");
        let (service, method) = match (door, matched) {
            (_, None) => UNMATCHED,
            (Door::Grpc | Door::GrpcWeb, Some(_)) => {
                let path = request.uri().path().trim_start_matches('/');
                intern(path).split_once('/').unwrap_or(UNMATCHED)
            }
            (Door::Http | Door::Ws, Some(p)) => (intern(p.as_str()), http_method(request)),
        };
        Labels {
            door,
            service,
            method,
        }
    }
}

/// The standard method names; anything else is `other` (a label never takes client text).
fn http_method(request: &Request) -> &'static str {
    use axum::http::Method;
    match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// One copy of each matched route path for the life of the process.
fn intern(path: &str) -> &'static str {
    static PATHS: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);
    if let Some(known) = read(&PATHS).get(path) {
        return known;
    }
    let mut paths = PATHS.write().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = paths.get(path) {
        return known;
    }
    let leaked: &'static str = Box::leak(path.to_owned().into_boxed_str());
    paths.insert(leaked);
    leaked
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

type SeriesKey = (Door, &'static str, &'static str, &'static str);

/// The counter and histogram of one label set, registered once: a call then costs one
/// map lookup instead of two registry lookups with freshly built labels.
fn series(key: SeriesKey) -> (Counter, Histogram) {
    static SERIES: LazyLock<RwLock<HashMap<SeriesKey, (Counter, Histogram)>>> =
        LazyLock::new(Default::default);
    if let Some(handles) = read(&SERIES).get(&key) {
        return handles.clone();
    }
    let (door, service, method, code) = key;
    let labels = [
        Label::from_static_parts("door", door.name()),
        Label::from_static_parts("service", service),
        Label::from_static_parts("method", method),
        Label::from_static_parts("code", code),
    ];
    let handles = (
        counter!(REQUESTS, labels.iter()),
        histogram!(REQUEST_SECONDS, labels.iter()),
    );
    SERIES
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, handles.clone());
    handles
}

/// The response body, recording the call when it ends or is dropped.
struct Metered {
    inner: Body,
    start: Instant,
    labels: Labels,
    /// gRPC status seen so far (header or trailer); HTTP status for the other doors.
    code: Option<&'static str>,
    /// Recorded already (at the end of the body, before its last bytes leave).
    recorded: bool,
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                // Trailers (native, or gRPC-Web's in-body frame) end the call.
                let status = if let Some(trailers) = frame.trailers_ref() {
                    grpc_status(trailers)
                } else if let (Door::GrpcWeb, Some(data)) = (self.labels.door, frame.data_ref()) {
                    grpc_web_trailer_status(data)
                } else {
                    None
                };
                if status.is_some() {
                    self.code = status;
                }
                if status.is_some() || self.inner.is_end_stream() {
                    self.record();
                }
            }
            Poll::Ready(None) => self.record(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.record();
    }
}

impl Metered {
    /// Counts the call, once.
    fn record(&mut self) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let grpc = matches!(self.labels.door, Door::Grpc | Door::GrpcWeb);
        // A gRPC body dropped before its status: the client went away.
        let code = self
            .code
            .unwrap_or(if grpc { "CANCELLED" } else { "unknown" });
        let unknown = grpc && code == "UNIMPLEMENTED";
        let (service, method) = if unknown {
            ("unknown", "unknown")
        } else {
            (self.labels.service, self.labels.method)
        };
        let (calls, seconds) = series((self.labels.door, service, method, code));
        calls.increment(1);
        seconds.record(self.start.elapsed().as_secs_f64());
    }
}

/// Built once: a lookup by `&str` parses the name on every call.
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

fn grpc_status(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get(&GRPC_STATUS)?.to_str().ok()?;
    Some(grpc_code_name(value.trim().parse().ok()?))
}

/// The status in a gRPC-Web trailer frame (flag 0x80, then `name: value` lines).
fn grpc_web_trailer_status(data: &Bytes) -> Option<&'static str> {
    if data.len() < 5 || data[0] & 0x80 == 0 {
        return None;
    }
    let text = std::str::from_utf8(&data[5..]).ok()?;
    text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("grpc-status")
            .then(|| value.trim().parse().ok().map(grpc_code_name))?
    })
}

/// The canonical name of a gRPC status code.
fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or("UNKNOWN")
}

/// An HTTP status as a label value, without allocating for the common ones.
fn status_name(status: u16) -> &'static str {
    match status {
        101 => "101",
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_have_their_canonical_names() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(99), "UNKNOWN");
        assert_eq!(grpc_code_name(-1), "UNKNOWN");
    }

    #[test]
    fn grpc_web_trailers_are_read() {
        let mut frame = vec![0x80, 0, 0, 0, 0];
        frame.extend_from_slice(b"grpc-status:5\r\ngrpc-message:gone\r\n");
        assert_eq!(
            grpc_web_trailer_status(&Bytes::from(frame)),
            Some("NOT_FOUND")
        );
        let data = Bytes::from_static(&[0, 0, 0, 0, 1, 7]);
        assert_eq!(grpc_web_trailer_status(&data), None);
    }
}
