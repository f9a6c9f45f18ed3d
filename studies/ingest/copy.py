"""PostgreSQL COPY helpers (psycopg 3). COPY is the fastest way into PostgreSQL: one statement
streams every row, with none of the per-statement parse/plan cost of INSERT batches.

Two ways to feed it: `copy_rows` for a few Python tuples (psycopg adapts each value), and
`copy_frame` for a pandas DataFrame, formatted as CSV by Arrow's C++ writer a slice at a time.
The slices are streamed as they are formatted, so the server parses and inserts one slice while
the next is being formatted (the two run on different cores).

Only the mechanics live here; audited writes go through `studies.audit.audited_copy_create`, which
writes a model's rows and their history rows together."""

from collections.abc import Iterable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from django.db import connection

# Rows per CSV slice: big enough that Arrow's per-call overhead vanishes, small enough that the
# server starts on the first slice at once and the client holds only a few MB of text.
SLICE_ROWS = 20_000
_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False)


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def reserve_ids(table: str, count: int, *, column: str = "id") -> list[int]:
    """Draw `count` values from the column's identity sequence, so rows written by COPY can carry
    their primary keys (their history rows need them). Safe under concurrency: nextval never hands
    the same value out twice; gaps are harmless."""
    if count <= 0:
        return []
    with connection.cursor() as cursor:
        # The sequence is looked up once: inside nextval() the lookup would run once per value,
        # which costs ten times the nextval calls themselves.
        cursor.execute("SELECT pg_get_serial_sequence(%s, %s)::regclass::oid", [table, column])
        sequence = cursor.fetchone()[0]
        cursor.execute("SELECT nextval(%s::oid::regclass) FROM generate_series(1, %s)", [sequence, count])
        return [row[0] for row in cursor.fetchall()]


def _copy_sql(table: str, columns: Sequence[str], options: str = "") -> str:
    quote = connection.ops.quote_name
    return f"COPY {quote(table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN{options}"


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """COPY `rows` (tuples in `columns` order, Python values adapted by psycopg) into `table`."""
    written = 0
    with connection.cursor() as cursor, connection.wrap_database_errors:  # raw psycopg: errors as Django's
        with cursor.cursor.copy(_copy_sql(table, columns)) as copy:
            for row in rows:
                copy.write_row(row)
                written += 1
    return written


def copy_frame(table: str, frame: pd.DataFrame, *, slice_rows: int = SLICE_ROWS) -> int:
    """COPY every column of `frame` (named as the table's columns) into `table`, as CSV.

    CSV keeps NULL and the empty string apart: Arrow quotes every string ("" is an empty string)
    and writes a missing value (None, NaN, NaT, pd.NA) as an unquoted empty field, which is
    PostgreSQL's CSV NULL. Numbers are written in their shortest exact form, time-zone aware
    timestamps in ISO 8601 with "Z"; nullable integers need a nullable integer dtype ("Int64"),
    not float64, or they would arrive as "3.0"."""
    if frame.empty:
        return 0
    table_data = pa.Table.from_pandas(frame, preserve_index=False)
    with connection.cursor() as cursor, connection.wrap_database_errors:  # raw psycopg: errors as Django's
        with cursor.cursor.copy(_copy_sql(table, list(frame.columns), " (FORMAT csv)")) as copy:
            for batch in table_data.to_batches(max_chunksize=slice_rows):
                sink = pa.BufferOutputStream()
                pa_csv.write_csv(batch, sink, _CSV_OPTIONS)
                copy.write(sink.getvalue())
    return len(frame)
