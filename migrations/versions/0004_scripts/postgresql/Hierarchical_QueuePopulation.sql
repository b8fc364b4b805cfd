-- Step 2a: queue every ancestor, missing from the target, of the in-window children not yet in the
-- target. Ancestor paths are the prefixes of a child's parent path ('/1/3/' -> '/1/', '/1/3/').
-- Revision 0004: the children's distinct parent paths are walked, not every child's.
WITH children AS (
    SELECT DISTINCT s.parent_path_locator
    FROM {SourceObject} AS s
    JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = s.stream_id
    JOIN {BusinessUnitObject} AS bu ON bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol}
    WHERE s.parent_path_locator IS NOT NULL
      AND m.{MetadataModifiedOnCol} >= $3 AND m.{MetadataModifiedOnCol} < $4
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND ($2 IS NULL OR s.stream_id <> $2)
      AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id)
), ancestor_paths AS (
    SELECT DISTINCT left(c.parent_path_locator, g.i) AS path_locator
    FROM children AS c
    CROSS JOIN LATERAL generate_series(2, length(c.parent_path_locator)) AS g (i)
    WHERE substr(c.parent_path_locator, g.i, 1) = '/'
), queued AS (
    INSERT INTO {QueueObject} ("RunId", "TableName", stream_id, "BusinessUnit")
    SELECT DISTINCT $6, $7, p.stream_id, m.{MetadataBusinessUnitCol}
    FROM ancestor_paths AS a
    JOIN {SourceObject} AS p ON p.path_locator = a.path_locator
    LEFT JOIN {MetadataObject} AS m ON m.{MetadataIdColumn} = p.stream_id
    WHERE NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = p.stream_id)
      AND NOT EXISTS (SELECT 1 FROM {QueueObject} AS q
                      WHERE q."RunId" = $6 AND q."TableName" = $7 AND q.stream_id = p.stream_id)
    RETURNING 1
)
SELECT count(*)::integer, NULL::timestamp(3) FROM queued
