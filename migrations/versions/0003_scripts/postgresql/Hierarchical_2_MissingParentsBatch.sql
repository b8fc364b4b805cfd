-- Step 2b: back-fill up to $1 queued parents, shallowest first. The batch CTE is the PostgreSQL
-- twin of SQL Server's #Batch table (EXECUTE ... USING takes a single statement).
WITH batch AS (
    SELECT q.stream_id
    FROM {QueueObject} AS q
    JOIN {SourceObject} AS s ON s.stream_id = q.stream_id
    WHERE q."RunId" = $6 AND q."TableName" = $7 AND NOT q."Processed"
    ORDER BY length(s.path_locator) - length(replace(s.path_locator, '/', '')), q.stream_id
    LIMIT $1
), inserted AS (
    INSERT INTO {TargetObject} (stream_id, name, file_stream, path_locator, parent_path_locator, is_directory, creation_time, last_write_time)
    SELECT s.stream_id, s.name, s.file_stream, s.path_locator, s.parent_path_locator, s.is_directory, s.creation_time, s.last_write_time
    FROM {SourceObject} AS s
    JOIN batch AS b ON b.stream_id = s.stream_id
    WHERE NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id)
    RETURNING 1
), processed AS (
    UPDATE {QueueObject} AS q
    SET "Processed" = true, "ProcessedAt" = (now() AT TIME ZONE 'UTC')
    FROM batch AS b
    WHERE q."RunId" = $6 AND q."TableName" = $7 AND q.stream_id = b.stream_id
    RETURNING 1
)
SELECT count(*)::integer FROM processed
