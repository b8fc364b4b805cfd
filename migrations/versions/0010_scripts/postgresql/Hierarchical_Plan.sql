-- Plan (revision 0010): what a run of this window would do, step by step, computed from the target
-- as it is now with the steps' own predicates; it writes nothing. One row per step: step number,
-- rows inserted, updated (rewritten, moves included) and deleted. Step 0 is a Full sync's clean
-- slate ($10): the run removes those rows before step 1, so every other step is counted on the
-- target without them. $1 (batch size) and $8 (keyset position) are not used: a plan covers the
-- whole window. Rows that follow a moved folder are not counted (they depend on the order in which
-- the moves are applied); rows already current in the target are not counted.
--
-- The run's steps see one another's work; the plan follows how they do:
--   step 2a runs first, on this target, and queues the blobs that must be placed (missing, or not
--   at their source path): ancestors of the changed children, and blobs still in the source under a
--   deleted folder, with their ancestors, except step 1's own candidates;
--   step 1 writes its candidates; step 2b writes every queued blob; step 3 writes its candidates
--   except the queued ones (written by step 2b, they are current by then); step 4 deletes what is
--   gone from the source under the pending deletions, except what a queued blob carries away.
WITH doomed AS MATERIALIZED (
    -- A Full sync of one business unit removes that unit's rows but keeps any row with a
    -- descendant of another unit (or of none): the tree stays whole.
    SELECT t.stream_id
    FROM {TargetObject} AS t
    WHERE $10 AND $5 IS NOT NULL
      AND EXISTS (SELECT 1 FROM {MetadataObject} AS m
                  WHERE m.{MetadataIdColumn} = t.stream_id AND m.{MetadataBusinessUnitCol} = $5)
      AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS d
                      WHERE d.path_locator COLLATE "C" > t.path_locator COLLATE "C"
                        AND d.path_locator COLLATE "C" < (left(t.path_locator, -1) || '0') COLLATE "C"
                        AND NOT EXISTS (SELECT 1 FROM {MetadataObject} AS md
                                        WHERE md.{MetadataIdColumn} = d.stream_id AND md.{MetadataBusinessUnitCol} = $5))
), kept AS MATERIALIZED (
    -- false when a Full sync of every unit empties the target
    SELECT NOT ($10 AND $5 IS NULL) AS any_row
), window_rows AS MATERIALIZED (
    SELECT s.stream_id, s.parent_path_locator,
           t.present IS NOT NULL AS present,
           (t.present IS NULL OR v."ModifiedOn" IS NULL
            OR v."ModifiedOn" < m.{MetadataModifiedOnCol}::timestamp) AS changed
    FROM {MetadataObject} AS m
    CROSS JOIN LATERAL (SELECT 1 FROM {BusinessUnitObject} AS bu
                        WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol} LIMIT 1) AS bu
    CROSS JOIN LATERAL (SELECT s.* FROM {SourceObject} AS s WHERE s.stream_id = m.{MetadataIdColumn} LIMIT 1) AS s
    LEFT JOIN LATERAL (SELECT true AS present FROM {TargetObject} AS t
                       WHERE t.stream_id = s.stream_id AND (SELECT k.any_row FROM kept AS k)
                         AND NOT EXISTS (SELECT 1 FROM doomed AS x WHERE x.stream_id = t.stream_id)
                       LIMIT 1) AS t ON true
    LEFT JOIN LATERAL (SELECT v."ModifiedOn" FROM {VersionObject} AS v
                       WHERE v."TableName" = $7 AND v.stream_id = s.stream_id LIMIT 1) AS v ON true
    WHERE m.{MetadataModifiedOnCol} >= $3 AND m.{MetadataModifiedOnCol} < $4
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND ($2 IS NULL OR s.stream_id <> $2)
), roots AS (
    SELECT w.stream_id, w.present FROM window_rows AS w WHERE w.parent_path_locator IS NULL AND w.changed
), pending AS (
    SELECT l.stream_id
    FROM {DeletionLogObject} AS l
    LEFT JOIN LATERAL (SELECT v."BusinessUnit" FROM {VersionObject} AS v
                       WHERE v."TableName" = $7 AND v.stream_id = l.stream_id LIMIT 1) AS v ON true
    WHERE l."TableName" = $7 AND l."AppliedAt" IS NULL
      AND coalesce(l."DeletedAt", l."DetectedAt") < $4
      AND ($5 IS NULL OR coalesce(l."BusinessUnit", v."BusinessUnit") = $5)
), deleted_folders AS (
    SELECT DISTINCT t.stream_id, t.path_locator
    FROM pending AS p
    JOIN {TargetObject} AS t ON t.stream_id = p.stream_id
    WHERE (SELECT k.any_row FROM kept AS k)
      AND NOT EXISTS (SELECT 1 FROM doomed AS x WHERE x.stream_id = t.stream_id)
      AND NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = p.stream_id)
), survivors AS (
    SELECT s.path_locator AS leaf
    FROM deleted_folders AS f
    JOIN {TargetObject} AS d
      ON d.path_locator COLLATE "C" > f.path_locator COLLATE "C"
     AND d.path_locator COLLATE "C" < (left(f.path_locator, -1) || '0') COLLATE "C"
    JOIN {SourceObject} AS s ON s.stream_id = d.stream_id
    WHERE NOT EXISTS (SELECT 1 FROM doomed AS x WHERE x.stream_id = d.stream_id)
), ancestor_paths AS (
    SELECT DISTINCT left(n.leaf, g.i) AS path_locator
    FROM (SELECT w.parent_path_locator AS leaf FROM window_rows AS w WHERE w.parent_path_locator IS NOT NULL AND w.changed
          UNION SELECT sv.leaf FROM survivors AS sv) AS n
    CROSS JOIN LATERAL generate_series(2, length(n.leaf)) AS g (i)
    WHERE substr(n.leaf, g.i, 1) = '/'
), queued AS MATERIALIZED (
    SELECT DISTINCT p.stream_id,
           (SELECT k.any_row FROM kept AS k)
           AND EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = p.stream_id
                         AND NOT EXISTS (SELECT 1 FROM doomed AS x WHERE x.stream_id = t.stream_id)) AS present
    FROM ancestor_paths AS a
    JOIN {SourceObject} AS p ON p.path_locator = a.path_locator
    WHERE NOT ((SELECT k.any_row FROM kept AS k)
               AND EXISTS (SELECT 1 FROM {TargetObject} AS t
                           WHERE t.stream_id = p.stream_id AND t.path_locator = p.path_locator
                             AND NOT EXISTS (SELECT 1 FROM doomed AS x WHERE x.stream_id = t.stream_id)))
      AND NOT EXISTS (SELECT 1 FROM roots AS r WHERE r.stream_id = p.stream_id)
), children AS (
    SELECT w.stream_id, w.present
    FROM window_rows AS w
    WHERE w.parent_path_locator IS NOT NULL AND w.changed
      AND NOT EXISTS (SELECT 1 FROM queued AS q WHERE q.stream_id = w.stream_id)
), gone AS (
    -- target rows gone from the source under (or at) a deleted folder, with every target row between
    -- them and the folder gone too (a blob still in the source carries its subtree away in step 2)
    SELECT DISTINCT d.stream_id
    FROM deleted_folders AS f
    JOIN {TargetObject} AS d
      ON d.path_locator COLLATE "C" >= f.path_locator COLLATE "C"
     AND d.path_locator COLLATE "C" < (left(f.path_locator, -1) || '0') COLLATE "C"
    WHERE NOT EXISTS (SELECT 1 FROM doomed AS x WHERE x.stream_id = d.stream_id)
      AND NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = d.stream_id)
      AND NOT EXISTS (SELECT 1
                      FROM generate_series(length(f.path_locator) + 2, length(d.path_locator) - 1) AS g (i)
                      JOIN {TargetObject} AS a ON a.path_locator = left(d.path_locator, g.i)
                      JOIN {SourceObject} AS s ON s.stream_id = a.stream_id
                      WHERE substr(d.path_locator, g.i, 1) = '/')
)
SELECT 0 AS step_number, 0::bigint AS inserted, 0::bigint AS updated,
       CASE WHEN NOT $10 THEN 0
            WHEN $5 IS NULL THEN (SELECT count(*) FROM {TargetObject})
            ELSE (SELECT count(*) FROM doomed) END AS deleted
UNION ALL
SELECT 1, count(*) FILTER (WHERE NOT r.present), count(*) FILTER (WHERE r.present), 0 FROM roots AS r
UNION ALL
SELECT 2, count(*) FILTER (WHERE NOT q.present), count(*) FILTER (WHERE q.present), 0 FROM queued AS q
UNION ALL
SELECT 3, count(*) FILTER (WHERE NOT c.present), count(*) FILTER (WHERE c.present), 0 FROM children AS c
UNION ALL
SELECT 4, 0, 0, count(*) FROM gone
