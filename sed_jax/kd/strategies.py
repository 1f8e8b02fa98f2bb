"""How K teachers become one soft target: the combination strategies (`kd.strategy`).

A strategy turns what is known about the teachers (their names, the per-class validation F1 the
teacher cache records, optional per-teacher scalars from the config) into per-teacher, per-class
weights [K, C] and an averaging mode: 'prob' averages the tempered probabilities, 'logit' the
logits before the tempered sigmoid. `combine` applies them to cached teacher logits.

Adding a strategy is one function registered here, and a test (README, "Recipes"):

    @register("median_rank")
    def median_rank(ctx: Context) -> tuple[np.ndarray, str]:
      ...  # [K, C] non-negative weights, 'prob' or 'logit'

`single:<teacher>` is the one strategy with an argument (the teacher's name): a registered name
may be followed by ':' and an argument, which the function receives as `ctx.arg`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Context:
  """What a strategy may weight by.

  Attributes:
    teachers: the teachers' names, in cache order.
    num_classes: C.
    scalars: per-teacher weights from the config (`kd.weights`), or None.
    class_f1: per-teacher, per-class validation event-F1 [K, C] (teacher cache metadata), or None.
    arg: what follows ':' in the strategy's name (`single:resnet` → 'resnet'), or ''.
  """
  teachers: Sequence[str]
  num_classes: int
  scalars: Sequence[float] | None = None
  class_f1: Sequence[Sequence[float]] | None = None
  arg: str = ""


Strategy = Callable[[Context], tuple[np.ndarray, str]]
STRATEGIES: dict[str, Strategy] = {}
TAKES_ARGUMENT = {"single"}  # Strategies named `<name>:<arg>`.


def register(name: str, takes_argument: bool = False):
  """Registers a strategy function under `name` (`kd.strategy=<name>`)."""
  def wrap(fn: Strategy) -> Strategy:
    if name in STRATEGIES:
      raise ValueError(f"KD strategy {name!r} is registered twice.")
    STRATEGIES[name] = fn
    if takes_argument:
      TAKES_ARGUMENT.add(name)
    return fn
  return wrap


def names() -> str:
  """The strategies as a user writes them, for messages: 'mean_prob, ..., single:<teacher>'."""
  return ", ".join(f"{n}:<teacher>" if n in TAKES_ARGUMENT else n for n in STRATEGIES)


def problem(strategy: str, teachers: Sequence[str]) -> str | None:
  """Why `strategy` cannot run with `teachers` (None if it can): for config checks, before any
  work. Only the name and argument are checked here; the weights' own inputs when it runs."""
  name, _, arg = strategy.partition(":")
  if name not in STRATEGIES or (name in TAKES_ARGUMENT) != bool(arg):
    return f"is not one of {names()}"
  if name == "single" and arg not in teachers:
    return f"names no teacher of {tuple(teachers)!r}"
  return None


@register("mean_prob")
def mean_prob(ctx: Context) -> tuple[np.ndarray, str]:
  """Equal weights; the tempered probabilities are averaged."""
  return np.ones((len(ctx.teachers), ctx.num_classes), np.float32), "prob"


@register("mean_logit")
def mean_logit(ctx: Context) -> tuple[np.ndarray, str]:
  """Equal weights; the logits are averaged before the tempered sigmoid."""
  return np.ones((len(ctx.teachers), ctx.num_classes), np.float32), "logit"


@register("weighted")
def weighted(ctx: Context) -> tuple[np.ndarray, str]:
  """One scalar per teacher (`kd.weights`), the same for every class."""
  s = ctx.scalars
  if s is None or len(s) != len(ctx.teachers) or min(s) < 0 or sum(s) <= 0:
    raise ValueError(f"Strategy 'weighted' needs one non-negative weight per teacher "
                     f"({list(ctx.teachers)}), not all zero; got {s}.")
  return np.broadcast_to(np.asarray(s, np.float32)[:, None],
                         (len(ctx.teachers), ctx.num_classes)), "prob"


@register("class_weighted")
def class_weighted(ctx: Context) -> tuple[np.ndarray, str]:
  """Each teacher's validation F1 per class: for every class the teachers that detect it best
  dominate the target (the "complementary teachers" of the method). A class that no teacher
  detects falls back to equal weights."""
  f1 = np.asarray(ctx.class_f1 if ctx.class_f1 is not None else [], np.float32)
  shape = (len(ctx.teachers), ctx.num_classes)
  if f1.shape != shape or bool(np.any(f1 < 0)):
    raise ValueError(f"Strategy 'class_weighted' needs non-negative per-class validation F1 "
                     f"of shape {shape}; got {f1.shape}.")
  return np.where(f1.sum(0, keepdims=True) > 0, f1, 1.0), "prob"


@register("single", takes_argument=True)
def single(ctx: Context) -> tuple[np.ndarray, str]:
  """All weight on one teacher (`single:<teacher>`: the single-teacher ablation)."""
  if ctx.arg not in ctx.teachers:
    raise ValueError(f"Strategy 'single:{ctx.arg}': no teacher named {ctx.arg!r}; teachers: "
                     f"{list(ctx.teachers)}.")
  w = np.zeros((len(ctx.teachers), ctx.num_classes), np.float32)
  w[list(ctx.teachers).index(ctx.arg)] = 1.0
  return w, "prob"


def teacher_weights(strategy: str, teachers: Sequence[str], num_classes: int,
                    scalars=None, class_f1=None) -> tuple[jnp.ndarray, str]:
  """Per-teacher, per-class weights [K, C] of `strategy` (each class's column sums to 1), and
  whether teachers are averaged as probabilities ('prob') or logits ('logit')."""
  name, _, arg = strategy.partition(":")
  if name not in STRATEGIES or (name in TAKES_ARGUMENT) != bool(arg):
    raise ValueError(f"Unknown KD strategy {strategy!r}; one of {names()}.")
  w, mode = STRATEGIES[name](Context(list(teachers), num_classes, scalars, class_f1, arg))
  w = jnp.asarray(w, jnp.float32)
  return w / w.sum(0, keepdims=True), mode


def combine(teacher_logits, weights, temperature: float, mode: str = "prob"):
  """The soft target from K teachers: [B, K, ..., C] logits → [B, ..., C] probabilities.

  `weights` [K, C] (columns summing to 1) weight each teacher per class; 'prob' averages the
  tempered probabilities, 'logit' the logits before the tempered sigmoid.
  """
  z = teacher_logits.astype(jnp.float32) / temperature
  w = weights.reshape((1, weights.shape[0]) + (1,) * (z.ndim - 3) + (weights.shape[1],))
  if mode == "logit":
    return jax.nn.sigmoid(jnp.sum(w * z, axis=1))
  return jnp.sum(w * jax.nn.sigmoid(z), axis=1)
