-- Step 2b (revision 0010): place up to $1 queued blobs, shallowest first (by their source path), so
-- that a parent is always in place before its children. A queued blob is written from the source
-- whatever its copy holds: inserted when missing, else rewritten (a misplaced copy moves, taking its
-- target subtree along in the same statement). Its metadata ModifiedOn is recorded (none when it
-- has no metadata row). Queue rows are marked by row address, as since revision 0004. Returns the
-- batch's size, no position, then rows inserted, updated, deleted (none) and moved along.
WITH batch AS (
    SELECT q.ctid AS "dbtools$QueueRow", {SourceColumnList},
           m."dbtools$ModifiedOn", m."dbtools$BusinessUnit",
           t.present IS NOT NULL AS "dbtools$Exists",
           t.path_locator AS "dbtools$TargetPath"
    FROM {QueueObject} AS q
    CROSS JOIN LATERAL (SELECT s.* FROM {SourceObject} AS s WHERE s.stream_id = q.stream_id LIMIT 1) AS s
    LEFT JOIN LATERAL (SELECT m.{MetadataModifiedOnCol}::timestamp AS "dbtools$ModifiedOn",
                              m.{MetadataBusinessUnitCol} AS "dbtools$BusinessUnit"
                       FROM {MetadataObject} AS m WHERE m.{MetadataIdColumn} = s.stream_id LIMIT 1) AS m ON true
    LEFT JOIN LATERAL (SELECT true AS present, t.path_locator FROM {TargetObject} AS t
                       WHERE t.stream_id = s.stream_id LIMIT 1) AS t ON true
    WHERE q."RunId" = $6 AND q."TableName" = $7 AND NOT q."Processed"
    ORDER BY length(s.path_locator) - length(replace(s.path_locator, '/', '')), q.stream_id
    LIMIT $1
), moves AS (
    SELECT b."dbtools$TargetPath" AS old_path, b.path_locator AS new_path
    FROM batch AS b
    WHERE b."dbtools$Exists" AND b."dbtools$TargetPath" <> b.path_locator
), moved AS (
    -- A target row under a moved copy's old path follows the deepest moved copy above it. Each
    -- move reads its subtree as a range of the path index (in "C" order the paths under '/1/3/' lie
    -- in ['/1/3/', '/1/30')), per move and by row address, so no statistics can turn it into a
    -- scan of the whole target. The copies themselves are rewritten from the source below.
    UPDATE {TargetObject} AS d
    SET path_locator = x.new_path
    FROM (SELECT DISTINCT ON (d2.row_address) d2.row_address,
                 mv.new_path || substr(d2.path_locator, length(mv.old_path) + 1) AS new_path
          FROM moves AS mv
          CROSS JOIN LATERAL (SELECT d2.ctid AS row_address, d2.path_locator FROM {TargetObject} AS d2
                              WHERE d2.path_locator COLLATE "C" > mv.old_path COLLATE "C"
                                AND d2.path_locator COLLATE "C" < (left(mv.old_path, -1) || '0') COLLATE "C"
                                AND NOT EXISTS (SELECT 1 FROM batch AS b WHERE b.stream_id = d2.stream_id)
                              -- in the path index's order: its range, whatever the statistics say
                              ORDER BY d2.path_locator COLLATE "C") AS d2
          -- the deepest moved copy above the row decides
          ORDER BY d2.row_address, length(mv.old_path) DESC) AS x
    WHERE d.ctid = x.row_address
    RETURNING 1
), updated AS (
    INSERT INTO {TargetObject} AS t ({ColumnList})
    SELECT {ColumnList} FROM batch AS b
    WHERE b."dbtools$Exists"
    ON CONFLICT (stream_id) DO UPDATE SET {UpdateList}
    RETURNING 1
), inserted AS (
    INSERT INTO {TargetObject} ({ColumnList})
    SELECT {ColumnList} FROM batch AS b
    WHERE NOT b."dbtools$Exists"
    RETURNING 1
), versions AS (
    INSERT INTO {VersionObject} AS v ("TableName", stream_id, "ModifiedOn", "BusinessUnit", "RunId", "CopiedAt")
    SELECT $7, b.stream_id, b."dbtools$ModifiedOn", b."dbtools$BusinessUnit", $6, (now() AT TIME ZONE 'UTC')
    FROM batch AS b
    ON CONFLICT ("TableName", stream_id) DO UPDATE
    SET "ModifiedOn" = EXCLUDED."ModifiedOn", "BusinessUnit" = EXCLUDED."BusinessUnit",
        "RunId" = EXCLUDED."RunId", "CopiedAt" = EXCLUDED."CopiedAt"
), processed AS (
    UPDATE {QueueObject} AS q
    SET "Processed" = true, "ProcessedAt" = (now() AT TIME ZONE 'UTC')
    WHERE q.ctid = ANY (ARRAY(SELECT b."dbtools$QueueRow" FROM batch AS b))
    RETURNING 1
)
SELECT count(*)::integer, NULL::timestamp(3),
       (SELECT count(*) FROM inserted)::integer, (SELECT count(*) FROM updated)::integer, 0,
       (SELECT count(*) FROM moved)::integer
FROM processed
