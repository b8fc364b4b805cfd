-- Step 3, Children (revision 0010): up to @BatchSize child blobs (a parent in the source) changed in
-- [@WindowStart, @WindowEnd), in BU scope, from the keyset position (@AfterModifiedOn) on, whose parent
-- is in the target (a child never lands without it: step 2 has placed every ancestor that the window's
-- changed children need) and whose copy in the target is missing or older: the metadata ModifiedOn
-- recorded for it in {VersionObject} is older than the metadata's (in UTC, whatever the column's
-- type), or unknown. Newest wins: an older
-- or equal one changes nothing. A copy is replaced whole (name, content, attributes and path); a copy
-- whose path changed (a move) takes its target subtree along in the same statement, so no row is
-- ever without its parent. Every copy written records its ModifiedOn. #dbtools_Batch holds keys and
-- paths only: each blob is read from the source once, by the statement that writes it.
CREATE TABLE #dbtools_Batch (
    stream_id uniqueidentifier NOT NULL PRIMARY KEY,
    ModifiedOn datetime2(7) NOT NULL,
    BusinessUnit uniqueidentifier NULL,
    IsPresent bit NOT NULL,
    TargetPath hierarchyid NULL,
    SourcePath hierarchyid NOT NULL
);
INSERT INTO #dbtools_Batch (stream_id, ModifiedOn, BusinessUnit, IsPresent, TargetPath, SourcePath)
SELECT TOP (@BatchSize) s.stream_id,
       CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.{MetadataModifiedOnCol}), '+00:00')),
       m.{MetadataBusinessUnitCol},
       CASE WHEN t.stream_id IS NULL THEN 0 ELSE 1 END, t.path_locator, s.path_locator
FROM {MetadataObject} AS m
JOIN {SourceObject} AS s ON s.stream_id = m.{MetadataIdColumn}
LEFT JOIN {TargetObject} AS t ON t.stream_id = s.stream_id
LEFT JOIN {VersionObject} AS v ON v.TableName = @TableName AND v.stream_id = s.stream_id
WHERE s.parent_path_locator IS NOT NULL
  AND EXISTS (SELECT 1 FROM {TargetObject} AS p WHERE p.path_locator = s.parent_path_locator)
  AND m.{MetadataModifiedOnCol} < @WindowEnd
  -- One lower bound, so that the index seek starts at the keyset position, not the window start.
  AND m.{MetadataModifiedOnCol} >= CASE WHEN @AfterModifiedOn > @WindowStart THEN @AfterModifiedOn ELSE @WindowStart END
  AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
  -- EXISTS, not a join: a business-unit table with duplicate ids must not duplicate a row.
  AND EXISTS (SELECT 1 FROM {BusinessUnitObject} AS bu WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol})
  AND (@ExcludedStreamId IS NULL OR s.stream_id <> @ExcludedStreamId)
  AND (t.stream_id IS NULL OR v.ModifiedOn IS NULL
       OR v.ModifiedOn < CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.{MetadataModifiedOnCol}), '+00:00')))
ORDER BY m.{MetadataModifiedOnCol} -- ties need no order: the next batch starts at >= this batch's last ModifiedOn
OPTION (RECOMPILE); -- the keyset position and the optional filters are new values every batch

-- A moved copy takes a name nothing else can hold (its stream_id) before it moves: the move and
-- the rename are two statements here, and in between the copy must not hold its old name in its
-- new folder. The rewrite below gives it its name.
UPDATE t
SET name = CONVERT(nvarchar(36), t.stream_id)
FROM {TargetObject} AS t
JOIN #dbtools_Batch AS b ON b.stream_id = t.stream_id
WHERE b.IsPresent = 1 AND b.TargetPath <> b.SourcePath;

-- Moves: every target row at or under a moved copy's old path goes to the new path of the deepest
-- moved copy at or above it (GetReparentedValue), copies and subtrees in one statement.
CREATE TABLE #dbtools_Moved (stream_id uniqueidentifier NOT NULL PRIMARY KEY, TargetPath hierarchyid NOT NULL,
                             SourcePath hierarchyid NOT NULL);
INSERT INTO #dbtools_Moved (stream_id, TargetPath, SourcePath)
SELECT b.stream_id, b.TargetPath, b.SourcePath FROM #dbtools_Batch AS b
WHERE b.IsPresent = 1 AND b.TargetPath <> b.SourcePath;
CREATE TABLE #dbtools_Move (stream_id uniqueidentifier NOT NULL PRIMARY KEY, NewPath hierarchyid NOT NULL);
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
-- Rows that followed a moved folder (the moved copies themselves are counted as updated).
SELECT @RowsMoved = COUNT(*) FROM #dbtools_Move AS x
WHERE NOT EXISTS (SELECT 1 FROM #dbtools_Batch AS b WHERE b.stream_id = x.stream_id);

-- Copies in the target: rewritten whole from the source.
UPDATE t
SET {SourceUpdateList}
FROM {TargetObject} AS t
JOIN #dbtools_Batch AS b ON b.stream_id = t.stream_id
JOIN {SourceObject} AS s ON s.stream_id = b.stream_id
WHERE b.IsPresent = 1;
SET @RowsUpdated = @@ROWCOUNT;

-- Blobs missing from the target.
INSERT INTO {TargetObject} ({ColumnList})
SELECT {SourceColumnList}
FROM {SourceObject} AS s
JOIN #dbtools_Batch AS b ON b.stream_id = s.stream_id
WHERE b.IsPresent = 0;
SET @RowsInserted = @@ROWCOUNT;

-- What the newest-wins rule compares next time. The lease makes the engine the only writer of
-- this table's versions.
UPDATE v
SET ModifiedOn = b.ModifiedOn, BusinessUnit = b.BusinessUnit, RunId = @RunId, CopiedAt = SYSUTCDATETIME()
FROM {VersionObject} AS v
JOIN #dbtools_Batch AS b ON b.stream_id = v.stream_id
WHERE v.TableName = @TableName;
INSERT INTO {VersionObject} (TableName, stream_id, ModifiedOn, BusinessUnit, RunId, CopiedAt)
SELECT @TableName, b.stream_id, b.ModifiedOn, b.BusinessUnit, @RunId, SYSUTCDATETIME()
FROM #dbtools_Batch AS b
WHERE NOT EXISTS (SELECT 1 FROM {VersionObject} AS v WHERE v.TableName = @TableName AND v.stream_id = b.stream_id);

-- The batch's own size, not @@ROWCOUNT: a source row deleted since it was picked must not end the step.
SELECT @RowsProcessed = COUNT(*), @LastModifiedOn = MAX(b.ModifiedOn) FROM #dbtools_Batch AS b;
SET @RowsDeleted = 0;
DROP TABLE #dbtools_Move;
DROP TABLE #dbtools_Moved;
DROP TABLE #dbtools_Batch;
