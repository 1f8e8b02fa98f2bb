"""Config pieces shared by every experiment file in `configs/`.

Experiments are configs-as-code (ml_collections); the pieces that several of them need (the audio
front-end, the dataset block) live here so that one default is written once.
"""

from __future__ import annotations

import importlib.util
import os
import re

import ml_collections

from sed_jax import losses
from sed_jax.data import pipeline
from sed_jax.evaluation import frame_scoring


def feature_config() -> ml_collections.ConfigDict:
  """Log-mel front-end defaults (DCASE-like, 20 ms hop).

  Every field here is part of a dataset's identity: the TFDS builder config name carries a
  fingerprint of this block, so changing any value builds a new dataset instead of silently
  reusing features computed with the old one.
  """
  return ml_collections.ConfigDict(dict(
      sample_rate=16000,
      n_fft=1024,
      hop_length=320,        # 20 ms at 16 kHz.
      n_mels=64,
      fmin=50.0,
      fmax=8000.0,
      log_floor=1e-5,        # log(max(mel_power, floor)): silence maps to a finite value.
      time_pool=4,           # Model output frames = input frames // time_pool (80 ms).
  ))


def optimizer_config() -> ml_collections.ConfigDict:
  """Optimiser and schedule (see train.make_optimizer): linear warmup, cosine decay."""
  return ml_collections.ConfigDict(dict(
      name="adamw",          # adam | adamw | lamb | lars.
      lr=1e-3, warmup_steps=200, final_lr_ratio=0.01, weight_decay=1e-4,
      # Large-batch rules: the peak LR is `lr` at `base_batch_size`, scaled to the run's global
      # batch linearly (Goyal et al. 2017) or by its square root (Hoffer et al. 2017; Adam-type
      # optimisers); 'none' uses `lr` as given. `warmup_examples` > 0 replaces warmup_steps by
      # the steps that see that many examples, so a sweep over batch sizes warms up alike.
      lr_scaling="none", base_batch_size=64, warmup_examples=0,
      grad_clip=5.0,         # Global-norm clipping; 0 = off.
      momentum=0.9,          # lars only.
      b2=0.999))


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


def dataset_config(name: str = "synth_sed", smoke: bool = False) -> ml_collections.ConfigDict:
  """The `dataset` block: which dataset, where it lives, how it is built.

  `smoke` shrinks the embedded dataset so that a whole job runs in about two minutes on two CPU
  cores; the tests and quick checks use it.
  """
  sizes = (dict(train=48, validation=16, test=16, unlabeled=32) if smoke else
           dict(train=2000, validation=300, test=300, unlabeled=1000))
  mixed = (dict(train=48, validation=16, test=16, unlabeled=32) if smoke else
           dict(train=1500, validation=300, test=300, unlabeled=1000))
  # Smoke clips are half as long: every step, evaluation and cache pass costs half as much.
  seconds = 5.0 if smoke else 10.0
  return ml_collections.ConfigDict(dict(
      name=name,
      data_dir="",          # TFDS data_dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets.
      root="",              # Folder of a dataset on disk (dcase_folder, desed, urban_sed, ...).
      classes="",           # Comma-separated class list; '' = from the annotations.
      on_error="raise",     # raise | skip: what a bad file does to a build.
      num_workers=0,        # Feature-extraction processes; 0 = one per core.
      # Clip length: what synth_sed synthesises and soundscapes mixes, and what every clip is
      # cropped / padded to for batching (folder datasets may hold longer or shorter files).
      clip_seconds=seconds,
      # Share of the strongly labelled training clips that keep their frame labels; the others
      # train on clip (weak) labels only. 0 = weak-label training, as in DCASE 2018 task 4.
      # Validation and test keep every label. Clips chosen by pipeline.keeps_strong.
      strong_fraction=1.0,
      synth=dict(seed=0, **sizes),
      # `soundscapes` / `urbansed_mini`: clips mixed from Scaper-style folders under `root`
      # (default ../shared/data for urbansed_mini) onto the recordings in `backgrounds`.
      soundscapes=dict(
          preset="", seed=0, min_events=1, max_events=6,
          snr_low_db=6.0, snr_high_db=30.0, max_polyphony=3, backgrounds="backgrounds",
          sources=dict(train="", validation="", test="", unlabeled=""),  # Comma-separated dirs.
          clips=mixed),
  ))


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


def training_config(smoke: bool = False) -> ml_collections.ConfigDict:
  """The knobs of one training run (the loop in sed_jax/train.py), teachers and students alike.

  `smoke`: a dozen steps at batch 8, so a whole job runs in about two minutes on 2 CPU cores.
  """
  c = ml_collections.ConfigDict(dict(
      batch_size=64, total_steps=3000, log_every=50, eval_every=500, checkpoint_every=500,
      keep_checkpoints=2, loader_workers=0,
      # Micro-batches per step (train.train_step): the memory of batch_size / k examples, the
      # same update as the whole batch. batch_size must be a multiple of k x device count.
      grad_accum_steps=1))
  c.optim = optimizer_config()
  c.loss = losses.loss_config()
  c.augment = pipeline.augment_config()
  c.eval = frame_scoring.eval_config()
  if smoke:
    c.update(dict(batch_size=8, total_steps=12, log_every=4, eval_every=6, checkpoint_every=6))
    c.optim.warmup_steps = 2
    c.eval.batch_size = 8
    c.eval.psds = False
  return c
