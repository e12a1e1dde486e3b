"""Preprocessing: AraBERT v02 through the arabert package, normalisation, saving and loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from arabic_events.config import ModelConfig, NormalizeConfig
from arabic_events.preprocess import (
    PreprocessingError,
    Preprocessor,
    arabert_name,
    normalize_arabic,
)


def test_normalisation_of_diacritics_tatweel_alef_and_digits():
    text = "قَالَ وزيـــر الدفاع إنّ ٣ غارات أصابت ٢٫٥ كم"
    assert normalize_arabic(text) == "قال وزير الدفاع ان 3 غارات اصابت 2.5 كم"


def test_normalisation_options_are_independent():
    settings = NormalizeConfig(alef=False, digits=False, ta_marbuta=True, alef_maqsura=True)
    assert normalize_arabic("أعلنت القوة مستشفى ٣", settings) == "أعلنت القوه مستشفي ٣"


def test_auto_picks_arabert_preprocessing_for_arabert_models():
    prep = Preprocessor.from_config(ModelConfig(name_or_path="aubmindlab/bert-base-arabertv02"))
    assert prep.kind == "arabert" and prep.arabert_model == "bert-base-arabertv02"
    out = prep('نفذ طيران التحالف ضربات على "داعش" في العراق، 14 أيار/مايو.')
    assert '" داعش "' in out and "أيار - مايو" in out  # arabert v02 spacing and slash rules
    assert Preprocessor.from_config(ModelConfig(name_or_path="e5-small")).kind == "normalize"


def test_local_arabert_folder_keeps_the_model_name():
    assert arabert_name("/models/copies/bert-base-arabertv02/") == "bert-base-arabertv02"


def test_unknown_arabert_model_is_an_error_not_a_silent_fallback():
    with pytest.raises(PreprocessingError, match="does not know the model 'bert-base-arabertv9'"):
        Preprocessor(kind="arabert", arabert_model="bert-base-arabertv9")


def test_segmented_arabert_fails_clearly_without_farasa(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)  # as on a machine without Java
    with pytest.raises(PreprocessingError) as err:
        Preprocessor(kind="arabert", arabert_model="bert-base-arabertv2")
    message = str(err.value)
    assert "Farasa" in message and "bert-base-arabertv02" in message


def test_settings_round_trip_through_the_run_directory(tmp_path: Path):
    prep = Preprocessor(kind="normalize", normalize=NormalizeConfig(digits=False))
    prep.save(tmp_path)
    again = Preprocessor.load(tmp_path)
    assert again.to_dict() == prep.to_dict()
    assert again("٣ غاراتٍ") == prep("٣ غاراتٍ") == "٣ غارات"


def test_missing_preprocessing_file_is_explained(tmp_path: Path):
    with pytest.raises(PreprocessingError, match="not written by `arabic-events train`"):
        Preprocessor.load(tmp_path)
