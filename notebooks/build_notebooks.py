"""Build the project's notebooks with nbformat and execute them with nbclient.

The notebooks are generated from the cell lists below, so their text lives in one reviewable
Python file; the saved .ipynb files carry their outputs (tables, plots) for reading on GitHub.

    pip install -e ".[notebooks]"
    python notebooks/build_notebooks.py              # build and execute all three
    python notebooks/build_notebooks.py 02 03        # only some (by number prefix)
    python notebooks/build_notebooks.py --no-execute # write them without outputs

Environment variables read by the notebooks themselves:
    ARABIC_EVENTS_RUN   run directory for 02 and 03 (default: models/e5-small-offline when it
                        holds a trained model, else outputs/e5-prelim3)
    ARABIC_EVENTS_EVAL_OUT  where 03 writes its evaluation folders (default: a temporary folder)
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
TIMEOUT = 600
"""Seconds a single cell may run."""

Cell = tuple[str, str]


def md(text: str) -> Cell:
    return ("markdown", textwrap.dedent(text).strip())


def code(text: str) -> Cell:
    return ("code", textwrap.dedent(text).strip())


# --------------------------------------------------------------------------- shared cells

ROOT_CELL = code(
    '''
    # Work from the repository root, wherever Jupyter was started inside the checkout.
    import os
    from pathlib import Path


    def find_repo_root(start: Path) -> Path:
        """The nearest folder at or above `start` holding pyproject.toml and src/arabic_events."""
        for folder in [start, *start.parents]:
            if (folder / "pyproject.toml").is_file() and (folder / "src" / "arabic_events").is_dir():
                return folder
        raise FileNotFoundError(
            f"no arabic-events checkout at or above {start}: start Jupyter inside the "
            "repository, or set ARABIC_EVENTS_ROOT to its path"
        )


    ROOT = Path(os.environ.get("ARABIC_EVENTS_ROOT") or find_repo_root(Path.cwd().resolve()))
    os.chdir(ROOT)
    print("repository root:", ROOT)
    '''
)

RUN_DIR_LINES = '''
# The fine-tuned run to study: the offline e5-small run when it has been trained here,
# otherwise the preliminary run kept in outputs/. Set ARABIC_EVENTS_RUN to study another.
DEFAULT_RUN = Path("models/e5-small-offline")
RUN_DIR = Path(
    os.environ.get("ARABIC_EVENTS_RUN")
    or (DEFAULT_RUN if (DEFAULT_RUN / "model.safetensors").is_file() else "outputs/e5-prelim3")
)
print("run directory:", RUN_DIR)
'''

QUIET_CELL_HEAD = '''
import warnings

# tqdm falls back to its text progress bar in Jupyter without ipywidgets; the warning is noise
warnings.filterwarnings("ignore", message="IProgress not found")
'''

SENTENCES_CELL = code(
    '''
    from html import escape


    class Sentences:
        """Rows of sentences: a right-to-left HTML table in Jupyter, one line per row as text."""

        def __init__(self, rows: list[dict], columns: list[str], width: int | None = None):
            self.rows, self.columns, self.width = rows, columns, width

        def _cell(self, row: dict, column: str) -> str:
            value = row.get(column, "")
            if isinstance(value, (list, tuple)):
                value = ", ".join(value) or "-"
            elif isinstance(value, float):
                value = f"{value:.3f}"
            text = str(value)
            if column == "text" and self.width and len(text) > self.width:
                text = text[: self.width] + "…"
            return text

        def _repr_html_(self) -> str:
            head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)
            body = "".join(
                "<tr>"
                + "".join(
                    f'<td dir="rtl" style="text-align:right">{escape(self._cell(r, c))}</td>'
                    if c == "text"
                    else f"<td>{escape(self._cell(r, c))}</td>"
                    for c in self.columns
                )
                + "</tr>"
                for r in self.rows
            )
            return f"<table><tr>{head}</tr>{body}</table>"

        def __repr__(self) -> str:
            lines = [" | ".join(self._cell(r, c) for c in self.columns) for r in self.rows]
            return "\\n".join(lines) or "(none)"
    '''
)

PROVENANCE_CELL = code(
    '''
    # Were the split files changed after this run was trained? The run records how many
    # sentences it trained and tuned on; compare with the files as they are now.
    def current_size(path: str) -> int:
        return sum(1 for line in Path(path).open(encoding="utf-8") if line.strip())


    run_cfg = yaml.safe_load((RUN_DIR / "run_config.yaml").read_text(encoding="utf-8"))
    recorded = json.loads((RUN_DIR / "metrics.json").read_text(encoding="utf-8"))["training"]
    limit = run_cfg["data"].get("max_train_samples")
    now_train = current_size(run_cfg["data"]["train_file"])
    provenance = pd.DataFrame(
        {
            "recorded in the run": [recorded["train_sentences"], recorded["dev_sentences"]],
            "file now": [min(now_train, limit) if limit else now_train,
                         current_size(run_cfg["data"]["dev_file"])],
        },
        index=[run_cfg["data"]["train_file"], run_cfg["data"]["dev_file"]],
    )
    SPLITS_CHANGED = bool((provenance.iloc[:, 0] != provenance.iloc[:, 1]).any())
    display(provenance)
    if SPLITS_CHANGED:
        print(
            "WARNING: the split files differ from the ones this run was trained on. Scores on "
            "today's dev/test may include sentences the model was trained on (optimistic), and "
            "metrics.json in the run describes the old files. Retrain, or evaluate with care."
        )
    else:
        print("The split files have the sizes this run was trained on.")
    '''
)


# --------------------------------------------------------------------------- 01 data

NB01: list[Cell] = [
    md(
        """
        # 01 · The dataset

        Sentence-level, multi-label event typing for Arabic news: each sentence carries zero or
        more of `airstrike`, `arrest`, `base_handover`, `statement`, `political_pressure`
        (definitions and hard cases: `data/GUIDELINE.md`).

        Where the data comes from:

        - **Authored** sentences (`data/authored/part_*.jsonl`), written for the project in
          the style of news and grouped into pseudo-documents (`doc_id`).
        - **Seeds** (`seeds/sentences.jsonl`): the five real news articles the project started
          from, split into sentences and labelled. They are never trained on: they form the
          `seed_test` split.
        - `arabic-events data split` (`dataset.make_splits`) writes
          `data/splits/{train,dev,test,seed_test}.jsonl`. Whole documents stay on one side, and
          documents that share a near-duplicate sentence (token Jaccard > 0.7) are kept
          together, so a test sentence never has a close copy in training.

        This notebook checks what a model will learn from and be judged on: label balance,
        label combinations, sentence length, lexical diversity, what positives and hard
        negatives look like, how the real seed text differs from the authored text, and that
        nothing leaks across splits.
        """
    ),
    ROOT_CELL,
    code(
        QUIET_CELL_HEAD
        + '''
import logging
import random
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image, Markdown, display
from sklearn.feature_extraction.text import CountVectorizer

from arabic_events import dataset, plots
from arabic_events.baselines import LexiconClassifier
from arabic_events.data import label_matrix, read_records
from arabic_events.labels import LABELS

logging.basicConfig(level=logging.WARNING, force=True)
%config InlineBackend.figure_formats = ["png"]
plt.rcParams.update({"figure.dpi": 100, "font.family": plots.FONT})
FIGURES = Path(tempfile.mkdtemp(prefix="nb01-"))  # PNGs drawn by arabic_events.plots

SPLIT_NAMES = ["train", "dev", "test", "seed_test"]
splits = {name: read_records(f"data/splits/{name}.jsonl") for name in SPLIT_NAMES}
authored = dataset.load_authored(Path("."))  # every authored part, validated
seeds = dataset.load_seeds(Path("."))  # seed sentences without repeats and bylines
in_splits = [r for name in dataset.SPLITS for r in splits[name]]  # authored part of the splits
print({name: len(rows) for name, rows in splits.items()},
      "| authored:", len(authored), "| seeds:", len(seeds))
'''
    ),
    SENTENCES_CELL,
    md(
        """
        ## 1. Sentences per label and split

        Each held-out split needs enough positives of every label for its F1 to mean
        something (one sentence of 40 moves recall by 2.5 points), and dev and test should
        have the label shares of train, since the splitter stratifies by label. `none` counts
        sentences with no label: the negatives. `seed_test` is real news with its natural,
        unbalanced distribution.
        """
    ),
    code(
        """
        counts = pd.DataFrame({name: dataset.label_counts(rows) for name, rows in splits.items()}).T
        counts
        """
    ),
    code(
        """
        keys = [*LABELS, "none"]
        shares = counts[keys].div(counts["sentences"], axis=0)
        ax = shares.T.plot.bar(figsize=(9, 3.6), width=0.8, rot=0)
        ax.set(ylabel="share of the split's sentences",
               title="Label shares per split (a sentence can carry several labels)")
        ax.grid(axis="y", alpha=0.3)
        plt.show()
        """
    ),
    md(
        """
        ## 2. Which labels occur together

        The task is multi-label. The guideline asks for `statement` *together with* the event an
        official announces ("the ministry said forces arrested…" is `statement` + `arrest`), so
        statement pairs are expected; a demand voiced by an official is `political_pressure`
        only. The diagonal counts sentences per label (train + dev + test, authored data). The
        table below lists the most frequent exact label sets.
        """
    ),
    code(
        """
        y_authored = label_matrix(in_splits, LABELS)
        display(Image(plots.cooccurrence(y_authored, list(LABELS), FIGURES / "cooccurrence.png")))
        combos = dataset.diversity(in_splits)["label_combinations"]
        pd.Series(combos, name="sentences").head(12).to_frame()
        """
    ),
    md(
        """
        ## 3. Sentence length

        The model reads at most `model.max_length` subword tokens (128 in the configs), so very
        long sentences are cut. A length gap between splits, or between authored text and real
        news, is a distribution shift the scores will reflect. Words are counted as the
        duplicate detector counts them (`dataset.dedup_tokens`: letters and digits).
        """
    ),
    code(
        """
        lengths = {name: [len(dataset.dedup_tokens(r["text"])) for r in rows]
                   for name, rows in splits.items()}
        display(pd.DataFrame({name: pd.Series(v).describe(percentiles=[0.5, 0.9])
                              for name, v in lengths.items()}).T.round(1))
        fig, ax = plt.subplots(figsize=(8, 3.4))
        bins = np.arange(0, max(max(v) for v in lengths.values()) + 5, 4)
        for name, values in lengths.items():
            ax.hist(values, bins=bins, density=True, histtype="step", lw=1.8, label=name)
        ax.set(xlabel="words per sentence", ylabel="density", title="Sentence length per split")
        ax.legend()
        plt.show()
        """
    ),
    md(
        """
        ## 4. Diversity

        Authored data risks being templated: the same frames with names swapped. `distinct_n`
        is the share of n-grams that are unique (higher is more varied; it falls as a set grows,
        so compare sets of similar size). `max_token_jaccard` is the closest pair of sentences
        within a set (1.0 = an exact repeat; pairs above 0.7 are near-duplicates and are kept in
        one split). The `share_*` rows show how often surface variants that real news contains
        appear: Arabic-Indic digits, diacritics, tatweel.
        """
    ),
    code(
        """
        def diversity_table(sets: dict[str, list[dict]]) -> pd.DataFrame:
            rows = {}
            for name, records in sets.items():
                stats = dataset.diversity(records)
                stats.pop("label_combinations")
                rows[name] = {"sentences": len(records), **stats}
            return pd.DataFrame(rows)


        div = diversity_table({**splits, "authored (all parts)": authored})
        div
        """
    ),
    code(
        """
        ax = div.loc[["distinct_1", "distinct_2", "distinct_3"]].T.plot.bar(
            figsize=(8, 3.2), rot=0, width=0.8)
        ax.set(ylabel="unique share", title="Distinct n-grams (smaller sets score higher)")
        ax.legend(loc="lower right")
        ax.grid(axis="y", alpha=0.3)
        plt.show()
        """
    ),
    md(
        """
        ## 5. Examples per label, with hard negatives

        Positives are drawn at random from the authored data. **Hard negatives** are authored
        sentences that contain a label's trigger vocabulary (the guideline lexicon of
        `baselines.LexiconClassifier` fires for the label) but do *not* carry the label:
        ground shelling for `airstrike`, kidnapping or release for `arrest`, an airport
        reopening or a capture by fighting for `base_handover`, anonymous sources for
        `statement`, calls for calm for `political_pressure`, and plans or threats of any
        event (realis). They tell whether a model learned the guideline or the keywords.

        The table counts them; "lexicon fooled" is how many of them still score ≥ 0.5 after the
        lexicon's own negative cues, i.e. how many a keyword rule would get wrong.
        """
    ),
    code(
        """
        lexicon = LexiconClassifier(list(LABELS))
        lex = lexicon.predict_proba([r["text"] for r in authored])
        gold = label_matrix(authored, LABELS).astype(bool)
        hard = (lex > 0) & ~gold  # trigger vocabulary present, label absent
        pd.DataFrame({
            "positives": gold.sum(0),
            "hard negatives": hard.sum(0),
            "lexicon fooled (score >= 0.5)": (hard & (lex >= 0.5)).sum(0),
            "positives without a trigger": (gold & (lex == 0)).sum(0),
        }, index=list(LABELS))
        """
    ),
    code(
        """
        rng = random.Random(13)
        for j, label in enumerate(LABELS):
            positives = [r for i, r in enumerate(authored) if gold[i, j]]
            negatives = [r for i, r in enumerate(authored) if hard[i, j]]
            rows = ([{"kind": "positive", **r} for r in rng.sample(positives, 3)]
                    + [{"kind": "hard negative", **r}
                       for r in rng.sample(negatives, min(3, len(negatives)))])
            display(Markdown(f"**{label}** ({plots.ARABIC_GLOSS[label]})"),
                    Sentences(rows, ["kind", "labels", "text"]))
        """
    ),
    md(
        """
        ## 6. Seeds vs authored

        The seeds are the only real news in the held-out sets. Comparing them with the authored
        data shows how far the authored style is from what the model will meet: label mix,
        length, vocabulary variety (on samples of equal size, since distinct-n depends on size),
        and how close the nearest authored sentence comes to each seed sentence. A seed
        sentence with a near-copy in the authored data would make `seed_test` too easy.
        """
    ),
    code(
        """
        compare = pd.DataFrame({
            "authored": dataset.label_counts(authored),
            "seeds": dataset.label_counts(seeds),
        }).T
        share = compare[[*LABELS, "none"]].div(compare["sentences"], axis=0)

        rng = np.random.default_rng(13)
        n = len(seeds)
        sampled = [dataset.diversity([authored[i] for i in rng.choice(len(authored), n, replace=False)])
                   for _ in range(20)]
        size_matched = pd.DataFrame({
            f"authored (20 samples of {n}, mean)": {k: np.mean([s[k] for s in sampled])
                                                    for k in ("distinct_1", "distinct_2", "distinct_3",
                                                              "mean_tokens", "share_hindi_digits",
                                                              "share_diacritics")},
            "seeds": {k: v for k, v in dataset.diversity(seeds).items()
                      if k in ("distinct_1", "distinct_2", "distinct_3", "mean_tokens",
                               "share_hindi_digits", "share_diacritics")},
        })
        display(compare, size_matched.round(3))

        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.4))
        share.T.plot.bar(ax=a, rot=30, width=0.8)
        plt.setp(a.get_xticklabels(), ha="right")
        a.set(ylabel="share of sentences", title="Label shares")
        a.grid(axis="y", alpha=0.3)
        bins = np.arange(0, 80, 4)
        for name, rows in (("authored", authored), ("seeds", seeds)):
            b.hist([len(dataset.dedup_tokens(r["text"])) for r in rows], bins=bins, density=True,
                   histtype="step", lw=1.8, label=name)
        b.set(xlabel="words per sentence", ylabel="density", title="Sentence length")
        b.legend()
        plt.show()
        """
    ),
    code(
        """
        def nearest_jaccard(queries: list[str], corpus: list[str]) -> np.ndarray:
            \"\"\"For each query, the largest token-set Jaccard with any corpus sentence.\"\"\"
            vec = CountVectorizer(analyzer=dataset.dedup_tokens, binary=True).fit(queries + corpus)
            q, c = vec.transform(queries), vec.transform(corpus)
            inter = (q @ c.T).toarray().astype(float)
            union = np.asarray(q.sum(1)) + np.asarray(c.sum(1)).T - inter
            return (inter / np.maximum(union, 1)).max(1)


        seed_near = nearest_jaccard([r["text"] for r in seeds], [r["text"] for r in authored])
        print(f"seed sentences with an authored near-duplicate (> {dataset.NEAR_DUPLICATE}): "
              f"{int((seed_near > dataset.NEAR_DUPLICATE).sum())} of {len(seeds)}; "
              f"closest: {seed_near.max():.2f}")
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.hist(seed_near, bins=np.linspace(0, 1, 41), color="tab:purple")
        ax.axvline(dataset.NEAR_DUPLICATE, color="red", ls="--", label="near-duplicate (0.7)")
        ax.set(xlabel="Jaccard with the closest authored sentence", ylabel="seed sentences",
               title="How close the authored data comes to each seed sentence")
        ax.legend()
        plt.show()
        """
    ),
    md(
        """
        ## 7. Leakage: documents and near-duplicates across splits

        A sentence from the same article, or a near-copy of a training sentence, in the test set
        inflates its scores. `dataset.check` re-reads the split files and lists every problem:
        schema, unknown labels, duplicates and near-duplicates within or across splits,
        documents present in two splits. The two tables below make the cross-split part
        explicit, and the histogram shows the margin: how similar each held-out sentence is to
        its closest training sentence.

        The last check compares the splits with `data/authored/`: authored sentences that are in
        no split were added after the splits were written (run `arabic-events data split` and
        retrain to use them).
        """
    ),
    code(
        """
        split_counts, problems = dataset.check(Path("."))
        print(f"dataset.check: {len(problems)} problem(s)")
        for problem in problems[:20]:
            print("  -", problem)

        docs = {name: {r["doc_id"] for r in rows} for name, rows in splits.items()}
        shared_docs = pd.DataFrame({a: {b: len(docs[a] & docs[b]) if a != b else len(docs[a])
                                        for b in SPLIT_NAMES} for a in SPLIT_NAMES})
        everything = [(name, r) for name, rows in splits.items() for r in rows]
        pairs = dataset.near_duplicate_pairs([r["text"] for _, r in everything])
        near = pd.DataFrame(0, index=SPLIT_NAMES, columns=SPLIT_NAMES)
        for i, j, _ in pairs:
            a, b = everything[i][0], everything[j][0]
            near.loc[a, b] += 1
            if a != b:
                near.loc[b, a] += 1
        display(Markdown("Documents per split (diagonal) and documents shared by two splits "
                         "(off-diagonal cells must be 0):"), shared_docs,
                Markdown(f"Near-duplicate sentence pairs (Jaccard > {dataset.NEAR_DUPLICATE}) "
                         "within and across splits (off-diagonal cells must be 0):"), near)
        """
    ),
    code(
        """
        train_texts = [r["text"] for r in splits["train"]]
        fig, ax = plt.subplots(figsize=(8, 3.2))
        for name in ("dev", "test", "seed_test"):
            closest = nearest_jaccard([r["text"] for r in splits[name]], train_texts)
            ax.hist(closest, bins=np.linspace(0, 1, 41), density=True, histtype="step", lw=1.8,
                    label=f"{name} (max {closest.max():.2f})")
        ax.axvline(dataset.NEAR_DUPLICATE, color="red", ls="--", label="near-duplicate (0.7)")
        ax.set(xlabel="Jaccard with the closest training sentence", ylabel="density",
               title="Held-out sentences vs their nearest training sentence")
        ax.legend()
        plt.show()

        split_ids = {r["id"] for r in in_splits}
        missing = [r for r in authored if r["id"] not in split_ids]
        stale = [r for r in in_splits if r["id"] not in {a["id"] for a in authored}]
        print(f"authored sentences in no split: {len(missing)}"
              + (f" (parts: {sorted({r['id'].split('-')[0] for r in missing})})" if missing else ""))
        print(f"split sentences no longer in data/authored: {len(stale)}")
        if missing or stale:
            print("The splits are older than the authored data: run `arabic-events data split`.")
        """
    ),
    md(
        """
        ## What to take from this

        - Check the counts in section 1 before reading any per-label F1: labels with few test
          positives have wide confidence intervals (notebook 03 prints them).
        - The hard-negative counts in section 5 say how much of each label's difficulty is the
          guideline's fine print rather than vocabulary; a label whose hard negatives the
          lexicon mostly gets wrong is where a fine-tuned model should earn its keep.
        - `seed_test` is small and real: its length and variety differ from the authored data,
          so its scores are the better guide to real news, with large uncertainty.
        - Section 7 must show no shared documents and no cross-split near-duplicates; the
          last lines say whether the splits are up to date with `data/authored/`.
        """
    ),
]


# --------------------------------------------------------------------------- 02 training

NB02: list[Cell] = [
    md(
        """
        # 02 · Training: how it works and what it produced

        **How a run works** (`arabic_events.training.run(cfg)`):

        1. A YAML config has five sections (`model`, `data`, `train`, `eval`, `predict`), each
           read into a dataclass; `key.sub=value` overrides change single fields, and unknown
           keys fail with a suggestion.
        2. The train and dev files are read and validated (the held-out files too, so a broken
           test file fails before training rather than after).
        3. The encoder gets one output per label; each label is an independent yes/no
           (sigmoid + binary cross-entropy), so a sentence can get several labels or none.
        4. Training evaluates on **dev** after each epoch and keeps the checkpoint with the
           best dev macro-F1 (the mean of the five per-label F1s).
        5. At the end, one decision **threshold per label** is tuned on dev, the held-out sets
           (`test`, `seed_test`) are scored once, and everything is written to a
           self-describing run directory. Held-out sets never influence any choice.

        Below: a tiny model trained in seconds to show the mechanics and the run directory, then
        the curves and scores of the real offline run.
        """
    ),
    code(
        ROOT_CELL[1]
        + "\n"
        + RUN_DIR_LINES
    ),
    code(
        QUIET_CELL_HEAD
        + '''
import json
import logging
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from IPython.display import Markdown, display

from arabic_events import plots, training
from arabic_events.config import ConfigError, load_config
from arabic_events.labels import LABELS

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", force=True)
%config InlineBackend.figure_formats = ["png"]
plt.rcParams.update({"figure.dpi": 100, "font.family": plots.FONT})
'''
    ),
    md(
        """
        ## 1. A config, with overrides

        `configs/debug/tiny-bert.yaml` trains a two-layer BERT whose vocabulary is built from the
        training texts (no download) on the 24-sentence fixture in `tests/fixtures/`. The
        overrides send the run to a temporary folder so the notebook changes nothing in the
        repository. The same call with `--config` and `key=value` arguments is what
        `arabic-events train` does.
        """
    ),
    code(
        """
        TMP = Path(tempfile.mkdtemp(prefix="nb02-"))
        cfg = load_config(
            "configs/debug/tiny-bert.yaml",
            [f"train.output_dir={TMP}", "train.run_name=tiny-demo", "train.threads=2"],
        )
        pd.Series({
            "model.name_or_path": cfg.model.name_or_path,
            "model.preprocessing": cfg.model.preprocessing,
            "data.train_file": cfg.data.train_file,
            "data.dev_file": cfg.data.dev_file,
            "data.eval_files": cfg.data.eval_files,
            "train.epochs": cfg.train.epochs,
            "train.batch_size": cfg.train.batch_size,
            "train.learning_rate": cfg.train.learning_rate,
            "train.threads": cfg.train.threads,
            "eval.tune_thresholds": cfg.eval.tune_thresholds,
            "train.output_dir": cfg.train.output_dir,
        }, name="value").to_frame()
        """
    ),
    md("A misspelt key is an error that names the section, suggests the fix and lists the keys:"),
    code(
        """
        try:
            load_config("configs/debug/tiny-bert.yaml", ["train.learning_rat=1e-3"])
        except ConfigError as err:
            print(err)
        """
    ),
    md(
        """
        ## 2. Train the tiny model

        A few seconds on CPU. Its scores mean nothing (24 training sentences); what matters is
        the log (loss, dev macro-F1 per epoch) and the run directory it leaves.
        """
    ),
    code(
        """
        tiny_dir = training.run(cfg)
        """
    ),
    code(
        """
        ROLES = {
            "config.json": "model architecture + id2label / label2id",
            "model.safetensors": "weights of the best dev checkpoint",
            "tokenizer.json": "tokenizer (with tokenizer_config.json)",
            "tokenizer_config.json": "tokenizer settings",
            "preprocessing.json": "Arabic normalisation applied before tokenising",
            "thresholds.json": "per-label decision thresholds, tuned on dev",
            "metrics.json": "dev / held-out scores (tuned and at 0.5) + training history",
            "run_config.yaml": "the resolved config, overrides included",
            "README.md": "model card",
        }
        pd.DataFrame(
            [{"file": p.name, "KiB": round(p.stat().st_size / 1024, 1), "what": ROLES.get(p.name, "")}
             for p in sorted(tiny_dir.iterdir())]
        ).set_index("file")
        """
    ),
    code(
        """
        tiny_metrics = json.loads((tiny_dir / "metrics.json").read_text(encoding="utf-8"))
        print("sections of metrics.json:", list(tiny_metrics))
        print("thresholds.json:", (tiny_dir / "thresholds.json").read_text(encoding="utf-8"))
        pd.DataFrame(tiny_metrics["training"]["history"])
        """
    ),
    md(
        """
        ## 3. The real offline run

        `RUN_DIR` (set in the first cell) is a run of the same code on the full authored
        splits. First its settings and training summary, then a check that the split files
        have not changed since it was trained: `metrics.json` scored the files as they were
        then.
        """
    ),
    code(
        """
        metrics = json.loads((RUN_DIR / "metrics.json").read_text(encoding="utf-8"))
        thresholds = json.loads((RUN_DIR / "thresholds.json").read_text(encoding="utf-8"))
        run_cfg = yaml.safe_load((RUN_DIR / "run_config.yaml").read_text(encoding="utf-8"))
        trained = metrics["training"]
        pd.Series({
            "encoder": run_cfg["model"]["name_or_path"],
            "preprocessing": run_cfg["model"]["preprocessing"],
            "frozen embeddings": run_cfg["model"]["freeze_embeddings"],
            "epochs": run_cfg["train"]["epochs"],
            "batch size": run_cfg["train"]["batch_size"],
            "learning rate": run_cfg["train"]["learning_rate"],
            "positive weights": run_cfg["train"]["pos_weight"],
            "precision": trained["precision"],
            "train / dev sentences": f"{trained['train_sentences']} / {trained['dev_sentences']}",
            "steps (best)": f"{trained['steps']} ({trained['best_step']})",
            "training time": f"{trained['train_seconds'] / 60:.1f} min, "
                             f"{trained['samples_per_second']} sentences/s",
        }, name=str(RUN_DIR)).to_frame()
        """
    ),
    PROVENANCE_CELL,
    md(
        """
        ### Dev macro-F1 over training

        Is more training still helping, or did dev F1 peak and fall (over-fitting)? The circled
        point is the checkpoint that was kept. Dev scores here use the default 0.5 threshold;
        tuning comes after training.
        """
    ),
    code(
        """
        history = pd.DataFrame(trained["history"])
        fig, ax = plt.subplots(figsize=(7, 3.4))
        ax.plot(history["step"], history["dev_macro_f1"], marker="o", label="dev macro-F1")
        ax.plot(history["step"], history["dev_micro_f1"], marker=".", ls="--", label="dev micro-F1")
        best = history.loc[history["step"] == trained["best_step"]]
        ax.plot(best["step"], best["dev_macro_f1"], "o", ms=14, mfc="none", mec="red", mew=2,
                label=f"kept: step {trained['best_step']}")
        ax.set(xlabel="optimiser step", ylabel="F1 at 0.5", title=f"{RUN_DIR.name}: dev F1 over training")
        ax.grid(alpha=0.3)
        ax.legend()
        plt.show()
        history
        """
    ),
    md(
        """
        ### Tuned thresholds

        Each label's threshold is the one that maximised its F1 on dev. Below 0.5 the model was
        under-confident on that label (lowering the bar buys recall); above 0.5 it
        over-predicted it (raising the bar buys precision). With about 40 dev positives per
        label these values are noisy: one or two sentences can move them.
        """
    ),
    code(
        """
        fig, ax = plt.subplots(figsize=(7.5, 3.2))
        names = list(thresholds)
        ax.bar([plots.label_title(n) for n in names], [thresholds[n] for n in names], color="tab:blue")
        ax.axhline(0.5, color="grey", ls="--", label="default 0.5")
        for x, n in enumerate(names):
            ax.text(x, thresholds[n] + 0.01, f"{thresholds[n]:.2f}", ha="center", va="bottom")
        ax.set(ylim=(0, 1), ylabel="threshold", title="Per-label thresholds tuned on dev")
        ax.tick_params(axis="x", labelrotation=15)
        ax.legend()
        plt.show()
        """
    ),
    md(
        """
        ### Per-label F1 on dev, test and seed_test

        - **dev** is optimistic: the thresholds and the checkpoint were chosen on it.
        - **test** is held-out authored data: the fair estimate for text like the training data.
        - **seed_test** is real news (a few dozen sentences): closer to deployment, but one
          sentence can swing a label's F1 by many points; read it with its support.
        """
    ),
    code(
        """
        sets = [name for name in metrics if name != "training"]
        f1 = pd.DataFrame({s: {n: metrics[s]["tuned"]["per_label"][n]["f1"] for n in LABELS}
                           for s in sets})
        fig, ax = plt.subplots(figsize=(9, 3.6))
        f1.rename(index=plots.label_title).plot.bar(ax=ax, rot=15, width=0.8)
        ax.set(ylim=(0, 1.05), ylabel="F1 (tuned thresholds)", title="Per-label F1 per set")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower right")
        plt.show()

        columns = {}
        for s in sets:
            for key, col in (("at_0.5", "F1 @0.5"), ("tuned", "F1 tuned")):
                columns[(s, col)] = {**{n: round(metrics[s][key]["per_label"][n]["f1"], 3)
                                        for n in LABELS},
                                     "macro-F1": round(metrics[s][key]["macro_f1"], 3)}
            columns[(s, "support")] = {**{n: str(metrics[s]["tuned"]["per_label"][n]["support"])
                                          for n in LABELS}, "macro-F1": ""}
        pd.DataFrame(columns)
        """
    ),
    md(
        """
        ## What to take from this

        - If dev F1 was still rising at the last evaluation, more epochs may help; if it peaked
          early, the kept checkpoint already guards against over-fitting.
        - Compare the F1 @0.5 and F1 tuned columns on **test**: tuning on dev helps only where
          the improvement carries over to test; where it does not, the thresholds fit dev noise.
        - The gap between test and seed_test is the cost of moving from authored to real text;
          notebook 03 looks at the errors behind it.
        - If the provenance check above warned, the numbers in `metrics.json` describe older
          split files: retrain before comparing runs.
        """
    ),
]


# --------------------------------------------------------------------------- 03 errors

NB03: list[Cell] = [
    md(
        """
        # 03 · Error analysis

        What the fine-tuned model gets wrong and why. `evaluation.evaluate_run` scores the run
        on a labelled file with the thresholds tuned on dev (it never tunes) and writes
        `metrics.json` (with bootstrap confidence intervals), `report.md`, plots and
        `errors.jsonl` (every false positive and false negative).

        Two data sets: the authored **test** split, and — when it is present beside the
        repository at `../shared/realnews-dev/ant-dev.jsonl` — a labelled **real-news** dev set.
        That file is read where it is and never copied into the repository; this notebook shows
        at most a handful of its sentences.
        """
    ),
    code(
        ROOT_CELL[1]
        + "\n"
        + RUN_DIR_LINES
        + '''
import tempfile

REALNEWS = Path("../shared/realnews-dev/ant-dev.jsonl")  # read in place when present
# evaluation folders: a temporary folder unless ARABIC_EVENTS_EVAL_OUT names one to keep
EVAL_OUT = Path(os.environ.get("ARABIC_EVENTS_EVAL_OUT") or tempfile.mkdtemp(prefix="nb03-"))
print("real-news dev set:", REALNEWS if REALNEWS.is_file() else "absent (skipped)")
print("evaluation folders:", EVAL_OUT)
'''
    ),
    code(
        QUIET_CELL_HEAD
        + '''
import json
import logging
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from IPython.display import Image, Markdown, display

from arabic_events import plots
from arabic_events.baselines import MATCH_NORMALIZE
from arabic_events.data import label_matrix
from arabic_events.evaluation import evaluate_run, load_model, read_eval_records, resolve_data
from arabic_events.labels import LABELS
from arabic_events.preprocess import normalize_arabic

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", force=True)
logging.getLogger("httpx").setLevel(logging.WARNING)
%config InlineBackend.figure_formats = ["png"]
plt.rcParams.update({"figure.dpi": 100, "font.family": plots.FONT})
'''
    ),
    SENTENCES_CELL,
    md(
        """
        Before trusting test scores: were the splits rewritten after this run was trained? If
        so, today's test file may hold sentences the model trained on.
        """
    ),
    PROVENANCE_CELL,
    md(
        """
        ## 1. Run the evaluation harness

        Macro-F1 with its 95% bootstrap interval, at 0.5 and at the tuned thresholds, and the
        number of errors. The intervals are the honest way to read a difference: two scores
        whose intervals overlap widely are not shown to differ.
        """
    ),
    code(
        """
        DATASETS = {"test": "test"}
        if REALNEWS.is_file():
            DATASETS["realnews-dev"] = str(REALNEWS)

        results, errors = {}, {}
        for name, data in DATASETS.items():
            # plots (PR curves, confusion matrices) only for test, the one shown below
            overrides = [] if name == "test" else ["eval.plots=false"]
            out = evaluate_run(RUN_DIR, data, EVAL_OUT / name, overrides, overwrite=True)
            results[name] = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            errors[name] = [json.loads(line) for line in (out / "errors.jsonl").open(encoding="utf-8")]


        def with_ci(value: float, ci: list[float]) -> str:
            return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


        pd.DataFrame({
            name: {
                "sentences": r["n"],
                "macro-F1 @0.5": with_ci(r["at_0.5"]["macro_f1"],
                                         r["confidence_intervals"]["at_0.5"]["macro_f1"]),
                "macro-F1 tuned": with_ci(r["macro_f1"],
                                          r["confidence_intervals"]["tuned"]["macro_f1"]),
                "micro-F1 tuned": with_ci(r["micro_f1"],
                                          r["confidence_intervals"]["tuned"]["micro_f1"]),
                "exact label set": round(r["subset_accuracy"], 3),
                "false positives": r["errors"]["false_positive"],
                "false negatives": r["errors"]["false_negative"],
            }
            for name, r in results.items()
        })
        """
    ),
    md(
        """
        ## 2. Precision and recall: 0.5 vs the tuned thresholds

        The thresholds were tuned on dev. On each set below, an arrow goes from a label's
        precision/recall at 0.5 (square) to its value at the tuned threshold (circle). An arrow
        pointing up-left traded recall for precision; right-down the reverse. When tuning on dev
        moves a label the wrong way on another set, the threshold fits dev, not the task.
        """
    ),
    code(
        """
        rows = []
        for name, r in results.items():
            for label in LABELS:
                half, tuned = r["at_0.5"]["per_label"][label], r["per_label"][label]
                rows.append({"set": name, "label": label, "support": tuned["support"],
                             "P @0.5": half["precision"], "R @0.5": half["recall"],
                             "F1 @0.5": half["f1"], "threshold": r["thresholds"][label],
                             "P tuned": tuned["precision"], "R tuned": tuned["recall"],
                             "F1 tuned": tuned["f1"]})
        pr_table = pd.DataFrame(rows).set_index(["set", "label"])
        display(pr_table.round(3))

        fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.4), squeeze=False)
        colors = dict(zip(LABELS, plt.cm.tab10.colors, strict=False))
        for ax, name in zip(axes[0], results, strict=True):
            for label in LABELS:
                row = pr_table.loc[(name, label)]
                if row["support"] == 0:
                    continue
                ax.annotate("", xy=(row["R tuned"], row["P tuned"]),
                            xytext=(row["R @0.5"], row["P @0.5"]),
                            arrowprops={"arrowstyle": "->", "color": colors[label]})
                ax.plot(row["R @0.5"], row["P @0.5"], "s", color=colors[label], ms=6)
                ax.plot(row["R tuned"], row["P tuned"], "o", color=colors[label], ms=8,
                        label=f"{label} (n={int(row['support'])})")
            ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=name)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower left")
        fig.suptitle("Per-label precision/recall: square at 0.5, circle at the tuned threshold")
        plt.show()
        """
    ),
    md("The harness's own precision-recall curves on test (circle: tuned threshold, square: 0.5):"),
    code(
        """
        display(Image(EVAL_OUT / "test" / "pr_curves.png"))
        """
    ),
    md(
        """
        ## 3. The most confident mistakes

        `errors.jsonl` lists every false positive (FP: label predicted, not in gold) and false
        negative (FN: gold label missed), sorted by how sure the model was of its wrong decision.
        The top of the list is what no threshold can fix: either the gold label is wrong (check
        it against the guideline first) or the model learned a systematic confusion. Below: for
        each label, the two most confident FPs and FNs on test.
        """
    ),
    code(
        """
        top = []
        for label in LABELS:
            for kind in ("false_positive", "false_negative"):
                picked = [e for e in errors["test"] if e["label"] == label and e["error"] == kind][:2]
                top += [{**e, "error": "FP" if kind == "false_positive" else "FN"} for e in picked]
        Sentences(top, ["label", "error", "score", "threshold", "gold_labels", "predicted_labels", "text"])
        """
    ),
    md(
        """
        On the real-news set, the errors counted by label and kind. Its sentences stay in
        `../shared` and out of this notebook's saved outputs; set `SHOW_REALNEWS_TEXT = True` to
        read the eight most confident errors on your own screen (the full list is in the
        evaluation folder's `errors.jsonl`, which git ignores). Do not commit the notebook so.
        """
    ),
    code(
        """
        SHOW_REALNEWS_TEXT = False  # real-news text must not be saved into the repository
        if "realnews-dev" in errors:
            real_errors = pd.DataFrame(errors["realnews-dev"])
            display(real_errors.groupby(["label", "error"]).size().unstack(fill_value=0))
            if SHOW_REALNEWS_TEXT:
                shown = [{**e, "error": "FP" if e["error"] == "false_positive" else "FN"}
                         for e in errors["realnews-dev"][:8]]
                display(Sentences(shown, ["label", "error", "score", "gold_labels", "text"],
                                  width=90))
        else:
            print("no real-news dev set here")
        """
    ),
    md(
        """
        ## 4. Score distributions: positives vs negatives

        For each label, the model's score on sentences that carry it (positives) and on those
        that do not (negatives), log scale. A well-separated label has positives piled near 1
        and negatives near 0; mass between them is where the threshold (red: tuned, grey: 0.5)
        decides, and negatives scoring high are systematic look-alikes. `evaluate_run` keeps
        only the errors, so the model is loaded once more here to score every sentence.
        """
    ),
    code(
        """
        model, _ = load_model(RUN_DIR)
        scored = {}
        for name, data in DATASETS.items():
            records = read_eval_records(resolve_data(data), model.labels)
            if len(records) != results[name]["n"]:
                print(f"WARNING: {name} changed since it was evaluated above "
                      f"({results[name]['n']} -> {len(records)} sentences); re-run the notebook.")
            scored[name] = (model.predict_proba([r["text"] for r in records]),
                            label_matrix(records, model.labels).astype(bool))

        bins = np.linspace(0, 1, 26)
        fig, axes = plt.subplots(len(scored), len(LABELS), squeeze=False, sharex=True,
                                 figsize=(3.1 * len(LABELS), 2.7 * len(scored)))
        for row, (name, (probs, gold)) in enumerate(scored.items()):
            for j, label in enumerate(model.labels):
                ax = axes[row][j]
                ax.hist(probs[~gold[:, j], j], bins=bins, alpha=0.6, color="tab:grey",
                        label=f"negatives ({(~gold[:, j]).sum()})")
                ax.hist(probs[gold[:, j], j], bins=bins, alpha=0.7, color="tab:green",
                        label=f"positives ({gold[:, j].sum()})")
                ax.axvline(model.thresholds[j], color="red", lw=1.5)
                ax.axvline(0.5, color="grey", ls=":", lw=1)
                ax.set_yscale("log")
                ax.set_title(f"{name}: {plots.label_title(label)}", fontsize=9)
                ax.legend(fontsize=7)
        for ax in axes[-1]:
            ax.set_xlabel("score")
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        ## 5. Error families

        Three confusions the guideline singles out, found in the errors by cue words (text
        normalised as the lexicon baseline does: no diacritics, one alef, ى→ي, ة→ه). Cue
        matching is a rough net: it shows how big a family is and gives examples to read, not a
        final classification of each error.

        - **Anonymous attribution vs `statement`**: `statement` needs an identifiable official
          source. "ذكرت مصادر", "قال ناشطون", "أفادت تقارير" or an outlet's own reporting are not
          statements. Cues: sources, activists, reports, agencies, witnesses, the Observatory.
        - **Demands vs statements**: an official's communication whose content is a demand is
          `political_pressure` only; a statement reporting others' pressure is both. Errors on
          either label where gold and prediction swap the two, or where demand verbs appear
          (طالب، دعا، حث، ناشد).
        - **Aviation look-alikes vs `base_handover`**: airports, flights, air space and aircraft
          share vocabulary with air bases; reopening an airport, resuming flights or permitting
          the use of an air base are not handovers. Cues: airport, aircraft, aviation, flights,
          air space, take-off/landing.
        """
    ),
    code(
        """
        def norm(text: str) -> str:
            return normalize_arabic(text, MATCH_NORMALIZE)


        def cue_pattern(words: list[str]) -> re.Pattern:
            return re.compile("|".join(re.escape(norm(w)) for w in words))


        ANONYMOUS = cue_pattern(["مصادر", "مصدر", "ناشطون", "ناشطين", "أفادت", "ذكرت", "نقلت", "وكالة",
                                 "تقارير", "المرصد", "شهود", "مسؤولون", "مسؤولين", "مطلع", "مطلعة"])
        DEMAND = cue_pattern(["طالب", "يطالب", "تطالب", "مطالب", "دعا", "دعت", "يدعو", "تدعو", "حث",
                              "حثت", "ناشد", "طلب"])
        AVIATION = cue_pattern(["مطار", "طائرة", "طائرات", "طيران", "رحلات", "الرحلات", "الملاحة",
                                "المجال الجوي", "الأجواء", "هبوط", "إقلاع", "قاعدة جوية"])


        def family(e: dict) -> str | None:
            text, gold, pred = norm(e["text"]), set(e["gold_labels"]), set(e["predicted_labels"])
            pair = {"statement", "political_pressure"}
            if e["label"] in pair and (
                    (e["error"] == "false_positive" and (pair - {e["label"]}) & gold)
                    or (e["error"] == "false_negative" and (pair - {e["label"]}) & pred)
                    or DEMAND.search(text)):
                return "demands vs statements"
            if e["label"] == "statement" and ANONYMOUS.search(text):
                return "anonymous attribution vs statement"
            if e["label"] == "base_handover" and AVIATION.search(text):
                return "aviation look-alikes vs base_handover"
            return None


        rows = []
        for name, errs in errors.items():
            for e in errs:
                rows.append({"set": name, "family": family(e) or "other",
                             "label": e["label"], "error": "FP" if e["error"] == "false_positive" else "FN"})
        families = pd.DataFrame(rows)
        pd.crosstab([families["set"], families["family"]], families["error"], margins=True)
        """
    ),
    code(
        """
        for fam in ("anonymous attribution vs statement", "demands vs statements",
                    "aviation look-alikes vs base_handover"):
            found = [{**e, "error": "FP" if e["error"] == "false_positive" else "FN"}
                     for e in errors["test"] if family(e) == fam][:3]
            display(Markdown(f"**{fam}** (test, up to 3 most confident)"),
                    Sentences(found, ["label", "error", "score", "gold_labels", "predicted_labels", "text"]))
        """
    ),
    md(
        """
        ## Discussion (template)

        Fill in from the tables above after reading the examples; check each gold label against
        `data/GUIDELINE.md` before blaming the model.

        ### A. Anonymous attribution vs `statement`
        - **Counts**: test FP ___ / FN ___; real news FP ___ / FN ___.
        - **Pattern**: does the model fire on reporting verbs (قال، أكد، أعلن) whoever speaks
          (FP), or miss continuations with no repeated speaker ("وأضاف أن") (FN)?
        - **Gold check**: ___ of ___ read were mislabelled.
        - **Fix to try**: more authored hard negatives with anonymous or media sources /
          continuation sentences; per-source analysis on real news.

        ### B. Demands vs statements
        - **Counts**: test ___; real news ___ (which direction dominates: `statement` FP on
          demands, or `political_pressure` FN?).
        - **Pattern**: an official's demand labelled as a plain statement, or a report of
          others' pressure missing one of its two labels.
        - **Gold check**: ___.
        - **Fix to try**: authored pairs that differ only in demand vs report; a targeted
          guideline example.

        ### C. Aviation look-alikes vs `base_handover`
        - **Counts**: test FP ___ / FN ___; real news FP ___ (the label is rare in real news:
          see its support above; judge its recall on test).
        - **Pattern**: airports reopened, flights resumed, air-base use permitted, aircraft
          redeployed, read as a handover.
        - **Gold check**: ___.
        - **Fix to try**: authored negatives on airports and flights; check the threshold of
          `base_handover` against its FP count on real news.

        ### Other families seen
        - Realis (plans, threats, denials carrying an event label): ___
        - Ground fire vs `airstrike`, kidnapping vs `arrest`: ___
        - Errors that are gold-label mistakes: ___
        """
    ),
]


NOTEBOOKS: dict[str, list[Cell]] = {
    "01_data.ipynb": NB01,
    "02_training.ipynb": NB02,
    "03_errors.ipynb": NB03,
}


def build(cells: list[Cell]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python"
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
        for kind, src in cells
    ]
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*",
                        help="notebook number prefixes, e.g. 01 03 (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write without running")
    args = parser.parse_args(argv)
    chosen = {n: c for n, c in NOTEBOOKS.items() if not args.only or n.split("_")[0] in args.only}
    if not chosen:
        parser.error(f"no notebook matches {args.only}; give number prefixes from "
                     f"{[n.split('_')[0] for n in NOTEBOOKS]}")
    for name, cells in chosen.items():
        nb = build(cells)
        nbformat.validate(nb)
        path = HERE / name
        if not args.no_execute:
            started = time.perf_counter()
            client = NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                                    resources={"metadata": {"path": str(HERE)}},
                                    coalesce_streams=True)
            client.execute()
            print(f"{name}: executed in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        nbformat.write(nb, path)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
