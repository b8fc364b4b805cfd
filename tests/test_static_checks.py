"""Static checks on the rendered procedures: they run everywhere, SQL Server or not."""

from __future__ import annotations

import re

import pytest
from sqlfluff.core import FluffConfig, Linter

from dbtools.deploy.conventions import check, check_plpgsql, check_tsql
from dbtools.deploy.privileges import POSTGRESQL_ENGINE_FUNCTIONS
from dbtools.upsert.specs import current_specs
from dbtools.deploy.render import render_objects

MSSQL_OBJECTS = render_objects("mssql")
PG_OBJECTS = render_objects("postgresql")


def unparsable(sql: str, dialect: str) -> list[str]:
    linter = Linter(config=FluffConfig(overrides={"dialect": dialect}))
    parsed = linter.parse_string(sql)
    assert parsed.tree is not None, parsed.violations
    return [
        f"line {seg.pos_marker.line_no}: {seg.raw[:80]!r}"
        for seg in parsed.tree.recursive_crawl("unparsable")
    ] + [str(v) for v in parsed.violations]


def test_both_engines_ship_the_same_procedures_and_postgresql_only_the_declared_engine_functions():
    pg_only = [o for o in PG_OBJECTS if o.name in POSTGRESQL_ENGINE_FUNCTIONS]
    shared = [o for o in PG_OBJECTS if o.name not in POSTGRESQL_ENGINE_FUNCTIONS]

    assert [(o.name, o.kind) for o in MSSQL_OBJECTS] == [(o.name, o.kind) for o in shared]
    assert sorted((o.name, o.kind) for o in pg_only) == sorted((n, "FUNCTION") for n in POSTGRESQL_ENGINE_FUNCTIONS)


@pytest.mark.parametrize("obj", MSSQL_OBJECTS, ids=lambda o: o.name)
def test_every_sql_server_procedure_parses_in_sqlfluff_tsql_without_unparsable_segments(obj):
    assert unparsable(obj.sql, "tsql") == []


@pytest.mark.parametrize("obj", MSSQL_OBJECTS, ids=lambda o: o.name)
def test_every_sql_server_procedure_follows_the_conventions(obj):
    assert check("mssql", obj.sql, obj.name) == []


@pytest.mark.parametrize("obj", PG_OBJECTS, ids=lambda o: o.name)
def test_every_postgresql_twin_follows_the_conventions(obj):
    assert check("postgresql", obj.sql, obj.name) == []


def test_sqlfluff_reports_unparsable_tsql_so_the_parse_check_can_fail():
    assert unparsable("CREATE OR ALTER PROCEDURE dbo.p AS BEGIN SELECT FROM WHERE ); END;", "tsql") != []


GOOD_TSQL = """
CREATE OR ALTER PROCEDURE dbo.p @Db sysname, @Id int AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @SqlCount nvarchar(max), @QuotedDb nvarchar(300), @n int;
    BEGIN TRY
        SET @QuotedDb = QUOTENAME(@Db);
        SET @SqlCount = N'SELECT @n = COUNT(*) FROM ' + @QuotedDb + N'.sys.objects WHERE object_id = @Id;' + NCHAR(10);
        EXEC sys.sp_executesql @SqlCount, N'@Id int, @n int OUTPUT', @Id = @Id, @n = @n OUTPUT;
    END TRY
    BEGIN CATCH
        THROW;
    END CATCH;
END;
"""


def test_a_procedure_that_follows_every_tsql_convention_passes():
    assert check_tsql(GOOD_TSQL) == []


def test_a_word_inside_a_message_is_not_a_statement_and_inner_handlers_may_log_and_go_on():
    pg = GOOD_PLPGSQL.replace(
        "    EXECUTE format('ANALYZE %I.%I', \"Db\", 'objects');",
        "    RAISE NOTICE '@Execute must be 1 (run) or 0 (plan only); EXECUTE later';\n"
        "    BEGIN\n        PERFORM 1;\n    EXCEPTION WHEN others THEN\n        v_n := 0;\n    END;\n"
        "    EXECUTE format('ANALYZE %I.%I', \"Db\", 'objects');")
    assert check_plpgsql(pg) == []


