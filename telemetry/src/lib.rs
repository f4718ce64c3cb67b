//! Traces and logs for meshfleet's binaries (`meshfleet` and
//! `meshfleet-agent`), configured the same way in both:
//!
//! - [`OtelArgs`]: the standard OpenTelemetry variables as typed config
//!   (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
//!   `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), flattened into each
//!   binary's clap command.
//! - [`init`]: the process's `tracing` subscriber: log lines (text or JSON)
//!   and, only when an endpoint is set, the OpenTelemetry layer with a
//!   batching OTLP span exporter (gRPC or HTTP/protobuf). Without an endpoint
//!   there is no OpenTelemetry layer at all.
//! - [`trace_context`]: W3C `traceparent` text.

use std::time::Duration;

use clap::{Args, ValueEnum};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::prelude::*;

pub mod trace_context;

pub use trace_context::{
    TRACEPARENT, current_traceparent, format_traceparent, parse_traceparent, record_trace_id,
};

/// What can go wrong setting up telemetry; each names the variable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("MESHFLEET_LOG: not a log filter: {0}")]
    Filter(String),
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("a tracing subscriber is already installed in this process")]
    AlreadyInstalled,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields (`span`:
    /// request id, tenant, cluster, trace id) and every enclosing span's
    /// (`spans`).
    Json,
}

/// The OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// gRPC (usually port 4317); the endpoint is used as given.
    Grpc,
    /// HTTP with protobuf bodies (usually port 4318); `/v1/traces` is
    /// appended to the endpoint, as the specification says.
    #[default]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// The standard OpenTelemetry exporter variables, as flags too.
#[derive(Debug, Clone, Default, Args)]
pub struct OtelArgs {
    /// Export spans over OTLP to this collector (e.g. `http://localhost:4318`);
    /// unset: no spans are exported and tracing costs nothing extra.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "OTEL_EXPORTER_OTLP_ENDPOINT",
        global = true,
        value_parser = parse_endpoint
    )]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: `grpc` or `http/protobuf`.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_name = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf",
        global = true
    )]
    pub otlp_protocol: OtlpProtocol,
    /// `service.name` of the exported spans (default: the binary's name, or
    /// `service.name` in OTEL_RESOURCE_ATTRIBUTES).
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        value_name = "OTEL_SERVICE_NAME",
        global = true
    )]
    pub service_name: Option<String>,
    /// More resource attributes, `key=value,key=value` (values percent-encoded).
    #[arg(
        long,
        env = "OTEL_RESOURCE_ATTRIBUTES",
        value_name = "OTEL_RESOURCE_ATTRIBUTES",
        global = true,
        value_parser = parse_resource_attributes
    )]
    pub resource_attributes: Option<ResourceAttributes>,
}

/// Parsed `OTEL_RESOURCE_ATTRIBUTES`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes(pub Vec<(String, String)>);

