-- Step 3, Children: up to $1 in-window children not yet in the target whose parent is in the
-- target (a child never lands without its parent), shallowest first.
WITH inserted AS (
    INSERT INTO {TargetObject} (stream_id, name, file_stream, path_locator, parent_path_locator, is_directory, creation_time, last_write_time)
    SELECT s.stream_id, s.name, s.file_stream, s.path_locator, s.parent_path_locator, s.is_directory, s.creation_time, s.last_write_time
    FROM {SourceObject} AS s
    JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.stream_id
    JOIN {BusinessUnitObject} AS bu ON bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol}
    WHERE s.parent_path_locator IS NOT NULL
      AND m.{MetadataModifiedOnCol} >= $3 AND m.{MetadataModifiedOnCol} < $4
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND ($2 IS NULL OR s.stream_id <> $2)
      AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id)
      AND EXISTS (SELECT 1 FROM {TargetObject} AS p WHERE p.path_locator = s.parent_path_locator)
    ORDER BY length(s.path_locator) - length(replace(s.path_locator, '/', '')), s.stream_id
    LIMIT $1
    RETURNING 1
)
SELECT count(*)::integer FROM inserted
