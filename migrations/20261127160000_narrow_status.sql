-- cluster_status stays narrow: the dashboard reads it whole (health,
-- heartbeat, versions) and every heartbeat rewrites a row of it. The report
-- JSON (about 1 KiB; written only when a report changes, read by GET and to
-- describe failures) moves to its own table; a 100,000-cluster status table
-- shrinks from ~190 MB to ~25 MB.

-- Reports stored before observed_versions existed get it now, so no reader
-- needs the report to know a cluster's versions.
UPDATE cluster_status s SET observed_versions = coalesce((
    SELECT array_agg(DISTINCT coalesce(comp ->> 'observedVersion', '') ORDER BY coalesce(comp ->> 'observedVersion', ''))
    FROM jsonb_array_elements(s.report -> 'components') comp
    WHERE comp ->> 'desiredVersion' IS NOT NULL), '{}')
WHERE observed_versions IS NULL;
ALTER TABLE cluster_status ALTER COLUMN observed_versions SET NOT NULL;

CREATE TABLE cluster_reports (
    tenant_id  text NOT NULL,
    cluster_id uuid NOT NULL,
    report     jsonb NOT NULL,
    PRIMARY KEY (tenant_id, cluster_id),
    FOREIGN KEY (tenant_id, cluster_id) REFERENCES cluster_status (tenant_id, cluster_id) ON DELETE CASCADE
);
INSERT INTO cluster_reports (tenant_id, cluster_id, report)
SELECT tenant_id, cluster_id, report FROM cluster_status;
ALTER TABLE cluster_status DROP COLUMN report;

-- The dashboard's failing clusters, without a scan.
CREATE INDEX cluster_status_failing ON cluster_status (tenant_id)
    WHERE health IN ('Degraded', 'Unhealthy');

-- The dashboard's pass over a tenant's clusters reads these columns only:
-- an index-only scan instead of the whole rows (labels, mesh spec).
CREATE INDEX clusters_summary ON clusters (tenant_id)
    INCLUDE (id, name, generation, generation_changed_at, desired_version);
