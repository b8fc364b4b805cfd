"""A Hierarchical tree changed across windows reaches the target whole (revision 0010), on every engine.

Each window changes the source as users do (renames, new content, moves of files and folders,
new blobs inside moved folders, deletions), then a plan and a run follow. After every run the
target equals the source row for row, holds each stream_id once and has no orphan, and the plan
equals the run step by step.
"""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import timedelta

import pytest

from .blocking import interrupted_after
from .delta_bed import CLIENT, REFERRAL, make_bed, utcnow, window_of
from .tree_bed import Tree


@pytest.fixture
def bed(server):
    # 4 roots, each 3 levels of folders of 3, files at the fourth level: 160 blobs per table.
    bed = make_bed(server, roots=4, fanout=3, depth=4)
    yield bed
    bed.close()


def run_steps(status, table: str) -> dict[int, tuple[int, int, int]]:
    """Rows inserted, updated and deleted per step, summed over the run's completed batches."""
    steps: dict[int, tuple[int, int, int]] = {}
    for s in status.steps:
        if s["table_name"] == table and s["status"] == "Completed":
            i, u, d = steps.get(s["step_number"], (0, 0, 0))
            steps[s["step_number"]] = (i + (s["rows_inserted"] or 0), u + (s["rows_updated"] or 0),
                                       d + (s["rows_deleted"] or 0))
    return steps


def planned_steps(plan, table: str) -> dict[int, tuple[int, int, int]]:
    [entry] = [p for p in plan.plan if p.table == table]
    assert entry.error is None and entry.skipped is None, entry
    return {s.step: (s.inserted, s.updated, s.deleted) for s in entry.steps}


def same_counts(planned: dict, ran: dict) -> bool:
    steps = set(planned) | set(ran)
    return all(planned.get(n, (0, 0, 0)) == ran.get(n, (0, 0, 0)) for n in steps)


def plan_then_run(bed, tree: Tree, **kwargs):
    """A plan, then the run it describes; both must agree, and the target must equal the source."""
    kwargs = {"mode": "SingleTable", "table": tree.table, "batch_size": 3, **kwargs}
    plan = bed.run(execute=False, **kwargs)

    result = bed.run(**kwargs)

    status = bed.status(result.run_id)
    assert (result.status, status.error) == ("Succeeded", None)
    assert same_counts(planned_steps(plan, tree.table), run_steps(status, tree.table)), \
        (planned_steps(plan, tree.table), run_steps(status, tree.table))
    tree.assert_target_equals_source()
    return status


def files_and_folders(tree: Tree):
    folders = tree.ids("source", directories=True)
    files = tree.ids("source", directories=False)
    return folders, files


def test_a_tree_changed_across_windows_reaches_the_target_whole_and_every_plan_equals_its_run(bed):
    # Assemble: the first load.
    tree = Tree(bed, REFERRAL)
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    roots = [i for i in tree.ids("source", directories=True) if tree.depth_of(i) == 1]
    units = bed.data.business_units

    # Window 1: a rename, new content, a folder rename, a file moved to another folder, a folder
    # moved with its descendants to another business unit's root, a new file inside that moved
    # folder, a root moved into a folder and a folder moved to the top. Every change is written
    # after the first run but stamped inside its window's buffer (a late write).
    at = iter(end - timedelta(minutes=m) for m in range(200, 0, -7))
    r1, r2, r3, r4 = roots
    level2 = {r: [i for i in tree.ids("source", directories=True, under=tree.path_of(r)) if tree.depth_of(i) == 2]
              for r in roots}
    files = {r: tree.ids("source", directories=False, under=tree.path_of(r)) for r in roots}
    renamed_file, rewritten_file, moved_file = files[r1][0], files[r1][1], files[r1][2]
    tree.rename(renamed_file, "renamed.bin", next(at))
    tree.rewrite(rewritten_file, b"second version", next(at))
    tree.rename(level2[r1][0], "renamed folder", next(at))
    tree.move(moved_file, tree.path_of(level2[r2][0]), next(at))
    moved_folder = level2[r1][1]
    moved_to = tree.move(moved_folder, tree.path_of(r2), next(at))
    tree.create(moved_to, "born in a moved folder.bin", directory=False, at=next(at), unit=units[2])
    tree.move(r3, tree.path_of(level2[r4][0]), next(at))
    level3 = [i for i in tree.ids("source", directories=True, under=tree.path_of(r4)) if tree.depth_of(i) == 3]
    tree.move(level3[-1], None, next(at))

    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    moved = [s["rows_moved"] or 0 for s in status.steps if s["table_name"] == REFERRAL]
    assert sum(moved) > 0, "descendants followed their moved folders"

    # Window 2: the same file renamed again, a file deleted, a folder with children deleted (only
    # the folder is recorded: its subtree goes with it), a file moved out of a folder that is then
    # deleted, and a folder whose subfolder moved away (the subfolder's files unchanged) deleted.
    at = iter(end - timedelta(minutes=m) for m in range(200, 0, -7))
    tree.rename(renamed_file, "renamed twice.bin", next(at))
    tree.delete(files[r2][-1], next(at), log="each")
    doomed_folder = level2[r1][2]
    tree.delete(doomed_folder, next(at), log="top")
    emptied = level2[r2][1]
    leaving = tree.ids("source", directories=False, under=tree.path_of(emptied))[0]
    tree.move(leaving, tree.path_of(level2[r2][2]), next(at))
    tree.delete(emptied, next(at), log="top")
    deleted_parent = level2[r2][2]
    escaping = [i for i in tree.ids("source", directories=True, under=tree.path_of(deleted_parent))
                if tree.depth_of(i) == 3][0]
    tree.move(escaping, None, next(at))
    tree.delete(deleted_parent, next(at), log="top")

    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    assert sum(s["rows_deleted"] or 0 for s in status.steps if s["step_number"] == 4) > 0

    # Window 3: a change stamped exactly on the last window's end, and nothing else: a plan counts
    # only what is not current yet.
    tree.rename(files[r4][0], "on the boundary.bin", end)

    status = plan_then_run(bed, tree)
    assert run_steps(status, REFERRAL) == {0: (0, 0, 0), 1: (0, 0, 0), 2: (0, 0, 0), 3: (0, 1, 0), 4: (0, 0, 0)}


