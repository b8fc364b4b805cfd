"""dbtools.upsert.pgcopy: the binary COPY bodies the bulk writer encodes while reading ahead."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.pool import NullPool

from dbtools.upsert import pgcopy

pytestmark = pytest.mark.postgresql_only

TYPES = ["uuid", "int4", "int8", "text", "timestamp"]
#: The Python encoder always; psycopg's C formatter where psycopg runs its C implementation.
IMPLEMENTATIONS = [False, pytest.param(True, marks=pytest.mark.skipif(
    pgcopy.native_formatter() is None, reason="psycopg runs its Python implementation: no C row formatter"))]
COLUMNS = '"u" uuid, "i" integer, "b" bigint, "t" text, "ts" timestamp(6) without time zone'


@pytest.fixture
def conn(server):
    engine = sa.create_engine(server.url, poolclass=NullPool)
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        raw.execute(f"CREATE TEMP TABLE copied (n integer, {COLUMNS})")
        yield raw
    engine.dispose()


def copied_back(raw, rows, native):
    raw.execute("TRUNCATE copied")
    body = pgcopy.encoder(["int4", *TYPES], native=native)([(n, *row) for n, row in enumerate(rows)])
    with raw.cursor() as cur:
        with cur.copy('COPY copied (n, "u", "i", "b", "t", "ts") FROM STDIN (FORMAT BINARY)') as copy:
            copy.write(body)
        cur.execute('SELECT "u", "i", "b", "t", "ts" FROM copied ORDER BY n')
        return [tuple(r) for r in cur.fetchall()]


EDGES = [
        (uuid.UUID("01234567-89ab-7def-8123-456789abcdef"), -(2**31), 2**63 - 1, "plain", dt.datetime(2026, 12, 3, 8, 9, 10, 123456)),
        (uuid.UUID(int=0), 2**31 - 1, -(2**63), "", dt.datetime(1999, 12, 31, 23, 59, 59, 999999)),
        (uuid.UUID(int=2**128 - 1), 0, 0, "naïve 😀 'quoted' \\ tab\t", dt.datetime(1, 1, 1)),
        (None, None, None, None, None),
]
ROWS = st.lists(st.tuples(
    st.none() | st.uuids(),
    st.none() | st.integers(-(2**31), 2**31 - 1),
    st.none() | st.integers(-(2**63), 2**63 - 1),
    st.none() | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    st.none() | st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
), max_size=20)


@pytest.mark.parametrize("native", IMPLEMENTATIONS, ids=["python", "psycopg-c"])
def test_every_type_and_null_round_trips_through_a_binary_copy(conn, native):
    assert copied_back(conn, EDGES, native) == EDGES


@pytest.mark.parametrize("native", IMPLEMENTATIONS, ids=["python", "psycopg-c"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
def test_any_rows_round_trip_unchanged(conn, native, rows):
    assert copied_back(conn, rows, native) == rows


@pytest.mark.skipif(pgcopy.native_formatter() is None, reason="psycopg runs its Python implementation: no C row formatter")
@settings(max_examples=200, deadline=None)
@given(rows=ROWS)
def test_psycopgs_formatter_writes_the_same_bytes_as_the_python_encoder(rows):
    rows = [(n, *row) for n, row in enumerate(EDGES + rows)]
    types = ["int4", *TYPES]

    assert bytes(pgcopy.encoder(types, native=True)(rows)) == pgcopy.encoder(types, native=False)(rows)


@pytest.mark.parametrize("native", IMPLEMENTATIONS, ids=["python", "psycopg-c"])
def test_an_unknown_type_or_a_row_of_the_wrong_width_is_refused(native):
    with pytest.raises(ValueError, match="no binary COPY encoder for jsonb; supported: uuid, int4, int8, text, timestamp"):
        pgcopy.encoder(["int4", "jsonb"], native=native)
    with pytest.raises(ValueError, match="a row of 1 values for 2 columns"):
        pgcopy.encoder(["int4", "int8"], native=native)([(1,)])


@pytest.mark.parametrize("native", IMPLEMENTATIONS, ids=["python", "psycopg-c"])
def test_bodies_built_side_by_side_hold_only_their_own_rows(native):
    new_body = pgcopy.body_factory(["int4", *TYPES], native=native)
    first, second = new_body(), new_body()
    for n, row in enumerate(EDGES):
        (first if n % 2 == 0 else second).add((n, *row))

    bodies = [first.finish(), second.finish()]

    assert [bodies[0], bodies[1]] == [pgcopy.encoder(["int4", *TYPES], native=native)(
        [(n, *row) for n, row in enumerate(EDGES) if n % 2 == part]) for part in (0, 1)]


def test_a_native_formatter_that_writes_other_bytes_than_the_python_encoder_is_not_used():
    assert not pgcopy._formats_like_python(lambda row, transformer, out: out.extend(b"\x00\x06"))
    assert not pgcopy._formats_like_python(lambda row: None)  # another signature
    if pgcopy.native_formatter() is not None:
        assert pgcopy._formats_like_python(pgcopy.native_formatter())


# ----------------------------------------------------------------------------- arrays of a row type (tvp)
class _Encoded:
    def __init__(self, data):
        self.data = data


@pytest.fixture
def row_type(conn):
    """A composite of every supported type in pg_temp, its psycopg CompositeInfo, and a dumper of
    its arrays from bytes encoded ahead (as the tvp writer sends them)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format
    from psycopg.types.composite import CompositeInfo

    conn.execute(f"CREATE TYPE pg_temp.every_type AS (n integer, {COLUMNS})")
    info = CompositeInfo.fetch(conn, "pg_temp.every_type")
    dumper = type("EncodedDumper", (Dumper,), {"format": Format.BINARY, "oid": info.array_oid,
                                               "dump": lambda self, obj: obj.data})
    conn.adapters.register_dumper(_Encoded, dumper)
    return info


