"""Audio loading and writing with errors that say which file is wrong and what to do.

Everything that reads audio in sed_jax goes through `load_audio` / `stream_audio` / `audio_info`
(one decoder: `load_audio` joins `stream_audio`'s blocks), so a corrupt or odd file in a dataset
of thousands is reported by name instead of as a libsndfile traceback from deep inside a dataset
builder. Every failure is an `AudioError` (a `ValueError`) whose message
starts with the path.

What `load_audio` accepts: wav, flac and ogg (vorbis/opus) files of any sample rate, channel count
and sample format (8-bit unsigned, 16/24/32-bit integer, float). It mixes down to mono by the mean
over channels (so the level of a mono source duplicated on N channels is unchanged) and resamples
with soxr at high quality ('HQ'). The result has `round(frames * sample_rate / native_rate)`
samples.

What it does not do: a file whose *data* was cut short (the header promises more frames than the
file holds) loads the frames that are there, as libsndfile reports them; callers that need a fixed
duration compare the length with what they expect. Non-finite samples (possible only in float
files) are an error, because one NaN spreads through the resampler and every feature after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import soxr

from sed_jax import io_utils

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")

# How each extension is written by `write_audio`: (libsndfile format, subtype).
_WRITE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
}

# The soxr quality preset; 'HQ' is soxr's own default and transparent for 16 kHz analysis.
_RESAMPLE_QUALITY = "HQ"

PathLike = str | os.PathLike


class AudioError(ValueError):
  """An audio file that cannot be used; the message names the path and what to do."""


def _error(path: PathLike, problem: str, fix: str) -> AudioError:
  return AudioError(f"{os.fspath(path)}: {problem}. {fix}")


def _check_path(path: PathLike) -> pathlib.Path:
  """Checks that `path` is a readable, non-empty file with a supported extension.

  These checks run before soundfile sees the file because libsndfile reports all of them as
  "Format not recognised" (an empty file, a directory), which sends people looking in the wrong
  place.
  """
  p = pathlib.Path(path)
  if p.suffix.lower() not in AUDIO_EXTENSIONS:
    raise _error(p, f"unsupported audio file extension {p.suffix or '(none)'!r}",
                 f"Supported extensions are {', '.join(AUDIO_EXTENSIONS)}; convert the file "
                 "(for example `ffmpeg -i in.mp3 out.wav`).")
  try:
    st = os.stat(p)
  except FileNotFoundError:
    if p.is_symlink():
      raise _error(p, f"is a broken symlink (it points to {os.readlink(p)!r}, which does not "
                   "exist)", "Fix or remove the link.") from None
    raise _error(p, "file does not exist", "Check the path and the dataset folder.") from None
  except PermissionError:
    raise _error(p, "permission denied while looking up the file",
                 "Make the file and its folders readable (chmod).") from None
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise _error(p, "is a symlink loop (the link resolves to itself)",
                   "Point the link at a real audio file or remove it.") from None
    raise _error(p, f"cannot be accessed ({e.strerror or e})",
                 "Check that the file and its storage are available.") from None
  if p.is_dir():
    raise _error(p, "is a directory, not an audio file",
                 "Pass the path of an audio file inside it.")
  if not os.access(p, os.R_OK):
    raise _error(p, "permission denied (the file is not readable)",
                 "Make it readable, for example `chmod a+r`.")
  if st.st_size == 0:
    raise _error(p, "file is empty (0 bytes)",
                 "The file was probably not completely downloaded or written; restore it.")
  if p.suffix.lower() == ".wav":
    _check_wav_complete(p, st.st_size)
  return p


def _check_wav_complete(p: pathlib.Path, size: int) -> None:
  """A WAV file cut short (an interrupted copy or download) is an error.

  libsndfile reads such a file without complaint and returns only the samples that are there, so
  a clip would silently lose its end while its annotations still cover it. The RIFF header says
  how long the file should be. Streamed WAVs, whose writer could not seek back, declare 0 or
  0xFFFFFFFF; they cannot be checked this way, so they pass. A missing pad byte is tolerated.
  """
  with open(p, "rb") as f:
    head = f.read(12)
  if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
    return  # Not a plain RIFF/WAVE file: left to the decoder.
  declared = int.from_bytes(head[4:8], "little")
  if declared in (0, 0xFFFFFFFF):
    return
  if declared + 8 > size + 1:
    raise _error(p, f"is truncated (its header declares {declared + 8} bytes, the file has "
                 f"{size})", "The copy or download was cut short; restore the file.")


@contextlib.contextmanager
def _soundfile_errors(path: pathlib.Path, writing: bool = False) -> Iterator[None]:
  """Turns whatever soundfile/libsndfile raises into an AudioError that names `path`."""
  try:
    yield
  except (sf.SoundFileError, RuntimeError, OSError) as e:
    detail = str(e).rstrip(".")
    if writing:
      raise _error(path, f"writing the audio failed ({detail})",
                   "Check the free disk space and the folder's permissions.") from e
    raise _error(path, f"cannot be decoded as audio ({detail})",
                 "The file is corrupt, truncated or not really "
                 f"{path.suffix.lower().lstrip('.')} audio; restore or re-encode it.") from e


def audio_info(path: PathLike) -> tuple[float, int, int]:
  """Returns (duration in seconds, native sample rate, channels) without decoding the samples.

  Raises the same `AudioError`s as `load_audio`, except that non-finite samples are not detected
  (that needs the samples).
  """
  p = _check_path(path)
  with _soundfile_errors(p):
    info = sf.info(os.fspath(p))
  if info.frames <= 0:
    raise _error(p, "contains no audio (0 frames)", "Remove it from the dataset or restore it.")
  return info.frames / info.samplerate, int(info.samplerate), int(info.channels)


def load_audio(path: PathLike, sample_rate: int) -> np.ndarray:
  """Loads a wav/flac/ogg file as mono float32 samples [n] at `sample_rate` Hz.

  The whole file in memory: the concatenation of `stream_audio`'s blocks (bit-identical to
  resampling the whole signal at once, as soxr's streaming and one-shot resamplers agree).

  Args:
    path: the audio file.
    sample_rate: the output rate in Hz; the file is resampled (soxr 'HQ') when its own rate
      differs.

  Returns:
    float32 array of shape [round(frames * sample_rate / native_rate)], the mean of the channels.

  Raises:
    AudioError: the file is missing, unreadable, empty, corrupt, has an unsupported extension, has
      no frames or has non-finite samples. The message names the path and the fix.
    ValueError: `sample_rate` is not a positive integer (a caller bug, not a file problem).
  """
  blocks = list(stream_audio(path, sample_rate, block_seconds=_LOAD_BLOCK_SECONDS))
  return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


# Blocks in which `load_audio` reads (it keeps the whole file anyway; large blocks are faster).
_LOAD_BLOCK_SECONDS = 600.0


def stream_audio(path: PathLike, sample_rate: int,
                 block_seconds: float = 10.0) -> Iterator[np.ndarray]:
  """A file as consecutive mono float32 blocks at `sample_rate` Hz, read `block_seconds` at a time.

  The same samples as `load_audio` (their concatenation is `load_audio`'s result, bit for bit)
  with memory bounded by one block whatever the file's length: the file is decoded block by block,
  mixed down to mono by the channel mean and resampled with soxr's streaming resampler. Blocks
  are about `block_seconds` long (the resampler's delay makes the first shorter and adds a short
  last one); none is empty.

  The path, its extension and the header are checked (and `AudioError` raised) when this is
  called; problems only the samples reveal are raised while iterating, after the blocks before
  them have been yielded: non-finite samples (the file is still read to the end to count them, as
  `load_audio` does), decoding errors, no frames, too short to resample.

  Raises:
    AudioError: as `load_audio`.
    ValueError: `sample_rate` is not a positive integer or `block_seconds` is not positive.
  """
  if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
    raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}.")
  if not block_seconds > 0:
    raise ValueError(f"block_seconds must be positive, got {block_seconds!r}.")
  p = pathlib.Path(path)
  _, native_rate, _ = audio_info(p)  # The path and header checks.
  block_frames = max(1, int(round(block_seconds * native_rate)))
  return _stream(p, native_rate, int(sample_rate), block_frames)


def _stream(p: pathlib.Path, native_rate: int, sample_rate: int,
            block_frames: int) -> Iterator[np.ndarray]:
  resampler = None
  if native_rate != sample_rate:
    resampler = soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32",
                                    quality=_RESAMPLE_QUALITY)
  frames_in = samples_out = bad_frames = 0
  first_bad = None
  with _soundfile_errors(p):
    f = sf.SoundFile(os.fspath(p))
  with f:
    while True:
      with _soundfile_errors(p):
        data = f.read(block_frames, dtype="float32", always_2d=True)
      if data.shape[0] == 0:
        break
      finite = np.isfinite(data).all(axis=1)
      if bad_frames or not finite.all():
        # From the first bad frame on, only count the bad frames for the error message.
        bad = np.flatnonzero(~finite)
        if first_bad is None and bad.size:
          first_bad = frames_in + int(bad[0])
        bad_frames += bad.size
        frames_in += data.shape[0]
        continue
      frames_in += data.shape[0]
      mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
      mono = np.ascontiguousarray(mono, dtype=np.float32)
      if resampler is not None:
        mono = resampler.resample_chunk(mono)
      samples_out += mono.shape[0]
      if mono.shape[0]:
        yield mono
  if bad_frames:
    raise _error(p, f"has {bad_frames} frame(s) with non-finite samples (NaN or inf), the "
                 f"first at {first_bad / native_rate:.3f} s",
                 "Re-export the audio from its source, or replace the bad samples with 0.")
  if frames_in == 0:
    raise _error(p, "contains no audio (0 frames)", "Remove it from the dataset or restore it.")
  if resampler is not None:
    tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
    samples_out += tail.shape[0]
    if samples_out == 0:
      raise _error(p, f"is too short ({frames_in} frame(s) at {native_rate} Hz) to give one "
                   f"sample at {sample_rate} Hz", "Remove it from the dataset.")
    if tail.shape[0]:
      yield np.ascontiguousarray(tail, dtype=np.float32)


def write_audio(path: PathLike, audio: np.ndarray, sample_rate: int) -> None:
  """Writes audio atomically: 16-bit PCM for .wav/.flac, Vorbis for .ogg (by the extension).

  The samples go to a hidden temporary file in the destination folder, which is then renamed over
  `path`, so a crash or a full disk never leaves a half-written file that looks complete (dataset
  generators rely on "the file exists" meaning "the file is done"). Missing parent folders are
  created. Samples outside [-1, 1] are clipped (as any 16-bit export would); normalise first if
  that matters.

  Args:
    path: destination file; its extension picks the format.
    audio: [n] mono or [n, channels] samples, float in [-1, 1].
    sample_rate: in Hz.

  Raises:
    AudioError: unsupported extension, empty or non-finite audio, or the write failed.
  """
  p = pathlib.Path(path)
  ext = p.suffix.lower()
  if ext not in _WRITE_FORMATS:
    raise _error(p, f"cannot write audio with extension {p.suffix or '(none)'!r}",
                 f"Use one of {', '.join(AUDIO_EXTENSIONS)}.")
  if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
    raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}.")
  audio = np.asarray(audio, dtype=np.float32)
  if audio.ndim not in (1, 2) or audio.shape[0] == 0:
    raise _error(p, f"refusing to write audio of shape {audio.shape}",
                 "Pass [n] or [n, channels] samples with n > 0.")
  if not np.isfinite(audio).all():
    raise _error(p, "refusing to write non-finite samples (NaN or inf)",
                 "Fix the computation that produced them.")
  audio = np.clip(audio, -1.0, 1.0)
  fmt, subtype = _WRITE_FORMATS[ext]
  with _soundfile_errors(p, writing=True):
    with io_utils.atomic_write(p, "wb") as f:
      sf.write(f, audio, int(sample_rate), format=fmt, subtype=subtype)

def find_audio_files(directory: PathLike) -> list[pathlib.Path]:
  """Audio files directly inside `directory` (not its subfolders), sorted by name.

  A file counts when its extension is in AUDIO_EXTENSIONS, in any letter case. Hidden files
  (names starting with '.') are skipped: they are macOS AppleDouble files (`._clip.wav`, which are
  not audio and break decoding) or temporary files of an interrupted `write_audio`.

  Raises:
    AudioError: `directory` does not exist or is not a directory.
  """
  d = pathlib.Path(directory)
  if not d.exists():
    raise _error(d, "audio folder does not exist", "Check the path and the dataset layout.")
  if not d.is_dir():
    raise _error(d, "is not a folder", "Pass the folder that holds the audio files.")
  try:
    entries = list(d.iterdir())
  except OSError as e:
    raise _error(d, f"cannot list the folder ({e.strerror or e})",
                 "Check its permissions.") from None
  return sorted(
      e for e in entries
      if e.suffix.lower() in AUDIO_EXTENSIONS and not e.name.startswith(".") and e.is_file())
