-- Fleet rollouts: a staged upgrade of a tenant's clusters, driven by the
-- reconciler (one tick at a time, under the rollout's row lock).

CREATE TABLE rollouts (
    tenant_id      text NOT NULL,
    id             uuid NOT NULL,
    name           text NOT NULL,
    target_version text NOT NULL,
    selector       text NOT NULL,
    state          text NOT NULL DEFAULT 'Running',
    pause_reason   text,
    failure_policy jsonb NOT NULL,
    progress_deadline_seconds integer NOT NULL,
    -- per stage: {name, maxConcurrency, soakSeconds, requireApproval, state, startedAt, finishedAt, approved}
    stages         jsonb NOT NULL,
    current_stage  integer NOT NULL DEFAULT 0,
    operation_id   uuid NOT NULL,
    -- still driven by the reconciler (a cancelled rollout is, until its clusters in flight finish)
    active         boolean NOT NULL DEFAULT true,
    next_check_at  timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT rollouts_state_known CHECK (state IN
        ('Running', 'WaitingForApproval', 'Paused', 'Succeeded', 'RolledBack', 'Cancelled'))
);
CREATE INDEX rollouts_by_created ON rollouts (tenant_id, created_at DESC, id DESC);
-- due rollouts across tenants (like cluster_reconcile_due)
CREATE INDEX rollouts_due ON rollouts (next_check_at) WHERE active;

CREATE TABLE rollout_clusters (
    tenant_id    text NOT NULL,
    rollout_id   uuid NOT NULL,
    cluster_id   uuid NOT NULL,
    cluster_name text NOT NULL,
    -- the stage that took it; NULL when no stage did (Skipped)
    stage        integer,
    state        text NOT NULL DEFAULT 'Pending',
    from_version text NOT NULL,
    to_version   text NOT NULL,
    reason       text,
    -- the generation its upgrade (or rollback) was written at
    upgraded_generation bigint,
    soak_started_at timestamptz,
    started_at   timestamptz,
    finished_at  timestamptz,
    PRIMARY KEY (tenant_id, rollout_id, cluster_id),
    FOREIGN KEY (tenant_id, rollout_id) REFERENCES rollouts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT rollout_clusters_state_known CHECK (state IN
        ('Pending', 'Upgrading', 'Soaking', 'Succeeded', 'Failed', 'RollingBack', 'RolledBack', 'Skipped'))
);
CREATE INDEX rollout_clusters_by_cluster ON rollout_clusters (tenant_id, cluster_id);
CREATE INDEX rollout_clusters_by_stage ON rollout_clusters (tenant_id, rollout_id, stage, state);

CREATE TRIGGER rollouts_due_now
    AFTER INSERT OR UPDATE OF next_check_at ON rollouts
    FOR EACH ROW EXECUTE FUNCTION cluster_reconcile_notify();
