-- Flat, one step, keyset batches: up to @BatchSize rows changed in [@WindowStart, @WindowEnd), from
-- the previous batch's last ModifiedOn (@AfterModifiedOn) on, whose target copy is missing or older.
-- Newest ModifiedOn wins; an older version never overwrites a newer one.
-- No MERGE: UPDATE WITH (UPDLOCK, SERIALIZABLE), then INSERT WHERE NOT EXISTS, in one transaction.
-- {SourceRow} adds the source row s to the metadata row m: a join on the key, or the metadata row
-- itself when the metadata table is the source table.
-- First load (@TargetWasEmpty = 1: the target held no row when the run opened the table): every
-- target row was written by this step's earlier batches, at or before their last ModifiedOn, the
-- position, which is @AfterModifiedOn + 1 ms (kept to the millisecond, so a row's own value is at
-- most 0.5 ms past it). The batch is read in two parts, in ModifiedOn order: the rows before
-- @AfterModifiedOn + 2 ms (none on the first batch), looked up and written as always; then the
-- rest up to @BatchSize (#dbtools_Rest), neither looked up nor guarded: inserted as they are. A
-- copied row whose ModifiedOn moved past the position since (a late write) makes that insert hit
-- the target's unique key; the engine then runs the batch again with @TargetWasEmpty = 0.
-- Both reads need OPTION (RECOMPILE): it folds the flag and the positions into one seek range.
-- Revision 0010: the business-unit table is probed with EXISTS (duplicate ids there no longer
-- duplicate a row), and the batch reports rows inserted, updated, deleted (none) and moved (none).
SELECT TOP (@BatchSize) {SourceColumnList}, CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.{MetadataModifiedOnCol}), '+00:00')) AS [dbtools$ModifiedOn]
INTO #dbtools_Batch
FROM {MetadataObject} AS m
{SourceRow}
WHERE m.{MetadataModifiedOnCol} < @WindowEnd
  AND EXISTS (SELECT 1 FROM {BusinessUnitObject} AS bu WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol})
  -- One lower bound, so that the index seek starts at the keyset position, not the window start.
  AND m.{MetadataModifiedOnCol} >= CASE WHEN @AfterModifiedOn > @WindowStart THEN @AfterModifiedOn ELSE @WindowStart END
  -- First load: only the rows before the position + 1 ms here (a NULL @AfterModifiedOn: none).
  AND (@TargetWasEmpty = 0 OR m.{MetadataModifiedOnCol} < DATEADD(MILLISECOND, 2, @AfterModifiedOn))
  AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
  AND (@ExcludedStreamId IS NULL OR CONVERT(nvarchar(64), s.{MetadataIdColumn}) <> CONVERT(nvarchar(64), @ExcludedStreamId))
  AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t  -- a target copy without a ModifiedOn is never overwritten
                  WHERE t.{MetadataIdColumn} = s.{MetadataIdColumn}
                    AND (t.{MetadataModifiedOnCol} >= m.{MetadataModifiedOnCol} OR t.{MetadataModifiedOnCol} IS NULL))
ORDER BY m.{MetadataModifiedOnCol} -- ties need no order: the next batch starts at >= this batch's last ModifiedOn
OPTION (RECOMPILE); -- the keyset position, the first-load flag and the optional filters are new values every batch
SET @RowsProcessed = @@ROWCOUNT;
IF @TargetWasEmpty = 1
    -- Its own table, not an INSERT into #dbtools_Batch: SELECT INTO keeps a source rowversion
    -- column's type, and a rowversion column takes no inserted value.
    SELECT TOP (@BatchSize - @RowsProcessed) {SourceColumnList}, CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.{MetadataModifiedOnCol}), '+00:00')) AS [dbtools$ModifiedOn]
    INTO #dbtools_Rest
    FROM {MetadataObject} AS m
    {SourceRow}
    WHERE m.{MetadataModifiedOnCol} < @WindowEnd
      AND EXISTS (SELECT 1 FROM {BusinessUnitObject} AS bu WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol})
      AND m.{MetadataModifiedOnCol} >= CASE WHEN @AfterModifiedOn IS NULL OR @WindowStart > DATEADD(MILLISECOND, 2, @AfterModifiedOn)
                                            THEN @WindowStart ELSE DATEADD(MILLISECOND, 2, @AfterModifiedOn) END
      AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
      AND (@ExcludedStreamId IS NULL OR CONVERT(nvarchar(64), s.{MetadataIdColumn}) <> CONVERT(nvarchar(64), @ExcludedStreamId))
    ORDER BY m.{MetadataModifiedOnCol}
    OPTION (RECOMPILE);
UPDATE t
SET {UpdateList}
FROM {TargetObject} AS t WITH (UPDLOCK, SERIALIZABLE)
JOIN #dbtools_Batch AS b ON b.{MetadataIdColumn} = t.{MetadataIdColumn}
WHERE t.{MetadataModifiedOnCol} < b.{MetadataModifiedOnCol};
SET @RowsUpdated = @@ROWCOUNT;
INSERT INTO {TargetObject} ({ColumnList})
SELECT {ColumnList} FROM #dbtools_Batch AS b
WHERE NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WITH (UPDLOCK, SERIALIZABLE)
                  WHERE t.{MetadataIdColumn} = b.{MetadataIdColumn});
SET @RowsInserted = @@ROWCOUNT;
SET @RowsDeleted = 0;
SET @RowsMoved = 0;
SELECT @RowsProcessed = COUNT(*), @LastModifiedOn = MAX(b.[dbtools$ModifiedOn]) FROM #dbtools_Batch AS b;
DROP TABLE #dbtools_Batch;
IF @TargetWasEmpty = 1
BEGIN
    INSERT INTO {TargetObject} ({ColumnList})
    SELECT {ColumnList} FROM #dbtools_Rest AS r;
    SET @RowsInserted += @@ROWCOUNT;
    -- The rest comes after the first part in ModifiedOn order: its last row is the batch's last.
    SELECT @RowsProcessed = @RowsProcessed + COUNT(*), @LastModifiedOn = ISNULL(MAX(r.[dbtools$ModifiedOn]), @LastModifiedOn)
    FROM #dbtools_Rest AS r;
    DROP TABLE #dbtools_Rest;
END;
