"""The audit log: append-only, hash-chained entries of who changed or ran what, verifiable and exportable."""
