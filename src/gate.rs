//! The API-token gate: one tower middleware in front of every door (native gRPC, gRPC-Web,
//! the v0.1.0 routes), so no handler checks the API token itself.
//!
//! With `--api-token` set, every call needs `authorization: Bearer <token>` or
//! `x-mse-access-token: <token>`, except what carries its own credential or must stay
//! reachable: health, reflection (the public contract, which grpcurl needs for any call),
//! the console's static files, worker calls (handle or capability token) and operator
//! streams (session token). Anything not listed as open is gated, so a new RPC
//! or route is closed until someone opens it here.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::door::{bearer_credential, Scheme};
use crate::secret::secrets_equal;

/// The header later v0.1.0 releases use for the API token; it leaves `authorization` free
/// for the credential a route already takes (a session's login token, for instance).
pub const ACCESS_TOKEN_HEADER: &str = "x-mse-access-token";

/// What a call needs to pass the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Passes without the API token (it carries its own credential, or is public).
    Open,
    /// Needs the API token when one is configured.
    ApiToken,
}

/// gRPC services and methods open without the API token: `"pkg.Service/"` opens a whole
/// service, `"pkg.Service/Method"` one method.
pub const OPEN_RPCS: &[&str] = &[
    // Probes must reach health without secrets.
    "grpc.health.v1.Health/",
    // Reflection serves the public contract only and runs nothing; grpcurl needs it for
    // every call, including a sub-agent's WorkerService calls and a health check.
    "grpc.reflection.v1.ServerReflection/",
    "grpc.reflection.v1alpha.ServerReflection/",
    // Worker calls carry a worker handle or capability token.
    "mlua_swarm.v1.WorkerService/",
    "mlua_swarm.v1.DataService/Emit",
    "mlua_swarm.v1.DataService/EmitNamed",
    // Operator streams carry the session token.
    "mlua_swarm.v1.OperatorService/Connect",
    "mlua_swarm.v1.OperatorService/Subscribe",
    "mlua_swarm.v1.OperatorService/Send",
];

/// Paths outside `/v1/` that need the API token (everything else there is the console's
/// static files and `/healthz`).
pub const GATED_PATHS: &[&str] = &["/metrics"];

/// One v0.1.0 route and what it needs.
#[derive(Debug, Clone, Copy)]
pub struct LegacyRoute {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern, `{name}` for a segment.
    pub path: &'static str,
    /// What the gate asks of it.
    pub access: Access,
}

const fn route(method: &'static str, path: &'static str, access: Access) -> LegacyRoute {
    LegacyRoute {
        method,
        path,
        access,
    }
}

/// Every v0.1.0 route the server serves, with its access. A `/v1/...` request that matches
/// none of them is gated.
pub const LEGACY_ROUTES: &[LegacyRoute] = &[
    route("GET", "/v1/healthz", Access::Open),
    route("POST", "/v1/operators", Access::ApiToken),
    route("GET", "/v1/operators/{sid}", Access::ApiToken),
    route("DELETE", "/v1/operators/{sid}", Access::ApiToken),
    route("GET", "/v1/operators/{sid}/ws", Access::Open),
    route("GET", "/v1/worker/prompt", Access::Open),
    route("POST", "/v1/worker/result", Access::Open),
    route("POST", "/v1/worker/submit", Access::Open),
    route("POST", "/v1/data/emit", Access::Open),
    route("POST", "/v1/data/{key}", Access::Open),
    route("GET", "/v1/data/{key}", Access::ApiToken),
    route("POST", "/v1/tasks", Access::ApiToken),
    route("POST", "/v1/blueprints/{id}", Access::ApiToken),
    route("DELETE", "/v1/blueprints/{id}", Access::ApiToken),
    route("GET", "/v1/blueprints/{id}/head", Access::ApiToken),
    route("GET", "/v1/blueprints/{id}/history", Access::ApiToken),
    route("POST", "/v1/blueprints/{id}/unarchive", Access::ApiToken),
    route("GET", "/v1/doctor", Access::ApiToken),
    route("POST", "/v1/sessions", Access::ApiToken),
    route("DELETE", "/v1/sessions", Access::ApiToken),
];

/// The gate's state: the token and the open routes, compiled once.
#[derive(Debug)]
pub struct Gate {
    token: String,
    open_routes: matchit::Router<Vec<Method>>,
}

impl Gate {
    /// A gate for `token`; `None` when no API token is configured (nothing to check).
    pub fn new(token: Option<&str>) -> Option<Arc<Self>> {
        let token = token?.to_string();
        let mut by_path: Vec<(&str, Vec<Method>)> = Vec::new();
        for r in LEGACY_ROUTES.iter().filter(|r| r.access == Access::Open) {
            let method = Method::from_bytes(r.method.as_bytes()).unwrap_or(Method::GET);
            match by_path.iter_mut().find(|(p, _)| *p == r.path) {
                Some((_, methods)) => methods.push(method),
                None => by_path.push((r.path, vec![method])),
            }
        }
        let mut open_routes = matchit::Router::new();
        for (path, methods) in by_path {
            // The table is static and its patterns distinct: insertion cannot fail.
            let _ = open_routes.insert(path, methods);
        }
        Some(Arc::new(Self { token, open_routes }))
    }

    /// What a request with this method and path needs.
    pub fn access(&self, method: &Method, path: &str) -> Access {
        if method == Method::OPTIONS {
            return Access::Open; // CORS preflight: carries no credentials, runs nothing
        }
        if let Some(rpc) = grpc_method(path) {
            return rpc_access(rpc);
        }
        if path.starts_with("/v1/") || path == "/v1" {
            return match self.open_routes.at(path) {
                Ok(m) if m.value.contains(method) => Access::Open,
                _ => Access::ApiToken,
            };
        }
        if GATED_PATHS.contains(&path) {
            return Access::ApiToken;
        }
        Access::Open // the console's static files and `/healthz`
    }

