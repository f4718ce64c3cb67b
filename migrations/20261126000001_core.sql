-- Control-plane core: clusters, the release catalog, and the event log.
-- Every tenant-owned table leads its primary key and its indexes with tenant_id
-- (so that it can be distributed by tenant_id with Citus).

-- The release catalog is global reference data (a Citus reference table), not tenant data.
CREATE TABLE releases (
    version         text PRIMARY KEY,
    major           integer NOT NULL,
    minor           integer NOT NULL,
    patch           integer NOT NULL,
    channels        text[] NOT NULL DEFAULT '{}',
    released_at     date NOT NULL,
    end_of_support  date,
    retired         boolean NOT NULL DEFAULT false,
    images          jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT releases_version_format CHECK (version ~ '^[0-9]+\.[0-9]+\.[0-9]+$'),
    CONSTRAINT releases_channels_known CHECK (channels <@ ARRAY['rapid','regular','stable']::text[])
);

CREATE TABLE clusters (
    tenant_id        text NOT NULL,
    name             text NOT NULL,
    id               uuid NOT NULL,
    labels           jsonb NOT NULL DEFAULT '{}',
    mesh             jsonb NOT NULL,
    generation       bigint NOT NULL DEFAULT 1,
    -- bumped on every write (labels or mesh); with id it makes the ETag
    resource_version bigint NOT NULL DEFAULT 1,
    desired_version  text NOT NULL,
    -- every version this cluster was set to before, for the rollback rule
    version_history  text[] NOT NULL DEFAULT '{}',
    status           jsonb,
    last_heartbeat_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name),
    CONSTRAINT clusters_id_unique UNIQUE (tenant_id, id),
    CONSTRAINT clusters_name_dns_label CHECK (name ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    CONSTRAINT clusters_labels_object CHECK (jsonb_typeof(labels) = 'object')
);

CREATE TABLE events (
    tenant_id    text NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    cluster_name text,
    cluster_id   uuid,
    actor        text NOT NULL,
    action       text NOT NULL,
    generation   bigint,
    detail       jsonb NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX events_by_cluster ON events (tenant_id, cluster_name, id);

-- The events table is append-only.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END $$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- Real Istio releases (ambient mode is GA since 1.24). SREs maintain the catalog
-- through PUT /v1/ops/releases/{version}.
INSERT INTO releases (version, major, minor, patch, channels, released_at, end_of_support, images)
SELECT v.version, v.major, v.minor, v.patch, v.channels, v.released_at, v.eos,
       jsonb_build_object(
           'istiod',  'docker.io/istio/pilot:' || v.version,
           'cni',     'docker.io/istio/install-cni:' || v.version,
           'ztunnel', 'docker.io/istio/ztunnel:' || v.version,
           'proxy',   'docker.io/istio/proxyv2:' || v.version)
FROM (VALUES
    ('1.24.0', 1, 24, 0, '{}'::text[],                 date '2024-11-07', date '2025-06-19'),
    ('1.24.3', 1, 24, 3, '{}'::text[],                 date '2025-02-13', date '2025-06-19'),
    ('1.25.0', 1, 25, 0, '{}'::text[],                 date '2025-03-03', date '2025-08-20'),
    ('1.25.2', 1, 25, 2, '{stable}'::text[],           date '2025-04-14', date '2025-08-20'),
    ('1.26.0', 1, 26, 0, '{}'::text[],                 date '2025-05-08', date '2025-12-31'),
    ('1.26.2', 1, 26, 2, '{stable}'::text[],           date '2025-06-20', date '2025-12-31'),
    ('1.27.0', 1, 27, 0, '{}'::text[],                 date '2025-08-11', date '2026-03-31'),
    ('1.27.1', 1, 27, 1, '{regular}'::text[],          date '2025-09-03', date '2026-03-31'),
    ('1.28.0', 1, 28, 0, '{}'::text[],                 date '2025-11-05', date '2026-06-30'),
    ('1.28.1', 1, 28, 1, '{regular}'::text[],          date '2025-12-03', date '2026-06-30'),
    ('1.28.2', 1, 28, 2, '{rapid}'::text[],            date '2025-12-20', date '2026-06-30')
) AS v(version, major, minor, patch, channels, released_at, eos);
