-- Flat, one step, keyset batches: up to @BatchSize rows changed in [@WindowStart, @WindowEnd), from
-- the previous batch's last ModifiedOn (@AfterModifiedOn) on, whose target copy is missing or older.
-- Newest ModifiedOn wins; an older version never overwrites a newer one.
-- No MERGE: UPDATE WITH (UPDLOCK, SERIALIZABLE), then INSERT WHERE NOT EXISTS, in one transaction.
SELECT TOP (@BatchSize) {SourceColumnList}, CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.{MetadataModifiedOnCol}), '+00:00')) AS [dbtools$ModifiedOn]
INTO #dbtools_Batch
FROM {SourceObject} AS s
JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.{MetadataIdColumn}
JOIN {BusinessUnitObject} AS bu ON bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol}
WHERE m.{MetadataModifiedOnCol} < @WindowEnd
  -- One lower bound, so that the index seek starts at the keyset position, not the window start.
  AND m.{MetadataModifiedOnCol} >= CASE WHEN @AfterModifiedOn > @WindowStart THEN @AfterModifiedOn ELSE @WindowStart END
  AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
  AND (@ExcludedStreamId IS NULL OR CONVERT(nvarchar(64), s.{MetadataIdColumn}) <> CONVERT(nvarchar(64), @ExcludedStreamId))
  AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t  -- a target copy without a ModifiedOn is never overwritten
                  WHERE t.{MetadataIdColumn} = s.{MetadataIdColumn}
                    AND (t.{MetadataModifiedOnCol} >= m.{MetadataModifiedOnCol} OR t.{MetadataModifiedOnCol} IS NULL))
ORDER BY m.{MetadataModifiedOnCol} -- ties need no order: the next batch starts at >= this batch's last ModifiedOn
OPTION (RECOMPILE); -- the keyset position and the optional filters are new values every batch
UPDATE t
SET {UpdateList}
FROM {TargetObject} AS t WITH (UPDLOCK, SERIALIZABLE)
JOIN #dbtools_Batch AS b ON b.{MetadataIdColumn} = t.{MetadataIdColumn}
WHERE t.{MetadataModifiedOnCol} < b.{MetadataModifiedOnCol};
INSERT INTO {TargetObject} ({ColumnList})
SELECT {ColumnList} FROM #dbtools_Batch AS b
WHERE NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WITH (UPDLOCK, SERIALIZABLE)
                  WHERE t.{MetadataIdColumn} = b.{MetadataIdColumn});
SELECT @RowsProcessed = COUNT(*), @LastModifiedOn = MAX(b.[dbtools$ModifiedOn]) FROM #dbtools_Batch AS b;
DROP TABLE #dbtools_Batch;
