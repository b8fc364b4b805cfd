{%- from "common/header.sql" import header -%}
{%- from "postgresql/uuid7.sql" import new_uuid7 -%}
{%- from "postgresql/entity/macros.sql" import count_outputs, batch_declarations, apply_batch, logged_counts with context -%}
CREATE OR REPLACE PROCEDURE {{ job(e.upsert_many) }}(
    IN "Rows" {{ job(e.row_type) }}[] DEFAULT NULL,
    INOUT "BatchId" uuid DEFAULT NULL,
    {{ count_outputs() }}
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $procedure$
#variable_conflict use_column
{{ header(e.upsert_many,
          'Upsert a batch of ' ~ e.entity ~ ' rows passed as an array of ' ~ e.row_type ~ '
    (rendered from ' ~ e.source ~ '). BatchId (optional, INOUT) names the batch: a batch id
    applied before returns its logged counts and changes nothing. Returns RowsReceived = RowsInserted
    + RowsUpdated + RowsSkipped + RowsConflicted + RowsRejected; rejected rows are kept in
    ' ~ e.rejects ~ ' with their reason.', origin) }}
DECLARE
    v_batch_id uuid := "BatchId";
    v_rows {{ job(e.row_type) }}[] := coalesce("Rows", '{}'); -- like an omitted SQL Server TVP: an empty batch
    v_uuid7_bytes bytea;
{{ batch_declarations() }}
BEGIN
    "Version" := '{{ package_version }}';
    "VersionDate" := DATE '{{ version_date }}';
    IF "Help" THEN
        RAISE NOTICE '%', E'{{ e.upsert_many }}: upsert {{ e.entity }} rows, newest {{ e.ordering }} wins per {{ e.keys | join(', ') }}.\n'
            || E'  "Rows"      array of {{ e.row_type }} (RowNumber unique, ExpectedRowVersion optional)\n'
            || E'  "BatchId"   optional; a batch applied before returns its logged counts\n'
            || E'Returns RowsReceived, RowsInserted, RowsUpdated, RowsSkipped, RowsConflicted, RowsRejected, Replayed.';
        RETURN;
    END IF;
    IF v_batch_id IS NULL THEN
        {{ new_uuid7('v_batch_id') | indent(4) }}
    END IF;
    "BatchId" := v_batch_id;
{{ logged_counts(e) }}
    IF NOT "Replayed" THEN
{{ apply_batch(e, 'unnest(v_rows)') }}
    END IF;
END;
$procedure$
