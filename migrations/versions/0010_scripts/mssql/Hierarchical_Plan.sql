-- Plan (revision 0010): what a run of this window would do, step by step, computed from the target as
-- it is now with the steps' own predicates; it writes nothing but #dbtools_Plan (StepNumber,
-- RowsInserted, RowsUpdated, RowsDeleted), which the engine creates. Step 0 is a Full sync's clean
-- slate (@FullSync): the run removes those rows before step 1, so every other step is counted on the
-- target without them. @BatchSize and @AfterModifiedOn are not used: a plan covers the whole window.
-- Rows that follow a moved folder are not counted (they depend on the order in which the moves are
-- applied); rows already current in the target are not counted.
--
-- The run's steps see one another's work; the plan follows how they do:
--   step 2a runs first, on this target, and queues the blobs that must be placed (missing, or not at
--   their source path): ancestors of the changed children, and blobs still in the source under a
--   deleted folder, with their ancestors, except step 1's own candidates;
--   step 1 writes its candidates; step 2b writes every queued blob; step 3 writes its candidates
--   except the queued ones (written by step 2b, they are current by then); step 4 deletes what is
--   gone from the source under the pending deletions, except what a queued blob carries away.

-- A Full sync of one business unit removes that unit's rows but keeps any row with a descendant of
-- another unit (or of none); a Full sync of every unit empties the target.
DECLARE @dbtools_Kept bit = CASE WHEN @FullSync = 1 AND @BusinessUnitId IS NULL THEN 0 ELSE 1 END;
CREATE TABLE #dbtools_PlanDoomed (stream_id uniqueidentifier NOT NULL PRIMARY KEY);
IF @FullSync = 1 AND @BusinessUnitId IS NOT NULL
    INSERT INTO #dbtools_PlanDoomed (stream_id)
    SELECT t.stream_id
    FROM {TargetObject} AS t
    WHERE EXISTS (SELECT 1 FROM {MetadataObject} AS m
                  WHERE m.{MetadataIdColumn} = t.stream_id AND m.{MetadataBusinessUnitCol} = @BusinessUnitId)
      AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS d
                      WHERE d.path_locator.IsDescendantOf(t.path_locator) = 1 AND d.path_locator <> t.path_locator
                        AND NOT EXISTS (SELECT 1 FROM {MetadataObject} AS md
                                        WHERE md.{MetadataIdColumn} = d.stream_id AND md.{MetadataBusinessUnitCol} = @BusinessUnitId));

-- The window's rows in scope, whether their copy is there (after the clean slate) and changed.
CREATE TABLE #dbtools_PlanWindow (
    stream_id uniqueidentifier NOT NULL PRIMARY KEY,
    ParentPath hierarchyid NULL,
    IsPresent bit NOT NULL,
    IsChanged bit NOT NULL
);
INSERT INTO #dbtools_PlanWindow (stream_id, ParentPath, IsPresent, IsChanged)
SELECT s.stream_id, s.parent_path_locator,
       CASE WHEN t.stream_id IS NULL THEN 0 ELSE 1 END,
       CASE WHEN t.stream_id IS NULL OR v.ModifiedOn IS NULL
                 OR v.ModifiedOn < CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.{MetadataModifiedOnCol}), '+00:00'))
            THEN 1 ELSE 0 END
