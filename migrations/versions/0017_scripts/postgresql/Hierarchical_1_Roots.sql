-- Step 1, Roots (revision 0017: 0010's, which sets aside the rows that are not candidates;
-- revision 0010): up to $1 root blobs (no parent in the source) changed in [$3, $4),
-- in BU scope, from the keyset position ($8) on, whose copy in the target is missing or older: the
-- metadata ModifiedOn recorded for it in {VersionObject} is older than the metadata's, or unknown.
-- Newest wins: an older or equal one changes nothing. A copy is replaced whole (name, content,
-- attributes and path); a copy whose path changed (a move) takes its target subtree along, in the
-- same statement, so no row is ever without its parent. Every copy written records its ModifiedOn.
-- Returns the batch's size and last ModifiedOn, then rows inserted, updated, deleted (none) and
-- moved along with a folder. Walks the metadata index and probes per row (see 0009's Children).
-- Revision 0017: when step 2a recorded the run's candidates ({CandidateObject}, a row without a
-- stream_id marks them recorded), a window row that is not one of them (its copy was current when
-- the run began) is set aside in the metadata index's walk by one probe of that list, before its
-- business unit, source, copy and version are looked up. The test below still decides for the rest.
WITH batch AS (
    SELECT {SourceColumnList},
           m.{MetadataModifiedOnCol}::timestamp AS "dbtools$ModifiedOn",
           m.{MetadataBusinessUnitCol} AS "dbtools$BusinessUnit",
           t.present IS NOT NULL AS "dbtools$Exists",
           t.path_locator AS "dbtools$TargetPath"
    FROM {MetadataObject} AS m
    CROSS JOIN LATERAL (SELECT 1 FROM {BusinessUnitObject} AS bu
                        WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol} LIMIT 1) AS bu
    CROSS JOIN LATERAL (SELECT s.* FROM {SourceObject} AS s WHERE s.stream_id = m.{MetadataIdColumn} LIMIT 1) AS s
    LEFT JOIN LATERAL (SELECT true AS present, t.path_locator FROM {TargetObject} AS t
                       WHERE t.stream_id = s.stream_id LIMIT 1) AS t ON true
    LEFT JOIN LATERAL (SELECT v."ModifiedOn" FROM {VersionObject} AS v
                       WHERE v."TableName" = $7 AND v.stream_id = s.stream_id LIMIT 1) AS v ON true
    WHERE m.{MetadataModifiedOnCol} >= greatest($3, $8) AND m.{MetadataModifiedOnCol} < $4  -- greatest() skips a NULL $8
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND (NOT EXISTS (SELECT 1 FROM {CandidateObject} AS k0
                       WHERE k0."TableName" = $7 AND k0."RunId" = $6 AND k0.stream_id IS NULL)  -- once (an InitPlan)
           OR EXISTS (SELECT 1 FROM {CandidateObject} AS k
                      WHERE k."TableName" = $7 AND k."RunId" = $6 AND k.stream_id = m.{MetadataIdColumn} OFFSET 0))
      AND s.parent_path_locator IS NULL
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
    SET path_locator = (SELECT mv.new_path || substr(d.path_locator, length(mv.old_path) + 1)
                        FROM moves AS mv
                        WHERE d.path_locator COLLATE "C" > mv.old_path COLLATE "C"
                          AND d.path_locator COLLATE "C" < (left(mv.old_path, -1) || '0') COLLATE "C"
                        ORDER BY length(mv.old_path) DESC
                        LIMIT 1)
    WHERE d.ctid = ANY (ARRAY(
            SELECT unnest(ARRAY(SELECT d2.ctid FROM {TargetObject} AS d2
                                WHERE d2.path_locator COLLATE "C" > mv.old_path COLLATE "C"
                                  AND d2.path_locator COLLATE "C" < (left(mv.old_path, -1) || '0') COLLATE "C"
                                  AND NOT EXISTS (SELECT 1 FROM batch AS b WHERE b.stream_id = d2.stream_id)
                                -- in the path index's order: its range, whatever the statistics say
                                ORDER BY d2.path_locator COLLATE "C"))
            FROM moves AS mv))
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
)
SELECT count(*)::integer, max(b."dbtools$ModifiedOn"),
       (SELECT count(*) FROM inserted)::integer, (SELECT count(*) FROM updated)::integer, 0,
       (SELECT count(*) FROM moved)::integer
FROM batch AS b
