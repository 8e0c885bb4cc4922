-- Issue 17 (decision 0072). A search's admitted documents are read from rag_access alone: each access row
-- carries its document's version and valid_until (written with them by rag_write and a purge's rewrite),
-- and the key includes both, so a caller's documents are one index-only range instead of a probe of
-- rag_index_docs per document (2,000 of 20,000 documents: 19 buffers read against 4,358).
-- (a default only to fill the column: a writer that does not name the version is refused, not read as 0)
ALTER TABLE rag_access ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

ALTER TABLE rag_access ADD COLUMN valid_until DOUBLE PRECISION;

UPDATE rag_access a SET version = d.version, valid_until = d.valid_until FROM rag_index_docs d WHERE d.id = a.doc;

ALTER TABLE rag_access DROP CONSTRAINT rag_access_pkey;

ALTER TABLE rag_access ADD PRIMARY KEY (tenant, collection, principal, doc) INCLUDE (version, valid_until);

ALTER TABLE rag_access ALTER COLUMN version DROP DEFAULT;
