{#- Fragments shared by the PostgreSQL sync procedures (usp_Sync_*). `sync_entities` lists the
    entity specs that have [sync] (dbtools.upsert.specs.EntitySpec). -#}

{#- The advisory-lock key of one entity's scope: at most one session works a scope at a time. -#}
{%- macro scope_lock_key(entity, scope) -%}
hashtextextended('dbtools.Sync:' || {{ entity }} || ':' || {{ scope }}, 0)
{%- endmacro -%}

{#- Take the scope's session-level lock unless this session holds it already, or refuse naming
    the session that holds it. Needs v_entity, v_scope, v_holder (uuid), v_holder_status (text),
    v_holder_pid (int). -#}
{%- macro take_scope_lock() -%}
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks AS l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid = pg_catalog.pg_backend_pid()
          AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database())
          AND l.classid = (({{ scope_lock_key('v_entity', 'v_scope') }} >> 32) & 4294967295)::oid
          AND l.objid = ({{ scope_lock_key('v_entity', 'v_scope') }} & 4294967295)::oid
    ) AND NOT pg_catalog.pg_try_advisory_lock({{ scope_lock_key('v_entity', 'v_scope') }}) THEN
        SELECT s."SessionId", s."Status" INTO v_holder, v_holder_status
        FROM {{ job('SyncSession') }} AS s
        WHERE s."EntityName" = v_entity AND s."Scope" = v_scope AND s."Status" IN ('Open', 'Promoting', 'Failed');
        SELECT l.pid INTO v_holder_pid
        FROM pg_catalog.pg_locks AS l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database())
          AND l.classid = (({{ scope_lock_key('v_entity', 'v_scope') }} >> 32) & 4294967295)::oid
          AND l.objid = ({{ scope_lock_key('v_entity', 'v_scope') }} & 4294967295)::oid
        LIMIT 1;
        RAISE EXCEPTION USING ERRCODE = '55P03',
            MESSAGE = format('A sync of %s scope %s is in progress in another session: session %s (%s) holds the scope '
                             '(server process %s); wait for it to end.', v_entity, v_scope,
                             coalesce(v_holder::text, 'unknown'), coalesce(v_holder_status, 'starting'),
                             coalesce(v_holder_pid::text, 'unknown'));
    END IF;
{%- endmacro -%}


{#- Load the session named by v_session into v_row, or refuse; then take its scope's lock and read
    it again under the lock, FOR UPDATE (a Begin that superseded it may have committed meanwhile).
    Needs what take_scope_lock needs. -#}
{%- macro lock_session() -%}
SELECT s.* INTO v_row FROM {{ job('SyncSession') }} AS s WHERE s."SessionId" = v_session;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('"SessionId" %s is not a sync session.', v_session);
    END IF;
    v_entity := v_row."EntityName";
    v_scope := v_row."Scope";
    {{ take_scope_lock() }}
    SELECT s.* INTO v_row FROM {{ job('SyncSession') }} AS s WHERE s."SessionId" = v_session FOR UPDATE;
{%- endmacro -%}

{#- The promote's outputs from a SyncSession row (v_row). -#}
{%- macro session_counts(replayed) -%}
"Status" := v_row."Status";
    "RowsReceived" := v_row."RowsReceived";
    "RowsInserted" := v_row."RowsInserted";
    "RowsUpdated" := v_row."RowsUpdated";
    "RowsSkipped" := v_row."RowsSkipped";
    "RowsRejected" := v_row."RowsRejected";
    "Replayed" := {{ replayed }};
{%- endmacro -%}
