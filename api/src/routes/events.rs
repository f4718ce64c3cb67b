//! `/v1/events`: the tenant's audit and activity log.

use axum::extract::State;
use meshfleet_model::{EventList, Problem};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::http::{CursorField, CursorShape, CursorValue, Query, id_cursor, page_limit, paginate};
use crate::state::AppState;

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

/// Before the event of this id.
pub const CURSOR: CursorShape = CursorShape {
    kind: "e2",
    fields: &[CursorField::Int],
};

/// Who changed what and when, newest first.
///
/// A walk through the pages sees the log as of its first page; events that
/// commit while it walks appear at the top of the next fresh listing.
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
    let before = id_cursor(&CURSOR, params.cursor.as_deref())?;
    let mut items = meshfleet_core::store::events::list_events(
        &state.pool,
        &principal.tenant,
        params.cluster.as_deref(),
        before,
        limit + 1,
    )
    .await?;
    let next_cursor = paginate(&mut items, limit, |e| {
        CURSOR.encode(&[CursorValue::Int(e.id)])
    });
    Ok(axum::Json(EventList { items, next_cursor }))
}
