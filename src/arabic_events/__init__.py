"""arabic-events: sentence-level event typing for Arabic news."""

from arabic_events.labels import LABELS

__version__ = "0.1.0"
__all__ = ["LABELS", "__version__"]
