-- The fleet agent: bootstrap tokens, per-cluster credentials, reported status
-- with a bounded history, and NOTIFY on desired-state changes.

-- Status moves to its own narrow table (heartbeats must not rewrite the wide cluster row).
ALTER TABLE clusters DROP COLUMN status, DROP COLUMN last_heartbeat_at;

-- One-time tokens an agent exchanges for its credential. Only the SHA-256 of a token is stored.
CREATE TABLE bootstrap_tokens (
    tenant_id   text NOT NULL,
    cluster_id  uuid NOT NULL,
    token_hash  bytea NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, cluster_id, token_hash),
    FOREIGN KEY (tenant_id, cluster_id) REFERENCES clusters (tenant_id, id) ON DELETE CASCADE
);

-- One credential per cluster; re-registering replaces it. After a rotation the
-- previous credential stays valid for a short grace period.
CREATE TABLE agent_credentials (
    tenant_id            text NOT NULL,
    cluster_id           uuid NOT NULL,
    credential_hash      bytea NOT NULL,
    expires_at           timestamptz NOT NULL,
    previous_hash        bytea,
    previous_valid_until timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, cluster_id),
    FOREIGN KEY (tenant_id, cluster_id) REFERENCES clusters (tenant_id, id) ON DELETE CASCADE
);

-- The last report of each cluster's agent. Heartbeats with an unchanged report
-- only touch last_heartbeat_at (unindexed, so the update can stay HOT).
CREATE TABLE cluster_status (
    tenant_id           text NOT NULL,
    cluster_id          uuid NOT NULL,
    report              jsonb NOT NULL,
    report_hash         bytea NOT NULL,
    health              text NOT NULL,
    -- the cluster generation `health` was derived against
    health_generation   bigint NOT NULL,
    observed_generation bigint,
    last_heartbeat_at   timestamptz NOT NULL,
    changed_at          timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, cluster_id),
    FOREIGN KEY (tenant_id, cluster_id) REFERENCES clusters (tenant_id, id) ON DELETE CASCADE
) WITH (fillfactor = 70);

-- Changes of reported status, newest kept (bounded per cluster by the API).
CREATE TABLE cluster_status_history (
    tenant_id           text NOT NULL,
    cluster_id          uuid NOT NULL,
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    at                  timestamptz NOT NULL DEFAULT now(),
    health              text NOT NULL,
    observed_generation bigint,
    report              jsonb NOT NULL,
    PRIMARY KEY (tenant_id, cluster_id, id),
    FOREIGN KEY (tenant_id, cluster_id) REFERENCES clusters (tenant_id, id) ON DELETE CASCADE
);

-- Wake long-polling agents on any api replica when a cluster's desired state changes,
-- whoever wrote it (api, reconciler, psql). Delivered at commit.
CREATE FUNCTION clusters_notify_desired_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('meshfleet_desired_state', OLD.tenant_id || '/' || OLD.id::text);
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT'
       OR OLD.generation IS DISTINCT FROM NEW.generation
       OR OLD.desired_version IS DISTINCT FROM NEW.desired_version THEN
        PERFORM pg_notify('meshfleet_desired_state', NEW.tenant_id || '/' || NEW.id::text);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER clusters_desired_state_changed
    AFTER INSERT OR UPDATE OR DELETE ON clusters
    FOR EACH ROW EXECUTE FUNCTION clusters_notify_desired_state();

-- A release's images are part of every effective desired state on that version:
-- a catalog change wakes all waiting agents (they re-read and compare ETags).
CREATE FUNCTION releases_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('meshfleet_releases', NEW.version);
    RETURN NEW;
END $$;

CREATE TRIGGER releases_changed
    AFTER INSERT OR UPDATE ON releases
    FOR EACH ROW EXECUTE FUNCTION releases_notify();
