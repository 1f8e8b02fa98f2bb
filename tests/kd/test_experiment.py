"""The distillation experiment end to end on a tiny config: teachers → cache → students."""

import json
import os
import sys

import jax
import ml_collections
import numpy as np
import pytest
from etils import epath

from sed_jax.kd import ablation
from sed_jax import config_checks
from sed_jax import config_lib
from sed_jax.kd import experiment as experiment_lib
from sed_jax.data import pipeline
from sed_jax.kd import teacher_cache
from sed_jax.evaluation import frame_scoring
from tests.kd import test_teacher_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_student_config(data_dir):
  c = config_lib.load_config(os.path.join(ROOT, "configs/student.py:smoke"))
  c.dataset.data_dir = str(data_dir)
  c.dataset.num_workers = 1
  c.dataset.clip_seconds = 2.0
  c.dataset.synth.update(dict(train=16, validation=8, test=8, unlabeled=8))
  c.teachers = ["resnet", "xception"]
  c.model.overrides = dict(widths=[8, 8, 8], stem_width=8, gru_features=8)
  # Stock flax ops: the experiment's machinery does not depend on the CPU kernels, which take
  # longer to compile (docs/benchmarks.md, "Test suite time"). tests/models/test_cpu_kernels.py
  # holds them to the stock ops; tests/test_train.py trains with them.
  c.model.cpu_kernels = c.teacher.model.cpu_kernels = "off"
  for block in (c, c.teacher):
    block.total_steps, block.log_every, block.eval_every, block.checkpoint_every = 4, 2, 4, 4
    block.batch_size = block.eval.batch_size = 4
  c.kd.cache_batch_size = 4
  c.student_seeds = 1  # The experiment fixture below trains two; other users need one.
  return c


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  config = tiny_student_config(tmp_path_factory.mktemp("tfds"))
  config.student_seeds = 2
  workdir = tmp_path_factory.mktemp("student")
  return config, workdir, experiment_lib.run(config, workdir)


@pytest.mark.slow
def test_results_have_a_row_per_model_and_student_seed(experiment):
  config, workdir, results = experiment
  assert json.loads((workdir / "results.json").read_text()) == results
  assert results["dataset"] == "synth_sed" and results["split"] == "test"
  rows = {r["name"]: r for r in results["models"]}
  assert list(rows) == ["resnet", "xception", "ensemble", "student_no_kd", "student_no_kd_seed1",
                        "student_kd_class_weighted", "student_kd_class_weighted_seed1"]
  assert [rows[n]["role"] for n in rows] == ["teacher"] * 2 + ["ensemble"] + ["student"] * 4
  assert [rows[n]["seed"] for n in rows] == [0, 0, None, 0, 1, 0, 1]
  assert rows["student_no_kd_seed1"]["kd"] == rows["student_no_kd"]["kd"] == "none"
  assert rows["student_kd_class_weighted_seed1"]["kd"] == "multi:class_weighted"
  for r in rows.values():
    assert r["params"] > 0 and r["flops_per_clip"] > 0
    assert 0 <= r["event_f1"] <= 1 and 0 <= r["segment_f1"] <= 1
  assert rows["ensemble"]["params"] == rows["resnet"]["params"] + rows["xception"]["params"]
  assert results["machine"]["packages"]["jax"] == jax.__version__
  # Each row is a trained model: its own run folder, trained at its own seed.
  for name in ("no_kd_seed1", "kd_class_weighted_seed1"):
    run = workdir / "students" / name
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert json.loads((run / "test_metrics.json").read_text())["event_f1_macro"] == \
        rows[f"student_{name}"]["event_f1"]
  assert rows["student_no_kd"]["event_f1"] != rows["student_no_kd_seed1"]["event_f1"] or \
      rows["student_no_kd"]["psds1"] != rows["student_no_kd_seed1"]["psds1"]


