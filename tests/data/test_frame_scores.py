"""Frame-score files: sed_scores_eval TSVs and .npz read back exactly, every malformed file
refused naming the file and line, and the resampling rule onto the student's frames."""

from pathlib import Path

import numpy as np
import pytest
from sed_scores_eval.base_modules import io as sse_io

from sed_jax.data import frame_scores as fs

CLASSES = ["dog", "siren", "car_horn"]
HOP = 0.08


def _probs(rng, t=25):
  return rng.uniform(0, 1, (t, len(CLASSES)))


def _tsv(path, text):
  path.write_text(text)
  return path


def _rows(n, hop=HOP, cols=3, value="0.5"):
  return "".join(f"{j * hop:.3f}\t{(j + 1) * hop:.3f}\t" + "\t".join([value] * cols) + "\n"
                 for j in range(n))


def test_a_written_tsv_reads_back_exactly_here_and_in_sed_scores_eval(tmp_path):
  rng = np.random.default_rng(0)
  for dtype in (np.float32, np.float64):
    probs = _probs(rng).astype(dtype)
    probs[0, 0], probs[1, 1] = 1e-13, 1 - 1e-12  # Confident frames keep their digits.
    path = tmp_path / f"clip_{dtype.__name__}.tsv"
    path.write_text(fs.tsv_text(probs, CLASSES, HOP))
    read = fs.read_tsv(path, CLASSES)
    assert read.values.dtype == np.float64 and read.kind == "probs"
    np.testing.assert_array_equal(read.values.astype(dtype), probs)
    np.testing.assert_allclose(read.onsets, np.arange(25) * HOP, atol=1e-9)
    scores = sse_io.read_sed_scores(str(path))
    np.testing.assert_array_equal(scores[CLASSES].to_numpy().astype(dtype), probs)


def test_columns_may_come_in_any_order(tmp_path):
  path = _tsv(tmp_path / "a.tsv", "onset\toffset\tsiren\tcar_horn\tdog\n0\t0.5\t0.2\t0.3\t0.1\n"
              "0.5\t1.0\t0.4\t0.6\t0.9\n")
  np.testing.assert_array_equal(fs.read_tsv(path, CLASSES).values, [[0.1, 0.2, 0.3],
                                                                     [0.9, 0.4, 0.6]])


@pytest.mark.parametrize("text, match", [
    ("onset\toffset\tdog\tsiren\n" + _rows(3, cols=2), r"a\.tsv:1: class 'car_horn' is missing"),
    ("onset\toffset\tdog\tsiren\tcar_horn\tbird\n" + _rows(3, cols=4),
     r"a\.tsv:1: 'bird' is not a class of the dataset"),
    ("onset\toffset\tdog\tsirne\tcar_horn\n" + _rows(3),
     r"a\.tsv:1: 'sirne' is not a class of the dataset \(misspelt 'siren'\?\)"),
    ("onset\toffset\tdog\tsiren\tcar_horn\n" + _rows(2) + "0.160\t0.240\t0.5\t1.5\t0.1\n",
     r"a\.tsv:4: siren = 1\.5 is not a probability in \[0, 1\]"),
    ("onset\toffset\tdog\tsiren\tcar_horn\n" + _rows(1) + "0.080\t0.160\tnan\t0.5\t0.1\n",
     r"a\.tsv:3: dog = nan is not a probability"),
    ("onset\toffset\tdog\tsiren\tcar_horn\n" + _rows(1) + "0.080\t0.160\t0.5\tinf\t0.1\n",
     r"a\.tsv:3: siren = inf is not a probability"),
    ("onset\toffset\tdog\tsiren\tcar_horn\n" + _rows(1) + "0.080\t0.160\t0.5\thigh\t0.1\n",
     r"a\.tsv:3: 'high' is not a number"),
    ("onset\toffset\tdog\tsiren\tcar_horn\n" + _rows(2) + "0.200\t0.280\t0.5\t0.5\t0.5\n",
     r"a\.tsv:4: onset 0\.2 does not continue the previous row's offset 0\.16"),
    ("onset\toffset\tdog\tsiren\tcar_horn\n0.040\t0.080\t0.5\t0.5\t0.5\n",
     r"a\.tsv:2: the first onset is 0\.04 s, not 0"),
    ("onset\toffset\tdog\tsiren\tcar_horn\n" + _rows(1) + "0.080\t0.080\t0.5\t0.5\t0.5\n",
     r"a\.tsv:3: offset 0\.08 is not after onset 0\.08"),
    ("onset\toffset\tdog\tsiren\tcar_horn\n" + _rows(1) + "0.080\t0.160\t0.5\t0.5\n",
     r"a\.tsv:3: 4 columns where the header has 5"),
    ("start\tend\tdog\tsiren\tcar_horn\n" + _rows(1), r"a\.tsv:1: the header starts with"),
    ("", r"a\.tsv: the file is empty"),
    ("onset\toffset\tdog\tsiren\tcar_horn\n", r"a\.tsv: no score rows"),
])
def test_a_malformed_tsv_is_refused_naming_the_file_and_line(tmp_path, text, match):
  with pytest.raises(fs.ScoresError, match=match):
    fs.read_tsv(_tsv(tmp_path / "a.tsv", text), CLASSES)


