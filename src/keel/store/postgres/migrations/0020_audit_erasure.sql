-- Erasable audit entries (keel/audit/log.py, keel/store/protocols/audit.py): scheme 2 hashes each
-- subject-bearing field through a salted digest. salts holds one salt per field (JSON), digests the
-- digests of erased fields (their values replaced by tombstones by a purge). Entries written before
-- this migration keep salts NULL and verify the old way (scheme 1).
ALTER TABLE audit_log ADD COLUMN salts TEXT;
ALTER TABLE audit_log ADD COLUMN digests TEXT;
