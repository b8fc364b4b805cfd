-- Step 4, Deletions (revision 0010): apply up to @BatchSize pending deletions of this table from
-- {DeletionLogObject}, oldest first: those recorded before the window's end, in BU scope (the unit
-- the log row names, else the unit recorded with the copy), that no run has applied and this run has
-- not deferred. A deleted blob that is gone from the source is removed from the target with every row
-- of its target subtree that is gone from the source too (a deleted folder takes its subtree with
-- it), deepest first (a FileTable refuses to delete a directory that still holds anything), with their
-- recorded versions. Blobs of that subtree still in the source were moved away by step 2 before this
-- step; should one be there all the same (it moved after step 2 began), the deletion is deferred to a
-- later run (RunId set, AppliedAt left NULL) rather than orphan it. A logged blob that is still in the
-- source is not deleted. Every other log row taken is marked applied by this run.
CREATE TABLE #dbtools_Deletion (
    DeletionId bigint NOT NULL PRIMARY KEY,
    stream_id uniqueidentifier NOT NULL,
    TargetPath hierarchyid NULL,
    IsGone bit NOT NULL,
    IsBlocked bit NOT NULL
);
INSERT INTO #dbtools_Deletion (DeletionId, stream_id, TargetPath, IsGone, IsBlocked)
SELECT TOP (@BatchSize) l.DeletionId, l.stream_id, t.path_locator,
       CASE WHEN t.stream_id IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = l.stream_id) THEN 1 ELSE 0 END,
       0
FROM {DeletionLogObject} AS l
LEFT JOIN {TargetObject} AS t ON t.stream_id = l.stream_id
LEFT JOIN {VersionObject} AS v ON v.TableName = @TableName AND v.stream_id = l.stream_id
WHERE l.TableName = @TableName AND l.AppliedAt IS NULL AND (l.RunId IS NULL OR l.RunId <> @RunId)
  AND COALESCE(l.DeletedAt, l.DetectedAt) < @WindowEnd
  AND (@BusinessUnitId IS NULL OR COALESCE(l.BusinessUnit, v.BusinessUnit) = @BusinessUnitId)
ORDER BY l.DeletionId
OPTION (RECOMPILE);

-- A folder whose target subtree still holds a blob of the source: deferred.
UPDATE g
SET IsBlocked = 1
FROM #dbtools_Deletion AS g
WHERE g.IsGone = 1
  AND EXISTS (SELECT 1 FROM {TargetObject} AS d
              JOIN {SourceObject} AS s ON s.stream_id = d.stream_id
              WHERE d.path_locator.IsDescendantOf(g.TargetPath) = 1 AND d.path_locator <> g.TargetPath);

CREATE TABLE #dbtools_Doomed (stream_id uniqueidentifier NOT NULL PRIMARY KEY, Depth int NOT NULL);
INSERT INTO #dbtools_Doomed (stream_id, Depth)
SELECT DISTINCT d.stream_id, d.path_locator.GetLevel()
FROM #dbtools_Deletion AS g
JOIN {TargetObject} AS d ON d.path_locator.IsDescendantOf(g.TargetPath) = 1
WHERE g.IsGone = 1 AND g.IsBlocked = 0
  AND NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = d.stream_id);

DECLARE @dbtools_Depth int = (SELECT MAX(x.Depth) FROM #dbtools_Doomed AS x);
SET @RowsDeleted = 0;
WHILE @dbtools_Depth >= 1
BEGIN
    DELETE t
    FROM {TargetObject} AS t
    JOIN #dbtools_Doomed AS x ON x.stream_id = t.stream_id
    WHERE x.Depth = @dbtools_Depth;
    SET @RowsDeleted += @@ROWCOUNT;
    SET @dbtools_Depth -= 1;
END;
DELETE v
FROM {VersionObject} AS v
JOIN #dbtools_Doomed AS x ON x.stream_id = v.stream_id
WHERE v.TableName = @TableName;

UPDATE l
SET RunId = @RunId,
    AppliedAt = CASE WHEN g.IsBlocked = 1 THEN NULL ELSE SYSUTCDATETIME() END
FROM {DeletionLogObject} AS l
JOIN #dbtools_Deletion AS g ON g.DeletionId = l.DeletionId;

SELECT @RowsProcessed = COUNT(*) FROM #dbtools_Deletion;
SET @RowsInserted = 0;
SET @RowsUpdated = 0;
SET @RowsMoved = 0;
DROP TABLE #dbtools_Doomed;
DROP TABLE #dbtools_Deletion;
