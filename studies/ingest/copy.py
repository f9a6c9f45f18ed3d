"""PostgreSQL COPY helpers (psycopg 3). COPY is the fastest way into PostgreSQL: one statement
streams every row, with none of the per-statement parse/plan cost of INSERT batches.

Only the mechanics live here; audited writes go through `studies.audit.audited_copy_create`, which
writes a model's rows and their history rows together."""

from collections.abc import Iterable, Sequence

from django.db import connection


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def reserve_ids(table: str, count: int, *, column: str = "id") -> list[int]:
    """Draw `count` values from the column's identity sequence, so rows written by COPY can carry
    their primary keys (their history rows need them). Safe under concurrency: nextval never hands
    the same value out twice; gaps are harmless."""
    if count <= 0:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [table, column, count],
        )
        return [row[0] for row in cursor.fetchall()]


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """COPY `rows` (tuples in `columns` order, Python values adapted by psycopg) into `table`."""
    quote = connection.ops.quote_name
    sql = f"COPY {quote(table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    written = 0
    with connection.cursor() as cursor:
        with cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
                written += 1
    return written
