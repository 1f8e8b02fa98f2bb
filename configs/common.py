r"""The default blocks every experiment config builds on: the one place their values live.

`configs/student.py` and `configs/teacher.py` start from these and override what they need;
library code, commands, benchmarks and tests get them through `config_lib.common()` (this file,
loaded by path), so no default is written twice. Each function returns a fresh ConfigDict: the
caller may change it freely. `--config.<key>=<value>` overrides any field of a resolved config,
and `python -m sed_jax.main --config=... --print_config` prints the result.

  training(smoke)       the knobs of one training run (config top level), with the blocks below
  optimizer(smoke)      `optim`: optimiser, learning-rate schedule, large-batch rules
  loss()                `loss`: the supervised loss
  augment()             `augment`: training-time augmentation
  evaluation(smoke)     `eval`: post-processing, validation metric, evaluation batch
  dataset(name, smoke)  `dataset`: which dataset, where it lives, how it is built
  features()            `features`: the log-mel front-end

`smoke` shrinks a block so that a whole job runs in a couple of minutes on a small CPU: the
tests and quick checks use it (docs/benchmarks.md, the smoke run).
"""

from __future__ import annotations

import ml_collections


def training(smoke: bool = False) -> ml_collections.ConfigDict:
  """The knobs of one training run (the loop in sed_jax/train.py), teachers and students alike.

  Sized for an accelerator; configs/student.py sets the CPU schedules (experiments/README.md,
  "CPU schedules").
  """
  c = ml_collections.ConfigDict()
  # Global batch, over every device of every process.
  c.batch_size = 8 if smoke else 64
  # Optimiser updates; the LR schedule decays over exactly these.
  c.total_steps = 12 if smoke else 3000
  # Steps between training-metric log lines.
  c.log_every = 4 if smoke else 50
  # Steps between validation passes; each one may become the best checkpoint (eval.metric).
  c.eval_every = 6 if smoke else 500
  # Steps between checkpoints (a run resumes from the latest one).
  c.checkpoint_every = 6 if smoke else 500
  # Recent checkpoints kept besides the best; older ones are deleted.
  c.keep_checkpoints = 2
  # grain worker processes of the training loader; 0 = read in the training process.
  c.loader_workers = 0
  # Micro-batches per step (train.train_step): the memory of batch_size / k examples, the
  # same update as the whole batch. batch_size must be a multiple of k x device count.
  c.grad_accum_steps = 1
  # Optimiser steps per compiled call of the training loop (train.train_steps): the same
  # updates as one a call; on CPU fewer fresh temporary buffers a step, which the larger
  # front-ends pay for in the kernel (docs/benchmarks.md); more costs compile time.
  c.steps_per_call = 2
  c.optim = optimizer(smoke)
  c.loss = loss()
  c.augment = augment()
  c.eval = evaluation(smoke)
  return c


def optimizer(smoke: bool = False) -> ml_collections.ConfigDict:
  """The `optim` block (train.make_optimizer): linear warmup, then cosine decay."""
  c = ml_collections.ConfigDict()
  # adam | adamw | lamb | lars. AdamW: Adam with decoupled weight decay.
  c.name = "adamw"
  # Peak learning rate, reached after the warmup (at base_batch_size if lr_scaling is set).
  c.lr = 1e-3
  # Linear warmup from 0 to the peak; a dozen-step smoke run warms up in 2.
  c.warmup_steps = 2 if smoke else 200
  # The cosine decay ends at lr x this at total_steps.
  c.final_lr_ratio = 0.01
  # Decoupled weight decay (adamw, lamb, lars).
  c.weight_decay = 1e-4
  # Large-batch rule for the peak LR (train.peak_lr): 'none' uses `lr` as given; 'linear'
  # scales it by global batch / base_batch_size (Goyal et al. 2017), 'sqrt' by its square root
  # (Hoffer et al. 2017; Adam-type optimisers).
  c.lr_scaling = "none"
  # The global batch at which `lr` holds, for lr_scaling.
  c.base_batch_size = 64
  # > 0: warm up over the steps that see this many examples instead of warmup_steps, so that
  # a sweep over batch sizes warms up alike (train.warmup_steps).
  c.warmup_examples = 0
  # Global-norm gradient clipping; 0 = off.
  c.grad_clip = 5.0
  # lars only.
  c.momentum = 0.9
  # Adam's second-moment decay (adam, adamw, lamb).
  c.b2 = 0.999
  return c


def loss() -> ml_collections.ConfigDict:
  """The `loss` block: the supervised loss (losses.total_loss). The KD knobs are the `kd` block
  of configs/student.py."""
  c = ml_collections.ConfigDict()
  # Clip-level (weak) BCE relative to frame-level (strong) BCE.
  c.weak_weight = 0.5
  return c


def augment() -> ml_collections.ConfigDict:
  """The `augment` block (pipeline.SpecAugment, pipeline.Mixup): all off but SpecAugment-style
  masking. configs/student.py turns the masks off for short CPU schedules."""
  c = ml_collections.ConfigDict()
  # Time masks per training clip, each filled with the clip's mean log-mel.
  c.time_masks = 2
  # Largest time mask, in input frames (20 = 400 ms at a 20 ms hop).
  c.time_mask_frames = 20
  # Frequency masks per training clip.
  c.freq_masks = 2
  # Largest frequency mask, in mel bins.
  c.freq_mask_bins = 8
  # Random roll of a clip and its targets by up to this many *output* frames; 0 = off.
  c.shift_frames = 0
  # Probability that a batch is mixed up (pairs within the same label kinds); 0 = off.
  c.mixup_prob = 0.0
  # Beta(α, α) of the mixup weight λ.
  c.mixup_alpha = 0.2
  # soft: λ-weighted targets; hard: their maximum (every event present is labelled present).
  c.mixup_mode = "soft"
  return c


