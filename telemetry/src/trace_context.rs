//! W3C trace context (`traceparent`) as text: what the api continues from a
//! request, what the agent sends, and what `meshfleet_core` stores with a
//! desired-state change (the `traceparent` of the span that made it: a
//! tenant's request, a reconcile step, a rollout tick), so that the long
//! poll delivering the change to the agent continues the writer's trace.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header that carries a trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Parses a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`) into a
/// remote span context; `None` when it is malformed or all-zero.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// The `traceparent` value of a span context.
pub fn format_traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// Records the span's OpenTelemetry trace id in its `trace_id` field (which
/// the span must declare, `tracing::field::Empty`), so that JSON log lines
/// carry it; nothing (and `false`) when spans are not exported. Call after
/// any `set_parent`: it starts the span's OpenTelemetry half.
pub fn record_trace_id(span: &tracing::Span) -> bool {
    let id = span.context().span().span_context().trace_id();
    let traced = id != TraceId::INVALID;
    if traced {
        span.record("trace_id", tracing::field::display(id));
    }
    traced
}

/// The `traceparent` of the current span, when it is exported (an OTLP
/// exporter is configured and the span is sampled); `None` otherwise.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let context = span.span_context();
    (context.is_valid() && context.is_sampled()).then(|| format_traceparent(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_malformed_ones_are_refused() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse_traceparent(value).expect("valid");
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(format_traceparent(&context), value);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