def test_a_new_file_in_a_folder_whose_move_is_after_the_window_back_fills_that_folder_first(bed):
    # Assemble: the first load, then a folder moved (stamped after the next window's end) and a
    # file created inside it before the move (stamped inside the window).
    tree = Tree(bed, REFERRAL)
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    folder = [i for i in tree.ids("source", directories=True) if tree.depth_of(i) == 2][0]
    unit = tree.unit_of(folder)
    root = [i for i in tree.ids("source", directories=True) if tree.depth_of(i) == 1][-1]
    moved_to = tree.move(folder, tree.path_of(root), end + timedelta(days=1))
    born = tree.create(moved_to, "born.bin", directory=False, at=end - timedelta(minutes=5), unit=unit)

    # Act
    status = plan_then_run(bed, tree)

    # Assert: the folder was placed (moved) by the missing-parents step, before the file.
    backfilled = run_steps(status, REFERRAL)[2]
    assert backfilled[1] >= 1 and born in {r[0] for r in tree.rows("target")}


def test_a_full_sync_of_one_unit_keeps_the_folders_another_units_files_live_under(bed):
    # Assemble: files of unit X in folders of unit Y, all loaded.
    tree = Tree(bed, CLIENT)
    status = plan_then_run(bed, tree)
    units = bed.data.business_units
    folders_of_y = [i for i in tree.ids("source", directories=True) if tree.unit_of(i) == units[0] and tree.depth_of(i) == 3]
    _start, end = window_of(status, CLIENT)
    guests = [tree.create(tree.path_of(f), f"guest {n}.bin", directory=False, at=end - timedelta(minutes=n + 1),
                          unit=units[1])
              for n, f in enumerate(folders_of_y[:3])]
    plan_then_run(bed, tree)

    # Act: a Full sync of Y alone.
    status = plan_then_run(bed, tree, sync_type="Full", business_unit=units[0])

    # Assert: Y's folders that hold X's files were kept (no orphan), the rest of Y was reloaded.
    cleared = run_steps(status, CLIENT)[0][2]
    assert cleared > 0
    assert set(guests) <= {r[0] for r in tree.rows("target")}


def test_deleting_a_blob_the_source_still_holds_deletes_nothing_and_marks_the_log_row_applied(bed):
    tree = Tree(bed, REFERRAL)
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    kept = tree.ids("source", directories=False)[0]
    tree.log_deletion(kept, end - timedelta(minutes=1), None)

    status = plan_then_run(bed, tree)

    q = bed.info.quote
    [(applied, run_id)] = bed.sql(f"SELECT {q('AppliedAt')}, {q('RunId')} FROM {bed.info.job_object('BlobDeltaDeletionLog')}")
    assert applied is not None and uuid.UUID(str(run_id)) == status.run_id
    assert kept in {r[0] for r in tree.rows("target")}