FROM {MetadataObject} AS m
JOIN {SourceObject} AS s ON s.stream_id = m.{MetadataIdColumn}
OUTER APPLY (SELECT TOP (1) t.stream_id FROM {TargetObject} AS t
             WHERE t.stream_id = s.stream_id AND @dbtools_Kept = 1
               AND NOT EXISTS (SELECT 1 FROM #dbtools_PlanDoomed AS x WHERE x.stream_id = t.stream_id)) AS t
LEFT JOIN {VersionObject} AS v ON v.TableName = @TableName AND v.stream_id = s.stream_id
WHERE m.{MetadataModifiedOnCol} >= @WindowStart AND m.{MetadataModifiedOnCol} < @WindowEnd
  AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
  AND EXISTS (SELECT 1 FROM {BusinessUnitObject} AS bu WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol})
  AND (@ExcludedStreamId IS NULL OR s.stream_id <> @ExcludedStreamId)
OPTION (RECOMPILE);

-- Deleted folders: pending deletions in scope, gone from the source, still in the target.
CREATE TABLE #dbtools_PlanGone (stream_id uniqueidentifier NOT NULL PRIMARY KEY, TargetPath hierarchyid NOT NULL);
INSERT INTO #dbtools_PlanGone (stream_id, TargetPath)
SELECT DISTINCT t.stream_id, t.path_locator
FROM {DeletionLogObject} AS l
JOIN {TargetObject} AS t ON t.stream_id = l.stream_id
LEFT JOIN {VersionObject} AS v ON v.TableName = @TableName AND v.stream_id = l.stream_id
WHERE l.TableName = @TableName AND l.AppliedAt IS NULL
  AND COALESCE(l.DeletedAt, l.DetectedAt) < @WindowEnd
  AND (@BusinessUnitId IS NULL OR COALESCE(l.BusinessUnit, v.BusinessUnit) = @BusinessUnitId)
  AND @dbtools_Kept = 1
  AND NOT EXISTS (SELECT 1 FROM #dbtools_PlanDoomed AS x WHERE x.stream_id = t.stream_id)
  AND NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = l.stream_id);

-- What step 2a queues: the ancestors of the changed children and the blobs still in the source
-- under a deleted folder (with theirs) that the target does not hold at their source path, except
-- step 1's candidates.
CREATE TABLE #dbtools_PlanLeaf (Leaf hierarchyid NOT NULL PRIMARY KEY);
INSERT INTO #dbtools_PlanLeaf (Leaf)
SELECT w.ParentPath FROM #dbtools_PlanWindow AS w WHERE w.ParentPath IS NOT NULL AND w.IsChanged = 1
UNION
SELECT s.path_locator
FROM #dbtools_PlanGone AS f
JOIN {TargetObject} AS d ON d.path_locator.IsDescendantOf(f.TargetPath) = 1 AND d.path_locator <> f.TargetPath
JOIN {SourceObject} AS s ON s.stream_id = d.stream_id
WHERE NOT EXISTS (SELECT 1 FROM #dbtools_PlanDoomed AS x WHERE x.stream_id = d.stream_id);
CREATE TABLE #dbtools_PlanQueue (stream_id uniqueidentifier NOT NULL PRIMARY KEY, IsPresent bit NOT NULL);
WITH ancestor_paths AS (
    SELECT l.Leaf AS path_locator FROM #dbtools_PlanLeaf AS l
    UNION ALL
    SELECT a.path_locator.GetAncestor(1) FROM ancestor_paths AS a WHERE a.path_locator.GetLevel() > 1
)
INSERT INTO #dbtools_PlanQueue (stream_id, IsPresent)
SELECT p.stream_id,
       CASE WHEN @dbtools_Kept = 1
                 AND EXISTS (SELECT 1 FROM {TargetObject} AS t
                             WHERE t.stream_id = p.stream_id
                               AND NOT EXISTS (SELECT 1 FROM #dbtools_PlanDoomed AS x WHERE x.stream_id = t.stream_id))
            THEN 1 ELSE 0 END
FROM (SELECT DISTINCT a.path_locator FROM ancestor_paths AS a) AS y
JOIN {SourceObject} AS p ON p.path_locator = y.path_locator
WHERE NOT (@dbtools_Kept = 1
           AND EXISTS (SELECT 1 FROM {TargetObject} AS t
                       WHERE t.stream_id = p.stream_id AND t.path_locator = p.path_locator
                         AND NOT EXISTS (SELECT 1 FROM #dbtools_PlanDoomed AS x WHERE x.stream_id = t.stream_id)))
  AND NOT EXISTS (SELECT 1 FROM #dbtools_PlanWindow AS w
                  WHERE w.stream_id = p.stream_id AND w.ParentPath IS NULL AND w.IsChanged = 1)
OPTION (MAXRECURSION 0);

INSERT INTO #dbtools_Plan (StepNumber, RowsInserted, RowsUpdated, RowsDeleted)
SELECT 0, 0, 0,
       CASE WHEN @FullSync = 0 THEN 0
            WHEN @BusinessUnitId IS NULL THEN (SELECT COUNT_BIG(*) FROM {TargetObject})
            ELSE (SELECT COUNT_BIG(*) FROM #dbtools_PlanDoomed) END;
INSERT INTO #dbtools_Plan (StepNumber, RowsInserted, RowsUpdated, RowsDeleted)
SELECT 1, COUNT_BIG(CASE WHEN w.IsPresent = 0 THEN 1 END), COUNT_BIG(CASE WHEN w.IsPresent = 1 THEN 1 END), 0
FROM #dbtools_PlanWindow AS w
WHERE w.ParentPath IS NULL AND w.IsChanged = 1;
INSERT INTO #dbtools_Plan (StepNumber, RowsInserted, RowsUpdated, RowsDeleted)
SELECT 2, COUNT_BIG(CASE WHEN q.IsPresent = 0 THEN 1 END), COUNT_BIG(CASE WHEN q.IsPresent = 1 THEN 1 END), 0
FROM #dbtools_PlanQueue AS q;
INSERT INTO #dbtools_Plan (StepNumber, RowsInserted, RowsUpdated, RowsDeleted)
SELECT 3, COUNT_BIG(CASE WHEN w.IsPresent = 0 THEN 1 END), COUNT_BIG(CASE WHEN w.IsPresent = 1 THEN 1 END), 0
FROM #dbtools_PlanWindow AS w
WHERE w.ParentPath IS NOT NULL AND w.IsChanged = 1
  AND NOT EXISTS (SELECT 1 FROM #dbtools_PlanQueue AS q WHERE q.stream_id = w.stream_id);
-- Step 4: target rows gone from the source under (or at) a deleted folder, except those a blob still
-- in the source carries away in step 2 (the rows under such a blob).
CREATE TABLE #dbtools_PlanCarried (stream_id uniqueidentifier NOT NULL PRIMARY KEY);
INSERT INTO #dbtools_PlanCarried (stream_id)
SELECT DISTINCT c.stream_id
FROM #dbtools_PlanGone AS f
JOIN {TargetObject} AS a ON a.path_locator.IsDescendantOf(f.TargetPath) = 1 AND a.path_locator <> f.TargetPath
JOIN {SourceObject} AS sa ON sa.stream_id = a.stream_id
JOIN {TargetObject} AS c ON c.path_locator.IsDescendantOf(a.path_locator) = 1 AND c.path_locator <> a.path_locator;
INSERT INTO #dbtools_Plan (StepNumber, RowsInserted, RowsUpdated, RowsDeleted)
SELECT 4, 0, 0, COUNT_BIG(DISTINCT d.stream_id)
FROM #dbtools_PlanGone AS f
JOIN {TargetObject} AS d ON d.path_locator.IsDescendantOf(f.TargetPath) = 1
WHERE NOT EXISTS (SELECT 1 FROM #dbtools_PlanDoomed AS x WHERE x.stream_id = d.stream_id)
  AND NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = d.stream_id)
  AND NOT EXISTS (SELECT 1 FROM #dbtools_PlanCarried AS k WHERE k.stream_id = d.stream_id);

DROP TABLE #dbtools_PlanCarried;
DROP TABLE #dbtools_PlanQueue;
DROP TABLE #dbtools_PlanLeaf;
DROP TABLE #dbtools_PlanGone;
DROP TABLE #dbtools_PlanWindow;
DROP TABLE #dbtools_PlanDoomed;
