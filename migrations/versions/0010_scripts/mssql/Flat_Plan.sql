-- Plan (revision 0010): what a run of this window would do to a Flat table, computed from the target
-- as it is now with the Upsert step's predicates; it writes nothing but #dbtools_Plan (StepNumber,
-- RowsInserted, RowsUpdated, RowsDeleted), which the engine creates. Step 0 is a Full sync's clean
-- slate (@FullSync): the run first removes the target rows in scope (that business unit's, or all),
-- so step 1 is counted on the target without them. @BatchSize and @AfterModifiedOn are not used: a
-- plan covers the whole window.
INSERT INTO #dbtools_Plan (StepNumber, RowsInserted, RowsUpdated, RowsDeleted)
SELECT 1, COUNT_BIG(CASE WHEN t.IsPresent IS NULL THEN 1 END), COUNT_BIG(CASE WHEN t.IsPresent = 1 THEN 1 END), 0
FROM {MetadataObject} AS m
{SourceRow}
OUTER APPLY (SELECT TOP (1) CONVERT(bit, 1) AS IsPresent, t.{MetadataModifiedOnCol} AS ModifiedOn
             FROM {TargetObject} AS t
             WHERE t.{MetadataIdColumn} = s.{MetadataIdColumn}
               AND NOT (@FullSync = 1 AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId))) AS t
WHERE m.{MetadataModifiedOnCol} < @WindowEnd AND m.{MetadataModifiedOnCol} >= @WindowStart
  AND EXISTS (SELECT 1 FROM {BusinessUnitObject} AS bu WHERE bu.{BusinessUnitIdColumn} = m.{MetadataBusinessUnitCol})
  AND (@BusinessUnitId IS NULL OR m.{MetadataBusinessUnitCol} = @BusinessUnitId)
  AND (@ExcludedStreamId IS NULL OR CONVERT(nvarchar(64), s.{MetadataIdColumn}) <> CONVERT(nvarchar(64), @ExcludedStreamId))
  -- a candidate: no copy, or an older one (a copy without a ModifiedOn is never overwritten)
  AND (t.IsPresent IS NULL OR t.ModifiedOn < m.{MetadataModifiedOnCol})
OPTION (RECOMPILE);
INSERT INTO #dbtools_Plan (StepNumber, RowsInserted, RowsUpdated, RowsDeleted)
SELECT 0, 0, 0,
       CASE WHEN @FullSync = 0 THEN 0
            ELSE (SELECT COUNT_BIG(*) FROM {TargetObject} AS t
                  WHERE @BusinessUnitId IS NULL
                     OR EXISTS (SELECT 1 FROM {MetadataObject} AS m
                                WHERE m.{MetadataIdColumn} = t.{MetadataIdColumn}
                                  AND m.{MetadataBusinessUnitCol} = @BusinessUnitId)) END;
