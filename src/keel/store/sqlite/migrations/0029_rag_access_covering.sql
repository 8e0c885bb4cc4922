-- Issue 17 (decision 0072). A search's admitted documents are read from rag_access alone: each access row
-- carries its document's version and valid_until (written with them by rag_write and a purge's rewrite),
-- and the table is its key (WITHOUT ROWID), so a caller's documents are one range of one b-tree instead of
-- a lookup of rag_index_docs per document.
CREATE TABLE rag_access_new (
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    principal TEXT NOT NULL,
    doc INTEGER NOT NULL,
    version INTEGER NOT NULL,
    valid_until REAL,
    PRIMARY KEY (tenant, collection, principal, doc)
) WITHOUT ROWID;

INSERT INTO rag_access_new (tenant, collection, principal, doc, version, valid_until)
SELECT a.tenant, a.collection, a.principal, a.doc, COALESCE(d.version, 0), d.valid_until
FROM rag_access a LEFT JOIN rag_index_docs d ON d.id = a.doc;

DROP TABLE rag_access;

ALTER TABLE rag_access_new RENAME TO rag_access;

CREATE INDEX rag_access_doc ON rag_access(doc);