def test_filling_a_stored_script_placeholder_with_a_quoted_name_is_allowed():
    filled = GOOD_TSQL.replace("SET @QuotedDb = QUOTENAME(@Db);",
                               "SET @QuotedDb = QUOTENAME(@Db);\n        SET @SqlCount = REPLACE(@SqlCount, N'{Db}', @QuotedDb);")
    assert check_tsql(filled) == []
    pg = GOOD_PLPGSQL.replace("    EXECUTE v_sql_count INTO",
                              "    v_sql_count := replace(v_sql_count, '{Db}', v_q_db);\n    EXECUTE v_sql_count INTO")
    assert check_plpgsql(pg) == []


def test_a_stored_script_filled_in_one_pass_and_a_catch_nested_in_the_last_one_are_allowed():
    # The engine's fill: a stored script's text, REPLACE of each placeholder by a quoted name held
    # in a binary collation, ISNULL of a sentinel for a name without a value; a NULL; the filled copy.
    filled = GOOD_TSQL.replace("SET @QuotedDb = QUOTENAME(@Db);", (
        "SET @QuotedDb = QUOTENAME(@Db);\n"
        "        SELECT @SqlCount = x.ScriptText FROM dbo.Scripts AS x;\n"
        "        SET @SqlCount = REPLACE(@SqlCount COLLATE Latin1_General_100_BIN2, N'{Db}', ISNULL(@QuotedDb, NCHAR(2)));\n"
        "        SET @SqlCount = NULL;\n"
        "        SELECT @SqlCount = x.Filled FROM dbo.Scripts AS x WHERE x.Id = @Id;"))
    nested = GOOD_TSQL.replace("    BEGIN CATCH\n        THROW;", (
        "    BEGIN CATCH\n        BEGIN TRY\n            PRINT 1;\n        END TRY\n        BEGIN CATCH\n"
        "            PRINT 2;\n        END CATCH;\n        THROW;"))
    assert check_tsql(filled) == []
    assert check_tsql(nested) == []
    assert any("must end in THROW" in v for v in check_tsql(nested.replace("        THROW;\n    END CATCH;\nEND;",
                                                                             "    END CATCH;\nEND;")))


def test_a_raise_exception_after_the_last_handler_is_not_taken_for_a_handler():
    pg = GOOD_PLPGSQL.replace("    EXECUTE format('ANALYZE %I.%I', \"Db\", 'objects');\nEXCEPTION", (
        "    BEGIN\n        PERFORM 1;\n    EXCEPTION WHEN others THEN\n        v_n := 0;\n    END;\n"
        "    IF v_n IS NULL THEN\n        RAISE EXCEPTION 'no rows';\n    END IF;\nEXCEPTION"))
    filled = GOOD_PLPGSQL.replace("    EXECUTE v_sql_count INTO", (
        "    v_sql_count := \"BlobDeltaJobs\".\"fn_BlobDelta_FillScript\"(\"Db\", v_sql_count);\n    EXECUTE v_sql_count INTO"))
    assert check_plpgsql(pg) == []
    assert check_plpgsql(filled) == []


