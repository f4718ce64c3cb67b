//! The agent's log lines and spans: `meshfleet_telemetry` with the agent's
//! settings (`MESHFLEET_LOG`, `MESHFLEET_LOG_FORMAT`, the `OTEL_*` variables)
//! and the service name `meshfleet-agent`.

use meshfleet_telemetry::Telemetry;

use crate::config::Cli;
use crate::error::{Error, Result};

/// Installs the agent's subscriber (inside the Tokio runtime); call
/// [`Telemetry::shutdown`] before the runtime ends.
pub fn init(cli: &Cli) -> Result<Telemetry> {
    meshfleet_telemetry::init(
        &cli.log,
        cli.log_format,
        &cli.otel,
        "meshfleet-agent",
        crate::AGENT_VERSION,
        std::io::stderr,
    )
    .map_err(|e| Error::Config(e.to_string()))
}
