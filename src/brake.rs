//! A brake on guessing: failed credential checks (API token, session token, worker handle or
//! capability token) are counted per client address, on every door. Past the budget the
//! address is refused with RESOURCE_EXHAUSTED / 429 and `retry-after` for a cool-down;
//! other addresses are not affected.
//!
//! It watches answers rather than checks, so no handler has to report to it: a 401, or a
//! gRPC status UNAUTHENTICATED in the headers or the trailers, is a failed check.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::BodyExt;
use serde_json::json;

/// gRPC's UNAUTHENTICATED.
const GRPC_UNAUTHENTICATED: &[u8] = b"16";
/// Built once: a lookup by `&str` parses the name on every call.
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The budget: `failures` failed checks per `window`; past it, a cool-down of `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrakeLimits {
    /// Failed checks an address may make per window (0 turns the brake off).
    pub failures: u32,
    /// The window, and the length of the cool-down.
    pub window: Duration,
}

impl Default for BrakeLimits {
    fn default() -> Self {
        Self {
            failures: 20,
            window: Duration::from_secs(10),
        }
    }
}

/// Failure counts and cool-downs per address.
#[derive(Debug)]
pub struct Brake {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// A budget of one: the first failure uses it up.
    block_on_first: bool,
    cooldown: Duration,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl Brake {
    /// A brake with `limits`; `None` when turned off. Starts a task that forgets idle
    /// addresses, so the maps stay bounded by the addresses seen in one window.
    pub fn start(limits: BrakeLimits) -> Option<Arc<Self>> {
        if limits.failures == 0 {
            return None;
        }
        // The limiter refuses the failure after its burst, which is the one that uses up
        // the budget: then the cool-down starts, so no address gets more checks than that.
        let per_cell = (limits.window / limits.failures).max(Duration::from_micros(1));
        let burst = NonZeroU32::new(limits.failures - 1);
        let quota = Quota::with_period(per_cell)?.allow_burst(burst.unwrap_or(NonZeroU32::MIN));
        let brake = Arc::new(Self {
            limiter: RateLimiter::keyed(quota),
            block_on_first: burst.is_none(),
            cooldown: limits.window,
            blocked: Mutex::new(HashMap::new()),
        });
        tokio::spawn(forget_idle(Arc::downgrade(&brake), limits.window));
        Some(brake)
    }

    /// Time left of the address's cool-down, if it is in one.
    fn cooling(&self, ip: IpAddr) -> Option<Duration> {
        let mut blocked = self.blocked.lock().ok()?;
        let until = *blocked.get(&ip)?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            blocked.remove(&ip);
            return None;
        }
        Some(left)
    }

    /// Counts one failed check; past the budget the address starts its cool-down.
    fn failed(&self, ip: IpAddr) {
        if self.block_on_first || self.limiter.check_key(&ip).is_err() {
            tracing::warn!(%ip, "too many failed credential checks: cooling down");
            if let Ok(mut blocked) = self.blocked.lock() {
                blocked.insert(ip, Instant::now() + self.cooldown);
            }
        }
    }
}

async fn forget_idle(brake: Weak<Brake>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(brake) = brake.upgrade() else {
            return;
        };
        brake.limiter.retain_recent();
        brake.limiter.shrink_to_fit();
        let now = Instant::now();
        if let Ok(mut blocked) = brake.blocked.lock() {
            blocked.retain(|_, until| *until > now);
        };
    }
}

/// Health stays reachable from an address in cool-down (probes share addresses).
fn is_health(path: &str) -> bool {
    path == "/healthz" || path == "/v1/healthz" || path.starts_with("/grpc.health.v1.Health/")
}

/// The middleware: refuses an address in cool-down, counts the failed checks of the rest.
pub async fn check(State(brake): State<Arc<Brake>>, request: Request, next: Next) -> Response {
    let Some(ip) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return next.run(request).await;
    };
    if is_health(request.uri().path()) {
        return next.run(request).await;
    }
    if let Some(left) = brake.cooling(ip) {
        return refuse(request.headers(), left);
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED
        || response
            .headers()
            .get(&GRPC_STATUS)
            .map(HeaderValue::as_bytes)
            == Some(GRPC_UNAUTHENTICATED)
    {
        brake.failed(ip);
        return response;
    }
    if !is_grpc(response.headers()) {
        return response;
    }
    // A streaming call reports its status in the trailers.
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            if let Some(trailers) = frame.trailers_ref() {
                if trailers.get(&GRPC_STATUS).map(HeaderValue::as_bytes)
                    == Some(GRPC_UNAUTHENTICATED)
                {
                    brake.failed(ip);
                }
            }
            frame
        }))
    })
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// RESOURCE_EXHAUSTED (gRPC, trailers-only) or 429, both with `retry-after` in seconds.
fn refuse(request_headers: &HeaderMap, left: Duration) -> Response {
    let secs = left.as_secs().max(1);
    let message =
        format!("too many failed credential checks from this address; retry after {secs} s");
    let retry_after = HeaderValue::from(secs);
    let mut response = match request_headers.get(header::CONTENT_TYPE) {
        Some(ct) if ct.as_bytes().starts_with(b"application/grpc") => {
            let mut r = tonic::Status::resource_exhausted(message).into_http::<Body>();
            r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
            r
        }
        _ => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "error": message })),
        )
            .into_response(),
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_past_its_budget_cools_down_alone() {
        let brake = Brake::start(BrakeLimits {
            failures: 3,
            window: Duration::from_secs(30),
        })
        .expect("on");
        let guesser: IpAddr = [127, 0, 0, 9].into();
        let other: IpAddr = [127, 0, 0, 10].into();
        for _ in 0..2 {
            brake.failed(guesser);
        }
        assert!(brake.cooling(guesser).is_none(), "within the budget");
        brake.failed(guesser);
        let left = brake.cooling(guesser).expect("cooling down");
        assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(25));
        assert!(brake.cooling(other).is_none());
    }

    #[test]
    fn a_zero_budget_turns_it_off() {
        assert!(Brake::start(BrakeLimits {
            failures: 0,
            window: Duration::from_secs(10)
        })
        .is_none());
    }
}
