r"""A peer on the same data: a plain PyTorch CRNN trained with a standard recipe, scored like ours.

  pip install -e '.[bench]' -c constraints.txt      # torch on CPU
  python experiments/torch_peer.py --config.dataset.root=../shared/data   # urbansed_mini, 25 epochs
  python experiments/torch_peer.py --config.dataset.root=../shared/data --arch=student
  python experiments/torch_peer.py --config=configs/student.py:smoke --epochs=2 --out=/tmp/peer
  python experiments/torch_peer.py --config=configs/student.py --cpu_size --epochs=2 \
      --batch_size=8 --scores_dir=runs/torch_gated_scores   # a teacher (docs/distillation.md)

What a researcher asks first is whether our models are as good as the framework they would use
otherwise. This trains a PyTorch CRNN on the train split of the experiment config's dataset
(the same TFDS dataset and features our runs read, through the same input pipeline, so only the
framework and the recipe differ) and scores it on its test split with our metrics, which agree
with sed_eval and sed_scores_eval (tests/evaluation).

The model is the PyTorch twin (`benchmarks/torch_crnn.py`) of one of our architectures at its
default (accelerator) size: `gated` (default) is the DESED-baseline shape, GLU conv blocks and a
BiGRU; `student` is our 32 k student. The recipe is the common PyTorch baseline's, not ours:
Adam at a constant learning rate (1e-3), batch 32, `--epochs` passes over the train split, the
epoch with the best validation event-F1 kept. Writes `<out>.json` (per-epoch validation, test
metrics, parameters, the recipe, the machine) and prints
`result: torch_peer_test_event_f1 <value>`.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import torch_crnn  # pylint: disable=g-import-not-at-top,wrong-import-position

from sed_jax import io_utils  # pylint: disable=wrong-import-position
from sed_jax import machine  # pylint: disable=wrong-import-position
from sed_jax import metric_writers  # pylint: disable=wrong-import-position
from sed_jax import train  # pylint: disable=wrong-import-position
from sed_jax.data import annotations  # pylint: disable=wrong-import-position
from sed_jax.data import audio as audio_lib  # pylint: disable=wrong-import-position
from sed_jax.data import builders  # pylint: disable=wrong-import-position
from sed_jax.data import features as feat_lib  # pylint: disable=wrong-import-position
from sed_jax.data import frame_scores  # pylint: disable=wrong-import-position
from sed_jax.data import pipeline  # pylint: disable=wrong-import-position
from sed_jax.evaluation import frame_scoring  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/student.py:dataset=urbansed_mini", "Experiment config: its dataset, "
    "features and evaluation settings are used, not its models or schedules.")
_ARCH = flags.DEFINE_enum("arch", "gated", ["gated", "student"], "Which twin to train.")
_EPOCHS = flags.DEFINE_integer("epochs", 25, "Passes over the train split.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_LR = flags.DEFINE_float("lr", 1e-3, "Adam learning rate (constant).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the initialisation and the data order.")
_THREADS = flags.DEFINE_integer("threads", 0, "torch intra-op threads; 0 = torch's default.")
_OUT = flags.DEFINE_string("out", str(Path(__file__).parent / "results" / "torch_peer"),
                           "Output path without extension (.json is written).")
_SCORES = flags.DEFINE_string(
    "scores_dir", None, "Also write the kept model's frame and clip scores for every split of "
    "the dataset here, in the layout external teachers are read from (sed_jax/data/"
    "frame_scores.py), so that it can be distilled: --config.teachers=\"('external:<name>="
    "<dir>',)\".")
_SCORES_FORMAT = flags.DEFINE_enum("scores_format", "tsv", ["tsv", "npz"],
                                   "tsv: sed_scores_eval files per clip; npz: logits per split.")
_CPU_SIZE = flags.DEFINE_bool("cpu_size", False, "Size the twin like the config's CPU teachers "
                              "(teacher.arch_overrides), not at the architecture's default.")
_EXTRA = flags.DEFINE_list("extra_tests", [], "More test sets to score the kept model on, each "
                           "a DCASE folder with audio/ and strong.tsv (experiments/shifted_test.py "
                           "--mix_only writes them).")


def _tensors(batch: dict) -> dict[str, torch.Tensor]:
  keys = ("log_mel", "strong", "weak", "has_strong", "has_weak", "frame_mask")
  return {k: torch.from_numpy(np.asarray(batch[k])) for k in keys}


def score(model, source, config, classes) -> dict:
  """Our SED metrics of `model` on a whole split (eval mode, the config's post-processing)."""
  model.eval()
  frames, meta = [], {"audio_id": [], "duration": [], "events": []}
  with torch.no_grad():
    for batch in pipeline.eval_batches(source, batch_size=config.eval.batch_size,
                                       data_cfg=config.dataset, feature_cfg=config.features,
                                       process_index=0, process_count=1):
      t = _tensors(batch)
      frame_logits, _ = model(t["log_mel"], t["frame_mask"])
      frames.append(torch.sigmoid(frame_logits).numpy()[batch["mask"]])
      for k in meta:
        meta[k].extend(v for v, m in zip(batch[k], batch["mask"]) if m)
  model.train()
  refs = frame_scoring.reference_events(meta["events"], meta["audio_id"], classes)
  return frame_scoring.score_predictions(np.concatenate(frames), meta["audio_id"], meta["duration"],
                                    refs, classes, feat_lib.output_frame_seconds(config.features),
                                    config.eval)


def write_scores(model, config, classes, out: str, fmt: str, info: dict) -> None:
  """The model's scores on every split of the dataset, as an external teacher's folder
  (`frame_scores.FolderWriter`): each clip's own frames, and its clip score."""
  builder = builders.make_builder(config.dataset, config.features)
  model.eval()
  with torch.no_grad(), frame_scores.FolderWriter(
      out, classes, feat_lib.output_frame_seconds(config.features), fmt, overwrite=True) as w:
    for split in builder.info.splits:
      ids, frames, clips = [], [], []
      for batch in pipeline.eval_batches(builder.as_data_source(split),
                                         batch_size=config.eval.batch_size,
                                         data_cfg=config.dataset, feature_cfg=config.features,
                                         process_index=0, process_count=1):
        t = _tensors(batch)
        frame_logits, clip_logits = (x.numpy() for x in model(t["log_mel"], t["frame_mask"]))
        for i in np.flatnonzero(batch["mask"]):
          ids.append(batch["audio_id"][i])
          frames.append(frame_logits[i, :int(batch["frame_mask"][i].sum())])
          clips.append(clip_logits[i])
      w.split(split, ids, frames, np.stack(clips))
      logging.info("scores of %d %s clips → %s", len(ids), split, out)
    w.info = dict(info, splits=list(builder.info.splits),
                  dataset=f"{builder.name}/{builder.builder_config.name}")
  model.train()


def score_folder(model, folder: Path, config, classes) -> dict:
  """Our SED metrics of `model` on a DCASE folder (`audio/`, `strong.tsv`), scored as `score`.

  Each file becomes one clip-length window, as a TFDS example does (`FixLength`); the files of
  `shifted_test.py` are clip-length, so no window is cut short or merged.
  """
  reference = annotations.read_strong_tsv(folder / "strong.tsv", classes)
  annotations.check_audio_present(reference, folder / "audio", tsv_path=folder / "strong.tsv")
  fix = pipeline.FixLength(pipeline.clip_frames(config.dataset, config.features),
                           config.features.time_pool, config.features.log_floor)
  files, durations, frames = list(reference), [], []
  model.eval()
  with torch.no_grad():
    for i in range(0, len(files), config.eval.batch_size):
      examples = []
      for f in files[i:i + config.eval.batch_size]:
        audio = audio_lib.load_audio(folder / "audio" / f, config.features.sample_rate)
        durations.append(audio.shape[0] / config.features.sample_rate)
        mel = feat_lib.log_mel(audio, config.features)
        t_out = mel.shape[0] // config.features.time_pool
        examples.append(fix.map(dict(log_mel=mel, strong=np.zeros((t_out, len(classes))),
                                     weak=np.zeros(len(classes)), has_strong=False,
                                     has_weak=False)))
      batch = {k: torch.from_numpy(np.stack([e[k] for e in examples]))
               for k in ("log_mel", "frame_mask")}
      frame_logits, _ = model(batch["log_mel"], batch["frame_mask"])
      frames.append(torch.sigmoid(frame_logits).numpy())
  model.train()
  return frame_scoring.score_predictions(np.concatenate(frames), files, durations, reference,
                                         classes, feat_lib.output_frame_seconds(config.features),
                                         config.eval)


def main(argv):
  del argv
  metric_writers.quiet_library_logs()
  config = _CONFIG.value
  torch.manual_seed(_SEED.value)
  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  builders.prepare(config.dataset, config.features)
  classes = list(builders.make_builder(config.dataset, config.features).info.metadata["classes"])
  arch_config = copy.deepcopy(config)
  arch_config.model.arch = _ARCH.value
  arch_config.model.overrides = dict(config.teacher.arch_overrides.get(_ARCH.value, {})
                                     if _CPU_SIZE.value else {})
  model = torch_crnn.from_flax(train.model_from_config(arch_config, len(classes)),
                               config.features.n_mels)
  params = torch_crnn.count_params(model)
  source = {s: pipeline.data_source(config.dataset, config.features, s)
            for s in ("train", "validation", "test")}
  steps_per_epoch = len(source["train"]) // _BATCH.value
  loader = iter(pipeline.train_loader(source["train"], batch_size=_BATCH.value,
                                      seed=_SEED.value, data_cfg=config.dataset,
                                      feature_cfg=config.features, process_index=0, process_count=1))
  opt = torch.optim.Adam(model.parameters(), lr=_LR.value)
  logging.info("PyTorch %s twin, %d parameters, %d epochs of %d steps at batch %d", _ARCH.value,
               params, _EPOCHS.value, steps_per_epoch, _BATCH.value)
  best, best_state, epochs = -1.0, None, []
  start = time.time()
  progress = metric_writers.Progress(_EPOCHS.value * steps_per_epoch, 0, _BATCH.value,
                                     desc=f"torch {_ARCH.value}")
  model.train()
  for epoch in range(_EPOCHS.value):
    losses = []
    for step in range(steps_per_epoch):
      batch = _tensors(next(loader))
      opt.zero_grad(set_to_none=True)
      frame_logits, clip_logits = model(batch["log_mel"], batch["frame_mask"])
      loss = torch_crnn.supervised_loss(frame_logits, clip_logits, batch,
                                        config.loss.weak_weight)
      loss.backward()
      opt.step()
      losses.append(loss.item())
      progress.update(epoch * steps_per_epoch + step + 1, loss=f"{losses[-1]:.4f}")
    val = score(model, source["validation"], config, classes)
    f1 = val.get(config.eval.metric) or 0.0
    epochs.append(dict(epoch=epoch + 1, train_loss=float(np.mean(losses)), **{
        k: v for k, v in val.items() if k != "class_wise"}))
    logging.info("epoch %d: loss %.4f, validation %s %.4f", epoch + 1, np.mean(losses),
                 config.eval.metric, f1)
    if f1 > best:
      best, best_state = f1, copy.deepcopy(model.state_dict())
  progress.close()
  model.load_state_dict(best_state)
  test = score(model, source["test"], config, classes)
  if _SCORES.value:
    write_scores(model, config, classes, _SCORES.value, _SCORES_FORMAT.value,
                 dict(model=f"PyTorch {_ARCH.value} twin (experiments/torch_peer.py)",
                      params=params, seed=_SEED.value, torch=torch.__version__))
  extra = {}
  for folder in map(Path, _EXTRA.value):
    metrics = score_folder(model, folder, config, classes)
    extra[folder.name] = {k: v for k, v in metrics.items() if k != "class_wise"}
    print(f"{folder.name}: event F1 {metrics['event_f1_macro']:.3f}", flush=True)
  out = dict(dataset=config.dataset.name, arch=_ARCH.value, params=params,
             recipe=dict(optimizer="adam", lr=_LR.value, batch_size=_BATCH.value,
                         epochs=_EPOCHS.value, seed=_SEED.value, selection="best validation "
                         f"{config.eval.metric}"),
             torch=torch.__version__, train_seconds=time.time() - start, validation=epochs,
             test={k: v for k, v in test.items() if k != "class_wise"}, extra_tests=extra,
             machine=machine.fingerprint())
  path = Path(_OUT.value + ".json")
  path.parent.mkdir(parents=True, exist_ok=True)
  with io_utils.atomic_write(path) as f:
    json.dump(out, f, indent=2)
  print(f"test: event F1 {test['event_f1_macro']:.3f}, segment F1 {test['segment_f1_macro']:.3f}"
        f" ({params:,} parameters; {path})")
  print(f"result: torch_peer_test_event_f1 {test['event_f1_macro']:.4f}")


if __name__ == "__main__":
  app.run(main)
