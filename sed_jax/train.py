"""The one training loop: every teacher and every student is trained by `train_and_evaluate`.

Structure (the Flax-examples shape):
- `TrainState`: everything that changes during training, one pytree (params, batch_stats,
  optimiser state, step, rng), checkpointed as a whole;
- `train_step(state, batch, ...)`: a pure, module-level function compiled once with `jax.jit`,
  replicated state, batch sharded over the `data` mesh axis and the old state donated;
- `eval_step`: frame and clip probabilities of a batch;
- `train_and_evaluate(config, workdir)`: the loop — data, resume, steps, periodic validation that
  keeps the best checkpoint, periodic checkpoints (and one on SIGTERM: preemption.py), logs,
  and a final test evaluation.

The distillation loss is one more term of the same step (`losses.total_loss`'s `kd`, built by
`sed_jax.kd`), fed by teacher logits that the input pipeline reads from the teacher cache;
nothing here knows about teachers.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from etils import epath

from sed_jax import checkpoint as ckpt_lib
from sed_jax import io_utils
from sed_jax import losses
from sed_jax import metric_writers
from sed_jax import preemption
from sed_jax import sharding
from sed_jax.data import builders
from sed_jax.data import features as feat_lib
from sed_jax.data import pipeline
from sed_jax.evaluation import frame_scoring
from sed_jax.models import crnn

OPTIMIZERS = ("adam", "adamw", "lamb", "lars")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf loss or gradient; the message names the step."""


LR_SCALING = ("none", "linear", "sqrt")


def peak_lr(cfg, batch_size: int) -> float:
  """`cfg.lr`, scaled from `cfg.base_batch_size` to `batch_size` by `cfg.lr_scaling`."""
  rule = cfg.lr_scaling
  if rule not in LR_SCALING:
    raise ValueError(f"Config key optim.lr_scaling={rule!r} is not one of {LR_SCALING}.")
  ratio = batch_size / cfg.base_batch_size
  return cfg.lr * {"none": 1.0, "linear": ratio, "sqrt": ratio ** 0.5}[rule]


