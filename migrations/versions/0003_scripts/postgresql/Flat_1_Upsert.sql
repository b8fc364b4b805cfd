-- Flat, one step: up to $1 rows changed in [$3, $4) whose target copy is missing or older;
-- newest ModifiedOn wins, an older version never overwrites a newer one.
WITH batch AS (
    SELECT {SourceColumnList}
    FROM {SourceObject} AS s
    JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.{MetadataIdColumn}
    JOIN {BusinessUnitObject} AS bu ON bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol}
    WHERE m.{MetadataModifiedOnCol} >= $3 AND m.{MetadataModifiedOnCol} < $4
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND ($2 IS NULL OR s.{MetadataIdColumn}::text <> $2::text)
      AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t
                      WHERE t.{MetadataIdColumn} = s.{MetadataIdColumn}
                        AND t.{MetadataModifiedOnCol} >= m.{MetadataModifiedOnCol})
    ORDER BY m.{MetadataModifiedOnCol}, s.{MetadataIdColumn}
    LIMIT $1
), upserted AS (
    INSERT INTO {TargetObject} AS t ({ColumnList})
    SELECT {ColumnList} FROM batch
    ON CONFLICT ({MetadataIdColumn}) DO UPDATE SET {UpdateList}
    WHERE t.{MetadataModifiedOnCol} < EXCLUDED.{MetadataModifiedOnCol}
    RETURNING 1
)
SELECT count(*)::integer FROM batch
