"""`synth_sed` audio: 10-class soundscapes synthesised from an integer seed, in pure numpy.

Why a synthetic default: the codebase must run end to end (teachers → cache → student → report)
on a fresh checkout with no download, on any machine, with the same data everywhere. A clip is a
function of its seed only, so a dataset is (split sizes, base seed) and nothing on disk.

What a clip is:
- a coloured-noise background (random spectral slope between white, pink and brown, an optional
  low-pass, a slow level fluctuation and sometimes a mains hum), its RMS at a random level;
- 0–4 events of the 10 `CLASSES`, possibly overlapping (rarely two of one class), each at an SNR
  drawn uniformly from `SNR_DB` relative to the background RMS; the event's RMS is measured over
  its active (non-silent) samples, so a sparse knock train is as loud as a continuous hum;
- peak-normalised to `PEAK` only when the sum would exceed it (levels otherwise vary by clip).

Every class has a recognisable mechanism with per-event random parameters, and some pairs are
deliberately close so that a good model does not saturate: siren (yelp mode) vs alarm_beep
(two-tone mode), engine_hum vs vacuum (both have a motor harmonic stack and broadband noise),
knock vs dog_bark (short repeated bursts), bird_chirp vs alarm_beep (short tonal bursts),
running_water vs vacuum (band noise).

Annotations: an event's onset/offset are its first and last non-silent sample in the clip (the
generators gate bursts with exact zeros and fade the edges in a few ms), rounded to 1 ms; an
event that runs past the clip end is cut there (about 8% of events do).

Speed: about 17 ms per 10-s clip at 16 kHz on one core (`python -m sed_jax.data.synth`), half
the cost of the clip's log-mel features, so generating clips on the fly costs less than storing
them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np

from sed_jax.data.annotations import Event

CLASSES = ("alarm_beep", "siren", "speech_babble", "dog_bark", "knock", "engine_hum",
           "running_water", "bird_chirp", "bell", "vacuum")

# Event lengths in seconds (uniform in the range), per class: short bursty classes are short.
EVENT_SECONDS = {
    "alarm_beep": (0.5, 4.0),
    "siren": (1.5, 6.0),
    "speech_babble": (0.8, 5.0),
    "dog_bark": (0.2, 2.5),
    "knock": (0.2, 2.0),
    "engine_hum": (2.0, 6.0),
    "running_water": (1.5, 6.0),
    "bird_chirp": (0.2, 3.0),
    "bell": (0.6, 4.0),
    "vacuum": (2.0, 6.0),
}

# Probability of a clip holding 0, 1, 2, 3, 4 events.
NUM_EVENTS_P = (0.1, 0.25, 0.3, 0.2, 0.15)
# Per-event SNR in dB relative to the background RMS, drawn uniformly.
SNR_DB = (-3.0, 20.0)
# Background RMS in dBFS, drawn uniformly per clip.
BACKGROUND_DBFS = (-45.0, -28.0)
# A clip whose peak exceeds this is scaled down to it (16-bit export must not clip).
PEAK = 0.95
# Probability that a second event of an already drawn class is kept (same-class overlap is rare).
_SAME_CLASS_KEEP = 0.2
# Probability that an event is placed so that it runs past the clip end (and is cut there).
_CROSS_END_P = 0.08
# At least this much of a cut event remains inside the clip.
_MIN_IN_CLIP = 0.2

_Generator = Callable[[np.random.Generator, int, int], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Seeds.


def clip_seed(split: str, index: int, base_seed: int) -> int:
  """The seed of clip `index` of `split`: stable across runs, machines and Python versions.

  A cryptographic hash of (base seed, split, index) rather than `base_seed + index`, so that
  splits never share a clip (train index 300 is not validation index 0) and neighbouring base
  seeds give unrelated datasets. Returns a non-negative 63-bit integer.
  """
  if index < 0:
    raise ValueError(f"clip index must be >= 0, got {index}.")
  key = f"sed_jax.synth/{int(base_seed)}/{split}/{int(index)}".encode()
  return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


# ---------------------------------------------------------------------------------------------
# Building blocks. Every generator returns float64 samples of length n whose first and last
# samples are (nearly) the ends of its audible support; silent gaps are exact zeros.


def _fast_len(n: int) -> int:
  """The smallest 2^a 3^b 5^c >= n: pocketfft is several times slower on sizes with big primes."""
  best = 1 << max(0, (n - 1).bit_length())
  p5 = 1
  while p5 < best:
    p35 = p5
    while p35 < best:
      m = p35
      while m < n:
        m *= 2
      best = min(best, m)
      p35 *= 3
    p5 *= 5
  return best


def _shaped_noise(rng: np.random.Generator, n: int, sr: int,
                  gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """Gaussian noise of length n with magnitude response `gain(freqs_hz)`, unit RMS.

  Drawn directly in the frequency domain, so shaping costs one inverse FFT.
  """
  m = _fast_len(max(n, 2))
  freqs = np.fft.rfftfreq(m, 1.0 / sr)
  z = rng.standard_normal((2, freqs.size))
  spec = (z[0] + 1j * z[1]) * gain(freqs)
  spec[0] = 0.0
  x = np.fft.irfft(spec, m)[:n]
  return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def _bandpass(lo: float, hi: float, order: float = 2.0) -> Callable[[np.ndarray], np.ndarray]:
  """A smooth band-pass magnitude response (Butterworth-like skirts, no ripple)."""
  def gain(f):
    f = np.maximum(f, 1.0)
    return 1.0 / np.sqrt((1.0 + (lo / f) ** (2 * order)) * (1.0 + (f / hi) ** (2 * order)))
  return gain


def _ramp(m: int) -> np.ndarray:
  """Raised-cosine ramp of m samples from just above 0 to just below 1 (no exact zero)."""
  return 0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 1.0) / (m + 1.0))


def _fade(x: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
  """Fades the ends of x in place (raised cosine); returns x."""
  n = x.shape[0]
  fade_in, fade_out = min(fade_in, n // 2), min(fade_out, n // 2)
  if fade_in > 0:
    x[:fade_in] *= _ramp(fade_in)
  if fade_out > 0:
    x[n - fade_out:] *= _ramp(fade_out)[::-1]
  return x


def _smooth_random(rng: np.random.Generator, n: int, sr: int, knots_per_s: float,
                   scale: float) -> np.ndarray:
  """A slowly varying random contour (zero-mean-ish, std `scale`), linear between knots."""
  k = max(2, int(math.ceil(n / sr * knots_per_s)) + 1)
  knots = rng.standard_normal(k) * scale
  return np.interp(np.arange(n), np.linspace(0, n - 1, k), knots)


def _phase(freq: np.ndarray, sr: int) -> np.ndarray:
  """Instantaneous phase (radians) of a frequency track in Hz; starts at 0."""
  ph = np.cumsum(freq) * (2.0 * np.pi / sr)
  return ph - ph[0]


def _schedule(rng: np.random.Generator, n: int, sr: int, dur_s: tuple[float, float],
              gap_s: tuple[float, float], max_bursts: int = 64) -> list[tuple[int, int]]:
  """Bursts (start, length) in samples covering [0, n): the first starts at 0, the last ends at n.

  Burst lengths and gaps are drawn from the ranges; the gaps are then stretched or squeezed to
  make the train end exactly at n, so the event's annotated extent is the requested length.
  """
  mean_d, mean_g = np.mean(dur_s) * sr, np.mean(gap_s) * sr
  k = int(np.clip(round((n + mean_g) / (mean_d + mean_g)), 1, max_bursts))
  while True:
    d = rng.uniform(*dur_s, size=k) * sr
    if k == 1:
      return [(0, n)]
    g = rng.uniform(*gap_s, size=k - 1) * sr
    room = n - d.sum()
    if room > 0.25 * g.sum():  # Gaps squeezed at most 4x; otherwise use fewer bursts.
      break
    k -= 1
  g *= room / g.sum()
  starts = np.concatenate([[0.0], np.cumsum(d[:-1] + g)])
  ends = starts + d
  ends[-1] = n
  s = np.round(starts).astype(int)
  e = np.maximum(np.round(ends).astype(int), s + 1)
  return list(zip(s.tolist(), (e - s).tolist()))


def _gate(n: int, bursts: list[tuple[int, int]], fade: int) -> np.ndarray:
  """An envelope that is 1 inside the bursts (faded at their edges) and exactly 0 elsewhere."""
  env = np.zeros(n)
  for start, length in bursts:
    env[start:start + length] = _fade(np.ones(length), fade, fade)
  return env


def _overlap_add(n: int, starts: np.ndarray, grains: np.ndarray) -> np.ndarray:
  """Sums grains [k, L] placed at `starts` into a signal of length n (tails past n are cut)."""
  idx = starts[:, None] + np.arange(grains.shape[1])
  keep = (idx < n) & (idx >= 0)
  return np.bincount(idx[keep], weights=grains[keep], minlength=n)[:n]


def _pulse_times(f0: np.ndarray, sr: int) -> np.ndarray:
  """Sample indices of one pulse per period of the f0 track (a glottal/firing pulse train)."""
  cycles = np.cumsum(f0) / sr
  return np.flatnonzero(np.diff(np.floor(cycles), prepend=-1.0) > 0)


def _damped_modes(t: np.ndarray, freqs: np.ndarray, decays: np.ndarray,
                  amps: np.ndarray) -> np.ndarray:
  """Grains [k, L]: sums of damped sinusoids, modes [k, m] (Hz, 1/s, linear) at times t [L]."""
  out = np.zeros((freqs.shape[0], t.shape[0]))
  for j in range(freqs.shape[1]):
    out += (amps[:, j:j + 1] * np.exp(-decays[:, j:j + 1] * t) *
            np.sin(2.0 * np.pi * freqs[:, j:j + 1] * t))
  return out


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size=None):
  return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


# ---------------------------------------------------------------------------------------------
# The ten classes.


def _alarm_beep(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """Regular on/off tone train; one tone or two alternating (hi-lo, close to a stepped siren)."""
  f = _loguniform(rng, 700.0, 3500.0)
  on = rng.uniform(0.05, 0.4)
  period = on / rng.uniform(0.3, 0.75)
  k = max(1, round((n / sr - on) / period) + 1)
  on_n = n if k == 1 else int(on * sr)  # A single beep spans the event.
  starts = np.linspace(0, n - on_n, k).round().astype(int) if k > 1 else np.array([0])
  freq = np.full(n, f)
  if rng.random() < 0.3:  # Two-tone: every other beep lower.
    low = f * rng.uniform(0.7, 0.85)
    for s in starts[1::2]:
      freq[s:s + on_n] = low
  freq *= 1.0 + 0.003 * rng.standard_normal()  # Slight detuning of the whole event.
  ph = _phase(freq, sr)
  h3, h5 = rng.uniform(0.0, 0.4), rng.uniform(0.0, 0.2)
  x = np.sin(ph) + h3 * np.sin(3 * ph) + h5 * np.sin(5 * ph)
  fade = int(rng.uniform(0.003, 0.01) * sr)
  return x * _gate(n, [(int(s), on_n) for s in starts], fade)


def _siren(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """Slow (wail) or fast (yelp) periodic frequency sweep of a harmonic tone."""
  lo = rng.uniform(450.0, 900.0)
  hi = lo * rng.uniform(1.4, 2.4)
  rate = rng.uniform(0.12, 0.5) if rng.random() < 0.7 else rng.uniform(2.0, 7.0)
  t = np.arange(n) / sr
  lfo = 0.5 - 0.5 * np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
  ph = _phase(lo + (hi - lo) * lfo, sr)
  a2, a3 = rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.4)
  x = np.sin(ph) + a2 * np.sin(2 * ph) + a3 * np.sin(3 * ph)
  x *= 1.0 + 0.1 * _smooth_random(rng, n, sr, 2.0, 1.0)  # Distance/Doppler-like level drift.
  return _fade(x, int(rng.uniform(0.01, 0.05) * sr), int(rng.uniform(0.02, 0.08) * sr))


def _voice(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """One talker: glottal pulses through 3 gliding formants, syllabic on/off, some fricatives."""
  syllables = _schedule(rng, n, sr, (0.08, 0.3), (0.03, 0.15))
  f0 = _loguniform(rng, 90.0, 260.0)
  contour = f0 * np.exp(0.12 * _smooth_random(rng, n, sr, 4.0, 1.0)
                        - rng.uniform(0.0, 0.2) * np.arange(n) / n)  # Intonation, declination.
  env = np.zeros(n)
  targets = np.zeros((n, 3))
  noise_env = np.zeros(n)
  for start, length in syllables:
    hump = np.sin(np.pi * (np.arange(length) + 0.5) / length) ** 0.5
    if rng.random() < 0.25:  # Unvoiced (fricative) syllable.
      noise_env[start:start + length] = hump
      continue
    env[start:start + length] = hump
    a = np.array([rng.uniform(300, 850), rng.uniform(850, 2300), rng.uniform(2300, 3200)])
    b = a * rng.uniform(0.85, 1.15, 3)
    w = np.linspace(0.0, 1.0, length)[:, None]
    targets[start:start + length] = a * (1 - w) + b * w  # Formants glide within the syllable.
  pulses = _pulse_times(contour, sr)
  pulses = pulses[env[pulses] > 0]
  x = np.zeros(n)
  if pulses.size:
    t = np.arange(int(0.025 * sr)) / sr
    bw = rng.uniform(60, 160, (pulses.size, 3)) * np.array([1.0, 1.4, 2.0])
    amps = env[pulses, None] * np.array([1.0, rng.uniform(0.4, 0.8), rng.uniform(0.15, 0.4)])
    grains = _damped_modes(t, targets[pulses], np.pi * bw, amps)
    x = _overlap_add(n, pulses, grains)
    x /= max(np.abs(x).max(), 1e-12)
  if noise_env.any():
    hiss = _shaped_noise(rng, n, sr, _bandpass(rng.uniform(2500, 4000), 0.45 * sr, 3.0))
    x += 0.25 * hiss * noise_env
  x *= (env > 0) | (noise_env > 0)  # Silent gaps between syllables are exact zeros.
  return _fade(x, int(0.005 * sr), int(0.01 * sr))


def _speech_babble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """One or two overlapping talkers."""
  x = _voice(rng, n, sr)
  if rng.random() < 0.3:
    x = x + rng.uniform(0.4, 1.0) * _voice(rng, n, sr)
  return x


def _dog_bark(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """Repeated short harmonic bursts with a falling pitch, a formant bump and breath noise."""
  bursts = _schedule(rng, n, sr, (0.08, 0.28), (0.12, 0.5))
  f_start = rng.uniform(350.0, 900.0)
  drop = rng.uniform(0.6, 0.85)
  formant = rng.uniform(700.0, 2000.0)
  tilt = rng.uniform(0.6, 1.4)
  noise = _shaped_noise(rng, n, sr, _bandpass(formant * 0.5, formant * 2.5))
  noise_mix = rng.uniform(0.15, 0.5)
  x = np.zeros(n)
  for start, length in bursts:
    u = np.arange(length) / length
    f0 = f_start * rng.uniform(0.9, 1.1) * (1.0 - (1.0 - drop) * u ** 0.7)
    ph = _phase(f0, sr)
    burst = np.zeros(length)
    for k in range(1, 13):
      fk = k * f0[0]
      if fk > 0.45 * sr:
        break
      gain = k ** -tilt / (1.0 + ((fk - formant) / (0.6 * formant)) ** 2)
      burst += gain * np.sin(k * ph + rng.uniform(0, 2 * np.pi))
    burst /= max(np.abs(burst).max(), 1e-12)
    burst += noise_mix * noise[start:start + length]
    attack = max(1, int(rng.uniform(0.004, 0.015) * sr))
    env = np.minimum(np.arange(1, length + 1) / attack, 1.0) * np.exp(-u * rng.uniform(1.0, 3.0))
    x[start:start + length] = _fade(burst * env, 0, int(0.005 * sr))
  return x


def _knock(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """Irregularly repeated impacts: a click plus 2–4 decaying body modes, cut to zero between."""
  knocks = _schedule(rng, n, sr, (0.03, 0.1), (0.05, 0.35))
  k = len(knocks)
  n_modes = int(rng.integers(2, 5))
  base = _loguniform(rng, 150.0, 1500.0, n_modes)
  freqs = base * rng.uniform(0.95, 1.05, (k, n_modes))
  decays = 1.0 / (_loguniform(rng, 0.008, 0.04, n_modes) * rng.uniform(0.8, 1.2, (k, n_modes)))
  amps = rng.uniform(0.3, 1.0, (k, n_modes)) * rng.uniform(0.5, 1.0, (k, 1))
  longest = max(length for _, length in knocks)
  t = np.arange(longest) / sr
  grains = _damped_modes(t, freqs, decays, amps)
  click = int(0.002 * sr)
  grains[:, :click] += (rng.standard_normal((k, click)) * amps[:, :1] *
                        np.exp(-np.arange(click) / (0.3 * click)))
  for i, (_, length) in enumerate(knocks):  # Each impact ends at its own burst end.
    grains[i, length:] = 0.0
    _fade(grains[i, :length], 0, max(1, min(length // 4, int(0.01 * sr))))
  return _overlap_add(n, np.array([s for s, _ in knocks]), grains)


def _motor_pulses(rng: np.random.Generator, n: int, sr: int, rate: float, drift: float,
                  mode_hz: tuple[float, float], jitter: float) -> np.ndarray:
  """A firing-pulse train through damped low resonances: a harmonic stack AM'd at the rate."""
  f0 = rate * np.exp(drift * _smooth_random(rng, n, sr, 1.0, 1.0))
  pulses = _pulse_times(f0, sr)
  k = pulses.size
  t = np.arange(int(sr / rate * 1.5)) / sr
  freqs = _loguniform(rng, *mode_hz, 2) * rng.uniform(0.97, 1.03, (k, 2))
  decays = np.array([40.0, 80.0]) * rng.uniform(0.5, 2.0, 2) + np.zeros((k, 1))
  amps = (1.0 + jitter * rng.standard_normal((k, 1))) * np.array([1.0, rng.uniform(0.2, 0.8)])
  if rng.random() < 0.5:  # Uneven cylinders: every other firing weaker.
    amps[1::2] *= rng.uniform(0.5, 0.9)
  x = _overlap_add(n, pulses, _damped_modes(t, freqs, decays, amps))
  return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def _engine_hum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """Low harmonic stack at an 18–60 Hz firing rate, slow RPM drift, low rumble noise."""
  x = _motor_pulses(rng, n, sr, rng.uniform(18.0, 60.0), rng.uniform(0.02, 0.1),
                    (60.0, 400.0), rng.uniform(0.05, 0.3))
  rumble = _shaped_noise(rng, n, sr, _bandpass(30.0, rng.uniform(300.0, 1500.0), 1.5))
  x += rng.uniform(0.1, 0.6) * rumble
  return _fade(x, int(rng.uniform(0.02, 0.06) * sr), int(rng.uniform(0.03, 0.08) * sr))


