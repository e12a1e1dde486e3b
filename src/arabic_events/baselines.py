"""Two baselines scored with the same metric code as the fine-tuned models.

- `LexiconClassifier`: trigger words per label taken from the guideline (data/LABELS.md),
  with negative cues for its hard negatives (anonymous sources cancel `statement`, artillery
  without air means cancels `airstrike`, kidnapping is not `arrest`, ...) and realis cues
  (future, threat, denial) that cancel the event labels.
- `TfidfClassifier`: TF-IDF over character n-grams (`char_wb`, 2-5) and one logistic
  regression per label (one-vs-rest), from scikit-learn.

Both give a score in [0, 1] per label, keep per-label thresholds tuned on dev only, and save
without pickle: the lexicon as JSON, the TF-IDF model as JSON (vocabulary, settings) plus
safetensors (idf, coefficients). `run_baselines` fits both on a config's train/dev and scores
dev and every eval file.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from arabic_events import metrics
from arabic_events.config import Config, NormalizeConfig
from arabic_events.data import label_matrix
from arabic_events.preprocess import normalize_arabic

logger = logging.getLogger(__name__)

LEXICON_FILE = "lexicon.json"
TFIDF_FILE = "tfidf.json"
TFIDF_WEIGHTS = "tfidf.safetensors"

MATCH_NORMALIZE = NormalizeConfig(alef_maqsura=True, ta_marbuta=True)
"""Normalisation for matching: also ى→ي and ة→ه, so spelling variants meet."""

_AIR_MEANS = ["جوي", "طيران", "طائره", "طائرات", "مقاتلات", "غاره", "غارات", "مسيره", "سلاح الجو"]

DEFAULT_LEXICON: dict[str, Any] = {
    "version": 1,
    "cancel_factor": 0.2,
    "realis": {
        "applies_to": ["airstrike", "arrest", "base_handover"],
        "cues": ["سوف", "سيتم", "ستقوم", "ستشن", "سيشن", "ستسلم", "سيسلم", "ستنسحب", "سينسحب",
                 "يعتزم", "تعتزم", "ينوي", "تنوي", "من المقرر", "من المتوقع", "مرتقب", "هدد",
                 "يهدد", "تهدد", "توعد", "نفى", "نفت", "ينفي", "تنفي", "لم ", "لن ", "هل ",
                 "في حال", "خطه ل", "لتنفيذ", "امر باخلاء", "اوامر باخلاء"],
    },
    "labels": {
        "airstrike": {
            "triggers": {"غاره": 1.0, "غارات": 1.0, "اغار": 0.9, "ضربه جوي": 1.0,
                         "ضربات جوي": 1.0, "قصف جوي": 1.0, "طيران حربي": 0.9,
                         "طيران التحالف": 0.9, "طائرات حربي": 0.9, "طائره حربي": 0.9,
                         "مقاتلات": 0.9, "طائره مسير": 0.9, "طائرات مسير": 0.9,
                         "سلاح الجو": 0.8, "ضربات": 0.5, "قصف": 0.3},
            "require_any": [],
            "negatives": [
                {"cues": ["مدفعي", "هاون", "صاروخي", "صواريخ", "قذائف", "عبوه", "مفخخ",
                          "انتحاري", "اشتباك"], "unless": _AIR_MEANS},
                {"cues": ["اسقاط", "اسقطت", "اسقط", "الدفاعات الجويه", "الدفاع الجوي", "تصدت"],
                 "unless": []},
                {"cues": ["استطلاع"], "unless": ["غاره", "غارات", "قصف"]},
                {"cues": ["استخدام قاعده", "استخدام الاجواء", "استخدام المجال الجوي"],
                 "unless": []},
            ],
        },
        "arrest": {
            "triggers": {"اعتقال": 1.0, "اعتقل": 1.0, "القبض": 1.0, "قبض": 0.9, "توقيف": 0.9,
                         "احتجاز": 0.9, "احتجز": 0.9, "المعتقلين": 0.8, "اوقفت": 0.6,
                         "اوقف": 0.6},
            "require_any": [],
            "negatives": [
                {"cues": ["اختطف", "اختطاف", "خطف", "مختطف"], "unless": []},
                {"cues": ["الافراج", "افرج", "سراح"], "unless": []},
                {"cues": ["مذكره قبض", "مذكره اعتقال", "مذكرات قبض", "امر قبض"], "unless": []},
                {"cues": ["مسلحون", "مسلحين", "داعش", "التنظيم اعتقل"],
                 "unless": ["قوات", "الشرطه", "الامن", "السلطات", "الجيش"]},
            ],
        },
        "base_handover": {
            "triggers": {"تسليم": 0.9, "سلم": 0.9, "يسلم": 0.9, "تسلم": 0.9, "استلام": 0.8,
                         "استلم": 0.8, "اخلاء": 0.9, "اخلت": 0.9, "اخلى": 0.9, "اخليت": 0.9,
                         "انسحب": 0.8, "انسحاب": 0.8, "ينسحب": 0.8, "غادر": 0.7, "مغادره": 0.7,
                         "يغادر": 0.7, "اعاده": 0.6, "نقل": 0.6, "سحب": 0.6, "حلت محل": 0.7},
            "require_any": [["قاعده", "قواعد", "معسكر", "موقع", "مواقع", "مقر", "مقار", "مطار",
                             "ثكنه", "نقاط", "مخفر", "السيطرات", "المسؤوليه الامنيه",
                             "الملف الامني"]],
            "negatives": [
                {"cues": ["سيطرت على", "سيطروا على", "سيطر على", "استعاد", "تحرير", "حرر",
                          "اقتحم", "هجوم", "معارك", "اشتباك"], "unless": []},
                {"cues": ["تسليم اسلح", "تسليم اسرى", "تسليم جثث", "تسليم جثامين",
                          "تسليم مطلوب", "سلموا انفسهم", "سلم نفسه"], "unless": []},
                {"cues": ["اعاده تاهيل", "اعاده افتتاح", "افتتاح", "استانف", "اعاده فتح",
                          "اعاده اعمار", "اعاده بناء"], "unless": []},
            ],
        },
        "statement": {
            "triggers": {"قال": 0.9, "اكد": 0.9, "اعلن": 0.9, "صرح": 0.9, "تصريح": 0.8,
                         "اوضح": 0.9, "بيان": 0.8, "اشاد": 0.8, "ندد": 0.8, "استنكر": 0.8,
                         "ادان": 0.8, "اضاف": 0.8, "لفت": 0.7, "اشار": 0.7, "اعرب": 0.8,
                         "جدد": 0.6, "تعهد": 0.8, "نفى": 0.8, "نفت": 0.8, "دعا": 0.7,
                         "المتحدث": 0.7, "الناطق": 0.7},
            "require_any": [],
            "negatives": [
                {"cues": ["مصادر", "مصدر", "ناشطون", "ناشطين", "تقارير", "المرصد", "وكاله",
                          "افادت", "ذكرت", "نقلت", "شهود"],
                 "unless": ["وزير ", "المتحدث باسم", "الناطق باسم"]},
                {"cues": ["طالب", "يطالب", "مطالب"],
                 "unless": ["قال", "اعلن", "اكد", "اوضح", "صرح", "بيان"]},
            ],
        },
        "political_pressure": {
            "triggers": {"طالب": 1.0, "يطالب": 1.0, "مطالب": 0.9, "طلبا رسميا": 1.0,
                         "طلب رسمي": 1.0, "عقوبات": 0.9, "شكوى": 0.8, "يلزم الحكومه": 1.0,
                         "انهاء وجود": 0.9, "اخراج القوات": 0.9, "انهاء مهام": 0.9,
                         "ضغوط": 0.8, "مهله": 0.6, "استجواب": 0.8, "صوت": 0.5},
            "require_any": [],
            "negatives": [
                {"cues": ["ضبط النفس", "التهدئه", "الحوار", "الهدوء"],
                 "unless": ["طالب", "عقوبات"]},
                {"cues": ["رفع العقوبات", "رفع عقوبات", "الضغط العسكري", "ضغط عسكري",
                          "دعوى", "محكمه"], "unless": []},
            ],
        },
    },
}
"""The guideline's triggers and hard negatives, written in plain Arabic (normalised on load).

