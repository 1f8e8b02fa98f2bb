"""A training command restarts itself once with glibc's huge-page tunable, keeps its arguments
and a user's choice, and then faults far fewer pages (`sed_jax/hugepages.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sed_jax import hugepages

_ON = {"GLIBC_TUNABLES": hugepages.TUNABLE}


@pytest.mark.parametrize("environ,mode,libc,expected", [
    ({}, "madvise", "glibc", _ON),
    ({}, "always", "glibc", _ON),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", "glibc",
     {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{hugepages.TUNABLE}"}),
    ({hugepages.KEEP_DEFAULTS_ENV: "0"}, "madvise", "glibc",
     {hugepages.KEEP_DEFAULTS_ENV: "0", **_ON}),
    # Nothing to do: a user's own value, an opt-out, no THP, another libc.
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", "glibc", None),
    ({hugepages.KEEP_DEFAULTS_ENV: "1"}, "madvise", "glibc", None),
    ({}, "never", "glibc", None),
    ({}, None, "glibc", None),
    ({}, "madvise", "", None),
])
def test_the_environment_to_restart_with(environ, mode, libc, expected):
  result = hugepages.environ_with_hugepages(environ, mode, libc)
  assert result == (None if expected is None else {**environ, **expected})


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert hugepages.thp_mode(path) == "madvise"
  assert hugepages.thp_mode(tmp_path / "missing") is None


# Restarts (or not), then reports its arguments, its tunables, and the fewest minor page faults
# of five rounds of malloc, write and free of 64 MiB (above glibc's mmap threshold, so each
# round gets a fresh mapping, as XLA's buffers do; numpy is not used: it advises huge pages for
# its own large arrays).
_PROBE = textwrap.dedent("""
    import ctypes, json, os, resource, sys
    from sed_jax import hugepages
    hugepages.reexec()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    faults = []
    for _ in range(5):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      p = libc.malloc(64 * 2**20)
      ctypes.memset(p, 1, 64 * 2**20)
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
      libc.free(p)
    print(json.dumps(dict(argv=sys.argv[1:], tunables=os.environ.get("GLIBC_TUNABLES"),
                          faults=min(faults))))
""")


def _probe(tmp_path, **env_changes) -> dict:
  script = tmp_path / "probe.py"
  script.write_text(_PROBE)
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", hugepages.KEEP_DEFAULTS_ENV)}
  env.update(env_changes)
  out = subprocess.run([sys.executable, str(script), "--a=1", "b c"], env=env, check=True,
                       capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux" or hugepages.thp_mode() not in ("always", "madvise"),
                    reason="needs Linux with transparent huge pages available")
def test_the_restart_keeps_the_arguments_and_maps_huge_pages(tmp_path):
  restarted = _probe(tmp_path)
  assert restarted["argv"] == ["--a=1", "b c"]
  assert restarted["tunables"] == hugepages.TUNABLE  # Set once: the restart did not loop.
  kept = _probe(tmp_path, **{hugepages.KEEP_DEFAULTS_ENV: "1"})
  assert kept["tunables"] is None
  # 64 MiB in 4-KiB pages is 16384 faults; in 2-MiB pages 32 (more where the kernel found no
  # free huge page at once, so the bound is loose).
  assert kept["faults"] > 8000
  assert restarted["faults"] < kept["faults"] / 4
