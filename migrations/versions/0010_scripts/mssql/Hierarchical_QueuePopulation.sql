-- Step 2a (revision 0010; the engine runs it first, before step 1, on the target as the run found
-- it): queue every blob that must be placed before the Children step can run, where the target does
-- not hold it at its source path (missing, or misplaced because it or a folder above it moved): every
-- ancestor of the window's changed children (the Children step's candidates), and, for a pending
-- deletion of a folder that is gone from the source, every blob still in the source whose copy lies
-- under that folder (it moved away before the folder was deleted), with its ancestors. Roots that
-- step 1 rewrites anyway are left out. Ancestors are queued whatever their business unit: a tree is
-- never cut. Ancestors are walked with hierarchyid::GetAncestor(1) up to the top level.
-- It also frees the names the run will write: a target row that holds the name a written blob will
-- take in its folder (a file deleted and saved again under its name, two names swapped) takes its
-- stream_id as its name until its own change or deletion reaches it (later in the run, unless that
-- change is out of the run's scope). Names are compared as the target compares them: the engine
-- refuses a table whose source and target name columns have different collations.
WITH changed_children AS (
    SELECT DISTINCT s.parent_path_locator AS leaf
    FROM {MetadataObject} AS m
    JOIN {SourceObject} AS s ON s.stream_id = m.{MetadataIdColumn}
    LEFT JOIN {TargetObject} AS t ON t.stream_id = s.stream_id
    LEFT JOIN {VersionObject} AS v ON v.TableName = @TableName AND v.stream_id = s.stream_id
    WHERE s.parent_path_locator IS NOT NULL
      AND m.{MetadataModifiedOnCol} >= @WindowStart AND m.{MetadataModifiedOnCol} < @WindowEnd
      AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
      AND EXISTS (SELECT 1 FROM {BusinessUnitObject} AS bu WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol})
      AND (@ExcludedStreamId IS NULL OR s.stream_id <> @ExcludedStreamId)
      AND (t.stream_id IS NULL OR v.ModifiedOn IS NULL
           OR v.ModifiedOn < CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.{MetadataModifiedOnCol}), '+00:00')))
), deleted_folders AS (
    SELECT t.path_locator
    FROM {DeletionLogObject} AS l
    JOIN {TargetObject} AS t ON t.stream_id = l.stream_id
    LEFT JOIN {VersionObject} AS v ON v.TableName = @TableName AND v.stream_id = l.stream_id
    WHERE l.TableName = @TableName AND l.AppliedAt IS NULL
      AND COALESCE(l.DeletedAt, l.DetectedAt) < @WindowEnd
      AND (@BusinessUnitId IS NULL OR COALESCE(l.BusinessUnit, v.BusinessUnit) = @BusinessUnitId)
      AND NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = l.stream_id)
), survivors AS (
    SELECT s.path_locator AS leaf
    FROM deleted_folders AS f
    JOIN {TargetObject} AS d ON d.path_locator.IsDescendantOf(f.path_locator) = 1 AND d.path_locator <> f.path_locator
    JOIN {SourceObject} AS s ON s.stream_id = d.stream_id
), leaves AS (
    SELECT c.leaf FROM changed_children AS c
    UNION
    SELECT sv.leaf FROM survivors AS sv
), ancestor_paths AS (
    SELECT l.leaf AS path_locator FROM leaves AS l
    UNION ALL
    SELECT a.path_locator.GetAncestor(1) FROM ancestor_paths AS a WHERE a.path_locator.GetLevel() > 1
)
INSERT INTO {QueueObject} (RunId, TableName, stream_id, BusinessUnit)
SELECT @RunId, @TableName, p.stream_id, m.{MetadataBusinessUnitCol}
FROM (SELECT DISTINCT a.path_locator FROM ancestor_paths AS a) AS x
JOIN {SourceObject} AS p ON p.path_locator = x.path_locator
OUTER APPLY (SELECT TOP (1) m.{MetadataBusinessUnitCol}, m.{MetadataModifiedOnCol}
             FROM {MetadataObject} AS m WHERE m.{MetadataIdColumn} = p.stream_id) AS m
