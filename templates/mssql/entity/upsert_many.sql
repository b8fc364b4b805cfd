{%- from "common/header.sql" import header -%}
{%- from "mssql/uuid7.sql" import new_uuid7 -%}
{%- from "mssql/entity/macros.sql" import count_outputs, batch_declarations, reset_counts, winners_table, begin_transaction, commit_transaction, catch_block, logged_counts, apply_batch with context -%}
CREATE OR ALTER PROCEDURE {{ job(e.upsert_many) }}
    @Rows {{ job(e.row_type) }} READONLY,
    @BatchId uniqueidentifier = NULL OUTPUT,
    {{ count_outputs() }}
AS
{{ header(e.upsert_many,
          'Upsert a batch of ' ~ e.entity ~ ' rows passed as a table-valued parameter of type
    ' ~ e.row_type ~ ' (rendered from ' ~ e.source ~ '). @BatchId (optional, OUTPUT) names the
    batch: a batch id applied before returns its logged counts and changes nothing. Returns
    @RowsReceived = @RowsInserted + @RowsUpdated + @RowsSkipped + @RowsConflicted + @RowsRejected;
    rejected rows are kept in ' ~ e.rejects ~ ' with their reason. Runs in the transaction of
    the caller when there is one (and then commits nothing), else in its own.', origin) }}
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    {{ batch_declarations() }}
    DECLARE @Uuid7Random binary(10);
    DECLARE @Uuid7Ms bigint;

    BEGIN TRY
        SET @Version = N'{{ package_version }}';
        SET @VersionDate = CONVERT(date, '{{ version_date }}', 23);

        IF @Help = 1
        BEGIN
            SET @HelpText = N'{{ e.upsert_many }}: upsert {{ e.entity }} rows, newest {{ e.ordering }} wins per {{ e.keys | join(', ') }}.' + NCHAR(10)
                + N'  @Rows      {{ e.row_type }} (RowNumber unique, ExpectedRowVersion optional)' + NCHAR(10)
                + N'  @BatchId   optional (OUTPUT); a batch applied before returns its logged counts' + NCHAR(10)
                + N'Returns @RowsReceived, @RowsInserted, @RowsUpdated, @RowsSkipped, @RowsConflicted, @RowsRejected, @Replayed.';
            PRINT @HelpText;
            RETURN;
        END;

        {{ reset_counts() }}
        IF @BatchId IS NULL
        BEGIN
            {{ new_uuid7('@BatchId') | indent(4) }}
        END;
        {{ winners_table(e) }}

        {{ begin_transaction() }}
        {{ logged_counts() }}
        IF @Replayed = 0
        BEGIN
            {{ apply_batch(e, '@Rows') }}
        END;
        {{ commit_transaction() }}
    END TRY
    {{ catch_block() }}
END;