def _running_water(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """Band noise with fast flutter plus random upward-gliding bubble resonances."""
  centre = _loguniform(rng, 400.0, 3000.0)
  width = 2.0 ** rng.uniform(0.5, 1.5)
  x = _shaped_noise(rng, n, sr, _bandpass(centre / width, min(centre * width, 0.45 * sr), 1.5))
  x *= np.exp(rng.uniform(0.1, 0.35) * _smooth_random(rng, n, sr, 15.0, 1.0))
  rate = rng.uniform(8.0, 60.0)
  k = max(1, rng.poisson(rate * n / sr))
  starts = np.sort(rng.integers(0, n, k))
  tau = rng.uniform(0.008, 0.03, (k, 1))
  f0 = _loguniform(rng, 500.0, 3500.0, (k, 1))
  rise = rng.uniform(0.1, 0.6, (k, 1))  # A bubble's pitch rises by this fraction in 30 ms.
  t = np.arange(int(0.12 * sr)) / sr
  ph = 2 * np.pi * f0 * (t + rise * t * t / (2 * 0.03))
  grains = rng.exponential(1.0, (k, 1)) * np.exp(-t / tau) * np.sin(ph)
  bubbles = _overlap_add(n, starts, grains)
  bubbles /= max(float(np.sqrt(np.mean(bubbles ** 2))), 1e-12)
  x += rng.uniform(0.3, 1.0) * bubbles
  return _fade(x, int(rng.uniform(0.02, 0.06) * sr), int(rng.uniform(0.03, 0.08) * sr))


def _bird_chirp(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """Series of fast FM sweeps (up, down or V-shaped) of one song type, jittered."""
  chirps = _schedule(rng, n, sr, (0.03, 0.15), (0.03, 0.25))
  base = rng.uniform(2000.0, min(6000.0, 0.4 * sr))
  sweep = rng.uniform(500.0, 3000.0) * rng.choice([-1.0, 1.0])
  shape = rng.integers(0, 3)  # 0 linear, 1 V-shaped, 2 inverted V.
  x = np.zeros(n)
  for start, length in chirps:
    u = np.arange(length) / length
    curve = {0: u, 1: np.abs(2 * u - 1), 2: 1 - np.abs(2 * u - 1)}[int(shape)]
    f = np.clip(base * rng.uniform(0.93, 1.07) + sweep * curve, 300.0, 0.45 * sr)
    ph = _phase(f, sr)
    c = np.sin(ph) + rng.uniform(0.0, 0.3) * np.sin(2 * ph)
    x[start:start + length] = c * np.sin(np.pi * (np.arange(length) + 0.5) / length) ** 0.7
  return x


_BELL_RATIOS = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.5, 2.67, 3.0, 4.0])


