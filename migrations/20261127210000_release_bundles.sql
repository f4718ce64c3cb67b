-- Release bundles (issue 11 §2): the release data of a catalog version — its
-- CustomResourceDefinitions and istiod's injection templates — stored by the
-- SHA-256 digest of its canonical document (meshfleet_model::BundleDocument,
-- served byte for byte to agents, who verify the digest).
CREATE TABLE release_bundles (
    digest     text PRIMARY KEY,
    origin     text NOT NULL,
    document   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT release_bundles_digest_format CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    CONSTRAINT release_bundles_origin_known CHECK (origin IN ('development', 'imported'))
);

-- A release without a bundle cannot be selected (validation refuses it).
ALTER TABLE releases ADD COLUMN bundle_digest text REFERENCES release_bundles (digest);

-- Every release of the catalog so far gets its development bundle (rendered
-- by the agent itself): the document is BundleDocument::development(version)
-- exactly as serde_json writes it.
INSERT INTO release_bundles (digest, origin, document)
SELECT 'sha256:' || encode(sha256(convert_to(doc, 'UTF8')), 'hex'), 'development', doc
FROM (SELECT '{"version":"' || version || '","origin":"development","crds":[],"templates":{}}' AS doc
      FROM releases) d
ON CONFLICT (digest) DO NOTHING;

UPDATE releases SET bundle_digest = 'sha256:' || encode(sha256(convert_to(
    '{"version":"' || version || '","origin":"development","crds":[],"templates":{}}', 'UTF8')), 'hex');
