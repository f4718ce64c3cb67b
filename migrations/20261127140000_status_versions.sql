-- A summary of the last report, written with it: the distinct observed
-- versions of the components that have a desired version ('' for one not
-- observed yet). Rollouts decide "on the target version" from it without
-- reading the report's JSON. NULL for reports stored before this column.
ALTER TABLE cluster_status ADD COLUMN observed_versions text[];
