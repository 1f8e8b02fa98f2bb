"""Audio loading with clear errors. (Being written.)"""

from __future__ import annotations

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


class AudioError(ValueError):
  """An audio file that cannot be used; the message names the path and what to do."""


def load_audio(path, sample_rate: int):
  """Loads any wav/flac/ogg → mono float32 numpy array at `sample_rate`."""
  raise NotImplementedError
