{%- from "common/header.sql" import header -%}
{%- from "postgresql/errors.sql" import raise_collected -%}
{%- from "postgresql/uuid7.sql" import new_uuid7 -%}
{%- from "postgresql/sync.sql" import take_scope_lock -%}
CREATE OR REPLACE PROCEDURE {{ job('usp_Sync_Begin') }}(
    IN "Entity" text DEFAULT NULL,
    INOUT "Scope" text DEFAULT NULL,
    INOUT "SyncType" text DEFAULT NULL,
    IN "Resume" boolean DEFAULT false,
    IN "AsOf" timestamp without time zone DEFAULT NULL,
    INOUT "SessionId" uuid DEFAULT NULL,
    INOUT "SinceDate" timestamp without time zone DEFAULT NULL,
    INOUT "FirstPageNumber" integer DEFAULT NULL,
    INOUT "LastPageNumber" integer DEFAULT NULL,
    INOUT "Resumed" boolean DEFAULT NULL,
    IN "Help" boolean DEFAULT false,
    INOUT "Version" text DEFAULT NULL,
    INOUT "VersionDate" date DEFAULT NULL
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $procedure$
#variable_conflict use_column
{{ header('usp_Sync_Begin',
          'Open a paged sync session for one scope of an entity (docs/sync.md). Takes the scope''s
    session-level advisory lock, held until the session (database connection) ends: a second sync of
    the scope is refused (SQLSTATE 55P03) with the holder''s SessionId. Full when SyncType = Full,
    or when the scope never completed a full sync: clears the staged rows of the scope''s sessions
    (only that scope''s) and sets SinceDate = now - the entity''s full_since_months months -
    full_since_days days. Incremental: SinceDate = the scope''s last sync point - buffer_seconds.
    The scope''s live session (Open, Promoting or Failed) is superseded and its staged rows removed,
    unless Resume = true asks to continue it: then its SessionId and SinceDate come back with
    FirstPageNumber, the first page it has not received. AsOf replaces the clock (tests, replays).') }}
DECLARE
    v_entity text := "Entity";
    v_scope text := "Scope";
    v_type text := "SyncType";
    v_now timestamp without time zone := coalesce("AsOf", pg_catalog.clock_timestamp() AT TIME ZONE 'UTC');
    v_errors text[] := '{}';
    v_error_text text;
    v_holder uuid;
    v_holder_status text;
    v_holder_pid integer;
    v_state record;
    v_live record;
    v_session uuid;
    v_since timestamp without time zone;
    v_uuid7_bytes bytea;
BEGIN
    "Version" := '{{ package_version }}';
    "VersionDate" := DATE '{{ version_date }}';
    IF "Help" THEN
        RAISE NOTICE '%', E'usp_Sync_Begin: open (or resume) a paged sync session for one scope of an entity.\n'
            || E'  "Entity"     required; one of: {{ sync_entities | map(attribute="entity") | join(", ") }}\n'
            || E'  "Scope"      required; the value of the entity''s scope column (e.g. a service provider id)\n'
            || E'  "SyncType"   NULL (Full until the scope completed one, then Incremental), Full or Incremental; returns the type used\n'
            || E'  "Resume"     true: continue the scope''s live session instead of superseding it\n'
            || E'  "AsOf"       the clock (UTC) to use instead of now\n'
            || E'Returns Scope (canonical), SessionId, SinceDate, FirstPageNumber, LastPageNumber (resumed: once its last page arrived), Resumed.';
        RETURN;
    END IF;

    ------------------------------------------------------------------- check parameters
{%- if sync_entities %}
    SELECT x.entity INTO v_entity FROM (VALUES {% for e in sync_entities %}('{{ e.entity }}'){{ ", " if not loop.last }}{% endfor %}) AS x (entity)
    WHERE lower(x.entity) = lower("Entity");
{%- else %}
    v_entity := NULL;
{%- endif %}
    IF v_entity IS NULL THEN
        v_errors := v_errors || format('"Entity" %s is not an entity loaded by sync sessions; allowed values: %s.',
                                       coalesce(quote_literal("Entity"), 'NULL'), '{{ sync_entities | map(attribute="entity") | join(", ") or "(none)" }}');
    END IF;
    IF v_scope IS NULL OR btrim(v_scope) = '' THEN
        v_errors := v_errors || '"Scope" is required: the value of the entity''s scope column (for example a service provider id).'::text;
    ELSIF length(v_scope) > 300 THEN
        v_errors := v_errors || '"Scope" is longer than 300 characters.'::text;
{%- for e in sync_entities if e.column(e.sync.scope).type in ('int', 'bigint') %}
    ELSIF v_entity = '{{ e.entity }}' THEN
        -- The scope column is an integer: the scope is its decimal text, canonical ('7', never '07').
        IF v_scope !~ '^\s*[-+]?[0-9]{1,19}\s*$' OR NOT (btrim(v_scope)::numeric BETWEEN {{ -2**31 if e.column(e.sync.scope).type == 'int' else -2**63 }} AND {{ 2**31 - 1 if e.column(e.sync.scope).type == 'int' else 2**63 - 1 }}) THEN
            v_errors := v_errors || format('"Scope" %s is not a valid {{ e.sync.scope }} ({{ e.column(e.sync.scope).type }}).', quote_literal(v_scope));
        ELSE
            v_scope := btrim(v_scope)::numeric::text;
        END IF;
{%- endfor %}
{%- for e in sync_entities if e.column(e.sync.scope).type == 'string' %}
    ELSIF v_entity = '{{ e.entity }}' AND v_scope <> btrim(v_scope) THEN
        -- SQL Server's = ignores trailing spaces; PostgreSQL's does not: neither may hold any.
        v_errors := v_errors || '"Scope" must not begin or end with spaces.'::text;
{%- endfor %}
    END IF;
    IF v_type IS NOT NULL AND v_type NOT IN ('Full', 'Incremental') THEN
        v_errors := v_errors || format('"SyncType" %s is not valid; allowed values: Full, Incremental, or NULL (Full until the scope completed one).',
                                       quote_literal(v_type));
    END IF;
    IF "Resume" IS NULL THEN
        v_errors := v_errors || '"Resume" must be true or false.'::text;
    END IF;
{{ raise_collected('22023') }}

    ------------------------------------------------------------------- the scope's lock
    {{ take_scope_lock() }}

    SELECT st.* INTO v_state FROM {{ job('SyncScopeState') }} AS st
    WHERE st."EntityName" = v_entity AND st."Scope" = v_scope;
    SELECT s.* INTO v_live FROM {{ job('SyncSession') }} AS s
    WHERE s."EntityName" = v_entity AND s."Scope" = v_scope AND s."Status" IN ('Open', 'Promoting', 'Failed')
    FOR UPDATE;

    ------------------------------------------------------------------- resume
    IF "Resume" AND v_live."SessionId" IS NOT NULL AND (v_type IS NULL OR v_type = v_live."SyncType") THEN
        UPDATE {{ job('SyncSession') }} AS s SET "Status" = 'Open', "EndedAt" = NULL
        WHERE s."SessionId" = v_live."SessionId";
        "Scope" := v_scope;
        "SessionId" := v_live."SessionId";
        "SinceDate" := v_live."SinceDate";
        "SyncType" := v_live."SyncType";
        "Resumed" := true;
        "LastPageNumber" := v_live."LastPageNumber";
        SELECT min(n) INTO "FirstPageNumber"
        FROM generate_series(1, coalesce((SELECT max(p."PageNumber") FROM {{ job('SyncSessionPage') }} AS p
                                          WHERE p."SessionId" = v_live."SessionId"), 0) + 1) AS n
        WHERE NOT EXISTS (SELECT 1 FROM {{ job('SyncSessionPage') }} AS p
                          WHERE p."SessionId" = v_live."SessionId" AND p."PageNumber" = n);
        RETURN;
    END IF;

    ------------------------------------------------------------------- a new session
    IF v_type IS NULL OR v_state."IsInitialFullSyncDone" IS NOT TRUE THEN
        v_type := CASE WHEN v_state."IsInitialFullSyncDone" IS TRUE THEN 'Incremental' ELSE 'Full' END;
    END IF;
    {{ new_uuid7('v_session') }}
{%- for e in sync_entities %}
    {{ "IF" if loop.first else "ELSIF" }} v_entity = '{{ e.entity }}' THEN
        IF v_type = 'Full' THEN
            v_since := v_now - make_interval(months => {{ e.sync.full_since_months }}) - make_interval(days => {{ e.sync.full_since_days }});
        ELSE
            v_since := v_state."LastSyncPoint" - make_interval(secs => {{ e.sync.buffer_seconds }});
        END IF;
        -- The scope's staging: what its earlier sessions staged (a full sync starts from nothing;
        -- an incremental one never promotes what a superseded session left).
        DELETE FROM {{ e.table_object(engine_info, e.staging) }} AS st
        WHERE st."SessionId" IN (SELECT s."SessionId" FROM {{ job('SyncSession') }} AS s
                                 WHERE s."EntityName" = v_entity AND s."Scope" = v_scope);
{%- endfor %}
{%- if sync_entities %}
    END IF;
{%- endif %}
    UPDATE {{ job('SyncSession') }} AS s
    SET "Status" = 'Superseded', "SupersededBy" = v_session, "EndedAt" = v_now
    WHERE s."EntityName" = v_entity AND s."Scope" = v_scope AND s."Status" IN ('Open', 'Promoting', 'Failed');
    INSERT INTO {{ job('SyncSession') }} ("SessionId", "EntityName", "Scope", "SyncType", "SinceDate", "Status", "StartedAt")
    VALUES (v_session, v_entity, v_scope, v_type, v_since, 'Open', v_now);

    "Scope" := v_scope;
    "SessionId" := v_session;
    "SinceDate" := v_since;
    "SyncType" := v_type;
    "FirstPageNumber" := 1;
    "LastPageNumber" := NULL;
    "Resumed" := false;
END;
$procedure$
