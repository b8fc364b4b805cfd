-- Step 3, Children, keyset batches: up to $1 in-window children not yet in the target whose
-- parent is in the target (a child never lands without its parent), from the previous batch's
-- last ModifiedOn ($8) on. Step 2 has already back-filled every ancestor of the window's
-- children, so the order of this step is free and follows the metadata index.
-- Revision 0009: the batch walks the metadata ModifiedOn index in order and probes the
-- business-unit table, the source and the target per row, then stops at $1 rows. The source and
-- business-unit lookups are LATERAL with LIMIT and the target checks are [NOT] EXISTS with
-- OFFSET 0: none of them can be turned into a join, so the target's statistics cannot turn the
-- batch into hash joins over the whole source and target (as they did once autovacuum saw the
-- target filling up), and the planner gives each check a selectivity of one half, so the walk in
-- index order stays cheaper than sorting the rest of the window. The batch carries the source
-- row, so the insert does not read the source again.
WITH batch AS (
    SELECT s.stream_id, s.name, s.file_stream, s.path_locator, s.parent_path_locator, s.is_directory,
           s.creation_time, s.last_write_time, m.{MetadataModifiedOnCol} AS modified_on
    FROM {MetadataObject} AS m
    CROSS JOIN LATERAL (SELECT 1 FROM {BusinessUnitObject} AS bu
                        WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol} LIMIT 1) AS bu
    CROSS JOIN LATERAL (SELECT s.* FROM {SourceObject} AS s WHERE s.stream_id = m.{MetadataIdColumn} LIMIT 1) AS s
    WHERE m.{MetadataModifiedOnCol} >= greatest($3, $8) AND m.{MetadataModifiedOnCol} < $4  -- greatest() skips a NULL $8
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND s.parent_path_locator IS NOT NULL
      AND ($2 IS NULL OR s.stream_id <> $2)
      AND NOT EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = s.stream_id OFFSET 0)
      AND EXISTS (SELECT 1 FROM {TargetObject} AS p WHERE p.path_locator = s.parent_path_locator OFFSET 0)
    ORDER BY m.{MetadataModifiedOnCol}  -- the index order; ties need no order (the next batch starts at >=)
    LIMIT $1
), inserted AS (
    INSERT INTO {TargetObject} (stream_id, name, file_stream, path_locator, parent_path_locator, is_directory, creation_time, last_write_time)
    SELECT b.stream_id, b.name, b.file_stream, b.path_locator, b.parent_path_locator, b.is_directory, b.creation_time, b.last_write_time
    FROM batch AS b
    RETURNING 1
)
SELECT count(*)::integer, max(b.modified_on) FROM batch AS b  -- the batch's size, like SQL Server's twin
