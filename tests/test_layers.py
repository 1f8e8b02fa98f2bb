"""The package's layers (pyproject.toml, [tool.importlinter]): no module imports from above it.

Why a test: an upward import is how a package turns into a knot (the teacher cache importing
the training loop, the config helpers importing losses to read defaults); once one is there,
the next follows. grimp records imports inside functions too, so a lazy import cannot get
around a layer.
"""

import itertools
import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

import sed_jax

ROOT = Path(__file__).resolve().parents[1]


def contract() -> dict:
  config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
  (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
  return layers


def layer_modules() -> list[tuple[list[str], bool]]:
  """(modules, independent) per layer, highest first, as 'sed_jax.<name>'."""
  out = []
  for layer in contract()["layers"]:
    sep = "|" if "|" in layer else ":"
    out.append(([f"sed_jax.{m.strip()}" for m in layer.split(sep)], sep == "|" or
                len(layer.split(sep)) == 1))
  return out


def violations(graph) -> list[str]:
  """Every import chain that runs up the layers or between independent siblings."""
  found = []
  layers = layer_modules()
  for i, (higher, _) in enumerate(layers):
    for lower, _ in layers[i + 1:]:
      for up, down in itertools.product(higher, lower):
        if graph.chain_exists(importer=down, imported=up, as_packages=True):
          found.append(f"{down} imports {up}")
  for modules, independent in layers:
    if independent:
      for a, b in itertools.permutations(modules, 2):
        if graph.chain_exists(importer=a, imported=b, as_packages=True):
          found.append(f"{a} imports its independent sibling {b}")
  return found


@pytest.fixture(scope="module")
def graph():
  return grimp.build_graph("sed_jax")


def test_every_module_of_the_package_has_a_layer():
  placed = {m for modules, _ in layer_modules() for m in modules}
  top = {f"sed_jax.{m.name}" for m in pkgutil.iter_modules(sed_jax.__path__)}
  assert top - placed == set(), "Give these modules a layer in pyproject.toml"
  assert placed - top == set(), "These layer entries name no module"


def test_no_import_runs_up_the_layers(graph):
  assert violations(graph) == []


def test_an_upward_import_is_caught():
  """The check bites: the supervised loss importing the KD strategies (kd sits four layers up)
  is reported, and so is one independent command importing another."""
  graph = grimp.build_graph("sed_jax")  # Its own: the shared one must stay as built.
  graph.add_import(importer="sed_jax.losses", imported="sed_jax.kd.strategies")
  graph.add_import(importer="sed_jax.detect", imported="sed_jax.main")
  found = violations(graph)
  assert "sed_jax.losses imports sed_jax.kd" in found
  assert "sed_jax.train imports sed_jax.kd" in found  # Through losses: chains count.
  assert "sed_jax.detect imports its independent sibling sed_jax.main" in found


def test_import_linter_keeps_the_contract():
  """The same contract as `lint-imports` reads it (what a developer runs by hand)."""
  proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "lint-imports"),
                         "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
  assert "1 kept, 0 broken" in proc.stdout


def test_only_commands_define_flags():
  """Importing every library module defines no absl flag: a command's flags never leak into
  another command's --helpfull, and two libraries cannot clash over a flag name."""
  commands = layer_modules()[0][0]
  libraries = sorted(m for m in grimp.build_graph("sed_jax").modules
                     if not any(m == c or m.startswith(c + ".") for c in commands))
  script = ("import importlib, sys\nfrom absl import flags\n"
            f"for m in {libraries!r}:\n  importlib.import_module(m)\n"
            "print(sorted(k for k in flags.FLAGS.flags_by_module_dict() if 'sed_jax' in k))")
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == "[]", proc.stdout