def _split(tmp_path, n_clips=3, n_frames=125):
  """A teacher folder with a 'test' split of TSVs for clips c0.wav, c1.wav, ..."""
  rng = np.random.default_rng(1)
  ids = [f"c{i}.wav" for i in range(n_clips)]
  for a in ids:
    (tmp_path / "test").mkdir(exist_ok=True)
    (tmp_path / "test" / f"{fs.file_stem(a)}.tsv").write_text(
        fs.tsv_text(_probs(rng, n_frames), CLASSES, HOP))
  return ids


def test_a_missing_file_is_named_with_its_split(tmp_path):
  ids = _split(tmp_path)
  (tmp_path / "test" / "c1.tsv").unlink()
  with pytest.raises(fs.ScoresError, match=r"test: no scores for 1 of 3 clips of split 'test' "
                     r"\(first: c1\.tsv\)"):
    fs.SplitScores(tmp_path, "test", CLASSES, ids)
  with pytest.raises(fs.ScoresError, match=r"no scores for split 'train': neither train/ nor "
                     r"train\.npz"):
    fs.SplitScores(tmp_path, "train", CLASSES, ids)


def test_scores_that_cover_only_part_of_the_clip_are_refused(tmp_path):
  ids = _split(tmp_path, n_frames=60)  # 4.8 s of a 10-s clip.
  split = fs.SplitScores(tmp_path, "test", CLASSES, ids)
  with pytest.raises(fs.ScoresError, match=r"c0\.tsv:61: the scores end at 4\.8 s, the clip "
                     r"lasts 10 s: they cover only part of it"):
    split.clip("c0.wav", 10.0, HOP)
  assert split.clip("c0.wav", 4.8, HOP).values.shape == (60, 3)  # A 4.8-s clip is covered.


