//! The agent protocol over HTTP (see `meshfleet_model::agent`), and the
//! backoff used when the service is unreachable.

use std::time::Duration;

use meshfleet_model::{
    AgentCredential, CHANGE_TRACEPARENT_HEADER, ClusterFacts, DesiredState, RegisterRequest,
    StatusReport,
};
use rand::Rng;
use reqwest::{StatusCode, header};

use crate::error::{Error, Result};
use crate::render::Directives;

/// Result of a long poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// `200`: the desired state and its ETag; `change` is the trace context
    /// the service sent with a change whose writer was traced
    /// (`meshfleet-change-traceparent`), for the pass to continue.
    Changed {
        state: Box<DesiredState>,
        /// Fields of the same document beyond [`DesiredState`].
        directives: Directives,
        etag: Option<String>,
        change: Option<String>,
    },
    /// `304`: unchanged since the ETag sent.
    NotModified,
}

/// A client of the agent routes of one meshfleet service.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    base: String,
}

/// Extra time a long poll may take beyond `waitSeconds` before it counts as failed.
const POLL_GRACE: Duration = Duration::from_secs(20);
/// Timeout of the other calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl ServiceClient {
    /// `base_url` is the service's root, e.g. `https://meshfleet.example.com`.
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        ServiceClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        }
    }

    /// The HTTP client the agent uses when none is given.
    pub fn default_http() -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("meshfleet-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request carrying the current span's W3C `traceparent` (when spans
    /// are exported), so that the service continues the agent's trace.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match meshfleet_telemetry::current_traceparent() {
            Some(traceparent) => req.header(meshfleet_telemetry::TRACEPARENT, traceparent),
            None => req,
        }
    }

    /// `POST /v1/agent/register`: exchanges a bootstrap token for a credential.
    pub async fn register(
        &self,
        bootstrap_token: &str,
        facts: ClusterFacts,
    ) -> Result<AgentCredential> {
        let body = RegisterRequest {
            bootstrap_token: bootstrap_token.to_string(),
            facts,
        };
        let resp = self
            .request(reqwest::Method::POST, "/v1/agent/register")
            .timeout(CALL_TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(unavailable)?;
        if resp.status() == StatusCode::CREATED || resp.status() == StatusCode::OK {
            return resp.json().await.map_err(unavailable);
        }
        Err(error_from(resp).await)
    }

    /// `GET /v1/agent/desired-state?waitSeconds=N` with `If-None-Match`.
    pub async fn desired_state(
        &self,
        credential: &str,
        etag: Option<&str>,
        wait: Duration,
    ) -> Result<Poll> {
        let mut req = self
            .request(
                reqwest::Method::GET,
                &format!(
                    "{}?waitSeconds={}",
                    meshfleet_model::LONG_POLL_PATH,
                    wait.as_secs()
                ),
            )
            .bearer_auth(credential)
            .timeout(wait + POLL_GRACE);
        if let Some(etag) = etag {
            req = req.header(header::IF_NONE_MATCH, etag);
        }
        let resp = req.send().await.map_err(unavailable)?;
        match resp.status() {
            StatusCode::OK => {
                let text = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let etag = text(header::ETAG.as_str());
                let change = text(CHANGE_TRACEPARENT_HEADER);
                let document: serde_json::Value = resp.json().await.map_err(unavailable)?;
                let directives = Directives::from_document(&document);
                let state: DesiredState = serde_json::from_value(document)
                    .map_err(|e| Error::Unavailable(format!("decoding the desired state: {e}")))?;
                Ok(Poll::Changed {
                    state: Box::new(state),
                    directives,
                    etag,
                    change,
                })
            }
            StatusCode::NOT_MODIFIED => Ok(Poll::NotModified),
            _ => Err(error_from(resp).await),
        }
    }

    /// `GET` of a release bundle (`url` as the desired state names it,
    /// `/v1/agent/bundles/{digest}`): its bytes, unverified.
    pub async fn fetch_bundle(&self, credential: &str, url: &str) -> Result<Vec<u8>> {
        let resp = self
            .request(reqwest::Method::GET, url)
            .bearer_auth(credential)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(unavailable)?;
        if resp.status() == StatusCode::OK {
            return Ok(resp.bytes().await.map_err(unavailable)?.to_vec());
        }
        Err(error_from(resp).await)
    }

    /// `PUT /v1/agent/status` (also the heartbeat).
    pub async fn report_status(&self, credential: &str, report: &StatusReport) -> Result<()> {
        let resp = self
            .request(reqwest::Method::PUT, "/v1/agent/status")
            .bearer_auth(credential)
            .timeout(CALL_TIMEOUT)
            .json(report)
            .send()
            .await
            .map_err(unavailable)?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(error_from(resp).await)
    }

    /// `POST /v1/agent/credential/rotate`.
    pub async fn rotate(&self, credential: &str) -> Result<AgentCredential> {
        let resp = self
            .request(reqwest::Method::POST, "/v1/agent/credential/rotate")
            .bearer_auth(credential)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(unavailable)?;
        if resp.status().is_success() {
            return resp.json().await.map_err(unavailable);
        }
        Err(error_from(resp).await)
    }
}

