"""SQL shared by the SQLite and PostgreSQL stores: one module per capability over a small dialect layer.

`dialect` holds what differs (`Dialect`: a few spellings; `Database`: how a backend runs a
connection, a transaction and an idempotent insert). `keys`, `traces`, `purge`, `limits` write each
capability's statements once; `store.SqlStore` puts them together with migrations. `rows` maps
records to columns, `usage` builds the rollup statements. docs/decisions/0021-storage-by-capability.md
says how to add a capability's store.
"""
