-- Step 3, Children: revision 0017's, the new copies inserted in the source's row order (an experiment of
-- bench/experiments/delta_files_overhead.py, not a revision: it showed no gain beyond the noise). Up to $1
-- child blobs (a parent in the source) changed in [$3, $4),
-- in BU scope, from the keyset position ($8) on, whose parent is in the target (a child never lands
-- without it: step 2 has placed every ancestor that the window's changed children need) and whose
-- copy in the target is missing or older: the metadata ModifiedOn recorded for it in
-- {VersionObject} is older than the metadata's, or unknown.
-- Newest wins: an older or equal one changes nothing. A copy is replaced whole (name, content,
-- attributes and path); a copy whose path changed (a move) takes its target subtree along, in the
-- same statement, so no row is ever without its parent. Every copy written records its ModifiedOn.
-- Returns the batch's size and last ModifiedOn, then rows inserted, updated, deleted (none) and
-- moved along with a folder. Walks the metadata index and probes per row (see 0009's Children).
-- Revision 0014 (see 0014_scripts/README.md): an older copy and its recorded version are rewritten
-- at the row addresses the batch's probes found, not found again by key (ON CONFLICT); and a first
-- load ($9) looks up a file in the target and in {VersionObject} only before $8 + 2 ms, as the Flat
-- script does: a late write then hits the stream_id key (or the versions' key) and the engine runs
-- the batch again with $9 false. Folders are always looked up: step 2 back-fills them.
-- Revision 0015: outside a first load, a window row whose recorded version is at least as new and
-- whose copy is in the target (a current row: no candidate) is set aside in the metadata index's
-- walk, by those two probes keyed on the metadata's id, before its business unit, source, parent,
-- copy and version are looked up below. The test below still decides; this one only skips rows it
-- would reject.
-- Revision 0017: when step 2a recorded the run's candidates ({CandidateObject}, a row without a
-- stream_id marks them recorded), that list replaces 0015's two probes: a window row that is not
-- one of them (its copy was current when the run began) is set aside by one probe of the list. A
-- run without the list (a first load's, or one whose list another run has cleared) tests as 0015.
-- The experiment: the batch keeps each source row's address, and the new copies are inserted in that
-- order. The batch holds the content as the source's TOAST pointers; the insert reads each blob when
-- it writes it, so in the source's row order its chunks are read in the order they were stored, not
-- in the metadata's (docs/benchmarks.md, "Where a real-sized first load's time goes").
WITH batch AS (
    SELECT {SourceColumnList},
           m.{MetadataModifiedOnCol}::timestamp AS "dbtools$ModifiedOn",
           m.{MetadataBusinessUnitCol} AS "dbtools$BusinessUnit",
           t.present IS NOT NULL AS "dbtools$Exists",
           t.path_locator AS "dbtools$TargetPath",
           t.row_address AS "dbtools$RowAddress",
           v.present IS NOT NULL AS "dbtools$Recorded",
           v.row_address AS "dbtools$VersionAddress",
           s."dbtools$SourceAddress"
    FROM {MetadataObject} AS m
    CROSS JOIN LATERAL (SELECT 1 FROM {BusinessUnitObject} AS bu
                        WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol} LIMIT 1) AS bu
    CROSS JOIN LATERAL (SELECT s.ctid AS "dbtools$SourceAddress", s.* FROM {SourceObject} AS s
                        WHERE s.stream_id = m.{MetadataIdColumn} LIMIT 1) AS s
    -- A first load skips these two lookups for a file at or past $8 + 2 ms (a One-Time Filter).
    LEFT JOIN LATERAL (SELECT true AS present, t.path_locator, t.ctid AS row_address FROM {TargetObject} AS t
                       WHERE t.stream_id = s.stream_id
                         AND NOT (coalesce($9, false) AND NOT s.is_directory AND ($8 IS NULL OR m.{MetadataModifiedOnCol} >= $8 + interval '2 milliseconds'))
                       LIMIT 1) AS t ON true
    LEFT JOIN LATERAL (SELECT true AS present, v."ModifiedOn", v.ctid AS row_address FROM {VersionObject} AS v
                       WHERE v."TableName" = $7 AND v.stream_id = s.stream_id
                         AND NOT (coalesce($9, false) AND NOT s.is_directory AND ($8 IS NULL OR m.{MetadataModifiedOnCol} >= $8 + interval '2 milliseconds'))
                       LIMIT 1) AS v ON true
    WHERE m.{MetadataModifiedOnCol} >= greatest($3, $8) AND m.{MetadataModifiedOnCol} < $4  -- greatest() skips a NULL $8
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND (coalesce($9, false)
           OR CASE WHEN EXISTS (SELECT 1 FROM {CandidateObject} AS k0
                                WHERE k0."TableName" = $7 AND k0."RunId" = $6 AND k0.stream_id IS NULL)  -- once (an InitPlan)
                   THEN EXISTS (SELECT 1 FROM {CandidateObject} AS k
                                WHERE k."TableName" = $7 AND k."RunId" = $6 AND k.stream_id = m.{MetadataIdColumn} OFFSET 0)
                   ELSE NOT EXISTS (SELECT 1 FROM {VersionObject} AS v0
                                    WHERE v0."TableName" = $7 AND v0.stream_id = m.{MetadataIdColumn}
                                      AND v0."ModifiedOn" >= m.{MetadataModifiedOnCol}::timestamp
                                      AND EXISTS (SELECT 1 FROM {TargetObject} AS t0 WHERE t0.stream_id = v0.stream_id OFFSET 0)
                                    OFFSET 0) END)
      AND s.parent_path_locator IS NOT NULL
      AND EXISTS (SELECT 1 FROM {TargetObject} AS p WHERE p.path_locator = s.parent_path_locator OFFSET 0)
      AND ($2 IS NULL OR s.stream_id <> $2)
      AND (t.present IS NULL OR v."ModifiedOn" IS NULL OR v."ModifiedOn" < m.{MetadataModifiedOnCol}::timestamp)
    ORDER BY m.{MetadataModifiedOnCol}  -- the index order; ties need no order (the next batch starts at >=)
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
    -- Each older copy at the address its probe found. The lease makes the engine the target's only
    -- writer, and no other part of this statement writes a batch row (moves skip them).
    UPDATE {TargetObject} AS d
    SET {SourceUpdateList}
    FROM batch AS s
    WHERE s."dbtools$Exists" AND d.ctid = s."dbtools$RowAddress"
    RETURNING 1
), inserted AS (
    INSERT INTO {TargetObject} ({ColumnList})
    SELECT {ColumnList} FROM batch AS b
    WHERE NOT b."dbtools$Exists"
    ORDER BY b."dbtools$SourceAddress"  -- each blob read where the source stored it, in that order
    RETURNING 1
), keyed AS (
    -- Writes nothing: it makes the statement require a unique key on the target's stream_id, which
    -- a first load's plain inserts rely on (without one, the planner refuses ON CONFLICT).
    INSERT INTO {TargetObject} ({ColumnList})
    SELECT {ColumnList} FROM batch AS b
    WHERE false
    ON CONFLICT (stream_id) DO NOTHING
), recorded AS (
    -- Versions: a blob seen before has its row rewritten, a new one gets a plain insert.
    UPDATE {VersionObject} AS v
    SET "ModifiedOn" = b."dbtools$ModifiedOn", "BusinessUnit" = b."dbtools$BusinessUnit",
        "RunId" = $6, "CopiedAt" = (now() AT TIME ZONE 'UTC')
    FROM batch AS b
    WHERE b."dbtools$Recorded" AND v.ctid = b."dbtools$VersionAddress"
), versions AS (
    INSERT INTO {VersionObject} ("TableName", stream_id, "ModifiedOn", "BusinessUnit", "RunId", "CopiedAt")
    SELECT $7, b.stream_id, b."dbtools$ModifiedOn", b."dbtools$BusinessUnit", $6, (now() AT TIME ZONE 'UTC')
    FROM batch AS b
    WHERE NOT b."dbtools$Recorded"
)
SELECT count(*)::integer, max(b."dbtools$ModifiedOn"),
       (SELECT count(*) FROM inserted)::integer, (SELECT count(*) FROM updated)::integer, 0,
       (SELECT count(*) FROM moved)::integer
FROM batch AS b
