-- Flat, one step: up to @BatchSize rows changed in [@WindowStart, @WindowEnd) whose target copy is
-- missing or older; newest ModifiedOn wins, an older version never overwrites a newer one.
-- No MERGE: UPDATE WITH (UPDLOCK, SERIALIZABLE), then INSERT WHERE NOT EXISTS, in one transaction.
SELECT TOP (@BatchSize) {SourceColumnList}
INTO #Batch
FROM {SourceObject} AS s
JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.{MetadataIdColumn}
JOIN {BusinessUnitObject} AS bu ON bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol}
WHERE m.{MetadataModifiedOnCol} >= @WindowStart AND m.{MetadataModifiedOnCol} < @WindowEnd
  AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
  AND (@ExcludedStreamId IS NULL OR CONVERT(nvarchar(64), s.{MetadataIdColumn}) <> CONVERT(nvarchar(64), @ExcludedStreamId))
  AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t
                  WHERE t.{MetadataIdColumn} = s.{MetadataIdColumn}
                    AND t.{MetadataModifiedOnCol} >= m.{MetadataModifiedOnCol})
ORDER BY m.{MetadataModifiedOnCol}, s.{MetadataIdColumn};
UPDATE t
SET {UpdateList}
FROM {TargetObject} AS t WITH (UPDLOCK, SERIALIZABLE)
JOIN #Batch AS b ON b.{MetadataIdColumn} = t.{MetadataIdColumn}
WHERE t.{MetadataModifiedOnCol} < b.{MetadataModifiedOnCol};
INSERT INTO {TargetObject} ({ColumnList})
SELECT {ColumnList} FROM #Batch AS b
WHERE NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WITH (UPDLOCK, SERIALIZABLE)
                  WHERE t.{MetadataIdColumn} = b.{MetadataIdColumn});
SELECT @RowsProcessed = COUNT(*) FROM #Batch;
DROP TABLE #Batch;
