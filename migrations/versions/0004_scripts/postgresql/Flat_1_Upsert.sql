-- Flat, one step, keyset batches: up to $1 rows changed in [$3, $4), from the previous batch's
-- last ModifiedOn ($8) on, whose target copy is missing or older. Newest ModifiedOn wins; an
-- older version never overwrites a newer one. Returns the rows and this batch's last ModifiedOn.
-- The batch walks the metadata ModifiedOn index in order and probes source, BU table and target
-- per row (LATERAL with LIMIT: never flattened into a hash join, which would read the whole rest
-- of the window for every batch once the target's statistics show it filling up).
WITH batch AS (
    SELECT {SourceColumnList}, m.{MetadataModifiedOnCol} AS "dbtools$ModifiedOn", t.present IS NOT NULL AS "dbtools$Exists"
    FROM {MetadataObject} AS m
    CROSS JOIN LATERAL (SELECT 1 FROM {BusinessUnitObject} AS bu
                        WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol} LIMIT 1) AS bu
    CROSS JOIN LATERAL (SELECT * FROM {SourceObject} AS s WHERE s.{MetadataIdColumn} = m.{MetadataIdColumn} OFFSET 0) AS s
    LEFT JOIN LATERAL (SELECT true AS present, t.{MetadataModifiedOnCol} AS modified_on FROM {TargetObject} AS t
                       WHERE t.{MetadataIdColumn} = m.{MetadataIdColumn} LIMIT 1) AS t ON true
    WHERE m.{MetadataModifiedOnCol} >= greatest($3, $8) AND m.{MetadataModifiedOnCol} < $4  -- greatest() skips a NULL $8
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND ($2 IS NULL OR s.{MetadataIdColumn}::text <> $2::text)
      AND (t.present IS NULL OR t.modified_on < m.{MetadataModifiedOnCol})
    ORDER BY m.{MetadataModifiedOnCol}  -- the index order; ties need no order (the next batch starts at >=)
    LIMIT $1
), updated AS (
    -- Older copies: ON CONFLICT finds each one by the key's index (a join here can be planned as a
    -- scan of the whole target); the WHERE keeps a newer copy.
    INSERT INTO {TargetObject} AS t ({ColumnList})
    SELECT {ColumnList} FROM batch AS b
    WHERE b."dbtools$Exists"
    ON CONFLICT ({MetadataIdColumn}) DO UPDATE SET {UpdateList}
    WHERE t.{MetadataModifiedOnCol} < EXCLUDED.{MetadataModifiedOnCol}
    RETURNING 1
), inserted AS (
    -- Missing rows: a plain insert, cheaper than a speculative one; the key's unique index still
    -- rejects a copy inserted meanwhile (the lease makes the engine the table's only writer).
    INSERT INTO {TargetObject} ({ColumnList})
    SELECT {ColumnList} FROM batch AS b
    WHERE NOT b."dbtools$Exists"
    RETURNING 1
)
SELECT count(*)::integer, max("dbtools$ModifiedOn") FROM batch
