{%- from "common/header.sql" import header -%}
{%- from "postgresql/errors.sql" import raise_collected -%}
{%- from "postgresql/sync.sql" import lock_session, session_counts -%}
CREATE OR REPLACE PROCEDURE {{ job('usp_Sync_Promote') }}(
    IN "SessionId" uuid DEFAULT NULL,
    IN "LastPageNumber" integer DEFAULT NULL,
    INOUT "Status" text DEFAULT NULL,
    INOUT "RowsReceived" bigint DEFAULT NULL,
    INOUT "RowsInserted" bigint DEFAULT NULL,
    INOUT "RowsUpdated" bigint DEFAULT NULL,
    INOUT "RowsSkipped" bigint DEFAULT NULL,
    INOUT "RowsRejected" bigint DEFAULT NULL,
    INOUT "Replayed" boolean DEFAULT NULL,
    IN "Help" boolean DEFAULT false,
    INOUT "Version" text DEFAULT NULL,
    INOUT "VersionDate" date DEFAULT NULL
)
LANGUAGE plpgsql
AS $procedure$
#variable_conflict use_column
{{ header('usp_Sync_Promote',
          'Promote a sync session (docs/sync.md): once every page from 1 to the last has arrived,
    validate the staged rows (required fields, types, lengths, lookups, the session''s scope;
    rejects keep their page, row and reason), resolve duplicates of the key within the session to
    the newest, apply the winners to the entity''s table with the newest-wins rule, remove the
    session''s staged rows and advance the scope''s sync point to the session''s start, all in one
    transaction. Refuses while a page is missing. A promote that fails leaves the table untouched
    and the session Failed and resumable. Promoting a Promoted session returns its counts
    (Replayed = true). Call it outside a transaction block (autocommit): it commits the Promoting
    status first, then the promotion; inside a block PostgreSQL refuses it at once (2D000).
    RowsReceived = RowsInserted + RowsUpdated + RowsSkipped + RowsRejected.') }}
DECLARE
    v_session uuid := "SessionId";
    v_last integer := "LastPageNumber";
    v_errors text[] := '{}';
    v_error_text text;
    v_row record;
    v_entity text;
    v_scope text;
    v_holder uuid;
    v_holder_status text;
    v_holder_pid integer;
    v_missing text;
    v_missing_count bigint;
    v_pages record;
    v_failed boolean := false;
    v_message text;
    v_sqlstate text;
    v_staged bigint;
    v_inserted bigint;
    v_updated bigint;
    v_skipped bigint;
    v_rejected bigint;
    v_now timestamp without time zone;
BEGIN
    -- Inside a transaction block PostgreSQL refuses this COMMIT (2D000) before anything is done.
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    "Version" := '{{ package_version }}';
    "VersionDate" := DATE '{{ version_date }}';
    IF "Help" THEN
        RAISE NOTICE '%', E'usp_Sync_Promote: apply a sync session''s staged pages to the entity''s table.\n'
            || E'  "SessionId"       required; from usp_Sync_Begin\n'
            || E'  "LastPageNumber"  the last page''s number; required unless the page marked last was recorded\n'
            || E'Returns Status, RowsReceived, RowsInserted, RowsUpdated, RowsSkipped, RowsRejected, Replayed.';
        RETURN;
    END IF;

    ------------------------------------------------------------------- check parameters
    IF v_session IS NULL THEN
        v_errors := v_errors || '"SessionId" is required: the session usp_Sync_Begin opened.'::text;
    END IF;
    IF v_last IS NOT NULL AND v_last < 1 THEN
        v_errors := v_errors || format('"LastPageNumber" must be 1 or more, got %s.', v_last);
    END IF;
{{ raise_collected('22023') }}
    {{ lock_session() }}
    IF v_row."Status" = 'Promoted' THEN
        {{ session_counts('true') | indent(4) }}
        RETURN;
    ELSIF v_row."Status" = 'Superseded' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Session %s was superseded by session %s; it cannot be promoted.', v_session, v_row."SupersededBy");
    END IF;

    ------------------------------------------------------------------- every page up to the last
    IF v_row."LastPageNumber" IS NOT NULL AND v_last IS NOT NULL AND v_row."LastPageNumber" <> v_last THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Session %s: "LastPageNumber" is %s, but page %s was received as the last page.',
                             v_session, v_last, v_row."LastPageNumber");
    END IF;
    v_last := coalesce(v_row."LastPageNumber", v_last);
    IF v_last IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Session %s: the last page is not known yet (no page was marked last); load it, or pass '
                             '"LastPageNumber".', v_session);
    END IF;
    IF EXISTS (SELECT 1 FROM {{ job('SyncSessionPage') }} AS p WHERE p."SessionId" = v_session AND p."PageNumber" > v_last) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Session %s: pages after page %s were received, so it is not the last page.', v_session, v_last);
    END IF;
    SELECT string_agg(m.n::text, ', ' ORDER BY m.n) FILTER (WHERE m.k <= 20), count(*) INTO v_missing, v_missing_count
    FROM (SELECT n, row_number() OVER (ORDER BY n) AS k
          FROM generate_series(1, v_last) AS n
          WHERE NOT EXISTS (SELECT 1 FROM {{ job('SyncSessionPage') }} AS p
                            WHERE p."SessionId" = v_session AND p."PageNumber" = n)) AS m;
    IF v_missing_count > 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Session %s cannot be promoted: %s pages missing up to the last page %s: %s%s. Resume the '
                             'session to load them.', v_session, v_missing_count, v_last, v_missing,
                             CASE WHEN v_missing_count > 20 THEN ', ...' ELSE '' END);
    END IF;

    UPDATE {{ job('SyncSession') }} AS s
    SET "Status" = 'Promoting', "LastPageNumber" = v_last, "ErrorMessage" = NULL, "EndedAt" = NULL
    WHERE s."SessionId" = v_session;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    ------------------------------------------------------------------- promote, in one transaction
    BEGIN
{%- for e in sync_entities %}
        {{ "IF" if loop.first else "ELSIF" }} v_entity = '{{ e.entity }}' THEN
            CALL {{ job(e.sync_promote) }}("SessionId" => v_session, "Scope" => v_scope, "RowsStaged" => v_staged,
                "RowsInserted" => v_inserted, "RowsUpdated" => v_updated, "RowsSkipped" => v_skipped,
                "RowsRejected" => v_rejected);
{%- endfor %}
{%- if sync_entities %}
        ELSE
{%- endif %}
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('Entity %s is not loaded by sync sessions.', v_entity);
{%- if sync_entities %}
        END IF;
{%- endif %}
        SELECT coalesce(sum(p."RowsReceived"), 0) AS received, coalesce(sum(p."RowsStaged"), 0) AS staged,
               coalesce(sum(p."RowsRejected"), 0) AS rejected
        INTO v_pages
        FROM {{ job('SyncSessionPage') }} AS p WHERE p."SessionId" = v_session;
        IF v_pages.staged <> v_staged THEN
            RAISE EXCEPTION USING ERRCODE = 'P0001',
                MESSAGE = format('Session %s: its pages recorded %s staged rows, but %s are in staging; load the pages '
                                 'again (start a new session).', v_session, v_pages.staged, v_staged);
        END IF;
        v_now := pg_catalog.clock_timestamp() AT TIME ZONE 'UTC';
        UPDATE {{ job('SyncSession') }} AS s SET
            "Status" = 'Promoted', "RowsReceived" = v_pages.received, "RowsInserted" = v_inserted,
            "RowsUpdated" = v_updated, "RowsSkipped" = v_skipped, "RowsRejected" = v_rejected + v_pages.rejected,
            "EndedAt" = v_now
        WHERE s."SessionId" = v_session
        RETURNING s.* INTO v_row;
        INSERT INTO {{ job('SyncScopeState') }} AS st ("EntityName", "Scope", "LastSyncPoint", "LastSessionId",
                                                      "IsInitialFullSyncDone", "UpdatedAt")
        VALUES (v_entity, v_scope, v_row."StartedAt", v_session, v_row."SyncType" = 'Full', v_now)
        ON CONFLICT ("EntityName", "Scope") DO UPDATE SET
            "LastSyncPoint" = EXCLUDED."LastSyncPoint", "LastSessionId" = EXCLUDED."LastSessionId",
            "IsInitialFullSyncDone" = st."IsInitialFullSyncDone" OR EXCLUDED."IsInitialFullSyncDone",
            "UpdatedAt" = EXCLUDED."UpdatedAt";
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_sqlstate = RETURNED_SQLSTATE;
        v_failed := true;
    END;
    IF v_failed THEN
        UPDATE {{ job('SyncSession') }} AS s
        SET "Status" = 'Failed', "ErrorMessage" = v_message, "EndedAt" = pg_catalog.clock_timestamp() AT TIME ZONE 'UTC'
        WHERE s."SessionId" = v_session;
        COMMIT;
        RAISE EXCEPTION USING ERRCODE = v_sqlstate,
            MESSAGE = format('Promote of session %s failed: %s. The table is unchanged; the session is Failed and can be '
                             'promoted again (dbtools sync resumes it).', v_session, v_message);
    END IF;
    COMMIT;
    {{ session_counts('false') }}
END;
$procedure$