def warmup_steps(cfg, batch_size: int) -> int:
  """`cfg.warmup_steps`, or the steps that see `cfg.warmup_examples` examples when it is set."""
  examples = cfg.warmup_examples
  return -(-examples // batch_size) if examples else cfg.warmup_steps


def derived(config) -> dict[str, Any]:
  """What a training config's values imply that no single key states (`--print_config`): the
  global and per-device batch, the examples seen, and the learning rate after the large-batch
  rules (`peak_lr`, `warmup_steps`)."""
  batch, devices = config.batch_size, jax.device_count()
  accum = config.grad_accum_steps
  return dict(global_batch=batch, devices=devices, per_device_batch=batch / devices,
              micro_batch=batch // accum, total_steps=config.total_steps,
              examples_seen=batch * config.total_steps, peak_lr=peak_lr(config.optim, batch),
              warmup_steps=warmup_steps(config.optim, batch))


def make_schedule(cfg, total_steps: int, batch_size: int | None = None) -> optax.Schedule:
  """Linear warmup to the peak LR, then cosine decay to `peak * final_lr_ratio` at
  `total_steps`. With `batch_size`, the large-batch rules of `cfg` apply (peak_lr,
  warmup_steps); without, `cfg.lr` and `cfg.warmup_steps` as given."""
  lr = cfg.lr if batch_size is None else peak_lr(cfg, batch_size)
  warm = cfg.warmup_steps if batch_size is None else warmup_steps(cfg, batch_size)
  warmup = min(warm, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=lr * cfg.final_lr_ratio)


def make_optimizer(cfg, total_steps: int, batch_size: int | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax optimiser named by `cfg.name`, with global-norm clipping and the schedule
  (`batch_size`: the global batch, for the large-batch rules of make_schedule)."""
  schedule = make_schedule(cfg, total_steps, batch_size)
  if cfg.name == "adam":
    tx = optax.adam(schedule, b2=cfg.b2)
  elif cfg.name == "adamw":
    tx = optax.adamw(schedule, b2=cfg.b2, weight_decay=cfg.weight_decay)
  elif cfg.name == "lamb":
    tx = optax.lamb(schedule, b2=cfg.b2, weight_decay=cfg.weight_decay)
  elif cfg.name == "lars":
    tx = optax.lars(schedule, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
  else:
    raise ValueError(f"Config key optim.name={cfg.name!r} is not one of {OPTIMIZERS}.")
  if cfg.grad_clip and cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
  return tx, schedule


def model_from_config(config, num_classes: int):
  """The Flax module of `config.model` (architecture, widths, compute dtype, CPU kernels).

  The model pools time by `config.features.time_pool`, the rate the dataset's targets have.
  """
  m = config.model
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if m.dtype not in dtypes:
    raise ValueError(f"Config key model.dtype={m.dtype!r} is not one of {sorted(dtypes)}.")
  overrides = dict(m.overrides) if m.get("overrides") else {}
  overrides.setdefault("time_pool", config.features.time_pool)
  # Run configs saved before the key existed lack it: they ran what "auto" runs.
  cpu_kernels = m.get("cpu_kernels", "auto")
  return crnn.make_model(m.arch, num_classes, dtype=dtypes[m.dtype], cpu_kernels=cpu_kernels,
                         **overrides)


def init_state(model, tx, rng: jax.Array, input_shape: tuple[int, ...]) -> TrainState:
  """A fresh TrainState (pure: call it under jit or eval_shape)."""
  init_rng, state_rng = jax.random.split(rng)
  variables = model.init({"params": init_rng, "dropout": init_rng},
                         jnp.zeros(input_shape, jnp.float32), train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    rng=state_rng)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model, tx, loss_cfg,
               kd=None, accum_steps: int = 1) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step on a global batch. A non-finite loss or gradient leaves `state` as it
  was (so the last good state survives) and reports `finite = False` for the host to stop on.

  With `kd` (a `kd.losses.Distillation`) the batch carries cached teacher logits and the loss
  adds the multi-teacher KD term (`losses.total_loss`).

  `accum_steps` > 1 runs the forward/backward pass on that many micro-batches in turn (memory
  for one) and applies one update: the same loss and gradient as the whole batch, because each
  micro-batch's loss terms are divided by the whole batch's counts (losses.term_denominators).
  Micro-batch m holds examples m, m + k, m + 2k, ... so each device keeps its own share. Only
  BatchNorm differs: it normalises each micro-batch by its own statistics, as data-parallel
  devices do, and updates its running averages once per micro-batch."""
  rng, dropout_rng = jax.random.split(state.rng)
  denoms = losses.term_denominators(batch, batch["strong"].shape[-1])

  def loss_fn(params, batch_stats, micro, key):
    (frame_logits, clip_logits), updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, micro["log_mel"], train=True,
        frame_mask=micro["frame_mask"], mutable=["batch_stats"], rngs={"dropout": key})
    loss, aux = losses.total_loss(frame_logits, clip_logits, micro, loss_cfg, kd, denoms)
    return loss, (aux, updates.get("batch_stats", {}))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if accum_steps == 1:
    (loss, (aux, batch_stats)), grads = grad_fn(state.params, state.batch_stats, batch,
                                                dropout_rng)
  else:
    micro = jax.tree.map(lambda x: jnp.swapaxes(
        x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]), 0, 1), batch)

    def accumulate(carry, inputs):
      grads, loss, aux, stats = carry
      (l, (a, stats)), g = grad_fn(state.params, stats, *inputs)
      add = lambda x, y: jax.tree.map(jnp.add, x, y)
      return (add(grads, g), loss + l, add(aux, a), stats), None

    first = jax.tree.map(lambda x: x[0], micro)
    (_, (aux0, _)), _ = jax.eval_shape(grad_fn, state.params, state.batch_stats, first,
                                       dropout_rng)
    zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
    init = (zeros(state.params), jnp.zeros((), jnp.float32), zeros(aux0), state.batch_stats)
    (grads, loss, aux, batch_stats), _ = jax.lax.scan(
        accumulate, init, (micro, jax.random.split(dropout_rng, accum_steps)))
  updates = {"batch_stats": batch_stats}
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  # Which examples brought NaN/inf in, so that a stop can name them (cheap: one reduction each).
  bad_input = jnp.zeros(batch["log_mel"].shape[:1], bool)
  for key in ("log_mel", "strong", "weak", "teacher_logits", "teacher_clip_logits"):
    if key in batch:
      x = batch[key]
      bad_input |= ~jnp.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
  deltas, opt_state = tx.update(grads, state.opt_state, state.params)
  new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, deltas),
                      batch_stats=updates["batch_stats"], opt_state=opt_state, rng=rng)
  new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
  return new, dict(loss=loss, grad_norm=grad_norm, finite=finite, bad_input=bad_input, **aux)


