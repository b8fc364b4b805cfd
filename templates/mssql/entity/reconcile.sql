{%- from "common/header.sql" import header -%}
{%- from "mssql/entity/macros.sql" import count_outputs, batch_declarations, reset_counts, winners_table, begin_transaction, commit_transaction, catch_block, logged_counts, apply_batch with context -%}
CREATE OR ALTER PROCEDURE {{ job(e.reconcile) }}
    @BatchId uniqueidentifier = NULL,
    {{ count_outputs() }}
AS
{{ header(e.reconcile,
          'Apply the ' ~ e.entity ~ ' rows staged in ' ~ e.staging ~ ' under @BatchId, then remove
    them (rendered from ' ~ e.source ~ '). A batch id applied before returns its logged counts and
    changes nothing. Returns @RowsReceived = @RowsInserted + @RowsUpdated + @RowsSkipped +
    @RowsConflicted + @RowsRejected; rejected rows are kept in ' ~ e.rejects ~ ' with their reason.
    Runs in the transaction of the caller when there is one (the bulk writer stages and reconciles
    in one transaction and commits it), else in its own.', origin) }}
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    {{ batch_declarations() }}

    BEGIN TRY
        SET @Version = N'{{ package_version }}';
        SET @VersionDate = CONVERT(date, '{{ version_date }}', 23);

        IF @Help = 1
        BEGIN
            SET @HelpText = N'{{ e.reconcile }}: apply the {{ e.entity }} rows staged in {{ e.staging }}.' + NCHAR(10)
                + N'  @BatchId   required; the staged rows of this batch (RowNumber unique)' + NCHAR(10)
                + N'Returns @RowsReceived, @RowsInserted, @RowsUpdated, @RowsSkipped, @RowsConflicted, @RowsRejected, @Replayed.';
            PRINT @HelpText;
            RETURN;
        END;

        {{ reset_counts() }}
        IF @BatchId IS NULL
        BEGIN
            THROW 50010, N'@BatchId is required: the batch id the rows were staged under; nothing was changed.', 1;
        END;
        {{ winners_table(e) }}

        {{ begin_transaction() }}
        {{ logged_counts() }}
        IF @Replayed = 0
        BEGIN
            {{ apply_batch(e, tbl(e.staging), 's.[BatchId] = @BatchId') }}
        END;

        -- Also after a replay: a retried writer staged the batch a second time.
        DELETE st
        FROM {{ tbl(e.staging) }} AS st
        WHERE st.[BatchId] = @BatchId;
        {{ commit_transaction() }}
    END TRY
    {{ catch_block() }}
END;
