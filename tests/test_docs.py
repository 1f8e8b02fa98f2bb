"""The documentation names only what exists: commands, their flags, config keys, scripts, links.

Why a test: README.md and docs/ quote commands a user copies. A renamed module, a removed flag or
a moved config key turns them into errors the user meets first, and nothing else would notice.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sed_jax import config_lib

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Every config a page may be quoting a key of.
CONFIGS = ("configs/student.py", "configs/student.py:dataset=urbansed_mini",
           "configs/student.py:smoke", "configs/teacher.py:arch=resnet")

# `python -m sed_jax.x ...` up to the end of its code span or line; `\` or an indented `--flag`
# on the next line continue it.
COMMAND = re.compile(r"python -m (sed_jax[\w.]*)((?:[^`\n]|\\\n|\n[ \t]+(?=--))*)")
SCRIPT = re.compile(r"python ((?:benchmarks|experiments)/[\w/]+\.py)")
FLAG = re.compile(r"(?<![\w-])--([a-z_][\w]*)(?==|\s|`|$|\])")
CONFIG_KEY = re.compile(r"--config\.([a-z_][\w.]*[a-z_0-9])")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def pages_text() -> dict[Path, str]:
  return {p: p.read_text() for p in PAGES}


def quoted_commands() -> dict[str, set[str]]:
  """{module: flags quoted after it}, over every page."""
  out: dict[str, set[str]] = {}
  for text in pages_text().values():
    for module, rest in COMMAND.findall(text):
      out.setdefault(module, set()).update(FLAG.findall(rest))
  return out


@pytest.fixture(scope="module")
def command_flags() -> dict[str, list[str]]:
  """The flags each quoted command defines, read from the modules themselves (one process)."""
  modules = sorted(quoted_commands())
  # Several commands define --workdir: each one's flags are read, then removed, in turn.
  script = f"""
import importlib, json, sys
from absl import flags
out = {{}}
for m in {modules!r}:
  try:
    importlib.import_module(m)
  except ImportError:
    out[m] = None
    continue
  module = sys.modules[m]
  if hasattr(module, "parser"):  # An argparse command (sed_jax.edge: no absl on a device).
    out[m] = [a.dest for a in module.parser()._actions if a.option_strings]
    continue
  names = [f.name for f in flags.FLAGS.flags_by_module_dict().get(m, [])]
  out[m] = names
  for name in names:
    delattr(flags.FLAGS, name)
print(json.dumps(out))
"""
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_quoted_command_exists_and_takes_its_flags(command_flags):
  commands = quoted_commands()
  assert "sed_jax.main" in commands and len(commands) >= 5  # The parser finds them.
  absl = {"help", "helpfull", "helpshort", "v", "verbosity", "logtostderr", "alsologtostderr"}
  for module, quoted in sorted(commands.items()):
    defined = command_flags[module]
    assert defined is not None, f"The docs quote `python -m {module}`: no such module"
    assert "main" in (ROOT / (module.replace(".", "/") + ".py")).read_text(), module
    unknown = {f for f in quoted if f not in defined and f not in absl and f != "config"}
    assert not unknown, f"`python -m {module}` has no flag(s) {sorted(unknown)}"


def test_every_quoted_config_key_exists():
  configs = [config_lib.load_config(str(ROOT / spec)) for spec in CONFIGS]
  keys = {k for text in pages_text().values() for k in CONFIG_KEY.findall(text)}
  assert "kd.temperature" in keys  # The parser finds them.
  for key in sorted(keys):
    ok = False
    for c in configs:
      node = c
      for part in key.split("."):
        node = node.get(part) if hasattr(node, "get") else None
        if node is None:
          break
      ok |= node is not None or _leaf_is_none(c, key)
    assert ok, f"The docs quote --config.{key}: no config in {CONFIGS} has that key"


def _leaf_is_none(config, key: str) -> bool:
  *path, leaf = key.split(".")
  node = config
  for part in path:
    if not hasattr(node, "get") or part not in node:
      return False
    node = node[part]
  return hasattr(node, "keys") and leaf in node


def test_every_quoted_script_and_link_exists():
  for page, text in pages_text().items():
    for script in SCRIPT.findall(text):
      assert (ROOT / script).is_file(), f"{page.name} quotes `python {script}`: not there"
    for target in LINK.findall(text):
      if "://" in target:
        continue
      assert (page.parent / target).exists(), f"{page.name} links to {target}: not there"
    assert "../shared" not in text, f"{page.name} points into ../shared, which users lack"


def test_the_readme_is_a_page_not_a_notebook():
  assert os.path.getsize(ROOT / "README.md") <= 12_000
