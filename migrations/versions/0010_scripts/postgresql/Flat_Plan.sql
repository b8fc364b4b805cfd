-- Plan (revision 0010): what a run of this window would do to a Flat table, computed from the
-- target as it is now with the Upsert step's predicates; it writes nothing. One row per step: step
-- number, rows inserted, updated and deleted. Step 0 is a Full sync's clean slate ($10): the run
-- first removes the target rows in scope (that business unit's, or all), so step 1 is counted on the
-- target without them. $1 and $8 are not used: a plan covers the whole window.
WITH candidates AS (
    SELECT t.present IS NOT NULL AS present
    FROM {MetadataObject} AS m
    CROSS JOIN LATERAL (SELECT 1 FROM {BusinessUnitObject} AS bu
                        WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol} LIMIT 1) AS bu
    {SourceRow}
    LEFT JOIN LATERAL (SELECT true AS present, t.{MetadataModifiedOnCol} AS modified_on FROM {TargetObject} AS t
                       WHERE t.{MetadataIdColumn} = m.{MetadataIdColumn}
                         AND NOT ($10 AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5))
                       LIMIT 1) AS t ON true
    WHERE m.{MetadataModifiedOnCol} >= $3 AND m.{MetadataModifiedOnCol} < $4
      AND ($5 IS NULL OR m.{MetadataBusinessUnitCol} = $5)
      AND ($2 IS NULL OR s.{MetadataIdColumn}::text <> $2::text)
      AND (t.present IS NULL OR t.modified_on < m.{MetadataModifiedOnCol})
)
SELECT 0 AS step_number, 0::bigint AS inserted, 0::bigint AS updated,
       CASE WHEN NOT $10 THEN 0
            ELSE (SELECT count(*) FROM {TargetObject} AS t
                  WHERE $5 IS NULL OR EXISTS (SELECT 1 FROM {MetadataObject} AS m
                                              WHERE m.{MetadataIdColumn} = t.{MetadataIdColumn}
                                                AND m.{MetadataBusinessUnitCol} = $5)) END AS deleted
UNION ALL
SELECT 1, count(*) FILTER (WHERE NOT c.present), count(*) FILTER (WHERE c.present), 0 FROM candidates AS c