@pytest.mark.parametrize("mutation, problem", [
    (("SET NOCOUNT ON;", ""), "SET NOCOUNT ON"),
    (("SET XACT_ABORT ON;", ""), "SET XACT_ABORT ON"),
    (("        THROW;\n", "        PRINT 1;\n"), "must end in THROW"),
    (("+ @QuotedDb +", "+ @Db +"), "'@Db' is concatenated"),
    (("WHERE object_id = @Id;'", "WHERE object_id = ' + CONVERT(nvarchar(20), @Id)"),
     "CONVERT() in dynamic SQL takes only a string literal"),
    (("WHERE object_id = @Id;'", "WHERE object_id = ' + CONVERT(nvarchar(max), N'1') + N' + ' + CONVERT(nvarchar(max), @Db)"),
     "CONVERT() in dynamic SQL takes only a string literal"),
    (("SET @QuotedDb = QUOTENAME(@Db);", "SET @QuotedDb = @Db;"), "'@Db' is concatenated"),
    (("EXEC sys.sp_executesql @SqlCount, N'@Id int, @n int OUTPUT', @Id = @Id, @n = @n OUTPUT;", "EXEC (@SqlCount);"),
     "EXEC(string)"),
    (("EXEC sys.sp_executesql @SqlCount,", "EXEC sys.sp_executesql @Db,"), "must run an @Sql* variable"),
    (("NCHAR(10)", "NCHAR(@Id)"), "takes only a constant"),
    (("SET @QuotedDb = QUOTENAME(@Db);", "SET @QuotedDb = QUOTENAME(@Db);\n        SET @SqlCount = REPLACE(@SqlCount, N'{Db}', @Db);"),
     "'@Db' is concatenated"),
    (("SET @QuotedDb = QUOTENAME(@Db);", "SET @QuotedDb = QUOTENAME(@Db);\n        SET @SqlCount = ISNULL(@Db, NCHAR(2));"),
     "'@Db' is concatenated"),
    (("SET @QuotedDb = QUOTENAME(@Db);", "SET @QuotedDb = QUOTENAME(@Db);\n        SELECT @SqlCount = x.Name FROM dbo.Scripts AS x;"),
     "'x' is concatenated"),
    # EXEC takes constants and variables: an expression there does not compile (Msg 156).
    (("@Id = @Id, @n = @n OUTPUT;", "@Id = CASE WHEN @Id > 0 THEN @Id END, @n = @n OUTPUT;"), "is an expression"),
    (("@Id = @Id, @n = @n OUTPUT;", "@Id = @Id + 1, @n = @n OUTPUT;"), "is an expression"),
])
def test_each_tsql_convention_violation_is_reported(mutation, problem):
    old, new = mutation
    assert old in GOOD_TSQL
    assert any(problem in v for v in check_tsql(GOOD_TSQL.replace(old, new))), check_tsql(GOOD_TSQL.replace(old, new))


GOOD_PLPGSQL = """
CREATE OR REPLACE PROCEDURE "BlobDeltaJobs"."p"(IN "Db" text, IN "Id" integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $procedure$
DECLARE
    v_sql_count text;
    v_n bigint;
BEGIN
    v_sql_count := format('SELECT count(*) FROM %I.%I WHERE id = $1', "Db", 'objects');
    EXECUTE v_sql_count INTO v_n USING "Id";
    EXECUTE format('ANALYZE %I.%I', "Db", 'objects');
EXCEPTION WHEN others THEN
    RAISE NOTICE 'failed';
    RAISE;
END;
$procedure$
"""


def test_a_procedure_that_follows_every_postgresql_convention_passes():
    assert check_plpgsql(GOOD_PLPGSQL) == []


@pytest.mark.parametrize("mutation, problem", [
    (("LANGUAGE plpgsql", "LANGUAGE sql"), "LANGUAGE plpgsql"),
    (("SET search_path = pg_catalog, pg_temp\n", ""), "search_path"),
    (("WHERE id = $1', \"Db\"", "WHERE id = %L', \"Db\""), "%L puts a value"),
    (("WHERE id = $1', \"Db\"", "WHERE id = %s', \"Db\""), "%s puts a value"),
    (("EXECUTE v_sql_count INTO v_n USING \"Id\";", "EXECUTE v_sql_count INTO v_n;"), "no USING"),
    (("EXECUTE format('ANALYZE %I.%I', \"Db\", 'objects');", "EXECUTE 'ANALYZE ' || \"Db\";"), "built with ||"),
    (("    RAISE;\n", ""), "must end in RAISE"),
    (("    EXECUTE v_sql_count INTO", "    v_sql_count := replace(v_sql_count, '{Db}', \"Db\");\n    EXECUTE v_sql_count INTO"),
     "must come from format"),
    (("LANGUAGE plpgsql\nSET search_path = pg_catalog, pg_temp\n", "LANGUAGE plpgsql\nSECURITY DEFINER\n",
      "BEGIN\n    v_sql_count", "BEGIN\n    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);\n    v_sql_count"),
     "needs its own SET search_path"),
    (("LANGUAGE plpgsql\n", "LANGUAGE plpgsql\nSECURITY DEFINER\n"), None),
    (("LANGUAGE plpgsql\n", "LANGUAGE plpgsql\nSECURITY DEFINER\n", "    EXECUTE format('ANALYZE", "    COMMIT;\n    EXECUTE format('ANALYZE"),
     "cannot COMMIT"),
])
def test_each_postgresql_convention_violation_is_reported(mutation, problem):
    sql = GOOD_PLPGSQL
    for old, new in zip(mutation[::2], mutation[1::2]):
        assert old in sql
        sql = sql.replace(old, new, 1)
    result = check_plpgsql(sql)
    if problem is None:  # a control: the mutation alone breaks no rule
        assert result == []
    else:
        assert any(problem in v for v in result), result


