//! `otlp-dump`: a minimal OTLP trace collector for a look at meshfleet's
//! spans without one: receives OTLP/HTTP (protobuf) and OTLP/gRPC and prints
//! every span as it arrives, one line each, grouped by trace when asked.
//!
//! ```sh
//! cargo run -p meshfleet-tests --bin otlp-dump                     # :4318 (HTTP) and :4317 (gRPC)
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 cargo run -p meshfleet -- up
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use meshfleet_tests::otlp::{ReceivedSpan, grpc_receiver_on, http_receiver_on};

#[derive(Debug, Parser)]
#[command(name = "otlp-dump", about = "Prints the spans sent to it over OTLP")]
struct Args {
    /// Where to accept OTLP/HTTP with protobuf bodies (`POST /v1/traces`).
    #[arg(long, default_value = "127.0.0.1:4318")]
    http: SocketAddr,
    /// Where to accept OTLP/gRPC.
    #[arg(long, default_value = "127.0.0.1:4317")]
    grpc: SocketAddr,
    /// Print only the spans of traces that have a span with this name
    /// prefix (e.g. `PATCH`), each trace as a tree once it is quiet for 8 s
    /// (exporters batch for 5 s).
    #[arg(long)]
    trace_of: Option<String>,
}

fn line(s: &ReceivedSpan) -> String {
    let mut attrs: Vec<String> = s
        .attributes
        .iter()
        .filter(|(k, _)| {
            !["otel.", "code.", "thread.", "busy_ns", "idle_ns", "target"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    attrs.sort();
    let service = s.resource.get("service.name").cloned().unwrap_or_default();
    format!("{} [{service}] {}", s.name, attrs.join(" "))
}

fn print_tree(spans: &[ReceivedSpan], parent: &str, depth: usize) {
    for s in spans.iter().filter(|s| s.parent_span_id == parent) {
        println!("{}{}", "  ".repeat(depth + 1), line(s));
        print_tree(spans, &s.span_id, depth + 1);
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let (http, from_http) = http_receiver_on(tokio::net::TcpListener::bind(a.http).await?);
    let (grpc, from_grpc) = grpc_receiver_on(tokio::net::TcpListener::bind(a.grpc).await?);
    eprintln!("otlp-dump: OTLP/HTTP on http://{http}, OTLP/gRPC on http://{grpc}; Ctrl-C stops");
    let mut traces: BTreeMap<String, (Vec<ReceivedSpan>, tokio::time::Instant)> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let mut fresh = from_http.take();
        fresh.extend(from_grpc.take());
        let Some(prefix) = &a.trace_of else {
            for s in &fresh {
                println!("{} {} {}", &s.trace_id[..8], &s.span_id[..8], line(s));
            }
            continue;
        };
        let now = tokio::time::Instant::now();
        for s in fresh {
            let entry = traces
                .entry(s.trace_id.clone())
                .or_insert((Vec::new(), now));
            entry.0.push(s);
            entry.1 = now;
        }
        let quiet: Vec<String> = traces
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) > Duration::from_secs(8))
            .map(|(t, _)| t.clone())
            .collect();
        for t in quiet {
            let Some((spans, _)) = traces.remove(&t) else {
                continue;
            };
            if !spans.iter().any(|s| s.name.starts_with(prefix.as_str())) {
                continue;
            }
            println!("trace {t}");
            let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
            // Roots here: spans whose parent is not in this trace's spans.
            for root in spans
                .iter()
                .filter(|s| !ids.contains(&s.parent_span_id.as_str()))
            {
                println!("  {}", line(root));
                print_tree(&spans, &root.span_id, 1);
            }
        }
    }
}
