-- Step 2a (revision 0017: 0016's, and it records the run's candidates, below; revision 0016:
-- 0015's, with neither the current-row test nor the name-freeing probes on
-- a first load whose target is still empty, where no row is current and no name is taken; revision
-- 0015: 0013's, its current-row test keyed on the metadata's id; revision 0013:
-- 0010's, with fewer probes; the engine runs it first, before step 1, on
-- the target as the run found it): queue every blob that must be placed before the Children step
-- can run, where the target does not hold it at its source path (missing, or misplaced because it
-- or a folder above it moved): every ancestor of the window's changed children (the Children
-- step's candidates), and, for a pending deletion of a folder that is gone from the source, every
-- blob still in the source whose copy lies under that folder (it moved away before the folder was
-- deleted), with its ancestors. Roots that step 1 rewrites anyway are left out. Ancestors are
-- queued whatever their business unit: a tree is never cut. Ancestor paths are the prefixes of a
-- path ending in '/' ('/1/3/' -> '/1/', '/1/3/').
-- It also frees the names the run will write: a target row that holds the name a written blob will
-- take in its folder (a file deleted and saved again under its name, two names swapped) takes its
-- stream_id as its name until its own change or deletion reaches it (later in the run, unless that
-- change is out of the run's scope). Names compare as the target compares them: the engine refuses a
-- table whose source and target name columns have different collations.
-- Revision 0017: when at least half the window's rows are current, it records the run's candidates
-- in {CandidateObject}: the stream_id of every row of `changed` (the window rows whose copy is
-- missing or older when the run begins), and one row without a stream_id that says the table's
-- candidates of this run are recorded. Steps 1 and 3 and the table's end check then test a window
-- row against that list (one probe of a small table) instead of probing the target, the source and
-- the versions again. Otherwise (a window of changes; a first load whose target is still empty,
-- where every window row is a candidate) it records nothing, and the steps go on without the list.
-- Returns the rows queued, no position, then rows inserted, updated, deleted (none) and renamed
-- aside.
WITH empty_target AS MATERIALIZED (
    -- A first load ($9: the target held no row when the run opened the table) whose target still
    -- holds none. Step 2a runs before the run's other steps write, but the table's configuration may
    -- have gained its queue population script while a first load that had written rows waited for
    -- its resume, so the target is asked, once: its first row, or none (LIMIT 1, no filter).
    SELECT CASE WHEN coalesce($9, false)
                THEN (SELECT count(*) FROM (SELECT 1 FROM {TargetObject} AS e LIMIT 1) AS e) = 0
                ELSE false END AS yes
), changed AS (
    -- The candidates of steps 1 and 3: window rows whose copy is missing or older. Current means a
    -- recorded version at least as new and a copy in the target: the version is probed first, and
    -- the target only for a row whose version is current (a changed row costs one probe, not two).
    -- The test names the metadata's id (the source's stream_id by the join), so it is a filter of
    -- the metadata index's walk: a current row costs those two probes and no business-unit or
    -- source probe (revision 0015).
    SELECT s.stream_id, s.name, s.parent_path_locator
    FROM {MetadataObject} AS m
    CROSS JOIN LATERAL (SELECT 1 FROM {BusinessUnitObject} AS bu
                        WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol} LIMIT 1) AS bu
    CROSS JOIN LATERAL (SELECT s.stream_id, s.name, s.parent_path_locator FROM {SourceObject} AS s
                        WHERE s.stream_id = m.{MetadataIdColumn} LIMIT 1) AS s
    WHERE m.{MetadataModifiedOnCol} >= $3 AND m.{MetadataModifiedOnCol} < $4
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND ($2 IS NULL OR s.stream_id <> $2)
      AND ((SELECT e.yes FROM empty_target AS e)  -- no copy in the target: no row is current
           OR NOT EXISTS (SELECT 1 FROM {VersionObject} AS v
                          WHERE v."TableName" = $7 AND v.stream_id = m.{MetadataIdColumn}
                            AND v."ModifiedOn" >= m.{MetadataModifiedOnCol}::timestamp
                            AND EXISTS (SELECT 1 FROM {TargetObject} AS t WHERE t.stream_id = v.stream_id OFFSET 0)
                          OFFSET 0))  -- per row, by index: never an anti-join over the whole versions table
), candidates AS (
    -- The run's candidates, and the row without a stream_id that marks them recorded (revision
    -- 0017), when at least half the window's rows are current: the list spares the later steps
    -- their probes of a current row, and costs a write and a probe of its own per candidate, so a
    -- window of changes goes without it. The window's rows are counted on the metadata index, up to
    -- twice the candidates (a window without any is not walked).
    -- Step 2a commits once per run and table, with its progress row, so a plain INSERT: an attempt
    -- that was cut off left nothing (its transaction was undone). DISTINCT: a metadata table whose
    -- id is not unique must not fail the run here.
    INSERT INTO {CandidateObject} ("RunId", stream_id, "TableName")
    SELECT $6, c.stream_id, $7
    FROM (SELECT DISTINCT c.stream_id FROM changed AS c UNION ALL SELECT NULL::uuid) AS c
    WHERE NOT (SELECT e.yes FROM empty_target AS e)
      AND 2 * (SELECT count(*) FROM changed AS c)
          <= (SELECT count(*) FROM (SELECT 1 FROM {MetadataObject} AS w
                                    WHERE w.{MetadataModifiedOnCol} >= $3 AND w.{MetadataModifiedOnCol} < $4
                                      AND ($5 IS NULL OR w.{MetadataBusinessUnitCol} = $5)
                                    LIMIT 2 * (SELECT count(*) FROM changed AS c)) AS w)
), deleted_folders AS (
    SELECT t.path_locator
    FROM {DeletionLogObject} AS l
    CROSS JOIN LATERAL (SELECT t.path_locator FROM {TargetObject} AS t WHERE t.stream_id = l.stream_id LIMIT 1) AS t
    LEFT JOIN LATERAL (SELECT v."BusinessUnit" FROM {VersionObject} AS v
                       WHERE v."TableName" = $7 AND v.stream_id = l.stream_id LIMIT 1) AS v ON true
    WHERE l."TableName" = $7 AND l."AppliedAt" IS NULL
      AND coalesce(l."DeletedAt", l."DetectedAt") < $4
      AND ($5 IS NULL OR coalesce(l."BusinessUnit", v."BusinessUnit") = $5)
      AND NOT EXISTS (SELECT 1 FROM {SourceObject} AS s WHERE s.stream_id = l.stream_id OFFSET 0)
), survivors AS (
    SELECT s.path_locator AS leaf
    FROM deleted_folders AS f
    CROSS JOIN LATERAL (SELECT d.stream_id FROM {TargetObject} AS d
                        WHERE d.path_locator COLLATE "C" > f.path_locator COLLATE "C"
                          AND d.path_locator COLLATE "C" < (left(f.path_locator, -1) || '0') COLLATE "C"
                        ORDER BY d.path_locator COLLATE "C") AS d  -- the path index's range
    CROSS JOIN LATERAL (SELECT s.path_locator FROM {SourceObject} AS s WHERE s.stream_id = d.stream_id LIMIT 1) AS s
), ancestor_paths AS (
    SELECT DISTINCT left(n.leaf, g.i) AS path_locator
    FROM (SELECT c.parent_path_locator AS leaf FROM changed AS c WHERE c.parent_path_locator IS NOT NULL
          UNION SELECT sv.leaf FROM survivors AS sv) AS n
    CROSS JOIN LATERAL generate_series(2, length(n.leaf)) AS g (i)
    WHERE substr(n.leaf, g.i, 1) = '/'
), ancestors AS MATERIALIZED (
    -- Each ancestor path probes the source and the target by index, whatever the planner guesses of
    -- the number of paths (generate_series) or of the tables' sizes (a first load's target): the
    -- blob at the path, and where the target holds it. The name-freeing below finds a written
    -- blob's folder here too (every written blob's parent path is one of these paths).
    SELECT p.stream_id, p.name, p.parent_path_locator, p.path_locator, t.path_locator AS target_path
    FROM ancestor_paths AS a
    CROSS JOIN LATERAL (SELECT p.stream_id, p.name, p.parent_path_locator, p.path_locator FROM {SourceObject} AS p
                        WHERE p.path_locator = a.path_locator LIMIT 1) AS p
    LEFT JOIN LATERAL (SELECT t.path_locator FROM {TargetObject} AS t
                       WHERE t.stream_id = p.stream_id LIMIT 1) AS t ON true
), needed AS (
    SELECT p.stream_id, p.name, p.parent_path_locator, m.bu
    FROM ancestors AS p
    LEFT JOIN LATERAL (SELECT m.{MetadataBusinessUnitCol} AS bu
                       FROM {MetadataObject} AS m WHERE m.{MetadataIdColumn} = p.stream_id LIMIT 1) AS m ON true
    WHERE (p.target_path IS NULL OR p.target_path <> p.path_locator)  -- missing, or not at its source path
      -- not one of step 1's candidates
      AND NOT EXISTS (SELECT 1 FROM changed AS c WHERE c.stream_id = p.stream_id AND c.parent_path_locator IS NULL)
), queued AS (
    -- A blob queued already by this run (a resumed population) is left as it is: the queue's key
    -- decides, not a probe the planner could turn into a walk of the run's queue.
    INSERT INTO {QueueObject} ("RunId", "TableName", stream_id, "BusinessUnit")
    SELECT $6, $7, n.stream_id, n.bu
    FROM needed AS n
    ON CONFLICT ("RunId", "TableName", stream_id) DO NOTHING
    RETURNING 1
), writes AS (
    SELECT c.stream_id, c.name, c.parent_path_locator FROM changed AS c
    UNION
    SELECT n.stream_id, n.name, n.parent_path_locator FROM needed AS n
), parked AS (
    -- The target row (another blob) in the folder a written blob goes to, under the name it takes:
    -- the folder is found by the parent's stream_id, so a folder that moves in this run counts too
    -- (its source blob and its copy's path were found above, once per folder, with the ancestors).
    UPDATE {TargetObject} AS o
    SET name = o.stream_id::text
    WHERE o.ctid = ANY (ARRAY(
            SELECT x.row_address
            FROM writes AS w
            LEFT JOIN (SELECT a.path_locator AS source_path, a.target_path AS path_locator
                       FROM ancestors AS a) AS tp ON tp.source_path = w.parent_path_locator
            CROSS JOIN LATERAL (
                -- two probes of the (parent, name) key: a top-level name, or one in the parent folder
                SELECT o2.ctid AS row_address FROM {TargetObject} AS o2
                WHERE w.parent_path_locator IS NULL AND o2.parent_path_locator IS NULL
                  AND o2.name = w.name AND o2.stream_id <> w.stream_id
                UNION ALL
                SELECT o2.ctid FROM {TargetObject} AS o2
                WHERE o2.parent_path_locator = tp.path_locator
                  AND o2.name = w.name AND o2.stream_id <> w.stream_id) AS x
            WHERE NOT (SELECT e.yes FROM empty_target AS e)))  -- an empty target holds no row to set aside
    RETURNING 1
)
SELECT (SELECT count(*) FROM queued)::integer, NULL::timestamp(3), 0, 0, 0, (SELECT count(*) FROM parked)::integer
