-- The health dashboard reads its figures without opening report JSON.

-- The agent version of the last report ("agent versions in the field").
ALTER TABLE cluster_status ADD COLUMN agent_version text;
UPDATE cluster_status SET agent_version = report -> 'facts' ->> 'agentVersion';

-- When each generation of a cluster converged: set (generation_changed_at)
-- → first reported Healthy on it. The convergence SLI reads a recent window.
CREATE TABLE cluster_convergence (
    tenant_id    text NOT NULL,
    cluster_id   uuid NOT NULL,
    generation   bigint NOT NULL,
    set_at       timestamptz NOT NULL,
    converged_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, cluster_id, generation),
    FOREIGN KEY (tenant_id, cluster_id) REFERENCES clusters (tenant_id, id) ON DELETE CASCADE
);
-- Not led by tenant_id: the SLI looks at a recent window across tenants
-- (and the reconciler prunes old rows by it).
CREATE INDEX cluster_convergence_recent ON cluster_convergence (converged_at);