@pytest.mark.parametrize("template", ["engine_access.sql", "engine_access_drop.sql"])
def test_the_sql_server_engine_access_batches_parse_and_are_safe_for_sqlcmd_and_pyodbc(template):
    from dbtools.db.engines import engine_for
    from dbtools.deploy.privileges import render_access_template

    sql = render_access_template(engine_for("mssql"), template)

    assert unparsable(sql, "tsql") == []
    assert "$(" not in sql  # sqlcmd would substitute it
    assert not re.search(r"^\s*GO\b", sql, re.I | re.M)
    assert "?" not in sql  # the batch runs on a raw pyodbc cursor without parameters


@pytest.mark.parametrize("spec", current_specs(), ids=lambda s: s.entity)
def test_the_sql_server_tvp_batch_parses_and_carries_every_column_of_the_row_type(spec):
    from dbtools.db.engines import engine_for
    from dbtools.upsert.writers import mssql_tvp_batch

    sql = mssql_tvp_batch(engine_for("mssql"), spec)

    assert unparsable(sql.replace("?", "NULL"), "tsql") == []
    for column in ("RowNumber", *(c.name for c in spec.columns), "ExpectedRowVersion"):
        assert f"[{column}] " in sql.split("OPENJSON")[1] and f"'$.{column}'" in sql
    assert sql.count("?") == 2


class RecordingConnection:
    """Stands in for a connection: keeps each statement a writer issues, and its parameters."""

    def __init__(self, scalar=None):
        self.statements: list[tuple[str, object]] = []
        self._scalar = scalar

    def exec_driver_sql(self, sql, params=None):
        self.statements.append((sql, params))
        scalar = self._scalar
        return type("Result", (), {"scalar": staticmethod(lambda: scalar)})()


@pytest.mark.parametrize("path", ["single", "tvp", "bulk"])
@pytest.mark.parametrize("spec", current_specs(), ids=lambda s: s.entity)
def test_the_sql_server_statements_the_writers_issue_themselves_parse_with_one_marker_per_value(spec, path):
    # The writers' own statements (batch-log check and entry, reject filing) only run on a SQL
    # Server in hosted CI; here they are parsed. pyodbc cannot load without an ODBC driver
    # manager, so the writer gets a stand-in engine: it needs only the URL before connecting.
    import uuid

    import sqlalchemy as sa

    from dbtools.upsert.writers import RowError, writer_for

    engine = type("Engine", (), {"url": sa.make_url("mssql+pyodbc://u:p@server/db?driver=ODBC+Driver+18")})()
    writer = writer_for(path, engine, spec)
    conn, batch = RecordingConnection(scalar=0), uuid.uuid4()
    rejected = [RowError(1, "a reason"), RowError(2, "another")]

    if path == "single":
        writer.batch_id = batch
        writer._reject_only(conn, rejected)
    else:
        writer._applied(conn, batch)
        writer._file_rejects(conn, batch, rejected)
        writer._log_rejects_only(conn, batch, len(rejected))

    assert conn.statements
    for sql, params in conn.statements:
        assert unparsable(sql.replace("?", "NULL"), "tsql") == [], sql
        rows = params if isinstance(params, list) else [params]
        assert all(sql.count("?") == len(row) for row in rows), (sql, params)
        assert "%s" not in sql