def test_the_summary_is_the_mean_and_std_over_seeds_and_the_gain_paired_by_seed(experiment):
  _, workdir, results = experiment
  summary = results["summary"]
  rows = {r["name"]: r for r in results["models"]}
  assert all(not isinstance(v, dict) for r in results["models"] for v in r.values())
  no_kd, kd = summary["students"]
  assert (no_kd["name"], no_kd["kd"], no_kd["seeds"]) == ("student_no_kd", "none", [0, 1])
  assert (kd["kd"], kd["seeds"]) == ("multi:class_weighted", [0, 1])
  for metric in ("event_f1", "segment_f1", "segment_er", "psds1", "psds2"):
    values = [rows["student_no_kd"][metric], rows["student_no_kd_seed1"][metric]]
    if None in values:
      continue
    assert no_kd[metric]["values"] == values
    assert no_kd[metric]["mean"] == pytest.approx(np.mean(values))
    assert no_kd[metric]["std"] == pytest.approx(np.std(values, ddof=1))
  (gain,) = summary["kd_gain"]
  diffs = [rows["student_kd_class_weighted"]["event_f1"] - rows["student_no_kd"]["event_f1"],
           rows["student_kd_class_weighted_seed1"]["event_f1"] -
           rows["student_no_kd_seed1"]["event_f1"]]
  assert gain["against"] == "student_no_kd" and gain["seeds"] == [0, 1]
  np.testing.assert_allclose(gain["event_f1"]["values"], diffs)
  assert gain["event_f1"]["mean"] == pytest.approx(np.mean(diffs))
  assert gain["positive_seeds"] == sum(d > 0 for d in diffs)
  report = (workdir / "report.md").read_text()
  assert "## Students over seeds (mean ± sample std)" in report
  assert f"event F1 {100 * np.mean(diffs):+.1f} ± {100 * np.std(diffs, ddof=1):.1f}" in report


def test_summarize_pairs_seeds_and_skips_missing_metrics():
  row = lambda name, kd, seed, f1, psds=None: dict(name=name, role="student", kd=kd, seed=seed,
                                                   event_f1=f1, segment_f1=0.5,
                                                   segment_er=0.4, psds1=psds, psds2=None)
  rows = [dict(name="t", role="teacher", kd="none", seed=0, event_f1=0.9, segment_f1=0.9,
               segment_er=0.1, psds1=None, psds2=None),
          row("student_no_kd", "none", 0, 0.50, 0.6), row("student_no_kd_seed1", "none", 1, 0.40),
          row("student_kd_x", "multi:x", 1, 0.46), row("student_kd_x_seed0", "multi:x", 0, 0.49),
          row("student_kd_x_seed7", "multi:x", 7, 0.99)]  # No no-KD twin at seed 7: unpaired.
  summary = experiment_lib.summarize(rows)
  assert [s["seeds"] for s in summary["students"]] == [[0, 1], [1, 0, 7]]
  assert summary["students"][0]["psds1"] == dict(mean=0.6, std=0.0, n=1, values=[0.6])
  assert summary["students"][0]["psds2"]["n"] == 0
  (gain,) = summary["kd_gain"]
  assert gain["seeds"] == [1, 0] and gain["positive_seeds"] == 1
  np.testing.assert_allclose(gain["event_f1"]["values"], [0.06, -0.01])
  assert gain["psds1"]["values"] == []  # No KD student has a PSDS1 here.


def test_the_ensemble_is_the_mean_of_the_teachers_probabilities(experiment):
  config, workdir, _ = experiment
  teachers = [teacher_cache.Teacher(n, str(workdir / "teachers" / n)) for n in config.teachers]
  cache = experiment_lib.build_cache(config, teachers)
  classes = list(cache.info.metadata["classes"])
  _, probs, meta = experiment_lib.ensemble_metrics(config, cache.as_data_source("test"), classes)
  source = pipeline.data_source(config.dataset, config.features, "test")
  own = [experiment_lib.predict_run(t.workdir, classes, source, config) for t in teachers]
  order = [own[0][1]["audio_id"].index(a) for a in meta["audio_id"]]
  assert sorted(order) == list(range(len(source)))
  # Cached logits are float16: probabilities agree to its precision.
  np.testing.assert_allclose(probs, np.mean([p for p, _ in own], 0)[order], atol=2e-3)


