"""arabic-events: sentence-level event typing for Arabic news."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from arabic_events.labels import LABELS

if TYPE_CHECKING:
    from arabic_events.inference import EventClassifier

__version__ = "0.1.0"
__all__ = ["LABELS", "EventClassifier", "__version__"]


def __getattr__(name: str) -> Any:
    """Import `EventClassifier` (torch, transformers) only when it is first used."""
    if name == "EventClassifier":
        from arabic_events.inference import EventClassifier

        return EventClassifier
    raise AttributeError(f"module 'arabic_events' has no attribute {name!r}")
