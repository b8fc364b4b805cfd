-- Step 3, Children, keyset batches: up to @BatchSize in-window children not yet in the target whose
-- parent is in the target (a child never lands without its parent), from the previous batch's last
-- ModifiedOn (@AfterModifiedOn) on. Step 2 has already back-filled every ancestor of the window's
-- children, so the order of this step is free and follows the metadata index.
CREATE TABLE #dbtools_Batch (stream_id uniqueidentifier NOT NULL PRIMARY KEY, ModifiedOn datetime2(7) NOT NULL);
INSERT INTO #dbtools_Batch (stream_id, ModifiedOn)
SELECT TOP (@BatchSize) s.stream_id, CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.{MetadataModifiedOnCol}), '+00:00'))
FROM {SourceObject} AS s
JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.stream_id
JOIN {BusinessUnitObject} AS bu ON bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol}
WHERE s.parent_path_locator IS NOT NULL
  AND m.{MetadataModifiedOnCol} < @WindowEnd
  -- One lower bound, so that the index seek starts at the keyset position, not the window start.
  AND m.{MetadataModifiedOnCol} >= CASE WHEN @AfterModifiedOn > @WindowStart THEN @AfterModifiedOn ELSE @WindowStart END
  AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
  AND (@ExcludedStreamId IS NULL OR s.stream_id <> @ExcludedStreamId)
  AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id)
  AND EXISTS (SELECT 1 FROM {TargetObject} AS p WHERE p.path_locator = s.parent_path_locator)
ORDER BY m.{MetadataModifiedOnCol} -- ties need no order: the next batch starts at >= this batch's last ModifiedOn
OPTION (RECOMPILE); -- the keyset position and the optional filters are new values every batch
INSERT INTO {TargetObject} (stream_id, name, file_stream, path_locator, parent_path_locator, is_directory, creation_time, last_write_time)
SELECT s.stream_id, s.name, s.file_stream, s.path_locator, s.parent_path_locator, s.is_directory, s.creation_time, s.last_write_time
FROM {SourceObject} AS s
JOIN #dbtools_Batch AS b ON b.stream_id = s.stream_id
WHERE NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id);
-- The batch's own size, not @@ROWCOUNT: a source row deleted since it was picked must not end the step.
SELECT @RowsProcessed = COUNT(*), @LastModifiedOn = MAX(b.ModifiedOn) FROM #dbtools_Batch AS b;
DROP TABLE #dbtools_Batch;
