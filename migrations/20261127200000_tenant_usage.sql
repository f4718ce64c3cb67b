-- Clusters per tenant, kept by statement-level triggers on every insert and
-- delete of `clusters` (whatever the path: API, reconciler, bulk seeding), so
-- that the cluster quota is checked against one row instead of a count.
CREATE TABLE tenant_usage (
    tenant_id text PRIMARY KEY,
    clusters  bigint NOT NULL CHECK (clusters >= 0)
);

INSERT INTO tenant_usage (tenant_id, clusters)
SELECT tenant_id, count(*) FROM clusters GROUP BY tenant_id;

CREATE FUNCTION tenant_usage_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tenant_usage AS u (tenant_id, clusters)
    SELECT tenant_id, count(*) FROM new_rows GROUP BY tenant_id ORDER BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE SET clusters = u.clusters + EXCLUDED.clusters;
    RETURN NULL;
END $$;

CREATE FUNCTION tenant_usage_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tenant_usage AS u SET clusters = u.clusters - d.n
    FROM (SELECT tenant_id, count(*) AS n FROM old_rows GROUP BY tenant_id) AS d
    WHERE u.tenant_id = d.tenant_id;
    RETURN NULL;
END $$;

CREATE TRIGGER clusters_usage_insert AFTER INSERT ON clusters
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tenant_usage_inserted();
CREATE TRIGGER clusters_usage_delete AFTER DELETE ON clusters
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION tenant_usage_deleted();