A term matches a word that starts with it, after optional proclitics (و ف ب ل ك ال لل); a term
ending in a space must end the word; later words of a phrase may carry ال. A label scores the
largest weight among its matched triggers (0 without one, or when a `require_any` group has no
match); a negative cue whose `unless` terms are all absent multiplies the score by
`cancel_factor`, and so do realis cues for the labels in `realis.applies_to`."""


def _term_pattern(term: str) -> str:
    words = normalize_arabic(term, MATCH_NORMALIZE).split(" ")
    body = r"\s+(?:ال)?".join(re.escape(w) for w in words)
    end = r"(?!\w)" if term.endswith(" ") else ""
    return r"(?<!\w)(?:[وف])?(?:[بلك])?(?:ال|لل)?" + body + end


def _compile(terms: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{_term_pattern(t)})" for t in terms)) if terms else None


class LexiconClassifier:
    """Guideline trigger lexicon with negative and realis cues.

    Example:
        >>> clf = LexiconClassifier(["airstrike", "arrest"])
        >>> clf.predict_proba(["شنت مقاتلات التحالف غارات جوية.", "اختطف مسلحون ثلاثة مزارعين."])
        array([[1., 0.],
               [0., 0.]], dtype=float32)
        >>> clf.predict_proba(["اعتقلت الشرطة مشتبهاً به.", "أفرجت السلطات عن المعتقلين."])
        array([[0.  , 1.  ],
               [0.  , 0.16]], dtype=float32)
    """

    name = "lexicon"

    def __init__(self, labels: list[str], lexicon: dict[str, Any] | None = None,
                 thresholds: np.ndarray | None = None) -> None:
        self.labels = list(labels)
        self.lexicon = copy.deepcopy(lexicon or DEFAULT_LEXICON)
        missing = [name for name in self.labels if name not in self.lexicon["labels"]]
        if missing:
            raise ValueError(f"the lexicon has no entry for label(s) {missing}; add them.")
        self.thresholds = np.full(len(self.labels), 0.5) if thresholds is None else thresholds
        self._realis = _compile(self.lexicon["realis"]["cues"])
        self._rules = {name: self._compile_label(self.lexicon["labels"][name])
                       for name in self.labels}

    @staticmethod
    def _compile_label(entry: dict[str, Any]) -> dict[str, Any]:
        return {
            "triggers": [(re.compile(_term_pattern(t)), float(w))
                         for t, w in entry["triggers"].items()],
            "require_any": [_compile(group) for group in entry.get("require_any", [])],
            "negatives": [(_compile(n["cues"]), _compile(n.get("unless", [])))
                          for n in entry.get("negatives", [])],
        }

    def _score(self, label: str, text: str, realis_blocked: bool) -> float:
        rules = self._rules[label]
        score = max((w for pattern, w in rules["triggers"] if pattern.search(text)), default=0.0)
        if score == 0 or any(not group.search(text) for group in rules["require_any"]):
            return 0.0
        factor = self.lexicon["cancel_factor"]
        for cues, unless in rules["negatives"]:
            if cues.search(text) and not (unless and unless.search(text)):
                score *= factor
        if realis_blocked and label in self.lexicon["realis"]["applies_to"]:
            score *= factor
        return score

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Scores in [0, 1], shape (len(texts), len(labels))."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for i, raw in enumerate(texts):
            text = normalize_arabic(raw, MATCH_NORMALIZE)
            blocked = bool(self._realis and self._realis.search(text))
            out[i] = [self._score(label, text, blocked) for label in self.labels]
        return out

    def fit(self, train_texts: list[str], train_y: np.ndarray) -> LexiconClassifier:
        """Nothing to learn: the lexicon is written by hand from the guideline."""
        return self

    def save(self, directory: str | Path) -> Path:
        """Write `lexicon.json` (lexicon, labels, thresholds) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"kind": self.name, "labels": self.labels,
                   "thresholds": _threshold_map(self.labels, self.thresholds),
                   "lexicon": self.lexicon}
        path = directory / LEXICON_FILE
        path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> LexiconClassifier:
        """Read a folder written by `save`."""
        payload = json.loads(Path(directory, LEXICON_FILE).read_text(encoding="utf-8"))
        labels = payload["labels"]
        return cls(labels, payload["lexicon"], _threshold_array(labels, payload["thresholds"]))


