-- Step 2b: back-fill up to $1 queued parents, shallowest first. The batch CTE is the PostgreSQL
-- twin of SQL Server's #Batch table (EXECUTE ... USING takes a single statement).
-- Revision 0004: the queue rows are marked by row address.
WITH batch AS (
    SELECT q.stream_id, q.ctid AS queue_row
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
    -- By row address (a TID scan): a join on the key gets planned as a nested loop over the whole
    -- batch for every queue row, because the queue was filled in this run and has no statistics.
    -- (the batch's rows are this run's and table's: no other condition, or the planner would
    -- prefer the queue's index and test every row against the whole array).
    WHERE q.ctid = ANY (ARRAY(SELECT b.queue_row FROM batch AS b))
    RETURNING 1
)
SELECT count(*)::integer, NULL::timestamp(3) FROM processed
