"""The five event labels of the annotation guideline and their ontology codes."""

from __future__ import annotations

import difflib

LABELS: tuple[str, ...] = (
    "airstrike",
    "arrest",
    "base_handover",
    "statement",
    "political_pressure",
)
"""Label names, exact and lower-case, in the order used for model outputs."""

ONTOLOGY: dict[str, dict[str, str]] = {
    "airstrike": {
        "acled": "Air/drone strike",
        "plover": "ASSAULT (aerial; drone)",
        "cameo": "195",
    },
    "arrest": {
        "acled": "Arrests",
        "plover": "COERCE (arrest)",
        "cameo": "173",
    },
    "base_handover": {
        "acled": "Non-violent transfer of territory",
        "plover": "RETREAT (withdraw)",
        "cameo": "0874",
    },
    "statement": {
        "acled": "",
        "plover": "",
        "cameo": "010",
    },
    "political_pressure": {
        "acled": "",
        "plover": "REQUEST (change; yield)",
        "cameo": "10",
    },
}
"""Approximate correspondence with ACLED sub-event types, PLOVER events and CAMEO codes
(guideline, section "Correspondence with event ontologies"); empty where none exists."""


def label2id(labels: tuple[str, ...] | list[str] = LABELS) -> dict[str, int]:
    """Map each label name to its output index."""
    return {name: i for i, name in enumerate(labels)}


def id2label(labels: tuple[str, ...] | list[str] = LABELS) -> dict[int, str]:
    """Map each output index to its label name."""
    return dict(enumerate(labels))


def check_labels(found: list[str], where: str, known: tuple[str, ...] | list[str] = LABELS) -> None:
    """Raise ``ValueError`` naming ``where`` if ``found`` holds a label outside ``known``.

    Args:
        found: Label names read from data.
        where: Where they were read (file and line), for the message.
        known: The valid label names.
    """
    for name in found:
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{where}: unknown label {name!r}.{hint} Valid labels: {', '.join(known)} "
                "(see the guideline, data/GUIDELINE.md)."
            )
