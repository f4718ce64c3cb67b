-- An api replica remembers, per cluster, the agent credentials it checked,
-- and used to forget them on every notification about the cluster: after
-- each status report and each desired-state change its agent's next request
-- was authenticated against PostgreSQL again (~1.5 lookups per upgraded
-- cluster in bench/fleet.sh). A credential's change now also notifies
-- `meshfleet_credentials`, the only notification on which a replica forgets
-- credentials. `meshfleet_cluster` is still sent with it, so a replica of the
-- version before (which forgets everything on it) stays correct.
CREATE FUNCTION agent_credentials_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    key text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        key := OLD.tenant_id || '/' || OLD.cluster_id::text;
    ELSE
        key := NEW.tenant_id || '/' || NEW.cluster_id::text;
    END IF;
    PERFORM pg_notify('meshfleet_credentials', key);
    PERFORM pg_notify('meshfleet_cluster', key);
    RETURN NULL;
END $$;

DROP TRIGGER agent_credentials_cache ON agent_credentials;
CREATE TRIGGER agent_credentials_cache
    AFTER INSERT OR UPDATE OR DELETE ON agent_credentials
    FOR EACH ROW EXECUTE FUNCTION agent_credentials_notify();