def train_steps(state: TrainState, batches: tuple[dict[str, jax.Array], ...], **step_kwargs
                ) -> tuple[TrainState, tuple[dict[str, jax.Array], ...]]:
  """`train_step` on each of `batches` in turn, in one computation: the training loop's unit
  of work (`config.steps_per_call` steps a call), with every step's metrics.

  Why several steps a call: XLA:CPU allocates a computation's temporary buffers at every call,
  and the kernel maps each fresh page of them in (zeroed) on first touch: for the larger
  front-ends a sizeable share of every step went to the kernel. Steps inside one call reuse
  the same buffers (docs/benchmarks.md); on an accelerator it also halves the dispatches. The
  steps are written out, not a `lax.scan`: XLA:CPU ran the teachers' convolutions inside a
  while loop far slower. The run is that of the steps called one by one (steps, losses and
  parameters to float32 rounding: tests/test_train.py). A non-finite step leaves the state as
  it was, as `train_step` does; later steps of the call go on from it, and the host stops on
  the metrics after the call without saving, so the last good checkpoint is what remains."""
  metrics = []
  for batch in batches:
    state, m = train_step(state, batch, **step_kwargs)
    metrics.append(m)
  return state, tuple(metrics)


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, model) -> dict[str, jax.Array]:
  """Frame [B, T_out, C] and clip [B, C] probabilities (float32) in inference mode."""
  frame_logits, clip_logits = model.apply(
      {"params": state.params, "batch_stats": state.batch_stats}, batch["log_mel"], train=False,
      frame_mask=batch["frame_mask"])
  return dict(frame_probs=jax.nn.sigmoid(frame_logits.astype(jnp.float32)),
              clip_probs=jax.nn.sigmoid(clip_logits.astype(jnp.float32)))


def predict(eval_fn, state, source, *, config, mesh) -> dict[str, Any]:
  """Runs `eval_fn` over a whole split; returns probabilities and metadata of real examples,
  in dataset order, on every process."""
  local_bs = config.eval.batch_size // jax.process_count()
  outs, meta = [], {"audio_id": [], "duration": [], "events": []}
  for batch in pipeline.eval_batches(source, batch_size=local_bs, data_cfg=config.dataset,
                                     feature_cfg=config.features):
    probs = eval_fn(state, sharding.to_global(pipeline.device_batch(batch), mesh))
    outs.append({k: _gather(v) for k, v in probs.items()} | {"mask": _gather(batch["mask"])})
    for k in meta:
      meta[k].extend(_gather_list(batch[k], batch["mask"]))
  keep = np.concatenate([o["mask"] for o in outs])
  return dict(frame_probs=np.concatenate([o["frame_probs"] for o in outs])[keep],
              clip_probs=np.concatenate([o["clip_probs"] for o in outs])[keep], **meta)