def test_a_run_of_changes_interrupted_at_every_batch_boundary_and_resumed_leaves_the_target_equal_to_the_source(bed):
    # Assemble: the first load, then one window of every kind of change, saved as a checkpoint.
    tree = Tree(bed, REFERRAL)
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    at = iter(end - timedelta(minutes=m) for m in range(200, 0, -7))
    folders = [i for i in tree.ids("source", directories=True) if tree.depth_of(i) == 2]
    roots = [i for i in tree.ids("source", directories=True) if tree.depth_of(i) == 1]
    files = tree.ids("source", directories=False)
    tree.rename(files[0], "renamed.bin", next(at))
    tree.rewrite(files[1], b"new content", next(at))
    moved_to = tree.move(folders[0], tree.path_of(roots[-1]), next(at))
    tree.create(moved_to, "born.bin", directory=False, at=next(at), unit=bed.data.business_units[0])
    tree.move(files[-1], tree.path_of(folders[-1]), next(at))
    tree.delete(folders[2], next(at), log="top")
    saved = tree.checkpoint()
    clean = bed.run(mode="SingleTable", table=REFERRAL, batch_size=2)
    batches = sum(1 for s in bed.status(clean.run_id).steps if s["status"] == "Completed" and s["step_number"] > 0)
    tree.assert_target_equals_source()
    assert batches > 6

    for boundary in range(1, batches):
        tree.restore(saved)

        # Act: the run stops after `boundary` batches; then it is resumed.
        with interrupted_after(bed, boundary):
            stopped = bed.run(mode="SingleTable", table=REFERRAL, batch_size=2)
        orphans_when_stopped = bed.orphans(REFERRAL)
        resumed = bed.run(resume=stopped.run_id)

        # Assert
        assert stopped.status == "Failed", boundary
        assert orphans_when_stopped == [], boundary
        assert resumed.status == "Succeeded", boundary
        tree.assert_target_equals_source()


def test_a_copy_without_a_recorded_version_counts_as_older_and_is_rewritten_once(bed):
    # Assemble: a target loaded before revision 0010 recorded versions, then a rename.
    tree = Tree(bed, REFERRAL)
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    q = bed.info.quote
    bed.sql(f"DELETE FROM {bed.info.job_object('BlobDeltaTargetVersion')}")
    renamed = tree.ids("source", directories=False)[0]
    tree.rename(renamed, "renamed without a version.bin", end - timedelta(minutes=3))

    # Act
    first = plan_then_run(bed, tree)
    again = plan_then_run(bed, tree)

    # Assert: the window's copies were rewritten once and recorded; the next run finds them current.
    rewritten = sum(u for _i, u, _d in run_steps(first, REFERRAL).values())
    assert rewritten >= 1
    assert all(counts == (0, 0, 0) for counts in run_steps(again, REFERRAL).values())
    recorded = bed.sql(f"SELECT COUNT(*) FROM {bed.info.job_object('BlobDeltaTargetVersion')} "
                       f"WHERE {q('TableName')} = {bed.mark('t')}", bed.params(t=REFERRAL))[0][0]
    assert recorded == rewritten


def test_a_copy_deleted_by_hand_whose_version_is_current_is_copied_again_by_the_next_window_that_holds_it(bed):
    # Assemble: a renamed file and a new top-level file copied by a run, whose rows the next window
    # holds again (the windows overlap); then both copies are deleted from the target by hand, their
    # recorded versions left current.
    tree = Tree(bed, REFERRAL)
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    _folders, files = files_and_folders(tree)
    child = files[0]
    tree.rename(child, "renamed then deleted by hand.bin", end - timedelta(minutes=3))
    top = tree.create(None, "top-level file deleted by hand.bin", directory=False, at=end - timedelta(minutes=2),
                      unit=tree.unit_of(child))
    plan_then_run(bed, tree)
    mark = bed.mark("i")
    for stream_id in (child, top):
        bed.sql(f"DELETE FROM {tree.target} WHERE stream_id = {mark}", bed.params(i=stream_id))
    assert bed.sql(f"SELECT COUNT(*) FROM {bed.info.job_object('BlobDeltaTargetVersion')} "
                   f"WHERE stream_id IN ({mark}, {bed.mark('t')})", bed.params(i=child, t=top))[0][0] == 2

    # Act
    status = plan_then_run(bed, tree)

    # Assert: a current version without its copy is no reason to skip a row: Roots copies the
    # top-level file again, Children the other, and nothing else is written; the target equals the
    # source and the plan equals the run (plan_then_run).
    assert {n: c for n, c in run_steps(status, REFERRAL).items() if c != (0, 0, 0)} == {1: (1, 0, 0), 3: (1, 0, 0)}


