{%- from "common/header.sql" import header -%}
CREATE OR ALTER PROCEDURE {{ job('usp_BlobDelta_RunOperator') }}
    @Mode nvarchar(20) = NULL,
    @TableName nvarchar(400) = NULL,
    @BatchSize int = 500,
    @MaxDOP int = 0, -- honoured on PostgreSQL (max_parallel_workers_per_gather); validated and recorded here
    @BusinessUnitId uniqueidentifier = NULL,
    @SyncType nvarchar(20) = N'Incremental',
    @Execute bit = 1,
    @ResumeRunId uniqueidentifier = NULL,
    @Help bit = 0,
    @Debug tinyint = 0,
    @Wait bit = 0,
    @RunId uniqueidentifier = NULL OUTPUT,
    @Status nvarchar(20) = NULL OUTPUT,
    @Plan nvarchar(max) = NULL OUTPUT,
    @Version nvarchar(20) = NULL OUTPUT,
    @VersionDate date = NULL OUTPUT
AS
{{ header('usp_BlobDelta_RunOperator',
          'Operator entry point for delta loads: @Mode AllTables or SingleTable (with @TableName),
    an optional @BusinessUnitId, @SyncType Incremental (default) or Full, @Execute = 0 for a
    plan, @ResumeRunId to continue an interrupted run, @RunId (in) to name the new run, @Wait = 1
    to wait for another session that still executes that run, @Help = 1 for usage. Returns one row (RunId, Status) and the OUTPUT parameters @RunId,
    @Status, @Plan, @Version, @VersionDate.
    Call it outside a transaction (@@TRANCOUNT = 0): the engine commits every batch.') }}
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    SET IMPLICIT_TRANSACTIONS OFF;

    DECLARE @RunRunId uniqueidentifier;
    DECLARE @RunStatus nvarchar(20);
    DECLARE @RunPlan nvarchar(max);
    DECLARE @HelpText nvarchar(max);

    BEGIN TRY
        SET @Version = N'{{ package_version }}';
        SET @VersionDate = CONVERT(date, '{{ version_date }}', 23);

        IF @Help = 1
        BEGIN
            SET @HelpText = N'usp_BlobDelta_RunOperator: run delta loads.' + NCHAR(10)
                + N'  @Mode           AllTables | SingleTable (required)' + NCHAR(10)
                + N'  @TableName      configured table for SingleTable, e.g. Gwent_LA_FileTable.dbo.ReferralAttachment' + NCHAR(10)
                + N'  @BatchSize      rows per batch, 1 or more (default 500)' + NCHAR(10)
                + N'  @MaxDOP         0 or more; recorded with the run (SQL Server has no per-session MAXDOP; PostgreSQL caps parallel workers)' + NCHAR(10)
                + N'  @BusinessUnitId limit to one business unit (default: all)' + NCHAR(10)
                + N'  @SyncType       Incremental (default) | Full' + NCHAR(10)
                + N'  @Execute        1 (default) | 0 = plan only, changes nothing' + NCHAR(10)
                + N'  @ResumeRunId    continue an interrupted run with its own parameters and windows' + NCHAR(10)
                + N'  @RunId          (in, optional) the RunId of the new run, so that a retried call is idempotent' + NCHAR(10)
                + N'  @Debug          0 (default) | 1 = progress messages | 2 = also the filled step scripts' + NCHAR(10)
                + N'  @Wait           0 (default) = fail (error 50012) when another session still executes the run | 1 = wait for it' + NCHAR(10)
                + N'Returns RunId, Status (Succeeded | Failed | Planned), Plan (JSON when planning: per table its window,' + NCHAR(10)
                + N'whether a held lease would skip it, and per step the rows a run would insert, update and delete).';
            PRINT @HelpText;
            RETURN;
        END;

        SET @RunRunId = @RunId; -- in: an optional caller-chosen RunId for the new run
        EXEC {{ job('usp_BlobDelta_Run') }}
            @Mode = @Mode,
            @TableName = @TableName,
            @BatchSize = @BatchSize,
            @MaxDOP = @MaxDOP,
            @BusinessUnitId = @BusinessUnitId,
            @SyncType = @SyncType,
            @Execute = @Execute,
            @ResumeRunId = @ResumeRunId,
            @Debug = @Debug,
            @Wait = @Wait,
            @RunId = @RunRunId OUTPUT,
            @Status = @RunStatus OUTPUT,
            @Plan = @RunPlan OUTPUT;

        SET @RunId = @RunRunId;
        SET @Status = @RunStatus;
        SET @Plan = @RunPlan;

        SELECT @RunId AS RunId, @Status AS Status;
    END TRY
    BEGIN CATCH
        IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
        THROW;
    END CATCH;
END;
