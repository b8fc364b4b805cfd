{%- from "postgresql/engine.sql" import table_message -%}
{%- from "common/header.sql" import header -%}
CREATE OR REPLACE PROCEDURE {{ job('usp_BlobDelta_Run') }}(
    IN "Mode" text DEFAULT 'AllTables',
    IN "TableName" text DEFAULT NULL,
    IN "BatchSize" integer DEFAULT 500,
    IN "MaxDOP" integer DEFAULT 0,
    IN "BusinessUnitId" uuid DEFAULT NULL,
    IN "SyncType" text DEFAULT 'Incremental',
    IN "Execute" boolean DEFAULT true,
    IN "ResumeRunId" uuid DEFAULT NULL,
    IN "ExcludedStreamId" uuid DEFAULT NULL,
    IN "Debug" smallint DEFAULT 0,
    IN "Wait" boolean DEFAULT false,
    INOUT "RunId" uuid DEFAULT NULL,
    INOUT "Status" text DEFAULT NULL,
    INOUT "Plan" text DEFAULT NULL
)
LANGUAGE plpgsql
AS $procedure$
#variable_conflict use_column
{{ header('usp_BlobDelta_Run',
          'The delta engine. For each table in scope: window on the metadata ModifiedOn column
    [WindowStart, WindowEnd), a lease, the stored step scripts run in batches (each batch one
    transaction with its BlobDeltaRunStep row), then the watermark moves to WindowEnd. A failed
    table is logged, its lease released, and the next table runs. Execute = false returns the
    plan (JSON in "Plan") and changes nothing. A RunId passed in names the new run (idempotent
    retries); ResumeRunId continues an interrupted one. A run executes in one session at a time
    (a session-level advisory lock on its RunId): a resume or a retry while another session still
    works the run fails with SQLSTATE 55P03, or waits with Wait = true (a run that ended
    meanwhile is reported as it ended). Call it outside a transaction block (autocommit):
    it commits after every batch, which is what makes runs visible and resumable. It cannot
    have a SET clause for that reason, so it pins search_path (and TimeZone to UTC, so that a
    timestamptz ModifiedOn compares as UTC, as on SQL Server) with set_config after each commit.
    Nor can it be SECURITY DEFINER: it runs with the rights of the caller and does no work of its
    own. Every step between two commits is a SECURITY DEFINER function (fn_BlobDelta_RunBegin,
    _TableBegin, _TableAdvance, _TableEnd, _RunEnd) that reads what it needs from the run
    tables, so members of BlobDeltaOperator run deltas without any right on the configuration,
    source, metadata or target tables.') }}
DECLARE
    v_debug smallint := coalesce("Debug", 0);
    v_begin record;
    v_table text;
    v_table_begin record;
    v_batch_status text;
    v_error text;
    v_sqlstate text;
    v_fatal text;
    v_header text; -- a table's error that could not be recorded
BEGIN
    -- Inside a transaction block PostgreSQL refuses this COMMIT (2D000, invalid transaction
    -- termination) before anything is done: no lock, no header. SQL Server refuses @@TRANCOUNT > 0
    -- the same way, for plans too (a plan's error would doom the caller's transaction there).
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);

    -- Parameters checked (all problems in one error), then the plan, or the run's session lock and header.
    SELECT b.run_id, b.tables, b.plan, b.lock_key, b.state INTO v_begin
    FROM {{ job('fn_BlobDelta_RunBegin') }}(
        "Mode", "TableName", "BatchSize", "MaxDOP", "BusinessUnitId", "SyncType", "Execute", "ResumeRunId",
        "RunId", v_debug, "ExcludedStreamId", coalesce("Wait", false)) AS b;
    IF NOT "Execute" THEN
        "Plan" := v_begin.plan;
        "Status" := 'Planned';
        RETURN;
    END IF;
    "RunId" := v_begin.run_id;
    IF v_begin.state <> 'Running' THEN
        "Status" := v_begin.state; -- waited for the session that worked it, which finished it
        RETURN;
    END IF;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);

    -- Each step function catches its table's errors and records them; an error that escapes one
    -- (its own bookkeeping failed) fails that table alone through fn_BlobDelta_TableFail, and the run
    -- goes on. A cancel (57014) is never caught: the run stays Running and the runner names the run
    -- to resume. Blocks with a handler hold no COMMIT; each commit follows its block.
    FOREACH v_table IN ARRAY v_begin.tables LOOP
        v_error := NULL;
        -- Window, lease (and a Full sync's clean slate), or the table's failure: one commit.
        BEGIN
            SELECT t.status, t.error INTO v_table_begin
            FROM {{ job('fn_BlobDelta_TableBegin') }}(v_begin.run_id, v_table) AS t;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_error = MESSAGE_TEXT;
        END;
        IF v_error IS NULL THEN
            COMMIT; -- the lease and the window are visible from here on
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
            CONTINUE WHEN v_table_begin.status <> 'Ready';

            -- One batch per call and per commit, until every step is done or a batch failed.
            LOOP
                BEGIN
                    SELECT a.status INTO v_batch_status
                    FROM {{ job('fn_BlobDelta_TableAdvance') }}(v_begin.run_id, v_table, "ExcludedStreamId", v_debug) AS a;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_error = MESSAGE_TEXT;
                END;
                EXIT WHEN v_error IS NOT NULL;
                -- A batch's commit does not wait for its WAL to reach disk. A crash can lose the
                -- last batches together with their progress rows (one transaction each), and a resume
                -- redoes them; every other commit of the run waits, and each flushes the batches
                -- before it: the table's end (the watermark) and the run's end (Succeeded).
                PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
                COMMIT;
                PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
                EXIT WHEN v_batch_status <> 'Batch';
            END LOOP;
            CONTINUE WHEN v_error IS NULL AND v_batch_status = 'Failed';
        END IF;

        IF v_error IS NULL THEN
            -- The watermark moves to the window end only now that every step succeeded.
            BEGIN
                PERFORM {{ job('fn_BlobDelta_TableEnd') }}(v_begin.run_id, v_table);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_error = MESSAGE_TEXT;
            END;
        END IF;
        IF v_error IS NOT NULL THEN
            BEGIN
                PERFORM {{ job('fn_BlobDelta_TableFail') }}(v_begin.run_id, v_table, v_error);
                v_error := NULL;
            EXCEPTION WHEN OTHERS THEN
                -- The header keeps the table's error; the run ends with the one that stopped it.
                GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_fatal = MESSAGE_TEXT;
                v_header := {{ table_message('v_error') }};
                v_error := v_fatal;
            END;
            EXIT WHEN v_error IS NOT NULL;
        END IF;
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
    END LOOP;

    IF v_error IS NULL THEN
        BEGIN
            "Status" := {{ job('fn_BlobDelta_RunEnd') }}(v_begin.run_id);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_error = MESSAGE_TEXT;
        END;
    END IF;
    IF v_error IS NOT NULL THEN
        -- The last resort: an error nothing could record. In a new transaction give back every lease
        -- the run holds and mark it Failed, release the run's session lock, and raise the error as
        -- it came (its SQLSTATE tells the runner whether a resume may succeed).
        -- Should even that fail, the session lock is still released and this error raised.
        ROLLBACK;
        BEGIN
            PERFORM {{ job('fn_BlobDelta_RunAbort') }}(v_begin.run_id, concat_ws(E'\n', v_header, v_error));
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_fatal = MESSAGE_TEXT;
            RAISE WARNING 'Run %: the run could not be marked Failed (%); its leases expire on their own.',
                v_begin.run_id, v_fatal;
        END;
        COMMIT;
        PERFORM pg_catalog.pg_advisory_unlock(v_begin.lock_key);
        RAISE EXCEPTION USING ERRCODE = v_sqlstate, MESSAGE = v_error;
    END IF;
    COMMIT;
    PERFORM pg_catalog.pg_advisory_unlock(v_begin.lock_key);
END;
$procedure$
