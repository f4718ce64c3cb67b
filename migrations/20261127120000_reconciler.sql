-- The reconciler: when each cluster's generation was set (progress deadline),
-- deletions as operations, and the reconciler's per-cluster bookkeeping.

ALTER TABLE clusters
    ADD COLUMN generation_changed_at timestamptz NOT NULL DEFAULT now(),
    -- set while the cluster is being deleted: the operation deleting it
    ADD COLUMN deletion_operation uuid;

-- The connectivity last recorded (as an event) for a cluster's agent; the
-- unchanged-heartbeat fast path only runs while it is `Connected`, so the
-- first heartbeat after a gap takes the full path, which records the return.
ALTER TABLE cluster_status
    ADD COLUMN connectivity text NOT NULL DEFAULT 'Connected',
    ADD CONSTRAINT cluster_status_connectivity_known
        CHECK (connectivity IN ('Connected', 'Stale', 'Disconnected'));

-- The reconciler's bookkeeping, one row per cluster. Replicas claim due rows
-- with FOR UPDATE SKIP LOCKED and lease them by pushing next_check_at forward;
-- a replica that dies leaves a lease that simply runs out.
CREATE TABLE cluster_reconcile (
    tenant_id     text NOT NULL,
    cluster_id    uuid NOT NULL,
    next_check_at timestamptz NOT NULL DEFAULT now(),
    -- consecutive failures (error policy: back off)
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    -- what the tenant sees as status.pendingUpgrade
    pending_upgrade jsonb,
    -- the version an EndOfSupport event was written for (one event, not one per sweep)
    eos_notified_version text,
    -- the generation a progress-deadline event was written for
    deadline_notified_generation bigint,
    PRIMARY KEY (tenant_id, cluster_id),
    FOREIGN KEY (tenant_id, cluster_id) REFERENCES clusters (tenant_id, id) ON DELETE CASCADE
);
-- The one index not led by tenant_id: due work is found across tenants (with
-- Citus each shard answers from its own part of this index).
CREATE INDEX cluster_reconcile_due ON cluster_reconcile (next_check_at);
INSERT INTO cluster_reconcile (tenant_id, cluster_id) SELECT tenant_id, id FROM clusters;

-- Long-running work answered with 202 (cluster deletion, rollouts).
CREATE TABLE operations (
    tenant_id  text NOT NULL,
    id         uuid NOT NULL,
    kind       text NOT NULL,
    status     text NOT NULL DEFAULT 'Running',
    -- the resource it works on, e.g. /v1/clusters/prod-eu-1
    target     text NOT NULL,
    -- a problem object when it failed
    error      jsonb,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT operations_status_known
        CHECK (status IN ('Running', 'Succeeded', 'Failed', 'Cancelled'))
);

-- Wake reconcilers when work becomes due early (a hint: the sweep finds it anyway).
CREATE FUNCTION cluster_reconcile_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.next_check_at <= now() AND (TG_OP = 'INSERT' OR OLD.next_check_at > now()) THEN
        PERFORM pg_notify('meshfleet_reconcile', '');
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER cluster_reconcile_due_now
    AFTER INSERT OR UPDATE OF next_check_at ON cluster_reconcile
    FOR EACH ROW EXECUTE FUNCTION cluster_reconcile_notify();
