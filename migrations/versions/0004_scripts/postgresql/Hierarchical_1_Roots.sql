-- Step 1, Roots, keyset batches: up to $1 root blobs (no parent) changed in [$3, $4), from the
-- previous batch's last ModifiedOn ($8) on, in BU scope, not yet in the target.
WITH batch AS (
    SELECT s.stream_id, m.{MetadataModifiedOnCol} AS modified_on
    FROM {SourceObject} AS s
    JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.stream_id
    JOIN {BusinessUnitObject} AS bu ON bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol}
    WHERE s.parent_path_locator IS NULL
      AND m.{MetadataModifiedOnCol} >= greatest($3, $8) AND m.{MetadataModifiedOnCol} < $4  -- greatest() skips a NULL $8
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND ($2 IS NULL OR s.stream_id <> $2)
      AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id)
    ORDER BY m.{MetadataModifiedOnCol}  -- the index order; ties need no order (the next batch starts at >=)
    LIMIT $1
), inserted AS (
    INSERT INTO {TargetObject} (stream_id, name, file_stream, path_locator, parent_path_locator, is_directory, creation_time, last_write_time)
    SELECT s.stream_id, s.name, s.file_stream, s.path_locator, s.parent_path_locator, s.is_directory, s.creation_time, s.last_write_time
    FROM {SourceObject} AS s
    JOIN batch AS b ON b.stream_id = s.stream_id
    RETURNING 1
)
SELECT count(*)::integer, max(b.modified_on) FROM batch AS b  -- the batch's size, like SQL Server's twin