def _bell(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """1–3 strikes of inharmonic partials decaying exponentially (higher ones faster)."""
  strikes = _schedule(rng, n, sr, (0.4, 1.5), (0.0, 0.01), max_bursts=3)
  f = _loguniform(rng, 250.0, 1400.0)
  m = int(rng.integers(4, 8))
  ratios = np.sort(rng.choice(_BELL_RATIOS, m, replace=False)) * rng.uniform(0.98, 1.02, m)
  ratios = ratios[ratios * f < 0.45 * sr]
  amps = rng.uniform(0.3, 1.0, ratios.size)
  x = np.zeros(n)
  for start, _ in strikes:  # Each strike rings until the event ends.
    length = n - start
    t = np.arange(length) / sr
    tau = max(length / sr, 0.2) / rng.uniform(2.0, 4.0)  # Ratio-1 partial -17..-35 dB at end.
    for ratio, a in zip(ratios, amps):
      x[start:] += a * np.exp(-t / (tau * ratio ** -0.5)) * np.sin(2 * np.pi * f * ratio * t)
  return _fade(x, int(0.002 * sr), int(0.02 * sr))


def _vacuum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """High-passed broadband noise, a motor whine that spins up, and a weak motor stack."""
  cutoff = _loguniform(rng, 300.0, 2500.0)
  x = _shaped_noise(rng, n, sr, _bandpass(cutoff, rng.uniform(5000.0, 0.48 * sr), 2.0))
  spin = int(rng.uniform(0.1, 0.4) * sr)
  up = np.ones(n)
  up[:min(spin, n)] = np.linspace(rng.uniform(0.5, 0.8), 1.0, min(spin, n))
  whine_f = _loguniform(rng, 600.0, 4000.0) * up * (1 + 0.005 * _smooth_random(rng, n, sr, 1.0,
                                                                                1.0))
  ph = _phase(whine_f, sr)
  x += rng.uniform(0.15, 0.6) * (np.sin(ph) + rng.uniform(0, 0.5) * np.sin(2 * ph))
  if rng.random() < 0.6:
    x += rng.uniform(0.1, 0.5) * _motor_pulses(rng, n, sr, rng.uniform(80.0, 250.0), 0.01,
                                               (150.0, 800.0), 0.05)
  # The whine spins up for 0.1-0.4 s, but the level is full within 60 ms: onsets stay sharp.
  return _fade(x, min(spin // 4, int(0.06 * sr)), int(rng.uniform(0.03, 0.08) * sr))


_GENERATORS: dict[str, _Generator] = {
    "alarm_beep": _alarm_beep,
    "siren": _siren,
    "speech_babble": _speech_babble,
    "dog_bark": _dog_bark,
    "knock": _knock,
    "engine_hum": _engine_hum,
    "running_water": _running_water,
    "bird_chirp": _bird_chirp,
    "bell": _bell,
    "vacuum": _vacuum,
}
assert tuple(_GENERATORS) == CLASSES


# ---------------------------------------------------------------------------------------------
# Clips.


def _background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """Coloured noise (white..brown), optional low-pass, slow level drift, sometimes mains hum."""
  slope = rng.uniform(0.0, 2.0)  # Power ∝ 1/f^slope: 0 white, 1 pink, 2 brown.
  lowpass = rng.uniform(2000.0, 7000.0) if rng.random() < 0.5 else None

  def gain(f):
    g = np.maximum(f, 20.0) ** (-slope / 2)
    if lowpass is not None:
      g = g / np.sqrt(1.0 + (f / lowpass) ** 4)
    return g

  x = _shaped_noise(rng, n, sr, gain)
  x *= 10.0 ** (_smooth_random(rng, n, sr, rng.uniform(0.3, 1.5), rng.uniform(0.5, 3.0)) / 20)
  if rng.random() < 0.3:
    mains = 50.0 if rng.random() < 0.5 else 60.0
    ph = 2 * np.pi * mains * np.arange(n) / sr
    hum = sum(rng.uniform(0.1, 1.0) / k * np.sin(k * ph + rng.uniform(0, 2 * np.pi))
              for k in range(1, 5))
    hum /= max(float(np.sqrt(np.mean(hum * hum))), 1e-12)
    x += 10.0 ** (rng.uniform(-25.0, -10.0) / 20) * hum
  return x


def _place(rng: np.random.Generator, length: float, duration: float) -> float:
  """An onset (s) for an event of `length` s: inside the clip, or now and then cut at its end."""
  if length >= duration:
    return 0.0
  lo, hi = max(0.0, duration - 0.8 * length), duration - _MIN_IN_CLIP
  if rng.random() < _CROSS_END_P and lo < hi:
    return rng.uniform(lo, hi)
  return rng.uniform(0.0, duration - length)


def synth_event(label: str, rng: np.random.Generator, seconds: float,
                sample_rate: int = 16000) -> np.ndarray:
  """One event of class `label` lasting about `seconds`, float64, unit active RMS.

  Exposed for inspection and tests; `synth_clip` is the dataset's entry point.
  """
  if label not in _GENERATORS:
    raise ValueError(f"Unknown synth class {label!r}; known: {', '.join(CLASSES)}.")
  n = max(1, int(round(seconds * sample_rate)))
  x = _GENERATORS[label](rng, n, sample_rate)
  active = x != 0
  rms = math.sqrt(float(np.mean(x[active] ** 2))) if active.any() else 0.0
  return x / rms if rms > 0 else x


def synth_clip(seed: int, duration: float = 10.0,
               sample_rate: int = 16000) -> tuple[np.ndarray, list[Event]]:
  """Synthesises one clip and its events from `seed` (see the module docstring).

  Args:
    seed: any non-negative integer (for example from `clip_seed`); the same seed gives
      bit-identical audio and events on the same numpy build.
    duration: clip length in seconds.
    sample_rate: in Hz; frequencies above 0.45 * sample_rate are avoided, but the classes are
      designed for 16 kHz (many lose their upper content at 8 kHz).

  Returns:
    (audio float32 [round(duration * sample_rate)] with |x| <= PEAK, events sorted by onset with
    labels from CLASSES and times in seconds rounded to 1 ms, 0 <= onset < offset <= duration).
  """
  if not duration > 0 or not math.isfinite(duration):
    raise ValueError(f"duration must be a positive number of seconds, got {duration!r}.")
  if sample_rate <= 0:
    raise ValueError(f"sample_rate must be positive, got {sample_rate!r}.")
  rng = np.random.default_rng(seed)
  n = int(round(duration * sample_rate))
  clip = _background(rng, n, sample_rate)
  bg_rms = float(np.sqrt(np.mean(clip * clip)))

  num = int(rng.choice(len(NUM_EVENTS_P), p=NUM_EVENTS_P))
  labels: list[str] = []
  while len(labels) < num:
    label = CLASSES[int(rng.integers(len(CLASSES)))]
    if label not in labels or rng.random() < _SAME_CLASS_KEEP:
      labels.append(label)

  events = []
  for label in labels:
    length = rng.uniform(*EVENT_SECONDS[label])
    onset = _place(rng, length, duration)
    x = synth_event(label, rng, length, sample_rate)
    x *= bg_rms * 10.0 ** (rng.uniform(*SNR_DB) / 20)
    start = int(round(onset * sample_rate))
    x = x[:n - start]
    clip[start:start + x.shape[0]] += x
    support = np.flatnonzero(x)
    if support.size == 0:
      continue
    on = round(float(start + support[0]) / sample_rate, 3)
    off = min(round(float(start + support[-1] + 1) / sample_rate, 3), float(duration))
    if off > on:
      events.append(Event(on, off, label))

  clip *= 10.0 ** (rng.uniform(*BACKGROUND_DBFS) / 20) / max(bg_rms, 1e-12)
  peak = float(np.abs(clip).max())
  if peak > PEAK:
    clip *= PEAK / peak
  return clip.astype(np.float32), sorted(events)


def benchmark(num_clips: int = 100, duration: float = 10.0, sample_rate: int = 16000) -> float:
  """Milliseconds per clip of `synth_clip`, averaged over `num_clips` seeds (one core)."""
  import time  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  for i in range(num_clips):
    synth_clip(clip_seed("benchmark", i, 0), duration, sample_rate)
  return (time.perf_counter() - t0) * 1000.0 / num_clips


if __name__ == "__main__":
  print(f"result: synth_clip_ms {benchmark():.1f} ms")
