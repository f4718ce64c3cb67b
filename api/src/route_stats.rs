//! This process's own request counters per route, per minute for the last
//! hour: the request and error rates of `GET /v1/ops/sli`. Labels come from
//! a closed set (the route template, never the raw path; an unknown method
//! is `other`). `request_context` records every answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use meshfleet_model::RouteRate;

/// Minutes kept (the longest window rates are given for).
pub const MINUTES: usize = 60;

#[derive(Debug, Clone, Copy, Default)]
struct Minute {
    /// Minutes since the epoch this bucket counts (stale buckets are reset).
    at: u64,
    requests: u64,
    client_errors: u64,
    server_errors: u64,
}

#[derive(Debug)]
pub struct RouteStats {
    started: Instant,
    routes: Mutex<HashMap<(&'static str, String), [Minute; MINUTES]>>,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            started: Instant::now(),
            routes: Mutex::new(HashMap::new()),
        }
    }
}

/// The method as a label: one of the standard ones, else `other`.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn epoch_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl RouteStats {
    pub fn record(&self, method: &'static str, route: &str, status: u16) {
        self.record_at(method, route, status, epoch_minute());
    }

    fn record_at(&self, method: &'static str, route: &str, status: u16, minute: u64) {
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        let buckets = match routes.get_mut(&(method, route.to_string())) {
            Some(b) => b,
            None => routes
                .entry((method, route.to_string()))
                .or_insert([Minute::default(); MINUTES]),
        };
        let b = &mut buckets[(minute % MINUTES as u64) as usize];
        if b.at != minute {
            *b = Minute {
                at: minute,
                ..Minute::default()
            };
        }
        b.requests += 1;
        b.client_errors += u64::from((400..500).contains(&status));
        b.server_errors += u64::from(status >= 500);
    }

    /// Rates per route over the last `minutes` (at most [`MINUTES`]; the
    /// current minute included), busiest first.
    pub fn rates(&self, minutes: u64) -> Vec<RouteRate> {
        self.rates_at(minutes, epoch_minute())
    }

    fn rates_at(&self, minutes: u64, now_minute: u64) -> Vec<RouteRate> {
        let minutes = minutes.clamp(1, MINUTES as u64);
        // The window in seconds, or the process's age when it is younger.
        let seconds = (minutes as f64 * 60.0)
            .min(self.started.elapsed().as_secs_f64())
            .max(1.0);
        let Ok(routes) = self.routes.lock() else {
            return vec![];
        };
        let mut out: Vec<RouteRate> = routes
            .iter()
            .filter_map(|((method, route), buckets)| {
                let mut total = Minute::default();
                for b in buckets.iter().filter(|b| b.at + minutes > now_minute) {
                    total.requests += b.requests;
                    total.client_errors += b.client_errors;
                    total.server_errors += b.server_errors;
                }
                (total.requests > 0).then(|| RouteRate {
                    method: (*method).to_string(),
                    route: route.clone(),
                    requests: total.requests,
                    client_errors: total.client_errors,
                    server_errors: total.server_errors,
                    requests_per_second: round3(total.requests as f64 / seconds),
                    server_error_rate: round3(total.server_errors as f64 / total.requests as f64),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.route.cmp(&b.route))
                .then_with(|| a.method.cmp(&b.method))
        });
        out
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_the_window_and_forget_older_minutes() {
        let s = RouteStats::default();
        s.record_at("GET", "/v1/clusters", 200, 100);
        s.record_at("GET", "/v1/clusters", 500, 100);
        s.record_at("GET", "/v1/clusters", 404, 101);
        s.record_at("PUT", "/v1/clusters/{name}", 200, 40);
        let r = s.rates_at(5, 101);
        assert_eq!(r.len(), 1, "the PUT is an hour old: {r:?}");
        assert_eq!(r[0].requests, 3);
        assert_eq!(r[0].client_errors, 1);
        assert_eq!(r[0].server_errors, 1);
        assert!((r[0].server_error_rate - 0.333).abs() < 1e-9);
        // The bucket of minute 40 is reused by minute 100: counts reset.
        s.record_at("PUT", "/v1/clusters/{name}", 200, 160);
        assert_eq!(s.rates_at(1, 160)[0].requests, 1);
    }

    #[test]
    fn unknown_methods_are_one_label() {
        let m = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&m), "other");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }
}
