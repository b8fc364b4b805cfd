"""Entity specs (dbtools.upsert.specs, dbtools.deploy.entities): parsing, freezing, and the objects a migration creates."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from dbtools import commands
from dbtools.db.engines import engine_for
from dbtools.upsert.specs import current_specs, load_spec, parse_spec
from dbtools.errors import ConfigurationError
from dbtools.deploy.render import render_objects

from .catalog import snapshot

REPO = Path(__file__).resolve().parent.parent
GOOD = """
entity = "Order"
table = "Orders"
key = "order_id"
ordering = "updated_at"
[[columns]]
name = "order_id"
type = "uuid"
[[columns]]
name = "updated_at"
type = "timestamp"
"""


def test_every_spec_has_a_frozen_copy_in_a_revision_and_the_newest_copy_is_the_current_spec():
    frozen: dict[str, Path] = {}
    for path in sorted((REPO / "migrations" / "versions").glob("*_entities/*.toml")):
        frozen[path.name] = path  # later revisions win

    for path in sorted((REPO / "entities").glob("*.toml")):
        assert path.name in frozen, f"{path.name} has no migration: add a revision that freezes it"
        assert frozen[path.name].read_text() == path.read_text(), (
            f"entities/{path.name} changed since {frozen[path.name].parent.name}: write a migration for the change")


def test_a_minimal_spec_gets_the_default_object_names():
    spec = parse_spec(GOOD)

    assert spec.objects == {
        "row_type": "OrderType", "upsert_one": "UpsertOrder", "upsert_many": "UpsertOrdersType",
        "staging": "Orders_Staging", "rejects": "Orders_Rejects", "reconcile": "ReconcileOrdersBatch",
        "sync_promote": "SyncPromoteOrders",
    }
    assert spec.procedures == ("UpsertOrder", "UpsertOrdersType", "ReconcileOrdersBatch")  # no [sync]: no promote
    assert spec.version == "row_version"
    assert spec.database is None


@pytest.mark.parametrize("engine, expected", [
    ("mssql", ("[dbo].[Orders]", "[Sales].[dbo].[Orders]", "[dbo].[Orders]")),
    ("postgresql", ('"BlobDeltaJobs"."Orders"', '"Sales"."Orders"', '"BlobDeltaJobs"."Orders"')),
])
def test_a_spec_may_put_its_tables_in_another_database_and_the_job_database_is_the_default(engine, expected):
    info = engine_for(engine)
    default, elsewhere, spelt_out = (parse_spec(GOOD.replace('table = "Orders"', f'table = "Orders"{extra}'))
                                     for extra in ("", '\ndatabase = "Sales"', '\ndatabase = "BlobDeltaJobs"'))

    assert (default.database, elsewhere.database, spelt_out.database) == (None, "Sales", None)
    assert tuple(s.table_object(info, "Orders") for s in (default, elsewhere, spelt_out)) == expected


@pytest.mark.parametrize("change, message", [
    ('entity = "Order; DROP TABLE x"', "entity must be a plain identifier"),
    ('key = "missing"', "key 'missing' is not one of the columns"),
    ('ordering = "order_id"', "ordering 'order_id' cannot be a key column"),
    ('version = "order_id"', "version 'order_id' is maintained by the procedures"),
    ('colour = "red"', "unknown keys \\['colour'\\]"),
    ('[[columns]]\nname = "note"\ntype = "text"', "type must be one of uuid, int, bigint, string, timestamp, json"),
    ('[[columns]]\nname = "note"\ntype = "string"', "a string needs length between 1 and 4000"),
    ('[[columns]]\nname = "RowNumber"\ntype = "int"', "reserved by the package: RowNumber"),
    ('[[columns]]\nname = "outcome"\ntype = "int"', "reserved by the package: outcome"),
    ('[[columns]]\nname = "v_reason"\ntype = "int"', "must not start with c_ or v_ .*: v_reason"),
    ('[[columns]]\nname = "C_event_id"\ntype = "int"', "must not start with c_ or v_ .*: C_event_id"),
    ('[[columns]]\nname = "order_id"\ntype = "int"', "columns named twice: order_id"),
    ('[[columns]]\nname = "kind"\ntype = "string"\nlength = 5\nreferences = "Kinds"', "references 'Kinds', which is not under"),
    ('[objects]\nstaging = "Orders"', "object names used twice: Orders"),
    ('database = "Sales]; DROP DATABASE x"', "database must be a plain identifier"),
    ('database = 7', "database must be a plain identifier"),
    ('database = "tempdb"', "database 'tempdb' is a system database"),
])
def test_a_bad_spec_is_refused_with_the_key_named(change, message):
    top, tables = GOOD.split("[[columns]]", 1)
    if change.startswith("["):
        text = GOOD + "\n" + change + "\n"  # a table: appended
    else:
        name = change.split(" =")[0]
        lines = [line for line in top.splitlines() if not line.startswith(name + " =")]
        text = "\n".join(lines + [change]) + "\n[[columns]]" + tables
    with pytest.raises(ConfigurationError, match=message):
        parse_spec(text, "spec.toml")


COMPOSITE = """
entity = "Device"
table = "Devices"
key = ["provider_id", "iccid"]
ordering = "updated_at"
[[columns]]
name = "iccid"
type = "string"
length = 32
[[columns]]
name = "provider_id"
type = "int"
[[columns]]
name = "updated_at"
type = "timestamp"
"""


def test_a_composite_key_keeps_the_order_it_is_listed_in_and_has_no_one_key_name():
    spec = parse_spec(COMPOSITE)
    single = parse_spec(GOOD)

    assert spec.keys == ("provider_id", "iccid")  # the key's order, not the columns' (iccid comes first there)
    assert [c.name for c in spec.key_columns] == ["provider_id", "iccid"]
    assert (single.keys, single.key) == (("order_id",), "order_id")
    with pytest.raises(ValueError, match=r"Device has a composite key \(provider_id, iccid\); use keys"):
        spec.key


@pytest.mark.parametrize("change, message", [
    ('key = ["provider_id", "provider_id"]', "key lists a column twice"),
    ('key = ["provider_id", "imei"]', "key 'imei' is not one of the columns"),
    ('key = ["provider_id", "updated_at"]', "ordering 'updated_at' cannot be a key column"),
    ('ordering = "provider_id"', "ordering 'provider_id' cannot be a key column"),
    ('ordering = "payload"', "ordering 'payload' must be timestamp, int or bigint"),
    ('key = []', "key must name a column, or list the columns of a composite key"),
    ('key = ["provider_id", "iccid; DROP TABLE x"]', "key\\[1\\] must be a plain identifier"),
    ('key = ["provider_id", "note"]', "the key and the ordering column must be required"),
    ('key = ["provider_id", "payload"]', "key 'payload' must be uuid, int, bigint or string"),
    # 2 x 300 characters: 1,200 bytes, beyond the 900 SQL Server indexes, though each alone fits
    ('key = ["iccid", "region"]', "a composite key's strings are too long: SQL Server indexes at most 900 bytes"),
])
def test_a_bad_composite_key_is_refused_with_the_reason(change, message):
    top, tables = COMPOSITE.replace("length = 32", "length = 300").split("[[columns]]", 1)
    name = change.split(" =")[0]
    lines = [line for line in top.splitlines() if not line.startswith(name + " =")]
    text = "\n".join(lines + [change]) + "\n[[columns]]" + tables + (
        '[[columns]]\nname = "note"\ntype = "string"\nlength = 10\nrequired = false\n'
        '[[columns]]\nname = "payload"\ntype = "json"\n'
        '[[columns]]\nname = "region"\ntype = "string"\nlength = 300\n')

    with pytest.raises(ConfigurationError, match=message):
        parse_spec(text, "spec.toml")


def test_a_composite_key_within_900_bytes_is_accepted():
    spec = parse_spec(COMPOSITE.replace('length = 32', 'length = 400'))  # 800 bytes of string and an int

    assert spec.keys == ("provider_id", "iccid")


@pytest.mark.parametrize("engine", ["mssql", "postgresql"])
def test_each_spec_renders_its_three_procedures_and_nothing_else_is_hand_written(engine):
    names = {o.name: o for o in render_objects(engine)}
    for spec in current_specs():
        for name in spec.procedures:
            assert name in names
            assert f"for {spec.source}" in names[name].sql
            assert names[name].source.startswith(f"{engine}/entity/")


def _snapshot(server) -> dict:
    engine = server.job_engine()
    try:
        with engine.connect() as conn:
            return snapshot(conn, server.engine)
    finally:
        engine.dispose()


def _tables(server) -> set[str]:
    engine = server.job_engine()
    try:
        return set(sa.inspect(engine).get_table_names(schema=server.engine.job_schema))
    finally:
        engine.dispose()


def test_the_entity_revisions_create_every_object_and_their_downgrade_removes_them_all(server):
    commands.migrate(url=server.url_string, revision="0005")
    before = _snapshot(server)
    entity_tables = {name for spec in current_specs()
                     for name in (spec.table, spec.staging, spec.rejects, *(lk.table for lk in spec.lookups))}

    commands.migrate(url=server.url_string)
    created = _tables(server)
    commands.downgrade(url=server.url_string, revision="0005")
    after = _snapshot(server)

    assert entity_tables | {"UpsertBatchLog"} <= created
    assert after == before


def test_the_frozen_specs_load_like_the_current_ones():
    for path in sorted((REPO / "migrations" / "versions").glob("*_entities/*.toml")):
        assert load_spec(path).entity


SYNCED = '''
entity = "Device"
table = "Devices"
key = ["provider", "iccid"]
ordering = "modified"

[sync]
scope = "provider"

[[columns]]
name = "provider"
type = "string"
length = 40

[[columns]]
name = "iccid"
type = "string"
length = 32

[[columns]]
name = "modified"
type = "timestamp"
'''


def test_a_sync_section_gets_its_defaults_and_a_promote_procedure():
    spec = parse_spec(SYNCED)

    assert (spec.sync.scope, spec.sync.full_since_months, spec.sync.full_since_days, spec.sync.buffer_seconds) == \
        ("provider", 1, 1, 300)
    assert spec.procedures == ("UpsertDevice", "UpsertDevicesType", "ReconcileDevicesBatch", "SyncPromoteDevices")


@pytest.mark.parametrize("change, message", [
    ('scope = "modified"', "sync.scope 'modified' must be one of the key columns"),
    ('scope = "provider"\nwindow = 3', "sync has unknown keys \\['window'\\]"),
    ('scope = "provider"\nbuffer_seconds = -1', "sync.buffer_seconds must be an integer from 0"),
    ('scope = "provider"\nfull_since_months = true', "sync.full_since_months must be an integer"),
])
def test_a_bad_sync_section_is_refused_with_the_key_named(change, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_spec(SYNCED.replace('scope = "provider"', change))


def test_a_string_scope_longer_than_the_sync_tables_hold_is_refused():
    with pytest.raises(ConfigurationError, match="sync.scope 'provider' can be at most 300 characters long"):
        parse_spec(SYNCED.replace("length = 40", "length = 301"))
