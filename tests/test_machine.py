"""The machine fingerprint written beside an experiment's figures."""

import json
import os

import jax

from sed_jax import machine


def test_the_fingerprint_names_this_cpu_its_cores_and_the_package_versions():
  fp = machine.fingerprint()
  assert json.loads(json.dumps(fp)) == fp  # Goes into results.json as it is.
  assert fp["cpu"] and fp["backend"] == "cpu" and fp["devices"] == jax.device_count()
  assert fp["usable_cores"] == len(os.sched_getaffinity(0))
  assert fp["packages"]["jax"] == jax.__version__
  assert fp["packages"]["jaxlib"]
  with open("/proc/cpuinfo", encoding="utf-8") as f:
    flags = next(line for line in f if line.startswith("flags")).split(":")[1].split()
  assert set(fp["isa"]) <= set(flags) and ("avx2" in fp["isa"]) == ("avx2" in flags)


def test_fingerprints_that_differ_name_what_differs():
  fp = machine.fingerprint()
  assert machine.same_bits_expected(fp, dict(fp)) == []
  other = dict(fp, cpu="Another CPU", isa=["avx2"], packages=dict(fp["packages"], jax="0.0.1"))
  assert machine.same_bits_expected(fp, other) == ["cpu", "isa", "packages"]
