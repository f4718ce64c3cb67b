//! The meshfleet REST API as the provider uses it (reqwest + the model's wire
//! types). Every answer that is not a success becomes one [`Error`].

use std::time::Duration;

use meshfleet_model::{
    Cluster, ClusterInput, EventList, FleetSummary, Operation, Problem, Release, ReleaseList,
    Rollout, RolloutInput,
};
use reqwest::header::{CONTENT_TYPE, ETAG, HeaderMap};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A configured connection to one meshfleet service, as one tenant's caller.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// How a `DELETE /v1/clusters/{name}` was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// 204: the record is gone.
    Done,
    /// 202: poll this operation (the `Operation-Location`).
    Started { operation: String },
}

/// A cluster with the ETag it was read at.
pub type Versioned<T> = (T, String);

impl Client {
    /// `endpoint` is the service's base URL (`http://127.0.0.1:8080`).
    pub fn new(endpoint: &str, token: &str) -> Result<Client> {
        let base = endpoint.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!(
                "endpoint `{endpoint}` is not an http:// or https:// URL"
            )));
        }
        if token.trim().is_empty() {
            return Err(Error::Config(
                "no token: set `token` in the provider block or MESHFLEET_TOKEN".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "terraform-provider-meshfleet/",
                env!("CARGO_PKG_VERSION")
            ))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Config(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token: token.trim().to_string(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends; transport failures and non-success answers become errors.
    async fn send(&self, what: &str, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|e| {
            let e = self.unreachable(e);
            tracing::debug!(%what, error = %e, "no answer");
            e
        })?;
        let status = resp.status();
        tracing::debug!(%what, %status, "meshfleet answered");
        if status.is_success() {
            return Ok(resp);
        }
        Err(self.failure(what, resp).await)
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        if e.is_timeout() {
            reason = format!("no answer in time ({reason})");
        }
        Error::Unreachable {
            endpoint: self.base.clone(),
            reason,
        }
    }

    async fn failure(&self, what: &str, resp: Response) -> Error {
        let status = resp.status();
        let is_problem = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/problem+json"));
        let text = resp.text().await.unwrap_or_default();
        let problem: Option<Problem> = if is_problem {
            serde_json::from_str(&text).ok()
        } else {
            None
        };
        let detail = problem
            .as_ref()
            .map(|p| p.detail.clone())
            .unwrap_or_else(|| snippet(&text));
        match (status.as_u16(), problem) {
            (401, _) => Error::Unauthorized(detail),
            (403, _) => Error::Forbidden(detail),
            (412, Some(_)) => Error::PreconditionFailed(detail),
            (502..=504, _) => Error::Unavailable {
                status: status.as_u16(),
                detail,
            },
            (_, Some(p)) => Error::Problem(Box::new(p)),
            (s, None) if s >= 500 => Error::Unavailable { status: s, detail },
            (_, None) => Error::NotMeshfleet {
                endpoint: self.base.clone(),
                what: format!("{what} answered {status} without a problem document"),
            },
        }
    }

    async fn json<T: DeserializeOwned>(&self, what: &str, resp: Response) -> Result<T> {
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::NotMeshfleet {
            endpoint: self.base.clone(),
            what: format!("{what} answered a body this provider cannot read ({e})"),
        })
    }

    fn etag(&self, what: &str, headers: &HeaderMap) -> Result<String> {
        headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| Error::NotMeshfleet {
                endpoint: self.base.clone(),
                what: format!("{what} answered without an ETag"),
            })
    }

    async fn cluster_answer(&self, what: &str, resp: Response) -> Result<Versioned<Cluster>> {
        let tag = self.etag(what, resp.headers())?;
        Ok((self.json(what, resp).await?, tag))
    }

    /// `GET /v1/clusters/{name}`; `None` when the tenant has no such cluster.
    pub async fn get_cluster(&self, name: &str) -> Result<Option<Versioned<Cluster>>> {
        let what = format!("GET /v1/clusters/{name}");
        match self
            .send(&what, self.request(Method::GET, &cluster_path(name)))
            .await
        {
            Ok(resp) => Ok(Some(self.cluster_answer(&what, resp).await?)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v1/clusters/{name}` with `If-None-Match: *`: create only.
    pub async fn create_cluster(
        &self,
        name: &str,
        input: &ClusterInput,
    ) -> Result<Versioned<Cluster>> {
        let what = format!("PUT /v1/clusters/{name}");
        let req = self
            .request(Method::PUT, &cluster_path(name))
            .header("If-None-Match", "*")
            .json(input);
        let resp = self.send(&what, req).await?;
        self.cluster_answer(&what, resp).await
    }

    /// `PUT /v1/clusters/{name}` with `If-Match`: replace what was read.
    pub async fn replace_cluster(
        &self,
        name: &str,
        input: &ClusterInput,
        etag: Option<&str>,
    ) -> Result<Versioned<Cluster>> {
        let what = format!("PUT /v1/clusters/{name}");
        let mut req = self.request(Method::PUT, &cluster_path(name)).json(input);
        if let Some(tag) = etag {
            req = req.header("If-Match", tag);
        }
        let resp = self.send(&what, req).await?;
        self.cluster_answer(&what, resp).await
    }

    /// `DELETE /v1/clusters/{name}` (with `If-Match`, and `?force=true` when asked).
    pub async fn delete_cluster(
        &self,
        name: &str,
        etag: Option<&str>,
        force: bool,
    ) -> Result<Deletion> {
        let what = format!("DELETE /v1/clusters/{name}");
        let mut path = cluster_path(name);
        if force {
            path.push_str("?force=true");
        }
        let mut req = self.request(Method::DELETE, &path);
        if let Some(tag) = etag {
            req = req.header("If-Match", tag);
        }
        let resp = self.send(&what, req).await?;
        if resp.status() == StatusCode::ACCEPTED {
            let operation = resp
                .headers()
                .get("operation-location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| Error::NotMeshfleet {
                    endpoint: self.base.clone(),
                    what: format!("{what} answered 202 without an Operation-Location"),
                })?;
            return Ok(Deletion::Started { operation });
        }
        Ok(Deletion::Done)
    }

    /// `GET` an operation by its `Operation-Location` (a path or a full URL).
    pub async fn get_operation(&self, location: &str) -> Result<Operation> {
        let path = location
            .strip_prefix(&self.base)
            .unwrap_or(location)
            .to_string();
        let what = format!("GET {path}");
        let resp = self.send(&what, self.request(Method::GET, &path)).await?;
        self.json(&what, resp).await
    }

    /// The release catalog, newest first.
    pub async fn releases(&self) -> Result<Vec<Release>> {
        let what = "GET /v1/releases";
        let resp = self
            .send(what, self.request(Method::GET, "/v1/releases"))
            .await?;
        Ok(self.json::<ReleaseList>(what, resp).await?.items)
    }

    /// `POST /v1/rollouts`.
    pub async fn create_rollout(&self, input: &RolloutInput) -> Result<Rollout> {
        let what = "POST /v1/rollouts";
        let resp = self
            .send(what, self.request(Method::POST, "/v1/rollouts").json(input))
            .await?;
        self.json(what, resp).await
    }

    /// `GET /v1/rollouts/{id}`; `None` when there is no such rollout.
    pub async fn get_rollout(&self, id: &str) -> Result<Option<Rollout>> {
        let what = format!("GET /v1/rollouts/{id}");
        match self
            .send(
                &what,
                self.request(Method::GET, &format!("/v1/rollouts/{id}")),
            )
            .await
        {
            Ok(resp) => Ok(Some(self.json(&what, resp).await?)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/rollouts/{id}/{action}` (`pause`, `resume`, `cancel`, `approve`).
    pub async fn rollout_action(&self, id: &str, action: &str) -> Result<Rollout> {
        let what = format!("POST /v1/rollouts/{id}/{action}");
        let resp = self
            .send(
                &what,
                self.request(Method::POST, &format!("/v1/rollouts/{id}/{action}")),
            )
            .await?;
        self.json(&what, resp).await
    }

    /// The agent's install manifest with a fresh bootstrap token (YAML).
    pub async fn agent_manifest(&self, cluster: &str) -> Result<String> {
        let what = format!("GET /v1/clusters/{cluster}/agent-manifest");
        let resp = self
            .send(
                &what,
                self.request(
                    Method::GET,
                    &format!("{}/agent-manifest", cluster_path(cluster)),
                ),
            )
            .await?;
        resp.text().await.map_err(|e| self.unreachable(e))
    }

    /// The newest events of a cluster.
    pub async fn cluster_events(&self, cluster: &str) -> Result<EventList> {
        let what = format!("GET /v1/events?cluster={cluster}");
        let resp = self
            .send(
                &what,
                self.request(
                    Method::GET,
                    &format!(
                        "/v1/events?limit=50&cluster={}",
                        cluster_path_segment(cluster)
                    ),
                ),
            )
            .await?;
        self.json(&what, resp).await
    }

    /// `GET /v1/fleet/summary`.
    pub async fn fleet_summary(&self) -> Result<FleetSummary> {
        let what = "GET /v1/fleet/summary";
        let resp = self
            .send(what, self.request(Method::GET, "/v1/fleet/summary"))
            .await?;
        self.json(what, resp).await
    }
}

fn cluster_path(name: &str) -> String {
    format!("/v1/clusters/{}", cluster_path_segment(name))
}

/// Names are DNS labels; anything else is escaped (and refused by the API as not found).
fn cluster_path_segment(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_string()
            } else {
                format!("%{:02X}", c as u32 & 0xff)
            }
        })
        .collect()
}

/// The start of a non-problem body, for a diagnostic.
fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        return "(empty body)".into();
    }
    let cut: String = t.chars().take(200).collect();
    if cut.len() < t.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_must_be_an_http_url_and_a_token_is_required() {
        assert!(matches!(
            Client::new("127.0.0.1:8080", "t"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Client::new("http://127.0.0.1:8080", " "),
            Err(Error::Config(_))
        ));
        let c = Client::new("http://127.0.0.1:8080/", "t").expect("valid");
        assert_eq!(c.endpoint(), "http://127.0.0.1:8080");
    }

    #[test]
    fn cluster_names_are_escaped_in_paths() {
        assert_eq!(cluster_path("prod-eu-1"), "/v1/clusters/prod-eu-1");
        assert_eq!(cluster_path("a/b"), "/v1/clusters/a%2Fb");
    }
}