WHERE NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = p.stream_id AND t.path_locator = p.path_locator)
  -- not one of step 1's candidates (the Roots script's predicate; CASE: an unknown is not one)
  AND CASE WHEN p.parent_path_locator IS NULL
                AND m.{MetadataModifiedOnCol} >= @WindowStart AND m.{MetadataModifiedOnCol} < @WindowEnd
                AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
                AND EXISTS (SELECT 1 FROM {BusinessUnitObject} AS bu WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol})
                AND (@ExcludedStreamId IS NULL OR p.stream_id <> @ExcludedStreamId)
                AND (NOT EXISTS (SELECT 1 FROM {TargetObject} AS t2 WHERE t2.stream_id = p.stream_id)
                     OR NOT EXISTS (SELECT 1 FROM {VersionObject} AS v
                                    WHERE v.TableName = @TableName AND v.stream_id = p.stream_id
                                      AND v.ModifiedOn >= CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7),
                                                              m.{MetadataModifiedOnCol}), '+00:00'))))
           THEN 1 ELSE 0 END = 0
  AND NOT EXISTS (SELECT 1 FROM {QueueObject} AS q
                  WHERE q.RunId = @RunId AND q.TableName = @TableName AND q.stream_id = p.stream_id)
OPTION (MAXRECURSION 0);
SET @RowsProcessed = @@ROWCOUNT;

-- What the run will write: the candidates of steps 1 and 3, and the queued blobs. The folder a
-- blob goes to is found by its parent's stream_id, so a folder that moves in this run counts too.
WITH writes AS (
    SELECT s.stream_id, s.name, s.parent_path_locator
    FROM {MetadataObject} AS m
    JOIN {SourceObject} AS s ON s.stream_id = m.{MetadataIdColumn}
    LEFT JOIN {TargetObject} AS t ON t.stream_id = s.stream_id
    LEFT JOIN {VersionObject} AS v ON v.TableName = @TableName AND v.stream_id = s.stream_id
    WHERE m.{MetadataModifiedOnCol} >= @WindowStart AND m.{MetadataModifiedOnCol} < @WindowEnd
      AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
      AND EXISTS (SELECT 1 FROM {BusinessUnitObject} AS bu WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol})
      AND (@ExcludedStreamId IS NULL OR s.stream_id <> @ExcludedStreamId)
      AND (t.stream_id IS NULL OR v.ModifiedOn IS NULL
           OR v.ModifiedOn < CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.{MetadataModifiedOnCol}), '+00:00')))
    UNION
    SELECT s.stream_id, s.name, s.parent_path_locator
    FROM {QueueObject} AS q
    JOIN {SourceObject} AS s ON s.stream_id = q.stream_id
    WHERE q.RunId = @RunId AND q.TableName = @TableName
)
UPDATE o
SET name = CONVERT(nvarchar(36), o.stream_id)
FROM {TargetObject} AS o
JOIN (
    -- two seeks of the (parent, name) key (same collation on both sides): a top-level name, or one in the parent folder
    SELECT o2.stream_id
    FROM writes AS w
    JOIN {TargetObject} AS o2
      ON w.parent_path_locator IS NULL AND o2.parent_path_locator IS NULL
     AND o2.name = w.name
     AND o2.stream_id <> w.stream_id
    UNION
    SELECT o2.stream_id
    FROM writes AS w
    JOIN {SourceObject} AS sp ON sp.path_locator = w.parent_path_locator
    JOIN {TargetObject} AS tp ON tp.stream_id = sp.stream_id
    JOIN {TargetObject} AS o2
      ON o2.parent_path_locator = tp.path_locator
     AND o2.name = w.name
     AND o2.stream_id <> w.stream_id
) AS x ON x.stream_id = o.stream_id;
SET @RowsMoved = @@ROWCOUNT;
SET @RowsInserted = 0;
SET @RowsUpdated = 0;
SET @RowsDeleted = 0;