def test_names_that_change_hands_in_a_window_reach_the_target(bed):
    # Assemble: the first load.
    tree = Tree(bed, REFERRAL)
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    at = iter(end - timedelta(minutes=m) for m in range(120, 0, -3))
    units = bed.data.business_units
    folders = [i for i in tree.ids("source", directories=True) if tree.depth_of(i) == 3]
    files = {f: tree.ids("source", directories=False, under=tree.path_of(f)) for f in folders}
    name_of = {r[0]: r[1] for r in tree.rows("source")}

    # An editor's save: the file is deleted and a new one takes its name in the same folder.
    saved = files[folders[0]][0]
    tree.delete(saved, next(at), log="each")
    tree.create(tree.path_of(folders[0]), name_of[saved], directory=False, at=next(at), unit=units[0],
                content=b"saved again")
    # Two files of one folder swap names, in two renames of one window.
    a, b = files[folders[1]][:2]
    tree.rename(a, "swapping", next(at))
    tree.rename(b, name_of[a], next(at))
    tree.rename(a, name_of[b], next(at))
    # A file moved into a folder whose file of the same name was deleted.
    replaced = files[folders[2]][0]
    tree.delete(replaced, next(at), log="each")
    incoming = files[folders[3]][0]
    tree.rename(incoming, name_of[replaced], next(at))
    tree.move(incoming, tree.path_of(folders[2]), next(at))
    # A folder deleted and created again under its name, with a file in it.
    recreated = folders[4]
    parent = tree.path_of(recreated).rsplit("/", 2)[0] + "/"
    tree.delete(recreated, next(at), log="top")
    again = tree.create(parent, name_of[recreated], directory=True, at=next(at), unit=units[1])
    tree.create(tree.path_of(again), "inside.bin", directory=False, at=next(at), unit=units[1])

    # Act and assert: the plan equals the run, and the target equals the source.
    plan_then_run(bed, tree)


class RandomChanges:
    """Users at work on one table: a seeded random mix of every kind of change, window after window.

    Every change is stamped later than any before it (a ModifiedOn never goes back) and inside the
    next run's window: the clock starts an hour before the first window's end, after every sample
    blob's ModifiedOn, and moves three seconds a change.
    """

    def __init__(self, tree: Tree, seed: int, first_end):
        self.tree = tree
        self.rng = random.Random(seed)
        self.names = itertools.count(1)
        self.clock = first_end - timedelta(minutes=50)

    def window(self, end, changes: int) -> None:
        for _ in range(changes):
            kind = self.rng.choice(["rename", "rewrite", "move", "move", "create", "create", "delete", "save", "swap"])
            self.clock += timedelta(seconds=3)
            assert self.clock < end, "a change stamped after the window it belongs to"
            getattr(self, kind)(self.clock)

    # Each change picks among the blobs the source holds now.
    def _rows(self):
        return sorted(self.tree.rows("source"), key=lambda r: r[3])

    def _pick(self, *, directory=None):
        rows = [r for r in self._rows() if directory is None or r[5] == directory]
        return self.rng.choice(rows) if rows else None

    def _unit(self):
        return self.rng.choice(self.tree.bed.data.business_units)

    def rename(self, at):
        if (row := self._pick()) is not None:
            self.tree.rename(row[0], f"renamed {next(self.names)}", at)

    def rewrite(self, at):
        if (row := self._pick(directory=False)) is not None:
            self.tree.rewrite(row[0], self.rng.randbytes(8), at)

    def move(self, at):
        row = self._pick()
        if row is None:
            return
        folders = [r for r in self._rows() if r[5] and not r[3].startswith(row[3])]
        to = self.rng.choice(folders)[3] if folders and self.rng.random() < 0.85 else None
        if to != row[4]:
            self.tree.move(row[0], to, at)

    def create(self, at):
        folder = self._pick(directory=True)
        parent = folder[3] if folder is not None and self.rng.random() < 0.9 else None
        directory = self.rng.random() < 0.3
        self.tree.create(parent, f"new {next(self.names)}", directory=directory, at=at, unit=self._unit())

    def delete(self, at):
        # Every deleted blob is recorded, as a FileTable deletes a folder's contents row by row (a
        # folder recorded alone takes its target subtree, not what moved into it since the last run).
        if (row := self._pick()) is not None:
            self.tree.delete(row[0], at, log="each")

    def save(self, at):
        """An editor's save: a file deleted and created again under its name in its folder."""
        if (row := self._pick(directory=False)) is not None:
            self.tree.delete(row[0], at, log="each")
            self.tree.create(row[4], row[1], directory=False, at=at + timedelta(seconds=1), unit=self._unit(),
                             content=self.rng.randbytes(8))

    def swap(self, at):
        row = self._pick()
        if row is None:
            return
        siblings = [r for r in self._rows() if r[4] == row[4] and r[0] != row[0]]
        if siblings:
            other = self.rng.choice(siblings)
            self.tree.rename(row[0], f"swapping {next(self.names)}", at)
            self.tree.rename(other[0], row[1], at + timedelta(seconds=1))
            self.tree.rename(row[0], other[1], at + timedelta(seconds=2))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_window_after_window_reach_the_target_and_every_plan_equals_its_run(bed, seed):
    tree = Tree(bed, REFERRAL)
    status = plan_then_run(bed, tree)
    users = RandomChanges(tree, seed, window_of(status, REFERRAL)[1])
    assert max(b.modified_on for b in bed.data.blobs[tree.name]) < users.clock

    for _ in range(6):
        _start, end = window_of(status, REFERRAL)
        users.window(end, changes=8)

        status = plan_then_run(bed, tree, batch_size=users.rng.choice([1, 2, 5, 50]))


