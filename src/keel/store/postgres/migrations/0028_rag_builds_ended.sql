-- Issue 17 (decision 0069): a build that a swap retired or that failed is dropped (chunks, vectors, row)
-- once it has been over for a grace (rag_builds.ended_at; builds over before this migration count from
-- their creation). pgvector's HNSW index is one per build (partial, `WHERE build = '<id>'`,
-- named rag_hnsw_<build>) instead of one per vector table shared by every build, so a shadow fills
-- without HNSW inserts and gets its index in one pass before it serves (keel/store/postgres/rag_vectors.py).
-- Here: each active build of each rag_vectors_<dim> gets its index, then the shared one goes. Shadows get
-- theirs when activated; retired and failed builds need none (they are dropped).
ALTER TABLE rag_builds ADD COLUMN ended_at DOUBLE PRECISION;

UPDATE rag_builds SET ended_at = created_at WHERE state IN ('retired', 'failed');

CREATE INDEX rag_builds_ended ON rag_builds(ended_at) WHERE ended_at IS NOT NULL;

SET LOCAL maintenance_work_mem = '1GB';

DO '
DECLARE t record; b record;
BEGIN
  FOR t IN SELECT c.relname::text AS tbl, substring(c.relname from ''^rag_vectors_([0-9]+)$'')::int AS dim
           FROM pg_class c
           WHERE c.relkind = ''r'' AND c.relname ~ ''^rag_vectors_[0-9]+$'' AND pg_table_is_visible(c.oid) LOOP
    FOR b IN SELECT id FROM rag_builds
             WHERE dim = t.dim AND state = ''active'' AND id ~ ''^[a-z0-9_]{1,48}$'' LOOP
      EXECUTE format(''CREATE INDEX IF NOT EXISTS %I ON %I USING hnsw (embedding vector_cosine_ops) WHERE build = %L'',
                     ''rag_hnsw_'' || b.id, t.tbl, b.id);
    END LOOP;
    EXECUTE format(''DROP INDEX IF EXISTS %I'', t.tbl || ''_hnsw'');
  END LOOP;
END';
