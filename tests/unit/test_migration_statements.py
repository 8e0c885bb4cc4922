"""Splitting migration files into statements: comments and quoted text never split one."""

from keel.store.migrations import pending, statements


def test_a_semicolon_in_a_comment_does_not_split_a_statement() -> None:
    sql = "-- a note; with a semicolon\nCREATE TABLE t (a INT); -- trailing; note\nCREATE INDEX i ON t (a);\n"
    assert statements(sql) == ["CREATE TABLE t (a INT)", "CREATE INDEX i ON t (a)"]


def test_quoted_text_keeps_its_semicolons_and_dashes() -> None:
    sql = "INSERT INTO t VALUES ('a;b -- c', 'it''s; fine');\nSELECT \"odd;name\" FROM t"
    assert statements(sql) == ["INSERT INTO t VALUES ('a;b -- c', 'it''s; fine')", 'SELECT "odd;name" FROM t']


def test_every_shipped_migration_splits_into_statements_without_comment_residue() -> None:
    for dialect in ("sqlite", "postgres"):
        for _, name, sql in pending(dialect, set()):
            parts = statements(sql)
            assert parts, name
            for part in parts:
                assert not part.startswith("--"), (name, part[:60])
                # SET LOCAL and DO (a PL/pgSQL block, quoted with '' inside): PostgreSQL's 0028
                first = {"CREATE", "ALTER", "INSERT", "UPDATE", "DROP", "DELETE", "SET", "DO"}
                assert part.split()[0].upper() in first, (
                    name,
                    part[:80],
                )