def _gather(x) -> np.ndarray:
  """A global array, or per-process arrays concatenated in process order, on every process."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _gather_list(values: list, mask: np.ndarray) -> list:
  """Python metadata of the real examples of every process, in process order."""
  mine = [v for v, m in zip(values, mask) if m]
  if jax.process_count() == 1:
    return mine
  blob = json.dumps(mine).encode()
  sizes = multihost_utils.process_allgather(np.array([len(blob)]))
  buf = np.zeros(int(sizes.max()), np.uint8)
  buf[:len(blob)] = np.frombuffer(blob, np.uint8)
  bufs = multihost_utils.process_allgather(buf)
  return [item for b, n in zip(bufs, sizes.reshape(-1))
          for item in json.loads(bytes(b[:n]).decode())]


def evaluate_split(eval_fn, state, source, classes, *, config, mesh) -> dict[str, Any]:
  """Every SED metric of one split (see `evaluation.frame_scoring.score_predictions`)."""
  pred = predict(eval_fn, state, source, config=config, mesh=mesh)
  refs = frame_scoring.reference_events(pred["events"], pred["audio_id"], classes)
  return frame_scoring.score_predictions(
      pred["frame_probs"], pred["audio_id"], pred["duration"], refs, classes,
      feat_lib.output_frame_seconds(config.features), config.eval)


def _check_finite(history: list[dict[str, Any]], first_step: int,
                  audio_ids: list[np.ndarray]) -> None:
  """Raises NonFiniteLossError at the first step of `history` whose loss or gradient was not
  finite, naming the examples (`audio_ids`: this process's, per step) that brought NaN/inf in."""
  for i, m in enumerate(history):
    if bool(m["finite"]):
      continue
    where = (f"step {first_step + i + 1} (loss={float(m['loss'])}, "
             f"grad_norm={float(m['grad_norm'])})")
    bad = np.asarray(m["bad_input"])
    local = len(audio_ids[i])
    mine = bad[jax.process_index() * local:(jax.process_index() + 1) * local]
    names = [str(a) for a, b in zip(audio_ids[i], mine) if b]
    if bad.any():
      raise NonFiniteLossError(
          f"Non-finite input at {where}: NaN/inf in the features, targets or teacher logits of "
          f"{int(bad.sum())} example(s)" + (f", here: {', '.join(names)}" if names else "") +
          ". Training stopped and the last good checkpoint was kept. Rebuild the dataset (or "
          "teacher cache) these clips come from, or remove them.")
    raise NonFiniteLossError(
        f"Non-finite loss or gradient at {where}, every input finite: training diverged. It "
        "stopped and the last good checkpoint was kept. Lower optim.lr, raise "
        "optim.warmup_steps or lower optim.grad_clip.")


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  keys = [k for k in history[0] if k not in ("finite", "bad_input")]
  return {k: float(np.mean([float(m[k]) for m in history])) for k in keys}


def _steps_this_call(step: int, config) -> int:
  """Steps of the next call from `step`: `config.steps_per_call`, fewer where a log, evaluation
  or checkpoint boundary (or the end) comes first, so that every boundary falls between calls
  and the loop acts on it exactly as with one step a call."""
  boundary = min(config.total_steps,
                 *(step // every * every + every
                   for every in (config.log_every, config.eval_every, config.checkpoint_every)))
  return min(config.steps_per_call, boundary - step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: epath.PathLike, *,
                       train_source=None, kd=None) -> dict[str, Any]:
  """Trains `config.model` on `config.dataset` in `workdir`, resuming from it if possible.

  `train_source` replaces the dataset's train split (the distillation experiment passes the
  teacher cache's, possibly with its unlabeled split), and `kd` (a `kd.losses.Distillation`)
  adds the KD term to the loss; validation and test always read `config.dataset`.

  Returns the final test-split metrics of the best validation checkpoint (also written to
  `<workdir>/test_metrics.json`). A finished run (final checkpoint at `total_steps` and its
  test metrics on disk) is not redone.
  """
  workdir = epath.Path(workdir)
  done = workdir / "test_metrics.json"
  if done.exists():
    logging.info("%s is complete; nothing to do.", workdir)
    return json.loads(done.read_text())
  with ckpt_lib.run_lock(workdir):
    return _train_and_evaluate(config, workdir, train_source, kd)


def _train_and_evaluate(config, workdir: epath.Path, train_source, kd) -> dict[str, Any]:
  done = workdir / "test_metrics.json"
  mesh = sharding.make_mesh()
  local_bs = sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval.batch_size, mesh, key="eval.batch_size")
  workdir.mkdir(parents=True, exist_ok=True)
  ckpt_lib.write_config(workdir, config)

  train_src = (train_source if train_source is not None else
               pipeline.data_source(config.dataset, config.features, "train", prepare=True))
  builder = builders.make_builder(config.dataset, config.features)
  classes = list(builder.info.metadata["classes"])
  if jax.process_index() == 0:  # What the outputs mean, for inference without the dataset.
    with io_utils.atomic_write(workdir / "classes.json") as f:
      json.dump(classes, f)
  model = model_from_config(config, len(classes))
  tx, schedule = make_optimizer(config.optim, config.total_steps, config.batch_size)
  frames = pipeline.clip_frames(config.dataset, config.features)
  input_shape = (1, frames, config.features.n_mels)

  repl, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
  state = jax.jit(functools.partial(init_state, model, tx, input_shape=input_shape),
                  out_shardings=repl)(jax.random.key(config.seed))
  loader = pipeline.train_loader(
      train_src, batch_size=local_bs, seed=config.seed, data_cfg=config.dataset,
      feature_cfg=config.features, augment=config.augment,
      worker_count=config.loader_workers)
  data_iter = iter(loader)
  ckpt = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                     sharding=x.sharding), state),
                         data_iter)
    logging.info("Resumed %s from step %d.", workdir, int(state.step))

  step_fn = functools.partial(train_steps, model=model, tx=tx, loss_cfg=config.loss, kd=kd,
                              accum_steps=config.grad_accum_steps)

  @functools.cache
  def p_train(n: int):
    """The jitted call of n steps: `steps_per_call` ones, and a shorter one only where a log,
    evaluation or checkpoint boundary falls inside a call."""
    return jax.jit(step_fn, in_shardings=(repl, (data,) * n), out_shardings=(repl, repl),
                   donate_argnums=(0,), compiler_options=crnn.compiler_options(model))

  p_eval = jax.jit(functools.partial(eval_step, model=model), in_shardings=(repl, data),
                   out_shardings=data)
  val_src = pipeline.data_source(config.dataset, config.features, "validation")
  writer = metric_writers.MetricWriter(workdir)
  step = int(state.step)
  progress = metric_writers.Progress(config.total_steps, step, config.batch_size,
                                     desc=workdir.name)
  history: list[dict[str, Any]] = []
  audio_ids: list[np.ndarray] = []  # This process's examples of each step in `history`.
  with preemption.deferred():
    try:
      while step < config.total_steps:
        host_batches = [next(data_iter) for _ in range(_steps_this_call(step, config))]
        batches = tuple(sharding.to_global(pipeline.device_batch(b), mesh) for b in host_batches)
        state, metrics = p_train(len(batches))(state, batches)
        history.extend(metrics)
        audio_ids.extend(b["audio_id"] for b in host_batches)
        step += len(batches)
        last = step == config.total_steps
        if step % config.log_every == 0 or last:
          history = jax.device_get(history)
          _check_finite(history, step - len(history), audio_ids)
          scalars = _mean_metrics(history) | {"lr": float(schedule(step - 1))}
          writer.write(step, "train", scalars)
          progress.update(step, loss=f"{scalars['loss']:.4f}")
          history, audio_ids = [], []
        if step % config.eval_every == 0 or last:
          val = evaluate_split(p_eval, state, val_src, classes, config=config, mesh=mesh)
          writer.write(step, "validation", val)
          score = val.get(config.eval.metric)
          if score is not None and ckpt.save_best(step, state, score):
            logging.info("step %d: best %s so far: %.4f", step, config.eval.metric, score)
        # Every step of the call is offered to the sync point (multi-process: it must see
        # each step id in turn to agree on one); the checkpoint comes after the call.
        at_sync_point = [preemption.stop_at(s) for s in range(step - len(batches) + 1, step + 1)]
        preempted = not last and any(at_sync_point)
        if step % config.checkpoint_every == 0 or last or preempted:
          ckpt.save(step, state, data_iter, config)
        if preempted:
          ckpt.wait()
          raise preemption.Preempted(
              f"Stopped by SIGTERM at step {step} of {config.total_steps} of {workdir}, after "
              "saving its checkpoint. Run the same command again to resume from that step.")
    finally:
      progress.close()
      ckpt.wait()

  best = ckpt.restore_best(jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state))
  test_src = pipeline.data_source(config.dataset, config.features, "test")
  test = evaluate_split(p_eval, best, test_src, classes, config=config, mesh=mesh)
  writer.write(step, "test", test)
  writer.close()
  ckpt.close()
  if jax.process_index() == 0:
    with io_utils.atomic_write(done) as f:
      json.dump(test, f, indent=2)
  return test


def run_classes(workdir: epath.PathLike, config=None) -> list[str]:
  """The class names of a run's outputs (classes.json; else its dataset's metadata)."""
  path = epath.Path(workdir) / "classes.json"
  if path.exists():
    return json.loads(path.read_text())
  if config is None:
    config = ml_collections.ConfigDict(
        json.loads((epath.Path(workdir) / "config.json").read_text()))
  return list(builders.make_builder(config.dataset, config.features).info.metadata["classes"])


def load_trained(workdir: epath.PathLike, num_classes: int, which: str = "best"):
  """(model, variables, config) of a finished or running run, for inference.

  `which` is 'best' (the best validation checkpoint) or 'latest'. The model is rebuilt from the
  run's own config.json, so a teacher keeps its architecture whatever config loads it.
  """
  workdir = epath.Path(workdir)
  path = workdir / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{workdir} holds no run (no config.json); train it first.")
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  model = model_from_config(config, num_classes)
  ckpt = ckpt_lib.Checkpointer(workdir)
  try:
    if which == "best":
      state = ckpt.restore_best(None)
    else:
      state = ckpt.restore(None)
  finally:
    ckpt.close()
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  return model, variables, config
