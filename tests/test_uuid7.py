"""UUIDv7 ids sort by time in each engine's own uuid order."""

from __future__ import annotations

import random
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from dbtools.uuid7 import ENGINES, UUID7Generator, sort_key, sqlserver_sort_key, timestamp_ms, uuid7


def stepping_clock(steps):
    """A clock that returns the given millisecond values, then repeats the last."""
    values = list(steps)

    def clock():
        return values.pop(0) if len(values) > 1 else values[0]

    return clock


def test_sqlserver_compares_the_node_group_first_then_group_four_three_two_one():
    # Two GUIDs that differ only in one group: the later group in SQL Server's order loses.
    low_node = uuid.UUID("ffffffff-ffff-ffff-ffff-000000000000")
    high_node = uuid.UUID("00000000-0000-0000-0000-000000000001")
    assert sqlserver_sort_key(low_node) < sqlserver_sort_key(high_node)
    low_g4 = uuid.UUID("ffffffff-ffff-ffff-0000-000000000000")
    high_g4 = uuid.UUID("00000000-0000-0000-0001-000000000000")
    assert sqlserver_sort_key(low_g4) < sqlserver_sort_key(high_g4)
    # Inside group 3, SQL Server compares the stored (little-endian) bytes: low byte first.
    g3_low_byte = uuid.UUID("00000000-0000-0100-0000-000000000000")
    g3_high_byte = uuid.UUID("00000000-0000-0001-0000-000000000000")
    assert sqlserver_sort_key(g3_low_byte) < sqlserver_sort_key(g3_high_byte)


@pytest.mark.parametrize("engine", ENGINES)
def test_ids_sort_by_time_in_the_engines_order_across_and_within_milliseconds(engine):
    ms = [1_700_000_000_000 + i // 5 for i in range(500)]  # five ids per millisecond
    generate = UUID7Generator(clock=stepping_clock(ms))

    ids = [generate(engine) for _ in range(500)]

    assert sorted(ids, key=lambda u: sort_key(u, engine)) == ids
    assert [timestamp_ms(u, engine) for u in ids] == ms
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)


def test_a_standard_uuid7_does_not_sort_by_time_on_sql_server():
    generate = UUID7Generator(clock=stepping_clock(range(1_700_000_000_000, 1_700_000_000_200)))

    standard = [generate("postgresql") for _ in range(200)]

    assert sorted(standard, key=sqlserver_sort_key) != standard


@pytest.mark.parametrize("engine", ENGINES)
def test_ids_keep_increasing_when_the_clock_steps_back_or_a_millisecond_overflows(engine):
    generate = UUID7Generator(clock=stepping_clock([5_000, 5_000, 4_000] + [5_000] * 5000))

    ids = [generate(engine) for _ in range(5000)]

    keys = [sort_key(u, engine) for u in ids]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@given(st.lists(st.integers(min_value=0, max_value=(1 << 48) - 1), min_size=2, max_size=50),
       st.sampled_from(ENGINES))
def test_for_any_two_milliseconds_the_later_id_sorts_later(times, engine):
    times = sorted(times)
    generate = UUID7Generator(clock=stepping_clock(times))

    ids = [generate(engine) for _ in times]

    assert sorted(ids, key=lambda u: sort_key(u, engine)) == ids


def test_the_module_generator_rejects_an_unknown_engine():
    with pytest.raises(ValueError, match="allowed values: postgresql, mssql"):
        uuid7("oracle")


def test_the_database_orders_generated_ids_by_time(server):
    """Proof on the engine itself: ORDER BY the uuid column returns generation order."""
    engine_name = server.engine.name
    generate = UUID7Generator(clock=stepping_clock([1_700_000_000_000 + i // 3 for i in range(300)]))
    ids = [generate(engine_name) for _ in range(300)]
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)

    engine = sa.create_engine(server.url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        if engine_name == "mssql":
            conn.exec_driver_sql("CREATE TABLE #ids (id uniqueidentifier NOT NULL)")
            conn.exec_driver_sql("INSERT INTO #ids (id) VALUES (?)", [(str(u),) for u in shuffled])
            rows = conn.exec_driver_sql("SELECT id FROM #ids ORDER BY id").all()
        else:
            conn.exec_driver_sql("CREATE TEMP TABLE ids (id uuid NOT NULL)")
            conn.exec_driver_sql("INSERT INTO ids (id) VALUES (%(id)s)", [{"id": u} for u in shuffled])
            rows = conn.exec_driver_sql("SELECT id FROM ids ORDER BY id").all()
    engine.dispose()

    assert [uuid.UUID(str(r[0])) for r in rows] == ids
