"""Scoring: how well a user turn, or a whole conversation, centred the other person.

``default_scorer()`` returns the shared :class:`OfflineScorer` (built lazily, once). The heavy parts
(pattern tables, model weights) load on first use, so importing this package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.scoring.base import (
    CONNECTOR_MIN,
    LABELS,
    MIXED_MIN,
    ROLES,
    ConversationScore,
    Label,
    Role,
    Scorer,
    Turn,
    TurnScore,
    Verdict,
    verdict_for,
)

if TYPE_CHECKING:  # pragma: no cover
    from bot.scoring.offline import OfflineScorer

__all__ = [
    "CONNECTOR_MIN",
    "LABELS",
    "MIXED_MIN",
    "ROLES",
    "ConversationScore",
    "Label",
    "OfflineScorer",
    "Role",
    "Scorer",
    "Turn",
    "TurnScore",
    "Verdict",
    "default_scorer",
    "verdict_for",
]


def default_scorer() -> "OfflineScorer":
    """The shared offline scorer (deterministic, thread-safe, built on first call)."""
    from bot.scoring.offline import default_scorer as _default

    return _default()


def __getattr__(name: str):
    if name == "OfflineScorer":
        from bot.scoring.offline import OfflineScorer

        return OfflineScorer
    raise AttributeError(f"module 'bot.scoring' has no attribute {name!r}")
