"""Text preprocessing, saved with the model and applied identically at inference.

AraBERT models get the `arabert` package's preprocessing (v02: no Farasa segmentation; the
segmented v1/v2 variants need Farasa, a Java tool downloaded at run time, and fail clearly when it
cannot run). Other models get a configurable Arabic normalisation.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arabic_events.config import ModelConfig, NormalizeConfig

FILE_NAME = "preprocessing.json"

_DIACRITICS = re.compile(r"[\u0610-\u061A\u064B-\u065F\u0670\u06D6-\u06ED]")
_TATWEEL = re.compile(r"\u0640+")
_ALEF = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا"})
_DIGITS = str.maketrans(
    {
        **{chr(0x0660 + i): str(i) for i in range(10)},
        **{chr(0x06F0 + i): str(i) for i in range(10)},
        "٫": ".",
        "٬": ",",
    }
)
_PUNCT_SPACING = re.compile(r"\s*([.,!?؟،؛:«»\"()\[\]])\s*")
_SPACES = re.compile(r"\s+")

# AraBERT variants whose vocabulary was built on Farasa-segmented text.
SEGMENTED_ARABERT = ("bert-base-arabert", "bert-base-arabertv2", "bert-large-arabertv2")


class PreprocessingError(RuntimeError):
    """Preprocessing that cannot run here (e.g. Farasa offline)."""


def arabert_name(name_or_path: str) -> str:
    """The AraBERT model name the `arabert` package knows, from a Hub id or a local folder."""
    return Path(name_or_path.rstrip("/")).name.replace("aubmindlab/", "")


@dataclass
class Preprocessor:
    """A text transform with its settings; `to_dict`/`load` keep training and inference equal.

    Example:
        >>> Preprocessor(kind="normalize")("قَالَ وزيـــر الدفاع إنّ ٣ غارات")
        'قال وزير الدفاع ان 3 غارات'
    """

    kind: str = "normalize"
    """`arabert`, `normalize` or `none`."""
    arabert_model: str = ""
    """For `arabert`: the AraBERT model name the preprocessing is for."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)

    def __post_init__(self) -> None:
        self._arabert = None
        if self.kind == "arabert":
            self._arabert = _make_arabert(self.arabert_model)
        elif self.kind not in ("normalize", "none"):
            raise PreprocessingError(
                f"unknown preprocessing {self.kind!r}; use 'arabert', 'normalize' or 'none'."
            )

    def __call__(self, text: str) -> str:
        if self.kind == "none":
            return text.strip()
        if self._arabert is not None:
            return self._arabert.preprocess(text)
        return normalize_arabic(text, self.normalize)

    def batch(self, texts: list[str]) -> list[str]:
        """Preprocess a list of texts."""
        return [self(t) for t in texts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "arabert_model": self.arabert_model,
            "normalize": dataclasses.asdict(self.normalize),
        }

    def save(self, directory: str | Path) -> None:
        """Write `preprocessing.json` into a run directory."""
        Path(directory, FILE_NAME).write_text(
            json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: str | Path) -> Preprocessor:
        """Read the settings a model was trained with."""
        path = Path(directory, FILE_NAME)
        if not path.is_file():
            raise PreprocessingError(
                f"{path} is missing: this folder was not written by `arabic-events train`, so the "
                "preprocessing the model expects is unknown."
            )
        values = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            kind=values["kind"],
            arabert_model=values.get("arabert_model", ""),
            normalize=NormalizeConfig(**values.get("normalize", {})),
        )

    @classmethod
    def from_config(cls, model: ModelConfig) -> Preprocessor:
        """Choose the preprocessing for a model config (`auto` picks AraBERT's for AraBERT)."""
        kind = model.preprocessing
        if kind == "auto":
            kind = "arabert" if "arabert" in model.name_or_path.lower() else "normalize"
        name = arabert_name(model.name_or_path) if kind == "arabert" else ""
        return cls(kind=kind, arabert_model=name, normalize=model.normalize)


def normalize_arabic(text: str, settings: NormalizeConfig | None = None) -> str:
    """Normalise Arabic text for a multilingual encoder.

    Args:
        text: Raw sentence.
        settings: Which normalisations to apply.

    Returns:
        The normalised sentence, whitespace collapsed.
    """
    settings = settings or NormalizeConfig()
    if settings.remove_diacritics:
        text = _DIACRITICS.sub("", text)
    if settings.remove_tatweel:
        text = _TATWEEL.sub("", text)
    if settings.alef:
        text = text.translate(_ALEF)
    if settings.alef_maqsura:
        text = text.replace("ى", "ي")
    if settings.ta_marbuta:
        text = text.replace("ة", "ه")
    if settings.digits:
        text = text.translate(_DIGITS)
    if settings.punctuation_spacing:
        text = _PUNCT_SPACING.sub(r" \1 ", text)
    return _SPACES.sub(" ", text).strip()


def _make_arabert(model_name: str) -> Any:
    from arabert.preprocess import ACCEPTED_MODELS, ArabertPreprocessor

    if model_name not in ACCEPTED_MODELS:
        raise PreprocessingError(
            f"AraBERT preprocessing does not know the model {model_name!r} (the arabert package "
            "would silently fall back to v02 rules). Known: "
            + ", ".join(ACCEPTED_MODELS)
            + ". Set model.preprocessing=normalize for a non-AraBERT model."
        )
    if model_name in SEGMENTED_ARABERT:
        _check_farasa(model_name)
    return ArabertPreprocessor(model_name=model_name)


def _check_farasa(model_name: str) -> None:
    """Segmented AraBERT needs Farasa: Java plus a jar that farasapy downloads on first use."""
    problem = None
    try:
        import farasa  # noqa: F401
    except ImportError:
        problem = "the farasapy package is not installed (pip install farasapy)"
    if problem is None and shutil.which("java") is None:
        problem = "Java is not on PATH (Farasa is a Java program)"
    if problem is None:
        try:
            from farasa.segmenter import FarasaSegmenter

            FarasaSegmenter(interactive=True).segment("اختبار")
        except Exception as err:  # farasapy raises bare Exceptions when its download fails
            problem = (
                f"Farasa could not start ({type(err).__name__}: {err}); it downloads its jar "
                "on first use, which needs the internet"
            )
    if problem:
        raise PreprocessingError(
            f"{model_name} expects Farasa-segmented input, but {problem}. Use "
            "aubmindlab/bert-base-arabertv02 (no segmentation; configs/arabert/), or run once "
            "with internet access so farasapy can fetch its jar."
        )
