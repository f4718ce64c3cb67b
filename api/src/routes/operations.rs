//! `/v1/operations/{id}`: long-running work a tenant polls.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshfleet_core::store::operations;
use meshfleet_model::{Operation, Problem};
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::with_header;
use crate::state::AppState;

/// The path of an operation.
pub fn location(id: Uuid) -> String {
    format!("/v1/operations/{id}")
}

/// `202 Accepted` with the operation and where to poll it.
pub fn accepted(operation: Operation) -> Response {
    let at = location(operation.id);
    let response = (StatusCode::ACCEPTED, axum::Json(operation)).into_response();
    let response = with_header(response, header::LOCATION, &at);
    with_header(
        response,
        header::HeaderName::from_static("operation-location"),
        &at,
    )
}

/// Poll a long-running operation (a cluster deletion, a rollout).
#[utoipa::path(
    get, path = "/v1/operations/{id}", tag = "operations",
    params(("id" = Uuid, Path, description = "Operation id")),
    responses(
        (status = 200, description = "The operation", body = Operation),
        (status = 400, description = "Not an operation id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Lacks the reader role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such operation in this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_operation(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Operation>> {
    principal.require_read()?;
    let not_found = || ApiError::NotFound(format!("operation `{id}` not found"));
    let parsed = Uuid::try_parse(&id).map_err(|_| not_found())?;
    let operation = operations::get_operation(&state.pool, &principal.tenant, parsed)
        .await?
        .ok_or_else(not_found)?;
    Ok(axum::Json(operation))
}
