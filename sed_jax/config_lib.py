"""Loading configs: the `configs/` files, their arguments, their overrides, their workdirs.

Every default value lives in `configs/` (configs-as-code, ml_collections): the blocks several
experiments share in `configs/common.py`, reached from library code, commands, benchmarks and
tests through `common()`, so that each default is written once and nowhere in `sed_jax/`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from pathlib import Path

import ml_collections

# The shared default blocks: configs/ beside the sed_jax package in a checkout (a wheel does
# not install them).
COMMON_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "common.py"


@functools.cache
def common():
  """`configs/common.py`, loaded once: `common().training(smoke)`, `.dataset(name, smoke)`,
  `.features()`, `.optimizer()`, `.loss()`, `.augment()`, `.evaluation()` (fresh ConfigDicts)."""
  if not COMMON_CONFIG.is_file():
    raise FileNotFoundError(
        f"{COMMON_CONFIG} not found: the default config blocks live in configs/common.py of the "
        "sed_jax checkout. Use sed_jax from a checkout, installed editable (`pip install -e .`).")
  module_spec = importlib.util.spec_from_file_location("_sed_jax_configs_common", COMMON_CONFIG)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def parse_arg(arg: str | None, **defaults):
  """Parses `get_config` arguments such as 'arch=resnet,smoke' into a ConfigDict.

  A bare word is a boolean flag set to True; `key=value` values are cast to the type of the
  default. Unknown keys are an error that lists the known ones.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for part in arg.split(","):
    part = part.strip()
    if not part:
      continue
    key, sep, value = part.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(
          f"Unknown config argument {key!r} in {arg!r}; known: {sorted(defaults)}.")
    default = defaults[key]
    if not sep:
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"Config argument {key!r} must be true/false, got {value!r}.")
      out[key] = value.lower() in ("true", "1")
    elif default is None:
      out[key] = value
    else:
      out[key] = type(default)(value)
  return out


def default_workdir(config_arg: str) -> str:
  """`runs/<config file stem>[_<arg values>]`, e.g. configs/teacher.py:arch=resnet,smoke →
  runs/teacher_resnet_smoke: one workdir per experiment variant, stable across re-runs."""
  path, _, arg = config_arg.partition(":")
  parts = [os.path.splitext(os.path.basename(path))[0]]
  parts += [p.split("=", 1)[-1] for p in arg.split(",") if p.strip()]
  return os.path.join("runs", "_".join(re.sub(r"[^\w.-]+", "-", p) for p in parts))


def unknown_override(config: ml_collections.ConfigDict, argv: list[str]) -> str | None:
  """Explains the first `--config.<key>=...` of `argv` that names no field of `config`.

  ml_collections reports it as a bare AttributeError; this names the key and lists the valid
  keys where it went wrong, which is what a person fixing the command needs.
  """
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    node, walked = config, []
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = ".".join(walked) or "the top level"
        valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        return (f"Unknown config key {key!r}: {where} has no field {part!r}. "
                f"Valid keys there: {', '.join(valid)}.")
      node = node[part]
      walked.append(part)
  return None


def load_config_module(path: str):
  """The Python module of a config file (its get_config, and get_sweep if it has one)."""
  module_spec = importlib.util.spec_from_file_location("_sed_jax_config", path)
  if module_spec is None or not os.path.isfile(path):
    raise FileNotFoundError(f"Config file {path} not found.")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file given as 'path/to/file.py[:arg]' (as --config takes)."""
  path, _, arg = spec.partition(":")
  return load_config_module(path).get_config(arg or None)