def test_report_has_the_table_and_its_plots(experiment):
  config, workdir, results = experiment
  report = (workdir / "report.md").read_text()
  assert "| student_kd_class_weighted | student | multi:class_weighted |" in report
  for png in ["training_curves.png"] + [f"event_roll_{i}.png" for i in range(3)]:
    assert f"(plots/{png})" in report
    assert (workdir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_teacher_fit_is_each_teachers_frame_f1_and_bce_on_the_labelled_splits(experiment):
  config, workdir, results = experiment
  teachers = [teacher_cache.Teacher(n, str(workdir / "teachers" / n)) for n in config.teachers]
  cache = experiment_lib.build_cache(config, teachers)
  fit = results["teacher_fit"]
  assert list(fit) == ["train", "validation"]
  for split in fit:
    assert list(fit[split]) == list(config.teachers)
    source = cache.as_data_source(split)
    examples = [source[i] for i in range(len(source))]
    labelled = [e for e in examples if e["has_strong"]]
    assert labelled
    z = np.stack([e["teacher_logits"] for e in labelled]).astype(np.float32)  # [N, K, T, C]
    y = np.stack([e["strong"] for e in labelled]).astype(np.float32)[:, None]
    bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    for k, name in enumerate(config.teachers):
      np.testing.assert_allclose(fit[split][name]["frame_bce"], bce[:, k].mean(), rtol=1e-4)
      pred, truth = z[:, k] > 0, y[:, 0] > 0.5
      tp = (pred & truth).sum()
      f1 = 2 * tp / (2 * tp + (pred ^ truth).sum())
      assert fit[split][name]["frame_f1"] == pytest.approx(f1)
  report = (workdir / "report.md").read_text()
  assert "## How the teachers fit their labelled splits" in report
  row = fit["train"]["resnet"]
  assert f"| resnet | {row['frame_f1']:.3f} | {fit['validation']['resnet']['frame_f1']:.3f} |" \
      in report


def test_the_kd_student_trained_on_cached_logits_and_unlabeled_clips(experiment):
  _, workdir, _ = experiment
  rows = [json.loads(l) for l in
          (workdir / "students" / "kd_class_weighted" / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  assert train and all(r["loss_kd_frame"] > 0 and r["loss_kd_clip"] > 0 for r in train)
  no_kd = [json.loads(l) for l in
           (workdir / "students" / "no_kd" / "metrics.jsonl").read_text().splitlines()]
  assert all("loss_kd_frame" not in r for r in no_kd)
  # 16 labelled + 8 unlabeled clips: the batch grows from 4 to 6, so a step still sees 4
  # labelled clips on average, like the no-KD student's.
  batch = lambda run: json.loads((workdir / "students" / run / "config.json").read_text())[
      "batch_size"]
  assert (batch("no_kd"), batch("kd_class_weighted")) == (4, 6)


@pytest.mark.parametrize("batch,labelled,unlabeled,devices,grown", [
    (16, 2000, 1000, 1, 24), (32, 2000, 1000, 8, 48), (16, 1500, 1000, 8, 32),
    (16, 2000, 0, 1, 16), (4, 16, 8, 1, 6)])
def test_batch_with_unlabeled_keeps_the_labelled_clips_per_step(batch, labelled, unlabeled,
                                                                 devices, grown):
  assert experiment_lib.batch_with_unlabeled(batch, labelled, unlabeled, devices) == grown


@pytest.mark.parametrize("labelled,unlabeled,ratio,repeats,batch", [
    (1500, 1000, 0.0, 1, 27), (1500, 4000, 2 / 3, 4, 27), (2000, 1000, 0.5, 1, 24),
    (1500, 4000, 0.0, 1, 59), (100, 10, 1.0, 1, 18)])
def test_a_large_unlabeled_pool_keeps_the_ratio_in_a_batch(labelled, unlabeled, ratio, repeats,
                                                           batch):
  # The labelled split is repeated in the sampling pool, so 4000 unlabeled clips at ratio 2/3
  # give the batch that 1000 clips gave (16 labelled + 11 unlabeled), not 16 + 43.
  k = experiment_lib.labelled_repeats(labelled, unlabeled, ratio)
  assert k == repeats
  assert experiment_lib.batch_with_unlabeled(16, k * labelled, unlabeled, 1) == batch


def test_tuned_postprocessing_is_chosen_on_validation_for_every_model(experiment):
  config, workdir, _ = experiment
  cache = experiment_lib.build_cache(config, experiment_lib.train_teachers(config, workdir))
  run = workdir / "students" / "no_kd"
  tuned = experiment_lib.tuned_metrics(config, cache, {"no_kd": run})
  assert set(tuned) == {"teacher resnet", "teacher xception", "ensemble", "no_kd"}
  classes = list(cache.info.metadata["classes"])
  for name, t in tuned.items():
    assert len(t["threshold"]) == len(t["median_window_s"]) == len(classes), name
    assert t["test"]["event_f1_macro"] is None or 0 <= t["test"]["event_f1_macro"] <= 1
  assert json.loads((run / "tuned_postprocessing.json").read_text()) == tuned["no_kd"]
  # The grid holds the config's own window and threshold, so no class can do worse on
  # validation than with them.
  probs, meta = experiment_lib.predict_run(run, classes, cache.as_data_source("validation"), config)
  refs = frame_scoring.reference_events(meta["events"], meta["audio_id"], classes)
  plain = frame_scoring.score_predictions(probs, meta["audio_id"], meta["duration"], refs, classes,
                                     0.08, ml_collections.ConfigDict(dict(
                                         config.eval.to_dict(), psds=False)))
  for c, f1 in zip(classes, tuned["no_kd"]["validation_event_f1"]):
    row = plain["class_wise"][c]["event"]
    assert (f1 is None) == (row["n_ref"] == 0), c
    assert f1 is None or f1 >= (row["f1"] or 0.0), c


def test_rerun_reuses_every_stage(experiment):
  config, workdir, results = experiment
  kept = [*workdir.rglob("metrics.jsonl"), *workdir.rglob("cost.json")]
  # Every run (each teacher, both students at each seed) counted its FLOPs once.
  assert len(kept) == 2 * (len(config.teachers) + 2 * config.student_seeds)
  before = {p: p.stat().st_mtime for p in kept}
  assert experiment_lib.run(config, workdir) == results
  assert {p: p.stat().st_mtime for p in kept} == before


def test_a_kept_cost_for_another_model_is_counted_again(experiment):
  config, workdir, results = experiment
  run = workdir / "students" / "no_kd"
  row = next(r for r in results["models"] if r["name"] == "student_no_kd")
  kept = json.loads((run / "cost.json").read_text())
  stale = dict(kept, flops_per_clip=1.0, params=1)
  stale["key"] = dict(kept["key"], input_shape=[1, 7, 64])  # Counted for other clips.
  (run / "cost.json").write_text(json.dumps(stale))
  assert experiment_lib.run_cost(experiment_lib.student_config(config, distil=False), run) == (
      row["params"], row["flops_per_clip"])
  assert json.loads((run / "cost.json").read_text()) == kept


def test_detect_on_a_long_stereo_44k_file(experiment, tmp_path):
  """detect: a 35-s stereo 44.1-kHz file → a valid strong TSV and frame scores."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  from sed_jax import inference  # pylint: disable=g-import-not-at-top
  from sed_jax.data import annotations  # pylint: disable=g-import-not-at-top
  from sed_jax.data import synth  # pylint: disable=g-import-not-at-top
  _, workdir, _ = experiment
  audio, _ = synth.synth_clip(5, duration=35.0, sample_rate=44100)
  sf.write(tmp_path / "long.wav", np.stack([audio, 0.5 * audio], 1), 44100)
  name, runs = inference.model_runs(workdir, None)
  assert name == "student_kd_class_weighted" and runs == [workdir / "students" /
                                                          "kd_class_weighted"]
  detector = inference.Detector(runs, overlap_s=0.5, batch_size=4)
  probs = detector.frame_probs(tmp_path / "long.wav")
  assert probs.shape == (437, 10) and np.isfinite(probs).all()  # 35 s / 80 ms.
  assert ((probs >= 0) & (probs <= 1)).all()
  proc = subprocess.run(
      [sys.executable, "-m", "sed_jax.detect", f"--workdir={workdir}", "--model=ensemble",
       f"--out={tmp_path / 'events.tsv'}", f"--scores_dir={tmp_path / 'scores'}",
       f"--plots_dir={tmp_path / 'plots'}", str(tmp_path)], capture_output=True, text=True,
      cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  events = annotations.read_strong_tsv(tmp_path / "events.tsv", detector.classes)
  assert list(events) == ["long.wav"]
  assert all(0 <= e.onset < e.offset <= 35.0 for e in events["long.wav"])
  assert len((tmp_path / "scores" / "long.tsv").read_text().splitlines()) == 438
  assert (tmp_path / "plots" / "long.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_on_a_dcase_folder_agrees_with_the_metrics_module(experiment, tmp_path):
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  from sed_jax import evaluate  # pylint: disable=g-import-not-at-top
  from sed_jax.data import annotations  # pylint: disable=g-import-not-at-top
  from sed_jax.data import synth  # pylint: disable=g-import-not-at-top
  from sed_jax.evaluation import event_scoring  # pylint: disable=g-import-not-at-top
  _, workdir, _ = experiment
  (tmp_path / "audio").mkdir()
  reference = {}
  for i in range(3):
    audio, events = synth.synth_clip(100 + i, duration=4.0, sample_rate=22050)
    sf.write(tmp_path / "audio" / f"c{i}.flac", audio, 22050)
    reference[f"c{i}.flac"] = events
  annotations.write_strong_tsv(tmp_path / "strong.tsv", reference)
  out = tmp_path / "out"
  metrics = evaluate.evaluate_folder(workdir, "student_no_kd", tmp_path / "audio",
                                     tmp_path / "strong.tsv", out, plots=1)
  assert metrics["model"] == "student_no_kd"
  estimated = annotations.read_strong_tsv(out / "events.tsv")
  expected = event_scoring.score(reference, estimated, durations={f: 4.0 for f in reference},
                                 classes=metrics["classes"])
  for key in ("segment_f1_micro", "segment_f1_macro", "segment_er", "event_f1_micro",
              "event_f1_macro", "event_er"):
    assert metrics[key] == pytest.approx(expected[key], abs=1e-9), key
  assert json.loads((out / "metrics.json").read_text())["model"] == "student_no_kd"
  assert (out / "event_roll_0.png").exists()


def test_kd_ablation_reuses_the_main_job_and_adds_seeds(experiment):
  config, workdir, results = experiment
  out = ablation.run_ablation(config, workdir, [0, 1], ["class_weighted"], with_grid=False)
  arms = {a["arm"]: a for a in out["arms"]}
  best = out["best_teacher"]
  assert best in config.teachers
  assert list(arms)[:3] == ["no KD", f"single:{best} (best teacher)", "multi: class_weighted"]
  assert arms["no KD"]["runs"] == ["no_kd", "no_kd_seed1"]
  # Seed 0 of the main comparison is the main job's students, reused as they were.
  main_rows = {r["name"]: r for r in results["models"]}
  assert arms["no KD"]["metrics"][0]["event_f1_macro"] == main_rows["student_no_kd"]["event_f1"]
  assert (arms["multi: class_weighted"]["metrics"][0]["event_f1_macro"]
          == main_rows["student_kd_class_weighted"]["event_f1"])
  # Another seed is another student (its own init and data order), same teachers.
  seed1 = json.loads((workdir / "students" / "no_kd_seed1" / "config.json").read_text())
  assert seed1["seed"] == 1
  grid = ablation.grid(config)  # One-seed runs around the KD student (not trained here).
  assert {k for _, _, o in grid for k in o} == {"temperature", "alpha", "use_unlabeled"}
  assert all(config.kd[k] != v for _, _, o in grid for k, v in o.items())
  assert ablation.run_name("class_weighted", dict(temperature=4.0), 1, 0) == (
      "kd_class_weighted_temperature4_seed1")
  table = ablation.markdown(out["arms"], out["teachers"], config)
  assert "| no KD | 2 |" in table and " ± " in table
  assert isinstance(ablation.kd_gain(out["arms"], ["class_weighted"]), float)


def test_variants_parse_to_typed_overrides_and_grid_style_run_names():
  """`kd_ablation.py --variant=...`: any config path, values typed like the field they replace,
  names that a re-run finds again, and an error naming a key the config lacks."""
  config = config_lib.load_config("configs/student.py:dataset=urbansed_mini")
  label, strategy, over = ablation.parse_variant("total_steps=2400;kd.alpha=0.9", config)
  assert (strategy, over) == ("class_weighted", {"total_steps": 2400, "alpha": 0.9})
  assert label == "multi: class_weighted, total_steps=2400, alpha=0.9"
  assert ablation.run_name(strategy, over, 0, 0) == "kd_class_weighted_alpha0.9_total_steps2400"
  c = ablation.variant(config, **over)
  assert (c.total_steps, c.kd.alpha, config.total_steps) == (2400, 0.9, 1200)
  assert ablation.parse_variant("nokd:augment.mixup_prob=0.5", config)[1:] == (
      None, {"augment.mixup_prob": 0.5})
  assert ablation.variant(config, **{"augment.mixup_prob": 0.5}).augment.mixup_prob == 0.5
  assert ablation.parse_variant("kd.strategy=single:resnet", config)[:3] == (
      "single:resnet", "single:resnet", {})
  # The student's architecture: new attributes under model.overrides, values as literals.
  label, _, over = ablation.parse_variant(
      "nokd:model.overrides.gru_features=64;model.overrides.widths=(32, 64, 96, 128)", config)
  assert over == {"model.overrides.gru_features": 64,
                  "model.overrides.widths": (32, 64, 96, 128)}
  assert ablation.run_name(None, over, 1, 0) == "no_kd_gru_features64_widths32-64-96-128_seed1"
  c = ablation.variant(config, **over)
  assert (c.model.overrides.gru_features, c.model.overrides.dropout) == (64, 0.0)
  assert "gru_features" not in config.model.overrides
  # A variant at another seed: its own seed wins over the plan's (config.seed).
  _, strategy, over = ablation.parse_variant("seed=1;kd.alpha=0.5", config)
  assert ablation.run_config(config, strategy, over, config.seed).seed == 1
  assert ablation.run_name(strategy, over, config.seed, config.seed) == (
      "kd_class_weighted_alpha0.5_seed1")
  # At the config's own seed it is the main job's student, reused rather than trained again.
  _, strategy, over = ablation.parse_variant("nokd:seed=0", config)
  assert ablation.run_name(strategy, over, config.seed, config.seed) == "no_kd"
  assert ablation.run_config(config, None, {"total_steps": 10}, 2).seed == 2
  with pytest.raises(KeyError, match="no field 'nope'"):
    ablation.parse_variant("augment.nope=1", config)
  with pytest.raises(KeyError, match="no field model.nope"):
    ablation.variant(config, **{"model.nope.x": 1})
  with pytest.raises(ValueError, match="total_steps='many' is not of type int"):
    ablation.parse_variant("total_steps=many", config)


def test_a_misspelt_variant_stops_the_ablation_before_any_teacher_trains(tmp_path):
  config = config_lib.load_config("configs/student.py:smoke")
  bad = ablation.parse_variant("model.overrides.gru_feature=64", config)
  with pytest.raises(config_checks.ConfigError,
                     match=r"unknown model overrides \['gru_feature'\]"):
    ablation.run_ablation(config, epath.Path(tmp_path), [], ["mean_prob"], False, [bad])
  assert not list(tmp_path.iterdir())


def test_an_external_teacher_joins_the_experiment(experiment, tmp_path):
  """xception's scores exported to files come back as an external teacher beside resnet: a row
  without size (KD column 'external'), the students distilled from both, a report; detect
  refuses to run it on audio."""
  import shutil  # pylint: disable=g-import-not-at-top
  from sed_jax.kd import score_export  # pylint: disable=g-import-not-at-top
  from sed_jax import inference  # pylint: disable=g-import-not-at-top
  config, workdir, _ = experiment
  score_export.export(workdir / "teachers" / "xception", tmp_path / "scores", "npz",
                       batch_size=config.kd.cache_batch_size)
  new = tmp_path / "run"
  for run in ("teachers/resnet", "students/no_kd"):  # Trained already: reused, not retrained.
    shutil.copytree(workdir / run, new / run)
  c = ml_collections.ConfigDict(config.to_dict())
  c.student_seeds = 1
  c.teachers = ("resnet", f"external:torch={tmp_path / 'scores'}")
  config_checks.check(c)
  results = experiment_lib.run(c, new)
  rows = {r["name"]: r for r in results["models"]}
  assert list(rows) == ["resnet", "torch", "ensemble", "student_no_kd",
                        "student_kd_class_weighted"]
  assert rows["torch"]["kd"] == "external" and rows["torch"]["params"] is None
  assert rows["ensemble"]["params"] is None and rows["torch"]["event_f1"] is not None
  assert not (new / "teachers" / "torch").exists()
  assert "| torch | teacher | external | – | – |" in (new / "report.md").read_text()
  with pytest.raises(ValueError, match="external teacher"):
    inference.model_runs(new, "ensemble")


def test_a_changed_teacher_stops_distillation_with_its_name(experiment):
  """Last in the module: it replaces a teacher of the shared experiment."""
  config, workdir, _ = experiment
  teacher_cfg = experiment_lib.teacher_config(config, "xception")
  test_teacher_cache.make_teacher(workdir / "teachers" / "xception", teacher_cfg, seed=9, step=99)
  config.kd.strategy = "mean_prob"
  with pytest.raises(experiment_lib.StaleCacheError, match="xception changed"):
    experiment_lib.build_cache(config, [teacher_cache.Teacher(n, str(workdir / "teachers" / n))
                                 for n in config.teachers])
