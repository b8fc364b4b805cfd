-- Step 3, Children, keyset batches: up to $1 in-window children not yet in the target whose
-- parent is in the target (a child never lands without its parent), from the previous batch's
-- last ModifiedOn ($8) on. Step 2 has already back-filled every ancestor of the window's
-- children, so the order of this step is free and follows the metadata index.
WITH batch AS (
    SELECT s.stream_id, m.{MetadataModifiedOnCol} AS modified_on
    FROM {SourceObject} AS s
    JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.stream_id
    JOIN {BusinessUnitObject} AS bu ON bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol}
    WHERE s.parent_path_locator IS NOT NULL
      AND m.{MetadataModifiedOnCol} >= greatest($3, $8) AND m.{MetadataModifiedOnCol} < $4  -- greatest() skips a NULL $8
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND ($2 IS NULL OR s.stream_id <> $2)
      AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id)
      AND EXISTS (SELECT 1 FROM {TargetObject} AS p WHERE p.path_locator = s.parent_path_locator)
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