def test_a_child_whose_folder_moved_while_the_run_ran_fails_the_table_and_the_next_run_places_it(bed):
    # Assemble: the first load; then a long window with a new file in an existing folder.
    tree = Tree(bed, REFERRAL)
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    watermark = end - timedelta(days=2)
    bed.set_watermark(REFERRAL, watermark)
    folder = [i for i in tree.ids("source", directories=True) if tree.depth_of(i) == 3][0]
    born = tree.create(tree.path_of(folder), "born.bin", directory=False, at=end - timedelta(days=1),
                       unit=bed.data.business_units[0])
    # The run stops just before step 3 (after step 2a, step 1 and step 2b: one batch each, and the
    # empty batches that end steps 1 and 2b), as if its session died there ...
    with interrupted_after(bed, 3):
        stopped = bed.run(mode="SingleTable", table=REFERRAL, batch_size=1000)
    # ... and the folder moves meanwhile (stamped now: after the run's window).
    root = [i for i in tree.ids("source", directories=True) if tree.depth_of(i) == 1][-1]
    tree.move(folder, tree.path_of(root), utcnow())

    # Act: the run resumes with step 2a's view, then a new run.
    resumed = bed.run(resume=stopped.run_id)
    after_resume = (set(bed.target_ids(REFERRAL)), bed.watermark(REFERRAL)[0])
    again = bed.run(mode="SingleTable", table=REFERRAL)

    # Assert: the resume could not place the file, said so, and left the watermark; the new run did.
    error = bed.status(stopped.run_id).error
    assert stopped.status == resumed.status == "Failed"
    assert "1 changed blob(s) of the window could not be placed" in error and "a new run (not a resume)" in error
    assert born not in after_resume[0] and after_resume[1] == watermark
    assert again.status == "Succeeded"
    tree.assert_target_equals_source()


