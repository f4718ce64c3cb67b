//! The process's telemetry: the `tracing` subscriber (log lines, and spans
//! over OTLP when configured) and the metrics recorder (installed once, by
//! the binary; the api renders it at `/metrics`).

use std::sync::OnceLock;

use meshfleet_telemetry::{LogFormat, OtelArgs, Telemetry};
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::CliError;

/// Installs the subscriber of the `meshfleet` process (service name
/// `meshfleet` unless OTEL_SERVICE_NAME says otherwise). Call inside the
/// Tokio runtime; [`Telemetry::shutdown`] before it ends.
pub fn init<W>(
    filter: &str,
    format: LogFormat,
    otel: &OtelArgs,
    writer: W,
) -> Result<Telemetry, CliError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    Ok(meshfleet_telemetry::init(
        filter,
        format,
        otel,
        "meshfleet",
        env!("CARGO_PKG_VERSION"),
        writer,
    )?)
}

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is installed, in which case ours
            // simply renders nothing; never fatal.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
