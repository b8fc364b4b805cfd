-- Step 1, Roots: up to @BatchSize root blobs (no parent) changed in [@WindowStart, @WindowEnd),
-- in BU scope, not yet in the target.
INSERT INTO {TargetObject} (stream_id, name, file_stream, path_locator, parent_path_locator, is_directory, creation_time, last_write_time)
SELECT TOP (@BatchSize)
    s.stream_id, s.name, s.file_stream, s.path_locator, s.parent_path_locator, s.is_directory, s.creation_time, s.last_write_time
FROM {SourceObject} AS s
JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.stream_id
JOIN {BusinessUnitObject} AS bu ON bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol}
WHERE s.parent_path_locator IS NULL
  AND m.{MetadataModifiedOnCol} >= @WindowStart AND m.{MetadataModifiedOnCol} < @WindowEnd
  AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
  AND (@ExcludedStreamId IS NULL OR s.stream_id <> @ExcludedStreamId)
  AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id)
ORDER BY s.stream_id;
SET @RowsProcessed = @@ROWCOUNT;
