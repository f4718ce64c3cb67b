//! `/v1/events`: the tenant's audit and activity log.

use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use meshfleet_model::{EventList, Problem};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::auth::Principal;
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::http::Query;
use crate::routes::clusters::page_limit;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only the events of this cluster (deleted clusters included).
    pub cluster: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

fn decode_cursor(cursor: &str) -> ApiResult<i64> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("e1:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| ApiError::BadRequest("`cursor` is not a cursor this API handed out".into()))
}

/// Who changed what and when, newest first.
#[utoipa::path(
    get, path = "/v1/events", tag = "events",
    params(EventParams),
    responses(
        (status = 200, description = "A page of events", body = EventList),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the reader role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_events(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<EventParams>,
) -> ApiResult<axum::Json<EventList>> {
    principal.require_read()?;
    let limit = page_limit(params.limit)?;
    let before = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut items = db::list_events(
        &state.pool,
        &principal.tenant,
        params.cluster.as_deref(),
        before,
        limit + 1,
    )
    .await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items
            .last()
            .map(|e| URL_SAFE_NO_PAD.encode(format!("e1:{}", e.id)))
    } else {
        None
    };
    Ok(axum::Json(EventList { items, next_cursor }))
}
