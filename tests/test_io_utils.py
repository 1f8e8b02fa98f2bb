"""Atomic writes: all or nothing, and no leftovers after the next write."""

import pytest

from sed_jax import io_utils


def test_a_failed_write_keeps_the_old_file_and_a_killed_ones_leftover_goes_next_time(tmp_path):
  target = tmp_path / "results.json"
  target.write_text("old")
  with pytest.raises(RuntimeError):
    with io_utils.atomic_write(target) as f:
      f.write("half")
      raise RuntimeError("crash mid-write")
  assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
      "results.json"]
  (tmp_path / ".results.json.abc123.tmp").write_text("half")  # What a SIGKILL leaves.
  (tmp_path / ".other.json.abc123.tmp").write_text("x")        # Another file's: kept.
  with io_utils.atomic_write(target) as f:
    f.write("new")
  assert target.read_text() == "new"
  assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc123.tmp", "results.json"]
