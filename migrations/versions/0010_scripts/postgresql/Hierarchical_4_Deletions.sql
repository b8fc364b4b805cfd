-- Step 4, Deletions (revision 0010): apply up to $1 pending deletions of this table from
-- {DeletionLogObject}, oldest first: those recorded before the window's end ($4), in BU scope (the
-- unit the log row names, else the unit recorded with the copy), that no run has applied and this
-- run has not deferred. A deleted blob that is gone from the source is removed from the target
-- with every row of its target subtree that is gone from the source too (a deleted folder takes
-- its subtree with it), with their recorded versions, in one statement. Blobs of that subtree still
-- in the source were moved away by step 2 before this step; should one be there all the same (it
-- moved after step 2 began), the deletion is deferred to a later run (RunId set, AppliedAt left
-- NULL) rather than orphan it. A logged blob that is still in the source is not deleted. Every
-- other log row taken is marked applied by this run. Returns the number of log rows taken, no
-- position, then rows inserted (none), updated (none), deleted and moved (none).
WITH batch AS (
    SELECT l.ctid AS log_row, l.stream_id
    FROM {DeletionLogObject} AS l
    LEFT JOIN LATERAL (SELECT v."BusinessUnit" FROM {VersionObject} AS v
                       WHERE v."TableName" = $7 AND v.stream_id = l.stream_id LIMIT 1) AS v ON true
    WHERE l."TableName" = $7 AND l."AppliedAt" IS NULL AND l."RunId" IS DISTINCT FROM $6
      AND coalesce(l."DeletedAt", l."DetectedAt") < $4
      AND ($5 IS NULL OR coalesce(l."BusinessUnit", v."BusinessUnit") = $5)
    ORDER BY l."DeletionId"
    LIMIT $1
), gone AS (
    SELECT b.log_row, t.path_locator
    FROM batch AS b
    JOIN {TargetObject} AS t ON t.stream_id = b.stream_id
    WHERE NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = b.stream_id)
), blocked AS (
    -- A folder whose target subtree still holds a blob of the source: deferred.
    SELECT g.log_row, g.path_locator
    FROM gone AS g
    WHERE EXISTS (SELECT 1 FROM {TargetObject} AS d
                  JOIN {SourceObject} AS s ON s.stream_id = d.stream_id
                  WHERE d.path_locator COLLATE "C" > g.path_locator COLLATE "C"
                    AND d.path_locator COLLATE "C" < (left(g.path_locator, -1) || '0') COLLATE "C")
), doomed AS (
    SELECT DISTINCT d.stream_id
    FROM gone AS g
    JOIN {TargetObject} AS d
      ON d.path_locator COLLATE "C" >= g.path_locator COLLATE "C"
     AND d.path_locator COLLATE "C" < (left(g.path_locator, -1) || '0') COLLATE "C"
    WHERE NOT EXISTS (SELECT 1 FROM blocked AS k WHERE k.log_row = g.log_row)
      AND NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = d.stream_id)
), deleted AS (
    DELETE FROM {TargetObject} AS t
    USING doomed AS x
    WHERE t.stream_id = x.stream_id
    RETURNING t.stream_id
), unversioned AS (
    DELETE FROM {VersionObject} AS v
    WHERE v."TableName" = $7 AND v.stream_id = ANY (ARRAY(SELECT x.stream_id FROM deleted AS x))
), marked AS (
    UPDATE {DeletionLogObject} AS l
    SET "RunId" = $6,
        "AppliedAt" = CASE WHEN EXISTS (SELECT 1 FROM blocked AS k WHERE k.log_row = l.ctid)
                           THEN NULL ELSE (now() AT TIME ZONE 'UTC') END
    WHERE l.ctid = ANY (ARRAY(SELECT b.log_row FROM batch AS b))
    RETURNING 1
)
SELECT count(*)::integer, NULL::timestamp(3), 0, 0, (SELECT count(*) FROM deleted)::integer, 0
FROM marked
