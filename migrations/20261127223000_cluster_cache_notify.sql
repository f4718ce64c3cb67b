-- Each api replica remembers, per cluster, what a conditional GET compares
-- (the desired state's ETag, the resource version while no agent reports, the
-- agent credential's hash) and forgets it when told. Desired-state changes
-- already notify `meshfleet_desired_state` (and wake long polls); the other
-- changes notify `meshfleet_cluster`, which wakes nobody. Delivered at commit.
CREATE OR REPLACE FUNCTION clusters_notify_desired_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('meshfleet_desired_state', OLD.tenant_id || '/' || OLD.id::text);
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT'
       OR OLD.generation IS DISTINCT FROM NEW.generation
       OR OLD.desired_version IS DISTINCT FROM NEW.desired_version THEN
        PERFORM pg_notify('meshfleet_desired_state', NEW.tenant_id || '/' || NEW.id::text);
    ELSIF OLD.resource_version IS DISTINCT FROM NEW.resource_version THEN
        PERFORM pg_notify('meshfleet_cluster', NEW.tenant_id || '/' || NEW.id::text);
    END IF;
    RETURN NEW;
END $$;

-- A cluster's first report (its GET stops answering 304), and any change of
-- its agent's credential (replaced, rotated, revoked).
CREATE FUNCTION cluster_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('meshfleet_cluster', OLD.tenant_id || '/' || OLD.cluster_id::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('meshfleet_cluster', NEW.tenant_id || '/' || NEW.cluster_id::text);
    RETURN NEW;
END $$;

CREATE TRIGGER cluster_reports_cache
    AFTER INSERT OR DELETE ON cluster_reports
    FOR EACH ROW EXECUTE FUNCTION cluster_cache_notify();

CREATE TRIGGER agent_credentials_cache
    AFTER INSERT OR UPDATE OR DELETE ON agent_credentials
    FOR EACH ROW EXECUTE FUNCTION cluster_cache_notify();