def test_a_late_write_to_a_file_a_first_load_copied_is_applied_when_the_load_resumes(bed):
    # Assemble: a first load that fails in its Children step on the window's last file, which the
    # target refuses (a CHECK there), after it copied the other files. Then that file becomes
    # writable, and a copied file gets new content stamped past the failed load's position (a late
    # write). On PostgreSQL (revision 0014) the resumed first load inserts that file without looking
    # it up, hits its key, and runs the batch again with every lookup, which ends the shortcut; SQL
    # Server's Children script looks every row up anyway.
    # The bed's blobs are stamped before now - 5 h; the window ends at now - 4 h (its safety buffer).
    tree = Tree(bed, REFERRAL)
    files = tree.ids("source", directories=False)
    now = utcnow()
    tree.rename(files[0], "poison.bin", now - timedelta(hours=4, minutes=30))
    q = bed.info.quote
    bed.sql(f"ALTER TABLE {tree.target} ADD CONSTRAINT {q('CK_dbtools_test_poison')} CHECK (name <> 'poison.bin')")
    stopped = bed.run(mode="SingleTable", table=REFERRAL, batch_size=2)
    copied = tree.ids("target", directories=False)
    refused = bed.status(stopped.run_id).error
    bed.sql(f"ALTER TABLE {tree.target} DROP CONSTRAINT {q('CK_dbtools_test_poison')}")
    late = copied[len(copied) // 2]
    tree.rewrite(late, b"written late", now - timedelta(hours=4, minutes=20))

    # Act
    resumed = bed.run(resume=stopped.run_id)

    # Assert
    assert (stopped.status, resumed.status) == ("Failed", "Succeeded")
    assert "CK_dbtools_test_poison" in refused
    assert len(files) - 2 <= len(copied) < len(files), "the failed batch of two held the refused file"
    tree.assert_target_equals_source()
    assert bed.first_load_flags(stopped.run_id) == {REFERRAL: bed.info.name != "postgresql"}


def test_a_first_load_whose_table_gains_its_queue_population_before_the_resume_frees_the_names_the_resume_writes(bed):
    # Assemble: a first load of a table configured without a queue population script fails on the
    # window's last file, which the target refuses (a CHECK), after it copied every other blob (each
    # stamped after its folder, one blob a batch, so that each finds its folder copied). While it waits
    # for its resume, two copied files of one folder swap names (stamped inside its window), the
    # table gets its queue population script back, and the file becomes writable. The resume runs
    # step 2a first, as a first load ($9): revision 0016 skips the name-freeing probes only when the
    # target is still empty, which it is not, so the swap is written without a key violation.
    # The bed's blobs are stamped before now - 5 h; the window ends at now - 4 h (its safety buffer).
    tree = Tree(bed, REFERRAL)
    q, t = bed.info.quote, bed.info.job_object
    files = tree.ids("source", directories=False)
    now = utcnow()
    for i, blob in enumerate(tree.ids("source")):  # path order: a folder before what it holds
        tree.stamp(blob, now - timedelta(hours=6) + timedelta(seconds=i))
    tree.rename(files[0], "poison.bin", now - timedelta(hours=4, minutes=30))
    bed.sql(f"ALTER TABLE {tree.target} ADD CONSTRAINT {q('CK_dbtools_test_poison')} CHECK (name <> 'poison.bin')")
    configure = (f"UPDATE {t('BlobDeltaTableConfig')} SET {q('QueuePopulationScriptName')} = {bed.mark('s')} "
                 f"WHERE {q('TableName')} = {bed.mark('t')}")
    bed.sql(configure, bed.params(s=None, t=REFERRAL))
    stopped = bed.run(mode="SingleTable", table=REFERRAL, batch_size=1)
    copied = set(tree.ids("target", directories=False))
    assert copied == set(files[1:])
    refused = bed.status(stopped.run_id).error
    name_of = {r[0]: r[1] for r in tree.rows("source")}
    by_folder: dict[str, list[uuid.UUID]] = {}
    for f in files[1:]:
        if f in copied:
            by_folder.setdefault(tree.path_of(f).rsplit("/", 2)[0], []).append(f)
    a, b = next(pair[:2] for pair in by_folder.values() if len(pair) >= 2)
    tree.rename(a, "swapping", now - timedelta(hours=4, minutes=20))
    tree.rename(b, name_of[a], now - timedelta(hours=4, minutes=19))
    tree.rename(a, name_of[b], now - timedelta(hours=4, minutes=18))
    bed.sql(f"ALTER TABLE {tree.target} DROP CONSTRAINT {q('CK_dbtools_test_poison')}")
    bed.sql(configure, bed.params(s="HierarchicalMissingParents", t=REFERRAL))

    # Act
    resumed = bed.run(resume=stopped.run_id)

    # Assert
    assert (stopped.status, resumed.status) == ("Failed", "Succeeded"), bed.status(resumed.run_id).error
    assert "CK_dbtools_test_poison" in refused
    tree.assert_target_equals_source()


# ----------------------------------------------------------- the run's candidates (PostgreSQL, revision 0017)
def candidates_of(bed, run_id) -> set:
    """PostgreSQL: the candidate list step 2a recorded for ``run_id`` (None: the row that marks it recorded)."""
    q = bed.info.quote
    return {None if r[0] is None else uuid.UUID(str(r[0])) for r in bed.sql(
        f"SELECT stream_id FROM {bed.info.job_object('BlobDeltaRunCandidate')} WHERE {q('RunId')} = {bed.mark('r')}",
        bed.params(r=run_id))}


def content_in_target(tree: Tree, stream_id) -> bytes:
    return bytes(tree.bed.sql(f"SELECT file_stream FROM {tree.target} WHERE stream_id = {tree.bed.mark('i')}",
                              tree.bed.params(i=stream_id))[0][0])


def name_in_target(tree: Tree, stream_id) -> str:
    return tree.bed.sql(f"SELECT name FROM {tree.target} WHERE stream_id = {tree.bed.mark('i')}",
                        tree.bed.params(i=stream_id))[0][0]


def stamp_current(tree: Tree, folders: list) -> None:
    """Stamp ``folders`` before the first load where its window and the next one overlap: the next
    window then holds them, current. Step 2a lists a run's candidates only when at least half the
    window's rows are current (revision 0017)."""
    at = utcnow() - timedelta(hours=4, minutes=10)
    for folder in folders:
        tree.stamp(folder, at)


def test_step_2a_lists_the_window_rows_whose_copy_is_missing_or_older_and_the_tables_end_clears_the_list(bed):
    if bed.info.name != "postgresql":
        pytest.skip("PostgreSQL only: revision 0017's candidate list; SQL Server's steps look every window row up")
    # Assemble: five folders stamped where the first load's window and the next one overlap (so the
    # next window holds them, current); a first load that stops after step 2a, then resumes.
    tree = Tree(bed, REFERRAL)
    folders, files = files_and_folders(tree)
    stamp_current(tree, folders[-6:-1])
    with interrupted_after(bed, 1):
        first = bed.run(mode="SingleTable", table=REFERRAL, batch_size=3)
    listed_by_first_load = candidates_of(bed, first.run_id)
    assert bed.run(resume=first.run_id).status == "Succeeded"
    _start, end = window_of(bed.status(first.run_id), REFERRAL)
    # A window that holds a rename, new content, a new file and those folders, unchanged.
    tree.rename(files[0], "renamed.bin", end - timedelta(minutes=9))
    tree.rewrite(files[1], b"new content", end - timedelta(minutes=8))
    born = tree.create(tree.path_of(folders[-2]), "born.bin", directory=False, at=end - timedelta(minutes=7),
                       unit=bed.data.business_units[0])

    # Act: the run stops after step 2a (its first batch), then resumes.
    with interrupted_after(bed, 1):
        stopped = bed.run(mode="SingleTable", table=REFERRAL, batch_size=2)
    listed = candidates_of(bed, stopped.run_id)
    resumed = bed.run(resume=stopped.run_id)

    # Assert: a first load into an empty target lists nothing; then exactly the changed rows and the
    # mark (the current folders in the window are not); none left once the table ended well.
    assert listed_by_first_load == set()
    assert listed == {files[0], files[1], born, None}
    assert (first.status, stopped.status, resumed.status) == ("Failed", "Failed", "Succeeded")
    assert candidates_of(bed, stopped.run_id) == set()
    tree.assert_target_equals_source()


def stopped_after_step_2a(bed):
    """The first load, then a rename in a new window that also holds rows already copied (so
    PostgreSQL lists the run's candidates), and a run of that window stopped after step 2a."""
    tree = Tree(bed, REFERRAL)
    stamp_current(tree, tree.ids("source", directories=True)[-4:])
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    _folders, files = files_and_folders(tree)
    tree.rename(files[0], "renamed.bin", end - timedelta(minutes=9))
    with interrupted_after(bed, 1):
        stopped = bed.run(mode="SingleTable", table=REFERRAL, batch_size=2)
    return tree, files, stopped


def test_a_file_stamped_into_the_window_while_a_run_runs_is_copied_by_that_run_or_the_next(bed):
    # Assemble: a run of a window with a rename stops after step 2a ...
    tree, files, stopped = stopped_after_step_2a(bed)
    _start, stopped_end = window_of(bed.status(stopped.run_id), REFERRAL)
    # ... and a file and a root folder it found current change, stamped inside its window, within the
    # safety buffer of the window's end (late writes: the next window holds them again).
    late = files[1]
    root = [i for i in tree.ids("source", directories=True) if tree.depth_of(i) == 1][0]
    tree.rewrite(late, b"written late", stopped_end - timedelta(minutes=3))
    tree.rename(root, "root renamed late", stopped_end - timedelta(minutes=2))

    # Act
    resumed = bed.run(resume=stopped.run_id)
    after_resume = (content_in_target(tree, late), name_in_target(tree, root))
    again = bed.run(mode="SingleTable", table=REFERRAL)

    # Assert: PostgreSQL's resume writes the rows step 2a listed (revision 0017), so the late writes
    # wait for the next run (Children's and Roots' alike), as the safety buffer provides; SQL
    # Server's may take them at once.
    assert (stopped.status, resumed.status, again.status) == ("Failed", "Succeeded", "Succeeded")
    if bed.info.name == "postgresql":
        assert after_resume[0] != b"written late" and after_resume[1] != "root renamed late"
    tree.assert_target_equals_source()


def test_a_table_start_clears_the_lists_other_runs_left_and_their_resume_looks_every_window_row_up(bed):
    if bed.info.name != "postgresql":
        pytest.skip("PostgreSQL only: revision 0017's candidate list; SQL Server's steps look every window row up")
    # Assemble: a run stops after step 2a with its list; another run then works the table whole.
    tree, files, stopped = stopped_after_step_2a(bed)
    listed = candidates_of(bed, stopped.run_id)
    other = bed.run(mode="SingleTable", table=REFERRAL)
    after_other = candidates_of(bed, stopped.run_id)
    # A file the stopped run found current gets new content inside that run's window.
    _start, stopped_end = window_of(bed.status(stopped.run_id), REFERRAL)
    tree.rewrite(files[1], b"new content", stopped_end - timedelta(minutes=3))

    # Act
    resumed = bed.run(resume=stopped.run_id)

    # Assert: the list is gone, so the resume looked the window's rows up and wrote the new content.
    assert listed == {files[0], None}
    assert (stopped.status, other.status, resumed.status) == ("Failed", "Succeeded", "Succeeded")
    assert after_other == set()
    assert content_in_target(tree, files[1]) == b"new content"
    tree.assert_target_equals_source()


def test_a_window_mostly_of_changes_gets_no_candidate_list_and_its_run_writes_every_change(bed):
    if bed.info.name != "postgresql":
        pytest.skip("PostgreSQL only: revision 0017's candidate list; SQL Server's steps look every window row up")
    # Assemble: the first load, then a window of three changes and no row stamped to be current.
    tree = Tree(bed, REFERRAL)
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    folders, files = files_and_folders(tree)
    tree.rename(files[0], "renamed.bin", end - timedelta(minutes=9))
    tree.rewrite(files[1], b"new content", end - timedelta(minutes=8))
    tree.move(files[2], tree.path_of(folders[-1]), end - timedelta(minutes=7))

    # Act
    with interrupted_after(bed, 1):
        stopped = bed.run(mode="SingleTable", table=REFERRAL, batch_size=2)
    listed = candidates_of(bed, stopped.run_id)
    resumed = bed.run(resume=stopped.run_id)

    # Assert: no list (fewer than half the window's rows are current), and every change written.
    assert listed == set()
    assert (stopped.status, resumed.status) == ("Failed", "Succeeded")
    tree.assert_target_equals_source()


def test_a_run_of_one_business_unit_lists_that_units_candidates_only(bed):
    if bed.info.name != "postgresql":
        pytest.skip("PostgreSQL only: revision 0017's candidate list; SQL Server's steps look every window row up")
    # Assemble: folders of unit X stamped to be current in the next window; the first load; then a
    # file of X and a file of another unit renamed in that window.
    tree = Tree(bed, REFERRAL)
    folders, files = files_and_folders(tree)
    x = tree.unit_of(files[0])
    stamp_current(tree, [f for f in folders if tree.unit_of(f) == x][:4])
    status = plan_then_run(bed, tree)
    _start, end = window_of(status, REFERRAL)
    other = next(f for f in files if tree.unit_of(f) != x)
    tree.rename(files[0], "renamed in X.bin", end - timedelta(minutes=9))
    tree.rename(other, "renamed elsewhere.bin", end - timedelta(minutes=8))

    # Act: a run of unit X stops after step 2a, resumes; then a run of every unit.
    with interrupted_after(bed, 1):
        stopped = bed.run(mode="SingleTable", table=REFERRAL, batch_size=2, business_unit=x)
    listed = candidates_of(bed, stopped.run_id)
    resumed = bed.run(resume=stopped.run_id)
    names_after_resume = (name_in_target(tree, files[0]), name_in_target(tree, other))
    again = bed.run(mode="SingleTable", table=REFERRAL)

    # Assert
    assert listed == {files[0], None}
    assert (stopped.status, resumed.status, again.status) == ("Failed", "Succeeded", "Succeeded")
    assert names_after_resume[0] == "renamed in X.bin" and names_after_resume[1] != "renamed elsewhere.bin"
    tree.assert_target_equals_source()
