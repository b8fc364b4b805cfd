{%- from "common/header.sql" import header -%}
{%- from "postgresql/errors.sql" import raise_collected -%}
{%- from "postgresql/sync.sql" import lock_session -%}
CREATE OR REPLACE PROCEDURE {{ job('usp_Sync_Page') }}(
    IN "SessionId" uuid DEFAULT NULL,
    IN "PageNumber" integer DEFAULT NULL,
    IN "LoadId" uuid DEFAULT NULL,
    IN "RowsReceived" integer DEFAULT NULL,
    IN "IsLastPage" boolean DEFAULT false,
    INOUT "PagesReceived" integer DEFAULT NULL,
    INOUT "LastPageNumber" integer DEFAULT NULL,
    IN "Help" boolean DEFAULT false,
    INOUT "Version" text DEFAULT NULL,
    INOUT "VersionDate" date DEFAULT NULL
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $procedure$
#variable_conflict use_column
{{ header('usp_Sync_Page',
          'Record one page of an Open sync session (docs/sync.md). The caller has staged the page''s
    rows in the entity''s staging table under BatchId = LoadId, SessionId and PageNumber (rows
    numbered from 1 within the page), and filed the rows it could not stage in the reject table
    the same way. This procedure removes what earlier loads of the same page left (so a page loaded
    again replaces itself and never duplicates rows), checks that staged plus rejected rows equal
    RowsReceived, and records the page. Call it in the transaction that staged the rows.') }}
DECLARE
    v_session uuid := "SessionId";
    v_page integer := "PageNumber";
    v_load uuid := "LoadId";
    v_errors text[] := '{}';
    v_error_text text;
    v_row record;
    v_entity text;
    v_scope text;
    v_holder uuid;
    v_holder_status text;
    v_holder_pid integer;
    v_staged bigint := 0;
    v_rejected bigint := 0;
    v_misplaced bigint := 0;
    v_now timestamp without time zone := pg_catalog.clock_timestamp() AT TIME ZONE 'UTC';
BEGIN
    "Version" := '{{ package_version }}';
    "VersionDate" := DATE '{{ version_date }}';
    IF "Help" THEN
        RAISE NOTICE '%', E'usp_Sync_Page: record one staged page of an Open sync session.\n'
            || E'  "SessionId"     required; from usp_Sync_Begin\n'
            || E'  "PageNumber"    required; 1, 2, ...\n'
            || E'  "LoadId"        required; the BatchId the page''s rows were staged and rejected under\n'
            || E'  "RowsReceived"  required; rows the source sent in the page\n'
            || E'  "IsLastPage"    true for the last page\n'
            || E'Returns PagesReceived and LastPageNumber (NULL until the last page arrived).';
        RETURN;
    END IF;

    ------------------------------------------------------------------- check parameters
    IF v_session IS NULL THEN
        v_errors := v_errors || '"SessionId" is required: the session usp_Sync_Begin opened.'::text;
    END IF;
    IF v_page IS NULL OR v_page < 1 THEN
        v_errors := v_errors || format('"PageNumber" must be 1 or more, got %s.', coalesce(v_page::text, 'NULL'));
    END IF;
    IF v_load IS NULL THEN
        v_errors := v_errors || '"LoadId" is required: the BatchId the page''s rows were staged under.'::text;
    END IF;
    IF "RowsReceived" IS NULL OR "RowsReceived" < 0 THEN
        v_errors := v_errors || format('"RowsReceived" must be 0 or more, got %s.', coalesce("RowsReceived"::text, 'NULL'));
    END IF;
    IF "IsLastPage" IS NULL THEN
        v_errors := v_errors || '"IsLastPage" must be true or false.'::text;
    END IF;
{{ raise_collected('22023') }}
    {{ lock_session() }}
    IF v_row."Status" <> 'Open' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Session %s is %s, not Open: it takes no more pages%s.', v_session, v_row."Status",
                             CASE v_row."Status" WHEN 'Superseded' THEN format(' (superseded by %s)', v_row."SupersededBy")
                                                 WHEN 'Promoted' THEN ''
                                                 ELSE '; resume it with usp_Sync_Begin Resume = true' END);
    END IF;
    IF v_row."LastPageNumber" IS NOT NULL AND v_page > v_row."LastPageNumber" THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Session %s: page %s comes after the last page, %s.', v_session, v_page, v_row."LastPageNumber");
    END IF;
    IF "IsLastPage" AND EXISTS (SELECT 1 FROM {{ job('SyncSessionPage') }} AS p
                                WHERE p."SessionId" = v_session AND p."PageNumber" > v_page) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Session %s: page %s cannot be the last page, page %s was received.', v_session, v_page,
                             (SELECT max(p."PageNumber") FROM {{ job('SyncSessionPage') }} AS p WHERE p."SessionId" = v_session));
    END IF;

    ------------------------------------------------------------------- replace earlier loads of the page
{%- for e in sync_entities %}
    {{ "IF" if loop.first else "ELSIF" }} v_entity = '{{ e.entity }}' THEN
        DELETE FROM {{ e.table_object(engine_info, e.staging) }} AS st
        WHERE st."SessionId" = v_session AND st."PageNumber" = v_page AND st."BatchId" <> v_load;
        DELETE FROM {{ e.table_object(engine_info, e.rejects) }} AS r
        WHERE r."SessionId" = v_session AND r."PageNumber" = v_page AND r."BatchId" <> v_load;
        SELECT count(*), count(*) FILTER (WHERE st."SessionId" IS DISTINCT FROM v_session OR st."PageNumber" IS DISTINCT FROM v_page)
        INTO v_staged, v_misplaced
        FROM {{ e.table_object(engine_info, e.staging) }} AS st WHERE st."BatchId" = v_load;
        SELECT count(*) INTO v_rejected
        FROM {{ e.table_object(engine_info, e.rejects) }} AS r
        WHERE r."BatchId" = v_load AND r."SessionId" = v_session AND r."PageNumber" = v_page;
{%- endfor %}
{%- if sync_entities %}
    END IF;
{%- endif %}
    IF v_misplaced > 0 OR v_staged + v_rejected <> "RowsReceived" THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Session %s page %s: RowsReceived is %s, but load %s staged %s rows (%s of them under another '
                             'session or page) and filed %s rejects; load the page again.', v_session, v_page,
                             "RowsReceived", v_load, v_staged, v_misplaced, v_rejected);
    END IF;

    ------------------------------------------------------------------- record the page
    INSERT INTO {{ job('SyncSessionPage') }} AS p ("SessionId", "PageNumber", "LoadId", "RowsReceived", "RowsStaged",
                                                  "RowsRejected", "IsLastPage", "ReceivedAt")
    VALUES (v_session, v_page, v_load, "RowsReceived", v_staged, v_rejected, "IsLastPage", v_now)
    ON CONFLICT ("SessionId", "PageNumber") DO UPDATE SET
        "LoadId" = EXCLUDED."LoadId", "RowsReceived" = EXCLUDED."RowsReceived", "RowsStaged" = EXCLUDED."RowsStaged",
        "RowsRejected" = EXCLUDED."RowsRejected", "IsLastPage" = EXCLUDED."IsLastPage", "ReceivedAt" = EXCLUDED."ReceivedAt";
    UPDATE {{ job('SyncSession') }} AS s SET
        "PagesReceived" = agg.pages,
        "RowsReceived" = agg.received,
        "LastPageNumber" = agg.last_page,
        "LastPageAt" = v_now
    FROM (SELECT count(*)::integer AS pages, coalesce(sum(p."RowsReceived"), 0) AS received,
                 max(p."PageNumber") FILTER (WHERE p."IsLastPage") AS last_page
          FROM {{ job('SyncSessionPage') }} AS p WHERE p."SessionId" = v_session) AS agg
    WHERE s."SessionId" = v_session
    RETURNING s."PagesReceived", s."LastPageNumber" INTO "PagesReceived", "LastPageNumber";
END;
$procedure$
