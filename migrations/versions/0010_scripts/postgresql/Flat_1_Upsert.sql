-- Flat, one step, keyset batches: up to $1 rows changed in [$3, $4), from the previous batch's
-- last ModifiedOn ($8) on, whose target copy is missing or older. Newest ModifiedOn wins; an
-- older version never overwrites a newer one. Returns the rows and this batch's last ModifiedOn, then
-- (revision 0010) rows inserted, updated, deleted (none) and moved (none).
-- The batch walks the metadata ModifiedOn index in order and probes BU table, source and target
-- per row (LATERAL with LIMIT: never flattened into a hash join, which would read the whole rest
-- of the window for every batch once the target's statistics show it filling up).
-- {SourceRow} adds the source row s to the metadata row m: a lookup by key, or the metadata row
-- itself when the metadata table is the source table.
-- First load ($9: the target held no row when the run opened the table): every target row was
-- written by this step's earlier batches, at or before their last ModifiedOn, the position, which
-- is $8 + 1 ms (kept to the millisecond, so a row's own value is at most 0.5 ms past it). Only
-- rows before $8 + 2 ms are looked up in the target; the lookup of the others is never run (a
-- One-Time Filter). A copied row whose ModifiedOn moved past the position since (a late write)
-- makes the plain insert hit the key: the engine then runs the batch again with $9 false.
WITH batch AS (
    SELECT {SourceColumnList}, m.{MetadataModifiedOnCol} AS "dbtools$ModifiedOn", t.present IS NOT NULL AS "dbtools$Exists"
    FROM {MetadataObject} AS m
    CROSS JOIN LATERAL (SELECT 1 FROM {BusinessUnitObject} AS bu
                        WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol} LIMIT 1) AS bu
    {SourceRow}
    LEFT JOIN LATERAL (SELECT true AS present, t.{MetadataModifiedOnCol} AS modified_on FROM {TargetObject} AS t
                       WHERE t.{MetadataIdColumn} = m.{MetadataIdColumn}
                         AND NOT (coalesce($9, false) AND ($8 IS NULL OR m.{MetadataModifiedOnCol} >= $8 + interval '2 milliseconds'))
                       LIMIT 1) AS t ON true
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
SELECT count(*)::integer, max("dbtools$ModifiedOn"),
       (SELECT count(*) FROM inserted)::integer, (SELECT count(*) FROM updated)::integer, 0, 0
FROM batch
