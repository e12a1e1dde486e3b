"""Evaluation harness: metric values, bootstrap, dev-only thresholds, reports, bad input, seeds."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, ROOT, tiny_overrides
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from arabic_events import evaluation, metrics
from arabic_events.cli import main
from arabic_events.config import load_config
from arabic_events.data import DataError, label_matrix, read_records
from arabic_events.evaluation import EvaluationError, evaluate_run
from arabic_events.labels import LABELS
from arabic_events.training_seeds import parse_seeds, train_seeds

DEBUG = ROOT / "configs/debug/tiny-bert.yaml"
LABEL_LIST = list(LABELS)
FAST = ["eval.bootstrap=200"]
PNG = b"\x89PNG\r\n\x1a\n"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


# --- metric values ----------------------------------------------------------------------------


def test_metric_values_on_a_hand_computed_case():
    gold = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]
    pred = [[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0]]
    out = metrics.MultiLabelF1().compute(predictions=pred, references=gold,
                                         label_names=["a", "b", "c"])
    # a: tp 2 fp 0 fn 0; b: tp 1 fp 0 fn 1; c: tp 0 fp 1 fn 1
    assert out["per_label"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert out["per_label"]["b"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert out["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert out["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert out["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))  # tp 3, fp 1, fn 2
    assert out["subset_accuracy"] == 0.25


def test_absent_label_scores_zero_and_thresholds_are_inclusive():
    probs = np.array([[0.5, 0.1], [0.49, 0.2]])
    gold = np.array([[1, 0], [0, 0]])
    out = metrics.compute(probs, gold, np.array([0.5, 0.5]), ["a", "b"])
    assert out["per_label"]["a"]["f1"] == 1.0  # 0.5 >= 0.5 is positive, 0.49 is not
    assert out["per_label"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert out["macro_f1"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_module_agrees_with_scikit_learn(seed: int):
    rng = np.random.default_rng(seed)
    gold = (rng.random((60, 5)) < 0.3).astype(int)
    pred = np.where(rng.random((60, 5)) < 0.8, gold, 1 - gold)
    pred[:, 4] = 0  # a label never predicted: zero_division=0 on both sides
    out = metrics.MultiLabelF1().compute(predictions=pred.tolist(), references=gold.tolist(),
                                         label_names=LABEL_LIST)
    p, r, f, s = precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
    for j, name in enumerate(LABEL_LIST):
        got = out["per_label"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[j], r[j], f[j]))
        assert got["support"] == s[j]
    assert out["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    assert out["micro_f1"] == pytest.approx(f1_score(gold, pred, average="micro", zero_division=0))
    assert out["subset_accuracy"] == pytest.approx(accuracy_score(gold, pred))


# --- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_of_one_unit_resample_is_the_point_estimate():
    rng = np.random.default_rng(3)
    gold = rng.random((40, 5)) < 0.3
    pred = np.where(rng.random((40, 5)) < 0.75, gold, ~gold)
    point = metrics.multilabel_scores(gold, pred, LABEL_LIST)
    boot = evaluation.bootstrap_scores(gold, pred, np.ones((1, 40)))
    assert boot["macro_f1"][0] == pytest.approx(point["macro_f1"])
    assert boot["micro_f1"][0] == pytest.approx(point["micro_f1"])
    assert boot["subset_accuracy"][0] == pytest.approx(point["subset_accuracy"])
    weights = evaluation.bootstrap_weights(40, 500)
    assert (weights.sum(1) == 40).all()
    assert np.array_equal(weights, evaluation.bootstrap_weights(40, 500))  # fixed seed
    ci = evaluation.confidence_intervals(gold, pred, weights, LABEL_LIST)
    assert ci["macro_f1"][0] <= point["macro_f1"] <= ci["macro_f1"][1]
    assert ci["macro_f1"][1] - ci["macro_f1"][0] > 0.01


# --- thresholds: tuned on dev only, never on test -----------------------------------------------


def test_training_tunes_on_dev_only_and_ignores_test_labels(tiny_run: Path, tmp_path: Path,
                                                            monkeypatch):
    """Training tunes once, on the dev sentences and labels; permuting the test labels leaves
    thresholds and dev scores unchanged (the test file may be read, to validate it early)."""
    import arabic_events.training as training

    rows = [json.loads(line) for line in (FIXTURES / "test.jsonl").read_text("utf-8").splitlines()]
    labels = [row["labels"] for row in rows]
    random.Random(1).shuffle(labels)
    shuffled = write_jsonl(tmp_path / "test.jsonl", [{**row, "labels": lab} for row, lab
                                                     in zip(rows, labels, strict=True)])
    tuned_on: list[tuple[np.ndarray, np.ndarray]] = []
    tune = metrics.tune_thresholds

    def spy_tune(probs, y_true, *args, **kwargs):
        tuned_on.append((np.asarray(probs).copy(), np.asarray(y_true).copy()))
        return tune(probs, y_true, *args, **kwargs)

    monkeypatch.setattr(metrics, "tune_thresholds", spy_tune)
    cfg = load_config(DEBUG, tiny_overrides(tmp_path, "permuted", **{
        "data.eval_files": "{test: " + str(shuffled) + "}"}))
    permuted = training.run(cfg)

    dev_y = label_matrix(read_records(FIXTURES / "dev.jsonl"), LABEL_LIST)
    assert len(tuned_on) == 1
    probs, y_true = tuned_on[0]
    assert probs.shape == dev_y.shape and np.array_equal(y_true, dev_y)
    first = json.loads((tiny_run / "thresholds.json").read_text())
    assert json.loads((permuted / "thresholds.json").read_text()) == first
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (tiny_run, permuted))
    assert a["dev"] == b["dev"]


def test_evaluation_never_tunes(tiny_run: Path, tmp_path: Path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("evaluation must not tune thresholds")

    monkeypatch.setattr(metrics, "tune_thresholds", forbidden)
    out = evaluate_run(tiny_run, FIXTURES / "test.jsonl", tmp_path / "ev", FAST)
    saved = json.loads((tiny_run / "thresholds.json").read_text())
    assert json.loads((out / "metrics.json").read_text())["thresholds"] == saved


def test_tuning_refuses_held_out_files(tmp_path: Path):
    cfg = load_config(DEBUG, tiny_overrides(tmp_path))
    with pytest.raises(EvaluationError, match=r"data\.eval_files\.test, a held-out set"):
        evaluation.check_tuning_file(FIXTURES / "test.jsonl", cfg)
    with pytest.raises(EvaluationError, match="held-out"):
        evaluation.check_tuning_file(tmp_path / "seed_test.jsonl", cfg)
    evaluation.check_tuning_file(FIXTURES / "dev.jsonl", cfg)  # dev is fine


# --- evaluate end to end --------------------------------------------------------------------------

EVAL_FILES = {"metrics.json", "report.md", "errors.jsonl", "errors.csv", "pr_curves.png",
              "confusion_matrices.png", "label_cooccurrence.png"}


@pytest.fixture(scope="module")
def evaluated(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    splits = tmp_path_factory.mktemp("splits")
    shutil.copy(FIXTURES / "test.jsonl", splits / "test.jsonl")
    out = tmp_path_factory.mktemp("eval") / "test-eval"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluation, "SPLITS_DIR", splits)
        code = main(["evaluate", "--run", str(tiny_run), "--data", "test", "--out", str(out),
                     *FAST])
    assert code == 0
    return out


def test_evaluate_writes_every_file(evaluated: Path):
    assert {p.name for p in evaluated.iterdir()} == EVAL_FILES
    for name in ("pr_curves.png", "confusion_matrices.png", "label_cooccurrence.png"):
        assert (evaluated / name).read_bytes()[:8] == PNG
    assert not list(evaluated.parent.glob(".*partial"))


def test_evaluate_metrics_json_layout(evaluated: Path, tiny_run: Path):
    result = json.loads((evaluated / "metrics.json").read_text(encoding="utf-8"))
    for key in ("macro_f1", "micro_f1", "subset_accuracy", "per_label", "at_0.5", "run", "data",
                "n", "thresholds", "confidence_intervals"):
        assert key in result, key
    assert result["n"] == 8 and result["data"].endswith("test.jsonl")
    assert set(result["per_label"]["arrest"]) == {"precision", "recall", "f1", "support"}
    assert set(result["at_0.5"]["per_label"]) == set(LABEL_LIST)
    # the same numbers as training's own scoring of the test set
    trained = json.loads((tiny_run / "metrics.json").read_text())["test"]
    assert result["macro_f1"] == pytest.approx(trained["tuned"]["macro_f1"], abs=1e-6)
    assert result["at_0.5"]["macro_f1"] == pytest.approx(trained["at_0.5"]["macro_f1"], abs=1e-6)
    for block in ("tuned", "at_0.5"):
        low, high = result["confidence_intervals"][block]["macro_f1"]
        point = result["macro_f1"] if block == "tuned" else result["at_0.5"]["macro_f1"]
        assert low <= point <= high


def test_report_shows_both_thresholds_plots_and_errors(evaluated: Path):
    report = (evaluated / "report.md").read_text(encoding="utf-8")
    assert "| metric | at 0.5 | tuned thresholds |" in report
    assert "| label | support |" in report and "F1 tuned" in report
    for image in ("pr_curves.png", "confusion_matrices.png", "label_cooccurrence.png"):
        assert f"]({image})" in report
    assert "## Most confident errors" in report and "bootstrap" in report


def test_error_export_matches_the_metrics(evaluated: Path):
    result = json.loads((evaluated / "metrics.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (evaluated / "errors.jsonl").read_text("utf-8")
            .splitlines()]
    raw = (evaluated / "errors.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: Excel opens the Arabic as UTF-8
    with (evaluated / "errors.csv").open(encoding="utf-8-sig", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert set(table[0]) >= {"id", "text", "gold_labels", "predicted_labels", "scores", "label",
                             "error"}
    for name, scores in result["per_label"].items():
        tp = round(scores["recall"] * scores["support"])
        fn = scores["support"] - tp
        assert sum(r["label"] == name and r["error"] == "false_negative" for r in rows) == fn


def test_find_errors_on_a_hand_made_case():
    records = [{"id": "a", "line": 1, "doc_id": "a", "text": "غارة", "labels": ["airstrike"]},
               {"id": "b", "line": 2, "doc_id": "b", "text": "اعتقال", "labels": []}]
    probs = np.array([[0.2, 0.1], [0.3, 0.9]])
    rows = evaluation.find_errors(records, probs, np.array([0.5, 0.5]), ["airstrike", "arrest"])
    assert [(r["id"], r["label"], r["error"]) for r in rows] == [
        ("b", "arrest", "false_positive"), ("a", "airstrike", "false_negative")]
    assert rows[0]["predicted_labels"] == ["arrest"] and rows[0]["gold_labels"] == []
    assert rows[1]["scores"] == {"airstrike": 0.2, "arrest": 0.1}
    assert rows[0]["confidence"] == 0.9 and rows[1]["confidence"] == 0.8


def test_evaluating_the_dev_set_warns_that_tuned_scores_are_optimistic(tiny_run, tmp_path):
    out = evaluate_run(tiny_run, FIXTURES / "dev.jsonl", tmp_path / "dev",
                       [*FAST, "eval.plots=false"])
    assert "optimistic" in json.loads((out / "metrics.json").read_text())["note"]
    assert not (out / "pr_curves.png").exists()


# --- bad input: clear errors, nothing half-written ----------------------------------------------


@pytest.fixture
def copied_run(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def assert_untouched(out: Path) -> None:
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not list(out.parent.glob(f".{out.name}.*"))


@pytest.fixture
def existing_out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    return out


def test_unknown_labels_are_named_with_file_and_lines(tiny_run, tmp_path, existing_out):
    rows = [{"text": "قال الوزير إن الغارات توقفت.", "labels": ["statement"]},
            {"text": "اعتقلت الشرطة رجلاً.", "labels": ["arrest"]},
            {"text": "أعلن الجيش الانسحاب.", "labels": ["statement"]}]
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(EvaluationError, match=r"data.jsonl: label\(s\) the model does not know: "
                       r"'statement' on line\(s\) 1, 3"):
        evaluation.read_eval_records(path, ["airstrike", "arrest"])
    typo = write_jsonl(tmp_path / "typo.jsonl", [{**rows[1], "labels": ["arests"]}])
    with pytest.raises(DataError, match=r"typo.jsonl:1: unknown label 'arests'"):
        evaluate_run(tiny_run, typo, existing_out, FAST, overwrite=True)
    assert_untouched(existing_out)


@pytest.mark.parametrize(("name", "content"), [("empty.jsonl", ""), ("blank.jsonl", "\n\n"),
                                               ("header.csv", "text,labels\n")])
def test_empty_files_are_clear_errors(tiny_run, tmp_path, existing_out, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvaluationError, match="holds no records"):
        evaluate_run(tiny_run, path, existing_out, FAST, overwrite=True)
    assert_untouched(existing_out)


def test_changed_preprocessing_is_refused(copied_run, existing_out):
    settings = json.loads((copied_run / "preprocessing.json").read_text())
    settings["normalize"]["alef"] = False
    (copied_run / "preprocessing.json").write_text(json.dumps(settings))
    with pytest.raises(EvaluationError, match=r"normalize.alef: preprocessing.json has False, "
                       r"the model section gives True"):
        evaluate_run(copied_run, FIXTURES / "test.jsonl", existing_out, FAST, overwrite=True)
    assert_untouched(existing_out)


def test_preprocessing_override_or_missing_file_is_refused(copied_run, existing_out):
    with pytest.raises(EvaluationError, match=r"normalize\.ta_marbuta"):
        evaluate_run(copied_run, FIXTURES / "test.jsonl", existing_out,
                     ["model.normalize.ta_marbuta=true"], overwrite=True)
    (copied_run / "preprocessing.json").unlink()
    with pytest.raises(EvaluationError, match=r"preprocessing\.json is missing"):
        evaluate_run(copied_run, FIXTURES / "test.jsonl", existing_out, FAST, overwrite=True)
    assert_untouched(existing_out)


def test_existing_output_needs_overwrite_and_bad_split_is_named(tiny_run, existing_out):
    with pytest.raises(EvaluationError, match="exists already"):
        evaluate_run(tiny_run, FIXTURES / "test.jsonl", existing_out, FAST)
    with pytest.raises(EvaluationError, match="not a split name"):
        evaluate_run(tiny_run, "tests", existing_out, FAST, overwrite=True)
    assert_untouched(existing_out)


def test_cli_reports_bad_input_without_traceback(tiny_run, tmp_path, capsys):
    code = main(["evaluate", "--run", str(tiny_run), "--data", str(tmp_path / "nope.jsonl"),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- compare ------------------------------------------------------------------------------------


def test_compare_table_has_intervals_per_label_f1_and_paired_deltas(tiny_run, tmp_path):
    out = tmp_path / "cmp"
    code = main(["compare", "--run", str(tiny_run), "--baselines", "--data",
                 str(FIXTURES / "test.jsonl"), "--data", str(FIXTURES / "dev.jsonl"),
                 "--out", str(out), *FAST])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.csv", "compare.json"}
    with (out / "compare.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["data"], r["model"]) for r in rows] == [
        (d, m) for d in ("test", "dev") for m in (tiny_run.name, "lexicon", "tfidf")]
    for column in ("macro_f1", "macro_f1_low", "macro_f1_high", "delta_vs_first", "micro_f1",
                   *(f"f1_{name}" for name in LABEL_LIST)):
        assert column in rows[0], column
    for row in rows:
        assert float(row["macro_f1_low"]) <= float(row["macro_f1"]) <= float(row["macro_f1_high"])
        if row["model"] == tiny_run.name:
            assert float(row["delta_low"]) == float(row["delta_high"]) == 0.0
    payload = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert payload["meta"]["bootstrap"]["paired"] and len(payload["rows"]) == 6
    assert "| test | lexicon | 8 |" in (out / "compare.md").read_text(encoding="utf-8")


# --- seeds --------------------------------------------------------------------------------------


def test_seed_sweep_writes_mean_and_std_of_every_metric(tmp_path: Path):
    cfg = load_config(DEBUG, tiny_overrides(tmp_path, "sweep", **{"train.max_steps": "2"}))
    summary_path = train_seeds(cfg, parse_seeds("13,42"))
    assert summary_path == tmp_path / "sweep-seeds.json"
    assert (tmp_path / "sweep-seed13" / "metrics.json").is_file()
    assert (tmp_path / "sweep-seed42" / "metrics.json").is_file()
    summary = json.loads(summary_path.read_text())
    assert summary["seeds"] == [13, 42]
    for key in ("dev.tuned.macro_f1", "test.tuned.micro_f1", "test.at_0.5.macro_f1",
                "dev.tuned.per_label.arrest.f1"):
        row = summary["metrics"][key]
        values = list(row["values"].values())
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
    assert not any(key.endswith("support") or key.startswith("training")
                   for key in summary["metrics"])
    table = (tmp_path / "sweep-seeds.md").read_text()
    assert "| dev.tuned.macro_f1 |" in table and "±" in table


@pytest.mark.parametrize("text", ["13,x", "1,1", ""])
def test_bad_seed_lists_are_config_errors(text: str):
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds(text)


def test_output_folder_appears_whole_or_not_at_all(existing_out: Path):
    with pytest.raises(RuntimeError), evaluation.atomic_output_dir(existing_out, True) as tmp:
        (tmp / "metrics.json").write_text("{}")
        raise RuntimeError("failed half way")
    assert_untouched(existing_out)
    with evaluation.atomic_output_dir(existing_out, True) as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert [p.name for p in existing_out.iterdir()] == ["metrics.json"]
    assert [p.name for p in existing_out.parent.iterdir()] == ["out"]


def test_train_subcommand_takes_seeds():
    from arabic_events.cli import build_parser

    args = build_parser().parse_args(["train", "--config", str(DEBUG), "--seeds", "13,42,77",
                                      "train.epochs=1"])
    assert parse_seeds(args.seeds) == [13, 42, 77] and args.overrides == ["train.epochs=1"]


def test_threshold_tolerance_prefers_the_default_on_a_flat_f1_curve():
    from arabic_events.metrics import tune_thresholds

    # positives score 0.95-0.99, negatives 0.01-0.30: every threshold in (0.30, 0.95] is perfect
    probs = np.array([[0.99], [0.97], [0.95], [0.30], [0.10], [0.01]])
    gold = np.array([[1], [1], [1], [0], [0], [0]])
    assert tune_thresholds(probs, gold, tolerance=0.0)[0] == pytest.approx(0.5)
    # one positive at 0.45: 0.45 is best, 0.5 loses F1 0.143; a 0.2 tolerance keeps 0.5
    probs[2, 0] = 0.45
    assert tune_thresholds(probs, gold, tolerance=0.0)[0] == pytest.approx(0.45, abs=0.006)
    assert tune_thresholds(probs, gold, tolerance=0.2)[0] == pytest.approx(0.5)