@pytest.mark.parametrize("engine", ["mssql", "postgresql"])
def test_a_composite_key_spec_renders_procedures_that_key_on_every_key_column_in_key_order(engine):
    # Its columns are not in key order (Status, ICCID, ServiceProviderId, ModifiedDate), so a
    # template that takes the first column, or the column order, for the key is caught here.
    from dbtools.db.engines import engine_for
    from dbtools.deploy.render import jinja_environment, render_entity_objects

    from .upsert_bed import PROVIDER_DEVICE as spec

    info = engine_for(engine)
    objects = {o.name: o.sql for o in render_entity_objects(info, jinja_environment(info), [spec])}
    one, many, reconcile = (objects[name] for name in (spec.upsert_one, spec.upsert_many, spec.reconcile))

    assert list(objects) == [spec.upsert_one, spec.upsert_many, spec.reconcile]
    for name, sql in objects.items():
        assert check(engine, sql, name) == []
        if engine == "mssql":
            assert unparsable(sql, "tsql") == []
    assert "newest ModifiedDate wins per ServiceProviderId, ICCID." in one and "wins per ServiceProviderId, ICCID." in many
    assert "inserted when (ServiceProviderId, ICCID) is new" in one
    if engine == "postgresql":
        for sql in (many, reconcile):
            assert 'DISTINCT ON (c."ServiceProviderId", c."ICCID")' in sql
            assert 'ORDER BY c."ServiceProviderId", c."ICCID", c."ModifiedDate" DESC, c."RowNumber"' in sql
            assert 'ORDER BY w."ServiceProviderId", w."ICCID"\n        ON CONFLICT ("ServiceProviderId", "ICCID")' in sql
            assert '("ServiceProviderId", "ICCID") DO UPDATE SET\n            "Status" = EXCLUDED."Status",' in sql
            assert '(s."ServiceProviderId", s."ICCID") IN (SELECT x."ServiceProviderId", x."ICCID" FROM' in sql
            assert sql.count('WHERE t."ServiceProviderId" = v_row."ServiceProviderId" AND t."ICCID" = v_row."ICCID"') == 2
        assert 'ON CONFLICT ("ServiceProviderId", "ICCID")' in one
        assert one.count('WHERE t."ServiceProviderId" = c_ServiceProviderId AND t."ICCID" = c_ICCID') == 3
        assert ('AND (r."ServiceProviderId", r."ICCID", r."ModifiedDate", r."ExpectedRowVersion")\n'
                '                                IS NOT DISTINCT FROM (c_ServiceProviderId, c_ICCID, c_ModifiedDate, '
                'v_expected)') in one
    else:
        for sql in (many, reconcile):
            assert "[ServiceProviderId] int NOT NULL" in sql and "[ICCID] nvarchar(32) COLLATE DATABASE_DEFAULT NOT NULL" in sql
            assert "PRIMARY KEY CLUSTERED ([ServiceProviderId], [ICCID])" in sql
            assert "PARTITION BY s.[ServiceProviderId], CONVERT(nvarchar(32), s.[ICCID])" in sql
            assert ("WITH (UPDLOCK, SERIALIZABLE, FORCESEEK)\n"
                    "                ON t.[ServiceProviderId] = w.[ServiceProviderId] AND t.[ICCID] = w.[ICCID]") in sql
            assert "ON w.[ServiceProviderId] = t.[ServiceProviderId] AND w.[ICCID] = t.[ICCID]" in sql
            assert "ORDER BY w.[ServiceProviderId], w.[ICCID]\n            OPTION (MAXDOP 1);" in sql
            assert "SET\n                [Status] = w.[Status],\n                [ModifiedDate] = w.[ModifiedDate]\n" in sql
        assert one.count("t.[ServiceProviderId] = @ServiceProviderId AND t.[ICCID] = CONVERT(nvarchar(32), @ICCID)") == 2
        assert "x.[ServiceProviderId] = @ServiceProviderId AND x.[ICCID] = CONVERT(nvarchar(32), @ICCID)" in one
        assert ("SELECT r.[ServiceProviderId], r.[ICCID] COLLATE Latin1_General_100_BIN2, DATALENGTH(r.[ICCID]), "
                "r.[ModifiedDate], r.[ExpectedRowVersion]") in one