def test_clip_scores_file_is_read_and_checked(tmp_path):
  ids = _split(tmp_path)
  clip = np.asarray([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
  (tmp_path / "clip_scores").mkdir()
  (tmp_path / "clip_scores" / "test.tsv").write_text(fs.clip_tsv_text(ids, clip, CLASSES))
  split = fs.SplitScores(tmp_path, "test", CLASSES, ids)
  np.testing.assert_array_equal(split.clip("c2.wav", 10.0, HOP).clip, clip[2])
  (tmp_path / "clip_scores" / "test.tsv").write_text(fs.clip_tsv_text(ids[:2], clip[:2], CLASSES))
  with pytest.raises(fs.ScoresError, match=r"test\.tsv: no row for 1 of 3 clips \(first: c2\)"):
    fs.SplitScores(tmp_path, "test", CLASSES, ids)


def _npz(path, **overrides):
  arrays = dict(audio_id=np.asarray(["a.wav", "b.wav"]), classes=np.asarray(CLASSES),
                hop_s=np.float64(0.5), lengths=np.asarray([4, 2]),
                frame_logits=np.linspace(-40, 40, 18, dtype=np.float32).reshape(6, 3))
  arrays.update(overrides)
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
  return path


def test_npz_logits_come_back_exactly(tmp_path):
  read = fs.read_npz(_npz(tmp_path / "test.npz"), CLASSES)
  assert set(read) == {"a", "b"} and read["a"].kind == "logits"
  np.testing.assert_array_equal(read["b"].values, np.linspace(-40, 40, 18,
                                                              dtype=np.float32)[12:].reshape(2, 3))
  np.testing.assert_array_equal(read["a"].offsets, [0.5, 1.0, 1.5, 2.0])
  # Logits pass through resampling untouched when the grids match.
  np.testing.assert_array_equal(
      fs.resample(read["a"].onsets, read["a"].offsets, read["a"].values, "logits", 0.5, 4),
      read["a"].values)


@pytest.mark.parametrize("overrides, match", [
    (dict(classes=np.asarray(["dog", "siren", "horn"])),
     r"test\.npz \[classes\]: 'horn' is not a class"),
    (dict(lengths=np.asarray([4, 3])), r"test\.npz: 2 audio ids, lengths of shape \(2,\) summing"
     r" to 7"),
    (dict(frame_logits=None, frame_probs=np.full((6, 3), 1.2)),
     r"test\.npz \[frame_probs\]: car_horn = 1\.2|test\.npz \[frame_probs\]: dog = 1\.2"),
    (dict(frame_logits=np.full((6, 3), np.nan)), r"\[frame_logits\]: holds NaN or inf"),
    (dict(audio_id=np.asarray(["a.wav", "a.wav"])), r"audio id 'a' appears twice"),
    (dict(hop_s=None), r"test\.npz: keys .*: hop_s missing"),
    (dict(clip_probs=np.zeros((3, 3))), r"clip_probs has shape \(3, 3\), not \(2, 3\)"),
])
def test_a_malformed_npz_is_refused_naming_the_file_and_key(tmp_path, overrides, match):
  with pytest.raises(fs.ScoresError, match=match):
    fs.read_npz(_npz(tmp_path / "test.npz", **overrides), CLASSES)


def test_a_corrupt_npz_and_two_formats_for_one_split_are_refused(tmp_path):
  (tmp_path / "test.npz").write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(fs.ScoresError, match=r"test\.npz: not a readable \.npz"):
    fs.read_npz(tmp_path / "test.npz", CLASSES)
  _split(tmp_path)
  with pytest.raises(fs.ScoresError, match=r"split 'test' has both test/ and test\.npz"):
    fs.SplitScores(tmp_path, "test", CLASSES, ["c0.wav"])


def test_resampling_averages_finer_frames_and_holds_coarser_ones():
  hop = 0.08
  # A finer source (40 ms): each student frame is the mean probability of its two frames.
  fine = np.asarray([[0.2], [0.4], [0.6], [1.0]])
  t = np.arange(5) * 0.04
  out = fs.logits_to_probs(fs.resample(t[:-1], t[1:], fine, "probs", hop, 2))
  np.testing.assert_allclose(out, [[0.3], [0.8]])
  # A coarser source (160 ms): held over the two student frames it covers.
  coarse = np.asarray([[0.1], [0.9]])
  t = np.arange(3) * 0.16
  out = fs.logits_to_probs(fs.resample(t[:-1], t[1:], coarse, "probs", hop, 4))
  np.testing.assert_allclose(out, [[0.1], [0.1], [0.9], [0.9]])
  # Misaligned (100 ms): weighted by overlap; a student frame past the end holds the last value.
  src = np.asarray([[0.0], [1.0]])
  t = np.asarray([0.0, 0.1, 0.2])
  out = fs.logits_to_probs(fs.resample(t[:-1], t[1:], src, "probs", hop, 4))
  np.testing.assert_allclose(out, [[0.0], [0.75], [1.0], [1.0]], atol=1e-12)
  # Logits on another grid are averaged as probabilities.
  out = fs.logits_to_probs(fs.resample(np.asarray([0.0, 0.04]), np.asarray([0.04, 0.08]),
                                       np.asarray([[0.0], [np.log(3)]]), "logits", hop, 1))
  np.testing.assert_allclose(out, [[0.625]])


def test_the_same_grid_passes_through_bit_for_bit():
  rng = np.random.default_rng(2)
  x = rng.normal(0, 8, (125, 3)).astype(np.float32).astype(np.float64)
  p = fs.logits_to_probs(x)
  t = np.round(np.arange(126) * HOP, 3)  # Times as a millisecond TSV writes them.
  back = fs.resample(t[:-1], t[1:], p, "probs", HOP, 125).astype(np.float32)
  np.testing.assert_array_equal(back, x.astype(np.float32))


def test_the_folder_writer_is_all_or_nothing(tmp_path):
  out = tmp_path / "scores"
  logits = [np.zeros((25, 3), np.float32)]
  with fs.FolderWriter(out, CLASSES, HOP) as w:
    w.split("test", ["c0.wav"], logits, np.zeros((1, 3)))
  before = sorted(p.relative_to(out) for p in out.rglob("*"))
  assert before == sorted(map(Path, ["clip_scores", "clip_scores/test.tsv", "source.json", "test",
                                     "test/c0.tsv"]))
  with pytest.raises(FileExistsError, match="pass --overwrite"):
    fs.FolderWriter(out, CLASSES, HOP)
  (tmp_path / ".scores.partial-999").mkdir()  # What a killed writer leaves.
  with pytest.raises(RuntimeError, match="midway"):
    with fs.FolderWriter(out, CLASSES, HOP, "npz", overwrite=True) as w:
      w.split("test", ["c0.wav"], logits, np.zeros((1, 3)))
      raise RuntimeError("midway")
  assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # Untouched.
  assert [p.name for p in tmp_path.iterdir()] == ["scores"]  # No leftover.