fn parse_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return Err("must be an http:// or https:// URL".into());
    }
    Ok(s.trim_end_matches('/').to_string())
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in `{s}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once decoded"))
}

/// Parses `key=value,key=value` (W3C Baggage octets, values percent-decoded).
pub fn parse_resource_attributes(s: &str) -> Result<ResourceAttributes, String> {
    let mut out = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("`{pair}` has an empty key"));
        }
        out.push((k.to_string(), percent_decode(v.trim())?));
    }
    Ok(ResourceAttributes(out))
}

impl OtelArgs {
    /// The resource of the exported spans: the attributes, then the service
    /// name (OTEL_SERVICE_NAME wins over `service.name` in the attributes,
    /// which wins over `default_service`).
    pub fn resource(&self, default_service: &str, version: &str) -> Resource {
        let attributes = self.resource_attributes.clone().unwrap_or_default().0;
        let service = self
            .service_name
            .clone()
            .or_else(|| {
                attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| default_service.to_string());
        Resource::builder_empty()
            .with_attributes(
                attributes
                    .into_iter()
                    .filter(|(k, _)| k != "service.name")
                    .map(|(k, v)| KeyValue::new(k, v)),
            )
            .with_attribute(KeyValue::new("service.version", version.to_string()))
            .with_service_name(service)
            .build()
    }

    /// The batching tracer provider exporting to the endpoint; `None` without
    /// one. With gRPC, call inside a Tokio runtime that outlives the provider.
    pub fn tracer_provider(
        &self,
        default_service: &str,
        version: &str,
    ) -> Result<Option<SdkTracerProvider>, Error> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(None);
        };
        let exporter = match self.otlp_protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{endpoint}/v1/traces"))
                .build(),
        }
        .map_err(|e| Error::Exporter(e.to_string()))?;
        Ok(Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(self.resource(default_service, version))
                .build(),
        ))
    }
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes the spans not yet
/// exported (call it before the process, and its Tokio runtime, ends).
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still buffered now (tests use it to read their spans).
    pub fn flush(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "flushing spans");
        }
    }

    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("warning: exporting the last spans failed: {e}");
        }
    }
}

/// The text format's field formatter: as tracing-subscriber's default, but
/// without the `otel.*` fields (span name, kind and status for the
/// exporter), which only repeat what a human reads in the line already.
struct TextFields;

struct TextVisitor<'a> {
    out: &'a mut String,
}

impl tracing::field::Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name().starts_with("otel.") {
            return;
        }
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        let _ = if field.name() == "message" {
            write!(self.out, "{value:?}")
        } else {
            write!(self.out, "{}={value:?}", field.name())
        };
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut out = String::new();
        fields.record(&mut TextVisitor { out: &mut out });
        writer.write_str(&out)
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let mut out = String::new();
        fields.record(&mut TextVisitor { out: &mut out });
        if !out.is_empty() {
            if !current.fields.is_empty() {
                current.fields.push(' ');
            }
            current.fields.push_str(&out);
        }
        Ok(())
    }
}

/// The crates whose spans are exported (at `info`; everything else only
/// from `warn`), whatever the log filter says.
const SPAN_TARGETS: &str = "meshfleet";

/// Installs the process's subscriber: log lines on `writer` filtered by
/// `filter` (EnvFilter syntax) in `format`, plus the OpenTelemetry layer
/// when `otel` has an endpoint.
pub fn init<W>(
    filter: &str,
    format: LogFormat,
    otel: &OtelArgs,
    service: &str,
    version: &str,
    writer: W,
) -> Result<Telemetry, Error>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).map_err(|e| Error::Filter(e.to_string()))?;
    let provider = otel.tracer_provider(service, version)?;
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("meshfleet"))
            .with_filter(
                Targets::new()
                    .with_target(SPAN_TARGETS, Level::INFO)
                    .with_default(Level::WARN),
            )
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match format {
        LogFormat::Text => fmt.fmt_fields(TextFields).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(otel_layer)
        .with(fmt.with_filter(filter))
        .try_init()
        .map_err(|_| Error::AlreadyInstalled)?;
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::{Arc, Mutex};

    #[test]
    fn text_lines_leave_out_the_exporters_otel_fields() {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(TextFields)
            .with_ansi(false)
            .with_writer(move || WriterTo(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                otel.name = "GET /v1/clusters",
                request_id = "r-1",
                tenant = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            span.record("otel.status_code", "ERROR");
            span.record("tenant", "acme");
            span.in_scope(|| tracing::info!(status = 200, "request served"));
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(r#"request{request_id="r-1" tenant="acme"}"#),
            "{text}"
        );
        assert!(text.contains("request served status=200"), "{text}");
        assert!(!text.contains("otel."), "{text}");
    }

    struct WriterTo(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for WriterTo {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        otel: OtelArgs,
    }

    #[test]
    fn the_standard_variables_parse_and_errors_name_them() {
        let cmd = Cmd::try_parse_from([
            "x",
            "--otlp-endpoint",
            "http://collector:4317/",
            "--otlp-protocol",
            "grpc",
            "--resource-attributes",
            "deployment.environment=prod, service.name=from-attrs,team=mesh%20ops",
        ])
        .unwrap();
        assert_eq!(
            cmd.otel.otlp_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(cmd.otel.otlp_protocol, OtlpProtocol::Grpc);
        let resource = cmd.otel.resource("meshfleet", "1.2.3");
        let get = |k: &'static str| {
            resource
                .get(&opentelemetry::Key::new(k))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("from-attrs"));
        assert_eq!(get("team").as_deref(), Some("mesh ops"));
        assert_eq!(get("service.version").as_deref(), Some("1.2.3"));

        let default = Cmd::try_parse_from(["x"]).unwrap();
        assert_eq!(default.otel.otlp_protocol, OtlpProtocol::HttpProtobuf);
        assert!(default.otel.otlp_endpoint.is_none());
        let named = Cmd::try_parse_from(["x", "--service-name", "edge"]).unwrap();
        let r = named.otel.resource("meshfleet", "1");
        assert_eq!(
            r.get(&opentelemetry::Key::new("service.name"))
                .map(|v| v.to_string())
                .as_deref(),
            Some("edge")
        );

        let err = Cmd::try_parse_from(["x", "--otlp-protocol", "http/json"]).unwrap_err();
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{err}"
        );
        let err = Cmd::try_parse_from(["x", "--resource-attributes", "novalue"]).unwrap_err();
        assert!(
            err.to_string().contains("OTEL_RESOURCE_ATTRIBUTES"),
            "{err}"
        );
        let err = Cmd::try_parse_from(["x", "--otlp-endpoint", "collector:4317"]).unwrap_err();
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{err}"
        );
    }
}
