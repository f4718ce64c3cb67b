-- Each api replica answers an unchanged status report (a heartbeat) from
-- memory when it remembers the cluster's stored report hash, and flushes the
-- heartbeat times once a second. What it remembers is only valid while the
-- stored report hash, the connectivity and the generation the health was
-- derived against stay as they were: a change of any of them notifies
-- `meshfleet_cluster` (delivered at commit), and every replica forgets that
-- cluster. Heartbeat-only updates (last_heartbeat_at) notify nobody.
CREATE TRIGGER cluster_status_inserted_cache
    AFTER INSERT ON cluster_status
    FOR EACH ROW EXECUTE FUNCTION cluster_cache_notify();

CREATE TRIGGER cluster_status_changed_cache
    AFTER UPDATE ON cluster_status
    FOR EACH ROW
    WHEN (OLD.report_hash IS DISTINCT FROM NEW.report_hash
          OR OLD.connectivity IS DISTINCT FROM NEW.connectivity
          OR OLD.health_generation IS DISTINCT FROM NEW.health_generation)
    EXECUTE FUNCTION cluster_cache_notify();
