-- The W3C trace context (`traceparent`) of the request or reconcile step that
-- last changed a cluster's desired state, so that the long poll delivering
-- that change to the agent can continue the writer's trace. NULL when the
-- writer was not traced (no OTLP exporter configured).
ALTER TABLE clusters ADD COLUMN change_traceparent text;