def psycopg_array(info, rows):
    from psycopg import adapters
    from psycopg.adapt import AdaptersMap, PyFormat, Transformer
    from psycopg.types.composite import register_composite

    context = AdaptersMap(adapters)
    register_composite(info, context)
    objects = [info.python_type(*row) for row in rows]
    return bytes(Transformer(context).get_dumper(objects, PyFormat.BINARY).dump(objects))


def encode_array(info, rows):
    return pgcopy.record_array_encoder(["int4", *TYPES], info.field_types, info.oid)(rows)


def test_an_array_of_a_row_type_round_trips_through_the_server(conn, row_type):
    rows = [(n, *row) for n, row in enumerate(EDGES)]
    with conn.cursor() as cur:
        cur.execute('SELECT x.n, x."u", x."i", x."b", x."t", x."ts" FROM unnest(%b) AS x ORDER BY x.n',
                    [_Encoded(encode_array(row_type, rows))])
        assert [tuple(r) for r in cur.fetchall()] == rows
        cur.execute("SELECT cardinality(%b)", [_Encoded(encode_array(row_type, []))])
        assert cur.fetchone()[0] == 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
def test_the_row_array_encoder_writes_the_bytes_psycopgs_composite_dumper_writes(row_type, rows):
    rows = [(n, *row) for n, row in enumerate(EDGES + rows)]
    assert encode_array(row_type, rows) == psycopg_array(row_type, rows)


def test_the_row_array_encoder_refuses_an_unknown_type_or_a_row_of_the_wrong_width():
    with pytest.raises(ValueError, match="no binary encoder for jsonb"):
        pgcopy.record_array_encoder(["int4", "jsonb"], [23, 3802], 1)
    with pytest.raises(ValueError, match="a row of 1 values for 2 fields"):
        pgcopy.record_array_encoder(["int4", "int8"], [23, 20], 1)([(1,)])


@pytest.mark.parametrize("native", IMPLEMENTATIONS, ids=["python", "psycopg-c"])
def test_a_body_in_pieces_holds_whole_rows_of_about_the_piece_size_and_copies_the_same_rows(conn, native):
    # Assemble: enough rows for several pieces of 1 KiB, each row about 100 bytes.
    rows = [(uuid.UUID(int=n), n, -n, "text of row %d " % n * 3, dt.datetime(2026, 1, 1) + dt.timedelta(seconds=n))
            for n in range(300)]
    types, numbered = ["int4", *TYPES], [(n, *row) for n, row in enumerate(rows)]
    one_buffer = bytes(pgcopy.encoder(types, native=native)(numbered))
    body = pgcopy.body_factory(types, native=native, piece_size=1024)()

    # Act
    for row in numbered:
        body.add(row)
    pieces = body.finish()

    # Assert: in order they are the one-buffer body; every piece but the last reached the size and
    # ended on a row (the next piece starts with a row's field count, 6); the rows copy back whole.
    assert b"".join(bytes(p) for p in pieces) == one_buffer
    assert len(pieces) > 10
    assert all(1024 <= len(p) < 1024 + 200 for p in pieces[:-1])
    assert all(bytes(p[:2]) == b"\x00\x06" for p in pieces[1:])
    conn.execute("TRUNCATE copied")
    with conn.cursor() as cur:
        with cur.copy('COPY copied (n, "u", "i", "b", "t", "ts") FROM STDIN (FORMAT BINARY)') as copy:
            for piece in pieces:
                copy.write(piece)
        cur.execute('SELECT "u", "i", "b", "t", "ts" FROM copied ORDER BY n')
        assert [tuple(r) for r in cur.fetchall()] == rows