fn unavailable(e: reqwest::Error) -> Error {
    // reqwest's messages name the URL but never headers, so no credential leaks.
    Error::Unavailable(e.to_string())
}

/// The longest `Retry-After` the agent honours: a proxy that asks for a day
/// does not park the fleet for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A `Retry-After` in delta-seconds (what meshfleet sends), at most
/// [`MAX_RETRY_AFTER`]; `None` when absent or not a number of seconds.
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Maps a non-success answer: 401 → [`Error::Unauthorized`], 5xx and 429 →
/// [`Error::Unavailable`] (retry with backoff), or [`Error::RetryLater`]
/// when a 429 or 503 says when (`Retry-After`), anything else →
/// [`Error::Service`]; the problem's `detail` is kept.
async fn error_from(resp: reqwest::Response) -> Error {
    let status = resp.status();
    let after = matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
    .then(|| retry_after(resp.headers()))
    .flatten();
    let body = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or_else(|| {
            let mut b = body;
            b.truncate(200);
            if b.is_empty() {
                status.canonical_reason().unwrap_or("").to_string()
            } else {
                b
            }
        });
    if status == StatusCode::UNAUTHORIZED {
        Error::Unauthorized(detail)
    } else if let Some(after) = after {
        Error::RetryLater {
            detail: format!("{}: {detail}", status.as_u16()),
            after,
        }
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Error::Unavailable(format!("{}: {detail}", status.as_u16()))
    } else {
        Error::Service {
            status: status.as_u16(),
            detail,
        }
    }
}

/// Capped exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(cap, base·2ⁿ)]`, so a fleet that lost the service does not come
/// back in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    /// The wait before retrying after `error`: the next backoff delay, but
    /// never less than the `Retry-After` the service sent, plus up to a fifth
    /// of it at random, so that agents told the same moment do not all come
    /// back in it.
    pub fn delay_after(&mut self, error: &Error) -> Duration {
        let delay = self.next_delay();
        match error.retry_after() {
            Some(after) => {
                let ms = u64::try_from(after.as_millis() / 5).unwrap_or(u64::MAX);
                delay.max(after + Duration::from_millis(rand::rng().random_range(0..=ms)))
            }
            None => delay,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let ceilings: Vec<u64> = (0..12)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay();
                assert!(d <= c);
                c.as_secs()
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        // Jitter: not every delay equals the ceiling.
        let mut b = Backoff::new(Duration::from_secs(300), Duration::from_secs(300));
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn a_retry_after_is_a_floor_under_the_backoff_with_a_fifth_of_jitter() {
        let told = Error::RetryLater {
            detail: "429: slow down".into(),
            after: Duration::from_secs(2),
        };
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(500));
        let delays: Vec<Duration> = (0..50).map(|_| b.delay_after(&told)).collect();
        for d in &delays {
            assert!(
                (Duration::from_secs(2)..=Duration::from_millis(2400)).contains(d),
                "{d:?}"
            );
        }
        assert!(
            delays
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 1
        );
        // Past the Retry-After, the backoff's own (longer) delay still counts.
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let plain = Error::Unavailable("500: oops".into());
        assert!(b.delay_after(&plain) <= Duration::from_secs(60));
        assert!(b.delay_after(&told) >= Duration::from_secs(2));
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut h = header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, " 7 ".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(header::RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        // An HTTP-date is not what meshfleet sends: plain backoff then.
        h.insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