def evaluation(smoke: bool = False) -> ml_collections.ConfigDict:
  """The `eval` block: post-processing and validation (DCASE task 4 practice;
  evaluation/frame_scoring.py)."""
  c = ml_collections.ConfigDict()
  # The validation score that selects the best checkpoint; one of frame_scoring.METRICS.
  c.metric = "event_f1_macro"
  # Decision threshold on frame probabilities (evaluation/tuning.py tunes it per class).
  c.threshold = 0.5
  # Median filter on frame probabilities, in seconds; 0 = off.
  c.median_window_s = 0.24
  # Also compute PSDS1/2: they cost more than the F1s, so the smoke run skips them.
  c.psds = not smoke
  # Global evaluation batch size.
  c.batch_size = 8 if smoke else 32
  return c


def dataset(name: str = "synth_sed", smoke: bool = False) -> ml_collections.ConfigDict:
  """The `dataset` block: which dataset, where it lives, how it is built.

  `smoke` shrinks the embedded datasets (synth_sed, soundscapes) and halves their clips, so that
  every step, evaluation and cache pass costs less.
  """
  c = ml_collections.ConfigDict()
  # A builder of sed_jax/data/builders (docs/datasets.md): synth_sed, dcase_folder, desed, ...
  c.name = name
  # TFDS data_dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets.
  c.data_dir = ""
  # Folder of a dataset on disk (dcase_folder, desed, urban_sed, soundscapes, urbansed_mini).
  # No default: the data is the user's download (docs/datasets.md says what to get).
  c.root = ""
  # Comma-separated class list; '' = from the annotations.
  c.classes = ""
  # raise | skip: what a bad file does to a build.
  c.on_error = "raise"
  # Feature-extraction processes; 0 = one per core.
  c.num_workers = 0
  # Clip length: what synth_sed synthesises and soundscapes mixes, and what every clip is
  # cropped / padded to for batching (folder datasets may hold longer or shorter files).
  c.clip_seconds = 5.0 if smoke else 10.0
  # Share of the strongly labelled training clips that keep their frame labels; the others
  # train on clip (weak) labels only. 0 = weak-label training, as in DCASE 2018 task 4.
  # Validation and test keep every label. Clips chosen by pipeline.keeps_strong.
  c.strong_fraction = 1.0
  # `synth_sed`: synthetic clips generated from a seed (no files needed); clips per split.
  c.synth = ml_collections.ConfigDict()
  c.synth.seed = 0
  c.synth.train = 48 if smoke else 2000
  c.synth.validation = 16 if smoke else 300
  c.synth.test = 16 if smoke else 300
  c.synth.unlabeled = 32 if smoke else 1000
  # `soundscapes` / `urbansed_mini`: clips mixed from Scaper-style folders (urbansed_mini: or
  # the official UrbanSound8K download) under `root` onto the recordings in `backgrounds`.
  c.soundscapes = ml_collections.ConfigDict()
  # '' = the folders below; urbansed_mini = UrbanSound8K folds (docs/datasets.md).
  c.soundscapes.preset = ""
  # Seed of the mixing: the same seed mixes the same clips.
  c.soundscapes.seed = 0
  # Events per clip, drawn between these.
  c.soundscapes.min_events = 1
  c.soundscapes.max_events = 6
  # Each event's SNR over the background's RMS, drawn between these (dB).
  c.soundscapes.snr_low_db = 6.0
  c.soundscapes.snr_high_db = 30.0
  # Most events sounding at once.
  c.soundscapes.max_polyphony = 3
  # Folder of background recordings, under `root`.
  c.soundscapes.backgrounds = "backgrounds"
  # Source folders of each split, comma-separated (without a preset).
  c.soundscapes.sources = ml_collections.ConfigDict()
  c.soundscapes.sources.train = ""
  c.soundscapes.sources.validation = ""
  c.soundscapes.sources.test = ""
  c.soundscapes.sources.unlabeled = ""
  # Clips mixed per split.
  c.soundscapes.clips = ml_collections.ConfigDict()
  c.soundscapes.clips.train = 48 if smoke else 1500
  c.soundscapes.clips.validation = 16 if smoke else 300
  c.soundscapes.clips.test = 16 if smoke else 300
  c.soundscapes.clips.unlabeled = 32 if smoke else 1000
  return c


def features() -> ml_collections.ConfigDict:
  """The `features` block: log-mel front-end (DCASE-like, 20 ms hop; data/features.py).

  Every field here is part of a dataset's identity: the TFDS builder config name carries a
  fingerprint of this block, so changing any value builds a new dataset instead of silently
  reusing features computed with the old one.
  """
  c = ml_collections.ConfigDict()
  # Audio is resampled to this rate (Hz) before the STFT.
  c.sample_rate = 16000
  # STFT window and FFT size, in samples (64 ms at 16 kHz).
  c.n_fft = 1024
  # STFT hop, in samples: 20 ms at 16 kHz, the input frame rate.
  c.hop_length = 320
  # Mel bands.
  c.n_mels = 64
  # Lowest and highest mel band edges (Hz); 8000 = Nyquist at 16 kHz.
  c.fmin = 50.0
  c.fmax = 8000.0
  # log(max(mel_power, floor)): silence maps to a finite value.
  c.log_floor = 1e-5
  # Model output frames = input frames // time_pool (4 = 80 ms output frames).
  c.time_pool = 4
  return c
