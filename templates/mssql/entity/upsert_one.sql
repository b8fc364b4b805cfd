{%- from "common/header.sql" import header -%}
{%- from "mssql/uuid7.sql" import new_uuid7 -%}
{%- from "mssql/entity/macros.sql" import ref, as_target, reject_reason, column_list, key_match, begin_transaction, commit_transaction, catch_block with context -%}
{#- The key in words: its column, or (a, b) for a composite key. -#}
{%- set key_words = e.keys[0] if e.keys | length == 1 else "(" ~ e.keys | join(", ") ~ ")" -%}
{#- A value as INTERSECT compares it: strings binary and with their length (trailing spaces count). -#}
{%- macro same_value(expr, c) -%}
{%- if c.type in ("string", "json") -%}{{ expr }} COLLATE Latin1_General_100_BIN2, DATALENGTH({{ expr }}){%- else -%}{{ expr }}{%- endif -%}
{%- endmacro -%}
CREATE OR ALTER PROCEDURE {{ job(e.upsert_one) }}
{%- for c in e.columns %}
    @{{ c.name }} {{ c.loose_type(engine_info) }} = NULL,
{%- endfor %}
    @ExpectedRowVersion binary(8) = NULL,
    @BatchId uniqueidentifier = NULL,
    @RowNumber bigint = 1,
    @Outcome nvarchar(10) = NULL OUTPUT,
    @Reason nvarchar(400) = NULL OUTPUT,
    @RowVersion binary(8) = NULL OUTPUT,
    @Help bit = 0,
    @Version nvarchar(20) = NULL OUTPUT,
    @VersionDate date = NULL OUTPUT
AS
{{ header(e.upsert_one,
          'Upsert one ' ~ e.entity ~ ' (rendered from ' ~ e.source ~ '): inserted when ' ~ key_words ~ ' is new,
    updated when ' ~ e.ordering ~ ' is newer than the stored row, skipped otherwise; conflicted when
    @ExpectedRowVersion is given and differs from the stored version; rejected (kept in
    ' ~ e.rejects ~ ' under @BatchId and @RowNumber, with the reason) when invalid. Returns
    @Outcome, @Reason and the stored @RowVersion. Runs in the transaction of the caller when
    there is one (and then commits nothing), else in its own.', origin) }}
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    DECLARE @StartedTransaction bit = 0;
    DECLARE @RejectReason nvarchar(400);
    DECLARE @HelpText nvarchar(max);
    DECLARE @Uuid7Random binary(10);
    DECLARE @Uuid7Ms bigint;

    BEGIN TRY
        SET @Version = N'{{ package_version }}';
        SET @VersionDate = CONVERT(date, '{{ version_date }}', 23);

        IF @Help = 1
        BEGIN
            SET @HelpText = N'{{ e.upsert_one }}: upsert one {{ e.entity }}, newest {{ e.ordering }} wins per {{ e.keys | join(', ') }}.' + NCHAR(10)
{%- for c in e.columns %}
                + N'  @{{ c.name }}  {{ c.loose_type(engine_info) }}, {{ "required" if c.required else "optional" }}
                {%- if c.type == "string" %}, at most {{ c.length }} characters{% endif %}
                {%- if c.type == "json" %}, a JSON object or array{% endif %}
                {%- if c.references %}, a value of {{ c.references }}{% endif %}' + NCHAR(10)
{%- endfor %}
                + N'  @ExpectedRowVersion  optional: update only a row stored with this version' + NCHAR(10)
                + N'  @BatchId, @RowNumber optional: where a rejected row is filed' + NCHAR(10)
                + N'Returns @Outcome (Inserted | Updated | Skipped | Conflicted | Rejected), @Reason, @RowVersion.';
            PRINT @HelpText;
            RETURN;
        END;

        -- OUTPUT parameters are input too: clear what a caller may have passed in.
        SET @Outcome = NULL;
        SET @Reason = NULL;
        SET @RowVersion = NULL;

        SET @RejectReason = {{ reject_reason(e, 'v') }};
        IF @RejectReason IS NOT NULL
        BEGIN
            IF @BatchId IS NULL
            BEGIN
                {{ new_uuid7('@BatchId') | indent(8) }}
            END;
            -- A replay (the same reject of the same row version under the same @BatchId and
            -- @RowNumber, e.g. a call retried after an unknown commit outcome) reports the row
            -- rejected again and files nothing more. Any other reject is filed, also under a
            -- @BatchId and @RowNumber used before. The check seeks the (BatchId, RowNumber) index
            -- and reads committed rows without a range lock, whatever the caller's isolation level,
            -- so it never waits on a gap. With READ_COMMITTED_SNAPSHOT off it waits for a
            -- concurrent attempt's uncommitted reject of the same (BatchId, RowNumber); with it on
            -- (as on PostgreSQL) that attempt's reject may be filed twice. Strings compare binary,
            -- as on PostgreSQL.
            INSERT INTO {{ tbl(e.rejects) }} ([BatchId], [RowNumber], [Reason], {{ column_list(e) }}, [ExpectedRowVersion])
            SELECT @BatchId, ISNULL(@RowNumber, 1), @RejectReason, {% for c in e.columns %}@{{ c.name }}{{ ", " if not loop.last }}{% endfor %}, @ExpectedRowVersion
            WHERE NOT EXISTS (SELECT 1 FROM {{ tbl(e.rejects) }} AS r WITH (FORCESEEK, READCOMMITTED)
                              WHERE r.[BatchId] = @BatchId AND r.[RowNumber] = ISNULL(@RowNumber, 1)
                                AND r.[Reason] COLLATE Latin1_General_100_BIN2 = @RejectReason
                                AND DATALENGTH(r.[Reason]) = DATALENGTH(@RejectReason)
                                AND EXISTS (SELECT {% for c in e.key_columns + (e.ordering_column,) %}{{ same_value('r.' ~ q(c.name), c) }}, {% endfor %}r.[ExpectedRowVersion]
                                            INTERSECT
                                            SELECT {% for c in e.key_columns + (e.ordering_column,) %}{{ same_value('@' ~ c.name, c) }}, {% endfor %}@ExpectedRowVersion));
            SET @Outcome = N'Rejected';
            SET @Reason = @RejectReason;
            RETURN;
        END;

        {{ begin_transaction() }}
        -- Newer than the stored row (and stored with @ExpectedRowVersion, when given): update. The
        -- stored row stays locked to the end of the transaction, so the statements below see it as
        -- it was compared. The row version ({{ e.version }}, rowversion) changes with the update.
        UPDATE t
        SET
{%- for c in e.columns if c.name not in e.keys %}
            {{ q(c.name) }} = {{ as_target(c, '@' ~ c.name) }}{{ "," if not loop.last }}
{%- endfor %}
        FROM {{ tbl(e.table) }} AS t WITH (UPDLOCK, SERIALIZABLE)
        WHERE {{ key_match(e, 't', 'v') }}
          AND t.{{ q(e.ordering) }} < @{{ e.ordering }}
          AND (@ExpectedRowVersion IS NULL OR t.{{ q(e.version) }} = @ExpectedRowVersion);
        IF @@ROWCOUNT = 1
            SET @Outcome = N'Updated';
        ELSE
        BEGIN
            -- A new key: SERIALIZABLE locks the gap where it goes, so no other session inserts
            -- it first (UPDATE, then INSERT ... WHERE NOT EXISTS, in one transaction).
            INSERT INTO {{ tbl(e.table) }} ({{ column_list(e) }})
            SELECT {% for c in e.columns %}{{ as_target(c, '@' ~ c.name) }}{{ ", " if not loop.last }}{% endfor %}
            WHERE @ExpectedRowVersion IS NULL
              AND NOT EXISTS (SELECT 1 FROM {{ tbl(e.table) }} AS x WITH (UPDLOCK, SERIALIZABLE)
                              WHERE {{ key_match(e, 'x', 'v') }});
            IF @@ROWCOUNT = 1
                SET @Outcome = N'Inserted';
        END;

        -- The stored row (or the gap of an absent key), locked to the end of the transaction.
        SELECT @RowVersion = t.{{ q(e.version) }}
        FROM {{ tbl(e.table) }} AS t WITH (UPDLOCK, SERIALIZABLE)
        WHERE {{ key_match(e, 't', 'v') }};
        IF @Outcome IS NULL
            SET @Outcome = CASE
                WHEN @RowVersion IS NULL THEN N'Conflicted' -- no stored row to match @ExpectedRowVersion
                WHEN @ExpectedRowVersion IS NOT NULL AND @RowVersion <> @ExpectedRowVersion THEN N'Conflicted'
                ELSE N'Skipped' -- not newer than the stored row
            END;
        {{ commit_transaction() }}
    END TRY
    {{ catch_block() }}
END;
