-- Step 2b (revision 0010): place up to @BatchSize queued blobs, shallowest first (by their source
-- path), so that a parent is always in place before its children. A queued blob is written from the
-- source whatever its copy holds: inserted when missing, else rewritten (a misplaced copy moves,
-- taking its target subtree along in the same statement). Its metadata ModifiedOn is recorded (none
-- when it has no metadata row). The batch is written one depth at a time: a FileTable checks a
-- parent within each statement, and a blob may need a parent that this very batch inserts or moves.
CREATE TABLE #dbtools_Batch (
    stream_id uniqueidentifier NOT NULL PRIMARY KEY,
    Depth smallint NOT NULL,
    ModifiedOn datetime2(7) NULL,
    BusinessUnit uniqueidentifier NULL,
    IsPresent bit NOT NULL,
    TargetPath hierarchyid NULL,
    SourcePath hierarchyid NOT NULL
);
INSERT INTO #dbtools_Batch (stream_id, Depth, ModifiedOn, BusinessUnit, IsPresent, TargetPath, SourcePath)
SELECT TOP (@BatchSize) q.stream_id, s.path_locator.GetLevel(),
       CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.{MetadataModifiedOnCol}), '+00:00')),
       m.{MetadataBusinessUnitCol},
       CASE WHEN t.stream_id IS NULL THEN 0 ELSE 1 END, t.path_locator, s.path_locator
FROM {QueueObject} AS q
JOIN {SourceObject} AS s ON s.stream_id = q.stream_id
LEFT JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.stream_id
LEFT JOIN {TargetObject} AS t ON t.stream_id = s.stream_id
WHERE q.RunId = @RunId AND q.TableName = @TableName AND q.Processed = 0
ORDER BY s.path_locator.GetLevel(), q.stream_id;

CREATE TABLE #dbtools_Moved (stream_id uniqueidentifier NOT NULL PRIMARY KEY, TargetPath hierarchyid NOT NULL,
                             SourcePath hierarchyid NOT NULL);
