-- Step 2b: back-fill up to @BatchSize queued parents, shallowest first, through #dbtools_Batch
-- (revision 0004: renamed from #Batch, so that it never meets a caller's own #Batch).
CREATE TABLE #dbtools_Batch (stream_id uniqueidentifier NOT NULL PRIMARY KEY, Depth smallint NOT NULL);
INSERT INTO #dbtools_Batch (stream_id, Depth)
SELECT TOP (@BatchSize) q.stream_id, s.path_locator.GetLevel()
FROM {QueueObject} AS q
JOIN {SourceObject} AS s ON s.stream_id = q.stream_id
WHERE q.RunId = @RunId AND q.TableName = @TableName AND q.Processed = 0
ORDER BY s.path_locator.GetLevel(), q.stream_id;
INSERT INTO {TargetObject} (stream_id, name, file_stream, path_locator, parent_path_locator, is_directory, creation_time, last_write_time)
SELECT s.stream_id, s.name, s.file_stream, s.path_locator, s.parent_path_locator, s.is_directory, s.creation_time, s.last_write_time
FROM {SourceObject} AS s
JOIN #dbtools_Batch AS b ON b.stream_id = s.stream_id
WHERE NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id);
UPDATE q
SET Processed = 1, ProcessedAt = SYSUTCDATETIME()
FROM {QueueObject} AS q
JOIN #dbtools_Batch AS b ON b.stream_id = q.stream_id
WHERE q.RunId = @RunId AND q.TableName = @TableName;
SELECT @RowsProcessed = COUNT(*) FROM #dbtools_Batch;
DROP TABLE #dbtools_Batch;
