//! An in-process OTLP trace receiver (gRPC and HTTP/protobuf), for tests
//! that check the spans meshfleet exports over real OTLP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshfleet_telemetry::{LogFormat, OtelArgs, OtlpProtocol, Telemetry};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// A span as received, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// `(trace id, span id)` of each link.
    pub links: Vec<(String, String)>,
    pub attributes: HashMap<String, String>,
    pub resource: HashMap<String, String>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What the receiver has been sent so far.
#[derive(Debug, Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ReceivedSpan>>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(kv: &[KeyValue]) -> HashMap<String, String> {
    kv.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

impl Received {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for rs in request.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| text(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(ReceivedSpan {
                        name: s.name.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        links: s
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                        attributes: text(&s.attributes),
                        resource: resource.clone(),
                    });
                }
            }
        }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Removes and returns what has been received.
    pub fn take(&self) -> Vec<ReceivedSpan> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits (calling `flush` between looks) until `found` finds something
    /// in the spans received; panics after `timeout` with what arrived.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        flush: impl Fn(),
        found: impl Fn(&[ReceivedSpan]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            flush();
            let spans = self.spans();
            if let Some(t) = found(&spans) {
                return t;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{} {} ({})", s.trace_id, s.name, s.span_id))
                    .collect();
                panic!(
                    "timed out waiting for {what}; received:\n{}",
                    names.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

struct Grpc(Received);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves OTLP/gRPC on 127.0.0.1 (on the current Tokio runtime); its
/// address and what it receives.
pub async fn grpc_receiver() -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    grpc_receiver_on(listener)
}

/// Serves OTLP/gRPC on `listener`.
pub fn grpc_receiver_on(listener: tokio::net::TcpListener) -> (SocketAddr, Received) {
    let addr = listener.local_addr().expect("addr");
    let received = Received::default();
    let service = TraceServiceServer::new(Grpc(received.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, received)
}

/// Serves OTLP/HTTP with protobuf bodies (`POST /v1/traces`) on 127.0.0.1.
pub async fn http_receiver() -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    http_receiver_on(listener)
}

/// Serves OTLP/HTTP with protobuf bodies on `listener`.
pub fn http_receiver_on(listener: tokio::net::TcpListener) -> (SocketAddr, Received) {
    let addr = listener.local_addr().expect("addr");
    let received = Received::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        sink.add(request);
                        let answer = ExportTraceServiceResponse {
                            partial_success: None,
                        };
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            answer.encode_to_vec(),
                        )
                    }
                    Err(_) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        b"not an ExportTraceServiceRequest".to_vec(),
                    ),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

/// The process's subscriber, installed by `meshfleet::telemetry::init` as the
/// binary does, exporting spans to an in-process receiver. The receiver and
/// the exporter run on a runtime of their own, which outlives the tests'.
pub struct Harness {
    _runtime: tokio::runtime::Runtime,
    pub received: Received,
    pub telemetry: Telemetry,
}

impl Harness {
    /// Starts a receiver for `protocol` and installs the subscriber with
    /// `otel` pointed at it. Once per process, and not on a Tokio runtime
    /// (use `spawn_blocking`).
    pub fn start(protocol: OtlpProtocol, mut otel: OtelArgs) -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (addr, received) = runtime.block_on(async {
            match protocol {
                OtlpProtocol::Grpc => grpc_receiver().await,
                OtlpProtocol::HttpProtobuf => http_receiver().await,
            }
        });
        otel.otlp_endpoint = Some(format!("http://{addr}"));
        otel.otlp_protocol = protocol;
        let telemetry = {
            let _entered = runtime.enter();
            meshfleet::telemetry::init("warn", LogFormat::Json, &otel, std::io::sink)
                .expect("install the subscriber")
        };
        assert!(telemetry.exporting());
        Harness {
            _runtime: runtime,
            received,
            telemetry,
        }
    }

    /// Flushes and waits (off the caller's runtime) until `found` finds its
    /// spans; panics after 20 s with what arrived.
    pub async fn wait_for<T: Send + 'static>(
        &'static self,
        what: &'static str,
        found: impl Fn(&[ReceivedSpan]) -> Option<T> + Send + 'static,
    ) -> T {
        tokio::task::spawn_blocking(move || {
            self.received.wait_for(
                what,
                Duration::from_secs(20),
                || self.telemetry.flush(),
                found,
            )
        })
        .await
        .expect("waiting for spans")
    }
}

/// `n` random bytes as lowercase hex (trace and span ids).
pub fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = std::iter::repeat_with(|| *uuid::Uuid::new_v4().as_bytes())
        .flatten()
        .take(n)
        .collect();
    hex(&bytes)
}

/// The span named `name` in trace `trace`.
pub fn find<'a>(spans: &'a [ReceivedSpan], trace: &str, name: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.trace_id == trace && s.name == name)
}
