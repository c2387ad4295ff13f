//! `POST /v1/operators`, `GET` / `DELETE /v1/operators/{sid}`: operator login as v0.1.0.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::error::Error;
use crate::legacy::{bearer, ApiResult, LegacyState};

/// `POST /v1/operators` body.
#[derive(Debug, Deserialize)]
pub(super) struct CreateBody {
    #[serde(default)]
    roles: Vec<String>,
}

pub(super) async fn create(
    State(st): State<LegacyState>,
    Json(body): Json<CreateBody>,
) -> Response {
    let wanted = body.roles.clone();
    match st.hub.create(body.roles).await {
        Ok(c) => Json(json!({"sid": c.sid, "token": c.token, "roles": c.roles})).into_response(),
        Err(Error::AlreadyExists(_)) => {
            let conflicts = st.hub.held_roles(&wanted).await.unwrap_or_default();
            (
                StatusCode::CONFLICT,
                Json(json!({"error": "roles conflict", "conflicts": conflicts})),
            )
                .into_response()
        }
        Err(e) => crate::legacy::ApiError(e).into_response(),
    }
}

pub(super) async fn info(
    State(st): State<LegacyState>,
    Path(sid): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let token = bearer(&headers)?;
    let session = st.hub.authenticate(&sid, token.as_deref()).await?;
    let info = session.info();
    Ok(Json(
        json!({"sid": info.sid, "roles": info.roles, "connected": info.connected}),
    ))
}

pub(super) async fn delete(
    State(st): State<LegacyState>,
    Path(sid): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let token = bearer(&headers)?;
    st.hub.authenticate(&sid, token.as_deref()).await?;
    st.hub
        .delete(&sid, "deleted by DELETE /v1/operators")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