    /// Checks the request's API token; the error says what to send.
    fn verify(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let given = match headers.get(ACCESS_TOKEN_HEADER) {
            Some(v) => v.to_str().ok().map(str::trim),
            None => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| bearer_credential(v, Scheme::EitherCase)),
        };
        match given {
            None | Some("") => Err("api token required: send 'authorization: Bearer <token>' \
                 or 'x-mse-access-token: <token>'"),
            Some(t) if secrets_equal(t, &self.token) => Ok(()),
            Some(_) => Err("api token refused: the value of 'x-mse-access-token' (or \
                 'authorization: Bearer') does not match the server's --api-token"),
        }
    }
}

/// `pkg.Service/Method` if the path names a gRPC method.
fn grpc_method(path: &str) -> Option<&str> {
    let rpc = path.strip_prefix('/')?;
    let (service, method) = rpc.split_once('/')?;
    let looks_like = service.contains('.') && !method.is_empty() && !method.contains('/');
    looks_like.then_some(rpc)
}

/// Access of a gRPC method, `pkg.Service/Method`.
pub fn rpc_access(rpc: &str) -> Access {
    let open = OPEN_RPCS.iter().any(|o| {
        if o.ends_with('/') {
            rpc.starts_with(o)
        } else {
            rpc == *o
        }
    });
    if open {
        Access::Open
    } else {
        Access::ApiToken
    }
}

/// The middleware: passes open calls, checks the token on the rest.
pub async fn check(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    if gate.access(request.method(), request.uri().path()) == Access::Open {
        return next.run(request).await;
    }
    match gate.verify(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(message) => {
            tracing::debug!(path = %request.uri().path(), "api token missing or wrong");
            refuse(request.headers(), message)
        }
    }
}

/// UNAUTHENTICATED in the caller's protocol: a trailers-only gRPC (or gRPC-Web) response,
/// or 401 with v0.1.0's `{"error": ...}` body.
fn refuse(headers: &HeaderMap, message: &'static str) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .filter(|v| v.as_bytes().starts_with(b"application/grpc"))
        .cloned();
    match content_type {
        Some(ct) => {
            let mut response = tonic::Status::unauthenticated(message).into_http::<Body>();
            // gRPC-Web clients expect their own content type back.
            response.headers_mut().insert(header::CONTENT_TYPE, ct);
            response
        }
        None => {
            let mut response =
                (StatusCode::UNAUTHORIZED, Json(json!({ "error": message }))).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mse-grpc\""),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Arc<Gate> {
        Gate::new(Some("s3cret")).expect("a gate")
    }

    #[test]
    fn no_token_means_no_gate() {
        assert!(Gate::new(None).is_none());
    }

    #[test]
    fn rpcs_are_gated_unless_listed_open() {
        let g = gate();
        let post = Method::POST;
        for open in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/mlua_swarm.v1.WorkerService/GetPrompt",
            "/mlua_swarm.v1.DataService/Emit",
            "/mlua_swarm.v1.OperatorService/Connect",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(g.access(&post, open), Access::Open, "{open}");
        }
        for gated in [
            "/mlua_swarm.v1.TaskService/StartTask",
            "/mlua_swarm.v1.TaskService/ResumeTask",
            "/mlua_swarm.v1.TaskService/RerunTask",
            "/mlua_swarm.v1.DataService/Get",
            "/mlua_swarm.v1.DataService/EmitNamedX",
            "/mlua_swarm.v1.OperatorService/CreateSession",
            "/mlua_swarm.v1.NewService/Anything",
        ] {
            assert_eq!(g.access(&post, gated), Access::ApiToken, "{gated}");
        }
    }

    #[test]
    fn legacy_routes_follow_the_table_and_unknown_v1_paths_are_gated() {
        let g = gate();
        assert_eq!(g.access(&Method::GET, "/v1/healthz"), Access::Open);
        assert_eq!(
            g.access(&Method::GET, "/v1/operators/op-1/ws"),
            Access::Open
        );
        assert_eq!(g.access(&Method::POST, "/v1/data/emit"), Access::Open);
        assert_eq!(g.access(&Method::POST, "/v1/data/k1"), Access::Open);
        assert_eq!(g.access(&Method::GET, "/v1/data/k1"), Access::ApiToken);
        assert_eq!(
            g.access(&Method::GET, "/v1/operators/op-1"),
            Access::ApiToken
        );
        assert_eq!(
            g.access(&Method::PUT, "/v1/worker/prompt"),
            Access::ApiToken
        );
        assert_eq!(g.access(&Method::GET, "/v1/new-thing"), Access::ApiToken);
        assert_eq!(g.access(&Method::GET, "/"), Access::Open);
        assert_eq!(g.access(&Method::GET, "/app.js"), Access::Open);
        assert_eq!(g.access(&Method::GET, "/metrics"), Access::ApiToken);
        assert_eq!(g.access(&Method::OPTIONS, "/v1/tasks"), Access::Open);
    }

    #[test]
    fn token_is_read_from_either_header() {
        let g = gate();
        let mut h = HeaderMap::new();
        assert!(g.verify(&h).expect_err("missing").contains("required"));
        h.insert(ACCESS_TOKEN_HEADER, HeaderValue::from_static("s3cret"));
        assert!(g.verify(&h).is_ok());
        h.insert(ACCESS_TOKEN_HEADER, HeaderValue::from_static("nope"));
        assert!(g.verify(&h).expect_err("wrong").contains("refused"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(g.verify(&h).is_ok());
    }
}
