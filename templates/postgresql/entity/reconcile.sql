{%- from "common/header.sql" import header -%}
{%- from "postgresql/entity/macros.sql" import count_outputs, batch_declarations, apply_batch, logged_counts with context -%}
CREATE OR REPLACE PROCEDURE {{ job(e.reconcile) }}(
    IN "BatchId" uuid DEFAULT NULL,
    {{ count_outputs() }}
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- A 50,000-row batch sorts and keeps its checked rows in memory instead of spilling to disk.
SET work_mem = '64MB'
AS $procedure$
#variable_conflict use_column
{{ header(e.reconcile,
          'Apply the ' ~ e.entity ~ ' rows staged in ' ~ e.staging ~ ' under BatchId, then remove
    them (rendered from ' ~ e.source ~ '). A batch id applied before returns its logged counts and
    changes nothing. Returns RowsReceived = RowsInserted + RowsUpdated + RowsSkipped +
    RowsConflicted + RowsRejected; rejected rows are kept in ' ~ e.rejects ~ ' with their reason.', origin) }}
DECLARE
    v_batch_id uuid := "BatchId";
{{ batch_declarations() }}
BEGIN
    "Version" := '{{ package_version }}';
    "VersionDate" := DATE '{{ version_date }}';
    IF "Help" THEN
        RAISE NOTICE '%', E'{{ e.reconcile }}: apply the {{ e.entity }} rows staged in {{ e.staging }}.\n'
            || E'  "BatchId"   required; the staged rows of this batch (RowNumber unique)\n'
            || E'Returns RowsReceived, RowsInserted, RowsUpdated, RowsSkipped, RowsConflicted, RowsRejected, Replayed.';
        RETURN;
    END IF;
    IF v_batch_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = '"BatchId" is required: the batch id the rows were staged under; nothing was changed.';
    END IF;
{{ logged_counts(e) }}
    IF NOT "Replayed" THEN
{{ apply_batch(e, '(SELECT st.* FROM ' ~ tbl(e.staging) ~ ' AS st WHERE st."BatchId" = v_batch_id)') }}
    END IF;
    -- Also after a replay: a retried writer staged the batch a second time.
    DELETE FROM {{ tbl(e.staging) }} AS st WHERE st."BatchId" = v_batch_id;
END;
$procedure$
