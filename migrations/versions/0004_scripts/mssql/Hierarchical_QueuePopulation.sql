-- Step 2a: queue every ancestor, missing from the target, of the in-window children not yet in
-- the target. Ancestors are walked with hierarchyid::GetAncestor(1) up to the top level.
-- Revision 0004: the children's distinct parent paths are walked, not every child's.
WITH children AS (
    SELECT DISTINCT s.parent_path_locator AS path_locator
    FROM {SourceObject} AS s
    JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.stream_id
    JOIN {BusinessUnitObject} AS bu ON bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol}
    WHERE s.parent_path_locator IS NOT NULL
      AND m.{MetadataModifiedOnCol} >= @WindowStart AND m.{MetadataModifiedOnCol} < @WindowEnd
      AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
      AND (@ExcludedStreamId IS NULL OR s.stream_id <> @ExcludedStreamId)
      AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id)
), ancestor_paths AS (
    SELECT c.path_locator FROM children AS c
    UNION ALL
    SELECT a.path_locator.GetAncestor(1) FROM ancestor_paths AS a WHERE a.path_locator.GetLevel() > 1
)
INSERT INTO {QueueObject} (RunId, TableName, stream_id, BusinessUnit)
SELECT DISTINCT @RunId, @TableName, p.stream_id, m.{MetadataBusinessUnitCol}
FROM (SELECT DISTINCT a.path_locator FROM ancestor_paths AS a) AS x
JOIN {SourceObject} AS p ON p.path_locator = x.path_locator
LEFT JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = p.stream_id
WHERE NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = p.stream_id)
  AND NOT EXISTS (SELECT 1 FROM {QueueObject} AS q
                  WHERE q.RunId = @RunId AND q.TableName = @TableName AND q.stream_id = p.stream_id)
OPTION (MAXRECURSION 0);
SET @RowsProcessed = @@ROWCOUNT;