CREATE TABLE #dbtools_Move (stream_id uniqueidentifier NOT NULL PRIMARY KEY, NewPath hierarchyid NOT NULL);
CREATE TABLE #dbtools_Followed (stream_id uniqueidentifier NOT NULL PRIMARY KEY);
DECLARE @dbtools_Depth smallint = (SELECT MIN(b.Depth) FROM #dbtools_Batch AS b);
SET @RowsInserted = 0;
SET @RowsUpdated = 0;
WHILE @dbtools_Depth IS NOT NULL
BEGIN
    -- Where this depth's copies are now: a move at a shallower depth may have carried them along.
    UPDATE b
    SET TargetPath = t.path_locator
    FROM #dbtools_Batch AS b
    JOIN {TargetObject} AS t ON t.stream_id = b.stream_id
    WHERE b.Depth = @dbtools_Depth AND b.IsPresent = 1;

    -- A misplaced copy of this depth takes a name nothing else can hold (its stream_id) before it
    -- moves: the rewrite below gives it its name.
    UPDATE t
    SET name = CONVERT(nvarchar(36), t.stream_id)
    FROM {TargetObject} AS t
    JOIN #dbtools_Batch AS b ON b.stream_id = t.stream_id
    WHERE b.Depth = @dbtools_Depth AND b.IsPresent = 1 AND b.TargetPath <> b.SourcePath;

    -- Moves: every target row at or under a misplaced copy of this depth goes to the source path of
    -- the deepest such copy above it (two copies of one source depth may lie one under the other in
    -- the target), in one statement.
    TRUNCATE TABLE #dbtools_Moved;
    INSERT INTO #dbtools_Moved (stream_id, TargetPath, SourcePath)
    SELECT b.stream_id, b.TargetPath, b.SourcePath FROM #dbtools_Batch AS b
    WHERE b.Depth = @dbtools_Depth AND b.IsPresent = 1 AND b.TargetPath <> b.SourcePath;
    TRUNCATE TABLE #dbtools_Move;
    INSERT INTO #dbtools_Move (stream_id, NewPath)
    SELECT d.stream_id, d.path_locator.GetReparentedValue(x.TargetPath, x.SourcePath)
    FROM #dbtools_Moved AS mv
    JOIN {TargetObject} AS d ON d.path_locator.IsDescendantOf(mv.TargetPath) = 1
    CROSS APPLY (SELECT TOP (1) m2.stream_id, m2.TargetPath, m2.SourcePath
                 FROM #dbtools_Moved AS m2
                 WHERE d.path_locator.IsDescendantOf(m2.TargetPath) = 1
                 ORDER BY m2.TargetPath.GetLevel() DESC) AS x
    WHERE x.stream_id = mv.stream_id;
    UPDATE d
    SET path_locator = x.NewPath
    FROM {TargetObject} AS d
    JOIN #dbtools_Move AS x ON x.stream_id = d.stream_id;
    INSERT INTO #dbtools_Followed (stream_id)
    SELECT x.stream_id FROM #dbtools_Move AS x
    WHERE NOT EXISTS (SELECT 1 FROM #dbtools_Batch AS b WHERE b.stream_id = x.stream_id)
      AND NOT EXISTS (SELECT 1 FROM #dbtools_Followed AS f WHERE f.stream_id = x.stream_id);

    -- Copies in the target: rewritten whole from the source.
    UPDATE t
    SET {SourceUpdateList}
    FROM {TargetObject} AS t
    JOIN #dbtools_Batch AS b ON b.stream_id = t.stream_id
    JOIN {SourceObject} AS s ON s.stream_id = b.stream_id
    WHERE b.Depth = @dbtools_Depth AND b.IsPresent = 1;
    SET @RowsUpdated += @@ROWCOUNT;

    -- Blobs missing from the target.
    INSERT INTO {TargetObject} ({ColumnList})
    SELECT {SourceColumnList}
    FROM {SourceObject} AS s
    JOIN #dbtools_Batch AS b ON b.stream_id = s.stream_id
    WHERE b.Depth = @dbtools_Depth AND b.IsPresent = 0;
    SET @RowsInserted += @@ROWCOUNT;

    SET @dbtools_Depth = (SELECT MIN(b.Depth) FROM #dbtools_Batch AS b WHERE b.Depth > @dbtools_Depth);
END;
SELECT @RowsMoved = COUNT(*) FROM #dbtools_Followed;

UPDATE v
SET ModifiedOn = b.ModifiedOn, BusinessUnit = b.BusinessUnit, RunId = @RunId, CopiedAt = SYSUTCDATETIME()
FROM {VersionObject} AS v
JOIN #dbtools_Batch AS b ON b.stream_id = v.stream_id
WHERE v.TableName = @TableName;
INSERT INTO {VersionObject} (TableName, stream_id, ModifiedOn, BusinessUnit, RunId, CopiedAt)
SELECT @TableName, b.stream_id, b.ModifiedOn, b.BusinessUnit, @RunId, SYSUTCDATETIME()
FROM #dbtools_Batch AS b
WHERE NOT EXISTS (SELECT 1 FROM {VersionObject} AS v WHERE v.TableName = @TableName AND v.stream_id = b.stream_id);

UPDATE q
SET Processed = 1, ProcessedAt = SYSUTCDATETIME()
FROM {QueueObject} AS q
JOIN #dbtools_Batch AS b ON b.stream_id = q.stream_id
WHERE q.RunId = @RunId AND q.TableName = @TableName;

SELECT @RowsProcessed = COUNT(*) FROM #dbtools_Batch;
SET @RowsDeleted = 0;
DROP TABLE #dbtools_Followed;
DROP TABLE #dbtools_Move;
DROP TABLE #dbtools_Moved;
DROP TABLE #dbtools_Batch;