def _threshold_map(labels: list[str], thresholds: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(labels, thresholds, strict=True)}


def _threshold_array(labels: list[str], values: dict[str, float]) -> np.ndarray:
    return np.array([float(values[name]) for name in labels])


@dataclass
class TfidfSettings:
    """Settings of the TF-IDF + logistic regression baseline."""

    ngram_min: int = 2
    ngram_max: int = 5
    """Character n-gram range inside word boundaries (`char_wb`)."""
    sublinear_tf: bool = True
    min_df: int = 1
    max_features: int | None = 200_000
    C: float = 10.0
    """Inverse regularisation strength of each per-label logistic regression."""
    class_weight: str | None = "balanced"
    """`balanced` reweights the rare positives; None weighs every sentence alike."""
    max_iter: int = 2000


class TfidfClassifier:
    """Character n-gram TF-IDF + one-vs-rest logistic regression.

    Texts are normalised (`preprocess.normalize_arabic`) before vectorising. Saved as
    `tfidf.json` (settings, labels, thresholds, vocabulary) + `tfidf.safetensors` (idf,
    coefficients, intercepts), never pickled; scores after loading equal those before.
    """

    name = "tfidf"

    def __init__(self, labels: list[str], settings: TfidfSettings | None = None,
                 thresholds: np.ndarray | None = None) -> None:
        self.labels = list(labels)
        self.settings = settings or TfidfSettings()
        self.thresholds = np.full(len(self.labels), 0.5) if thresholds is None else thresholds
        self.vectorizer: TfidfVectorizer | None = None
        self.coef = np.zeros((len(self.labels), 0), dtype=np.float32)
        self.intercept = np.zeros(len(self.labels), dtype=np.float32)

    def _new_vectorizer(self, vocabulary: dict[str, int] | None = None) -> TfidfVectorizer:
        s = self.settings
        return TfidfVectorizer(analyzer="char_wb", ngram_range=(s.ngram_min, s.ngram_max),
                               sublinear_tf=s.sublinear_tf, min_df=s.min_df,
                               max_features=s.max_features, vocabulary=vocabulary,
                               dtype=np.float32)

    @staticmethod
    def _prepare(texts: list[str]) -> list[str]:
        return [normalize_arabic(t) for t in texts]

    def fit(self, train_texts: list[str], train_y: np.ndarray) -> TfidfClassifier:
        """Fit the vectoriser and one logistic regression per label on training data."""
        self.vectorizer = self._new_vectorizer()
        x = self.vectorizer.fit_transform(self._prepare(train_texts))
        y = np.asarray(train_y, dtype=int)
        self.coef = np.zeros((len(self.labels), x.shape[1]), dtype=np.float32)
        self.intercept = np.zeros(len(self.labels), dtype=np.float32)
        s = self.settings
        for j, label in enumerate(self.labels):
            if y[:, j].min() == y[:, j].max():
                logger.warning("tfidf: label %s is %s in every training sentence; it gets a "
                               "constant score", label, "present" if y[0, j] else "absent")
                self.intercept[j] = 10.0 if y[0, j] else -10.0
                continue
            model = LogisticRegression(C=s.C, class_weight=s.class_weight, max_iter=s.max_iter)
            model.fit(x, y[:, j])
            self.coef[j], self.intercept[j] = model.coef_[0], model.intercept_[0]
        logger.info("tfidf: %d sentences, %d character n-grams", x.shape[0], x.shape[1])
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Sigmoid scores, shape (len(texts), len(labels))."""
        if self.vectorizer is None:
            raise RuntimeError("TfidfClassifier: call fit() or load() before predict_proba().")
        x = self.vectorizer.transform(self._prepare(texts))
        logits = np.asarray(x @ self.coef.T) + self.intercept
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def save(self, directory: str | Path) -> Path:
        """Write `tfidf.json` and `tfidf.safetensors` into `directory`."""
        if self.vectorizer is None:
            raise RuntimeError("TfidfClassifier: nothing to save before fit().")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocabulary = {term: int(i) for term, i in self.vectorizer.vocabulary_.items()}
        payload = {"kind": self.name, "labels": self.labels,
                   "thresholds": _threshold_map(self.labels, self.thresholds),
                   "settings": dataclasses.asdict(self.settings), "vocabulary": vocabulary}
        (directory / TFIDF_FILE).write_text(json.dumps(payload, ensure_ascii=False),
                                            encoding="utf-8")
        save_file({"idf": self.vectorizer.idf_.astype(np.float32), "coef": self.coef,
                   "intercept": self.intercept}, str(directory / TFIDF_WEIGHTS))
        return directory / TFIDF_FILE

    @classmethod
    def load(cls, directory: str | Path) -> TfidfClassifier:
        """Read a folder written by `save`."""
        payload = json.loads(Path(directory, TFIDF_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(Path(directory, TFIDF_WEIGHTS)))
        labels = payload["labels"]
        model = cls(labels, TfidfSettings(**payload["settings"]),
                    _threshold_array(labels, payload["thresholds"]))
        model.vectorizer = model._new_vectorizer(payload["vocabulary"])
        model.vectorizer.idf_ = tensors["idf"]
        model.coef, model.intercept = tensors["coef"], tensors["intercept"]
        return model


BASELINES = {"lexicon": LexiconClassifier, "tfidf": TfidfClassifier}
"""Baseline name -> class, for building and loading by name."""

_FILES = {LEXICON_FILE: LexiconClassifier, TFIDF_FILE: TfidfClassifier}


def is_baseline_dir(directory: str | Path) -> bool:
    """True when `directory` holds a saved baseline."""
    return any(Path(directory, name).is_file() for name in _FILES)


def load_baseline(directory: str | Path) -> LexiconClassifier | TfidfClassifier:
    """Load the baseline saved in `directory` (lexicon or TF-IDF)."""
    for name, cls in _FILES.items():
        if Path(directory, name).is_file():
            return cls.load(directory)
    raise ValueError(f"{directory} holds no saved baseline ({', '.join(_FILES)}); write one "
                     "with `arabic-events baselines --config CFG --out DIR`.")


def fit_baselines(cfg: Config, names: tuple[str, ...] = ("lexicon", "tfidf"),
                  ) -> dict[str, LexiconClassifier | TfidfClassifier]:
    """Fit the baselines on `data.train_file` and tune their thresholds on `data.dev_file`.

    Reads the training and dev files only: never an eval file, so nothing is chosen on test.

    Args:
        cfg: Config whose `data` section names train and dev (and the labels).
        names: Which baselines, from `BASELINES`.

    Returns:
        Baseline name -> fitted model with dev-tuned thresholds.
    """
    from arabic_events.evaluation import check_tuning_file, data_fields, read_eval_records

    labels = list(cfg.data.labels)
    check_tuning_file(cfg.data.dev_file, cfg)
    fields = data_fields(cfg)
    train = read_eval_records(cfg.data.train_file, labels, fields)
    if cfg.data.max_train_samples:
        train = train[: cfg.data.max_train_samples]
    dev = read_eval_records(cfg.data.dev_file, labels, fields)
    fitted = {}
    for name in names:
        model = BASELINES[name](labels)
        model.fit([r["text"] for r in train], label_matrix(train, labels))
        dev_probs = model.predict_proba([r["text"] for r in dev])
        model.thresholds = metrics.tune_thresholds(
            dev_probs, label_matrix(dev, labels), cfg.eval.threshold_grid, cfg.eval.threshold,
            cfg.eval.threshold_tolerance)
        logger.info("%s: thresholds tuned on dev %s: %s", name, cfg.data.dev_file,
                    _threshold_map(labels, model.thresholds))
        fitted[name] = model
    return fitted


def run_baselines(cfg: Config, out: str | Path, overwrite: bool = False) -> Path:
    """Fit both baselines, save them and score dev and every eval file.

    Writes `OUT/lexicon/lexicon.json`, `OUT/tfidf/tfidf.{json,safetensors}`,
    `OUT/metrics.json` (model -> set -> `tuned` and `at_0.5` scores) and `OUT/report.md`, all
    at once: an error leaves `OUT` as it was.

    Args:
        cfg: Config naming train, dev and eval files.
        out: Output folder.
        overwrite: Replace an existing `out`.

    Returns:
        `out`.
    """
    from arabic_events.evaluation import atomic_output_dir, score_sets, write_json

    sets = {"dev": cfg.data.dev_file, **cfg.data.eval_files}
    with atomic_output_dir(out, overwrite) as tmp:
        fitted = fit_baselines(cfg)
        results = {}
        for name, model in fitted.items():
            model.save(tmp / name)
            results[name] = score_sets(model, sets, cfg)
        write_json(tmp / "metrics.json", {"config": cfg.to_dict()["data"], **results})
        (tmp / "report.md").write_text(_summary(results, list(cfg.data.labels)),
                                       encoding="utf-8")
    logger.info("baselines written to %s", out)
    return Path(out)


def _summary(results: dict[str, dict[str, Any]], labels: list[str]) -> str:
    lines = ["# Baselines", "",
             "Thresholds tuned on dev only; F1 at the tuned thresholds (0.5 in brackets).", "",
             "| model | set | n | macro-F1 | micro-F1 | " + " | ".join(labels) + " |",
             "|---" * (5 + len(labels)) + "|"]
    for model, sets in results.items():
        for name, block in sets.items():
            tuned, half = block["tuned"], block["at_0.5"]
            per = " | ".join(f"{tuned['per_label'][lab]['f1']:.3f}" for lab in labels)
            lines.append(f"| {model} | {name} | {block['n']} | {tuned['macro_f1']:.3f} "
                         f"({half['macro_f1']:.3f}) | {tuned['micro_f1']:.3f} "
                         f"({half['micro_f1']:.3f}) | {per} |")
    return "\n".join(lines) + "\n"
