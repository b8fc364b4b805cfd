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
-- Every step below is bounded by what the batch names, whatever the statistics say (a target
-- emptied and reloaded can look empty while it is full): the batch and what it finds are
-- materialized first, the target is probed per row (LATERAL ... LIMIT 1, a range of the path index
-- per folder, [NOT] EXISTS ... OFFSET 0), and rows are deleted by row address.
WITH batch AS MATERIALIZED (
    SELECT l.ctid AS log_row, l.stream_id
    FROM {DeletionLogObject} AS l
    LEFT JOIN LATERAL (SELECT v."BusinessUnit" FROM {VersionObject} AS v
                       WHERE v."TableName" = $7 AND v.stream_id = l.stream_id LIMIT 1) AS v ON true
    WHERE l."TableName" = $7 AND l."AppliedAt" IS NULL AND l."RunId" IS DISTINCT FROM $6
      AND coalesce(l."DeletedAt", l."DetectedAt") < $4
      AND ($5 IS NULL OR coalesce(l."BusinessUnit", v."BusinessUnit") = $5)
    ORDER BY l."DeletionId"
    LIMIT $1
), gone AS MATERIALIZED (
    SELECT b.log_row, t.path_locator
    FROM batch AS b
    CROSS JOIN LATERAL (SELECT t.path_locator FROM {TargetObject} AS t WHERE t.stream_id = b.stream_id LIMIT 1) AS t
    WHERE NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = b.stream_id OFFSET 0)
), blocked AS MATERIALIZED (
    -- A folder whose target subtree still holds a blob of the source: deferred.
    SELECT g.log_row, g.path_locator
    FROM gone AS g
    CROSS JOIN LATERAL (SELECT 1 FROM {TargetObject} AS d
                        WHERE d.path_locator COLLATE "C" > g.path_locator COLLATE "C"
                          AND d.path_locator COLLATE "C" < (left(g.path_locator, -1) || '0') COLLATE "C"
                          AND EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = d.stream_id OFFSET 0)
                        ORDER BY d.path_locator COLLATE "C"  -- the path index's range
                        LIMIT 1) AS held
), doomed AS MATERIALIZED (
    SELECT DISTINCT d.row_address, d.stream_id
    FROM gone AS g
    CROSS JOIN LATERAL (SELECT d.ctid AS row_address, d.stream_id FROM {TargetObject} AS d
                        WHERE d.path_locator COLLATE "C" >= g.path_locator COLLATE "C"
                          AND d.path_locator COLLATE "C" < (left(g.path_locator, -1) || '0') COLLATE "C"
                        ORDER BY d.path_locator COLLATE "C") AS d  -- the path index's range
    WHERE NOT EXISTS (SELECT 1 FROM blocked AS k WHERE k.log_row = g.log_row)
      AND NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = d.stream_id OFFSET 0)
), deleted AS (
    DELETE FROM {TargetObject} AS t
    WHERE t.ctid = ANY (ARRAY(SELECT x.row_address FROM doomed AS x))
    RETURNING t.stream_id
), unversioned AS (
    DELETE FROM {VersionObject} AS v
    WHERE v.ctid = ANY (ARRAY(
            SELECT r.row_address
            FROM deleted AS x
            CROSS JOIN LATERAL (SELECT v2.ctid AS row_address FROM {VersionObject} AS v2
                                WHERE v2."TableName" = $7 AND v2.stream_id = x.stream_id LIMIT 1) AS r))
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
