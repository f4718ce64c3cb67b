-- A rollout's member rows change state several times each while it runs.
-- With `state` in an index every change was a non-HOT update (a new index
-- entry, a dead row version left behind), and the engine's per-tick read of
-- a stage's clusters in flight waded through them (~28,000 tuples a call at
-- 10,000 clusters). Without `state` in any index and with room on every
-- page, the updates are HOT: no new index entries, old versions pruned in
-- place.
DROP INDEX rollout_clusters_by_stage;
CREATE INDEX rollout_clusters_by_stage ON rollout_clusters (tenant_id, rollout_id, stage);
ALTER TABLE rollout_clusters SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.05);
