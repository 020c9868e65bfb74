"""A block of a model card that a command measures and writes under its own key (the
calibration, the serving profile): read it from a card, put it into a copy of one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

__all__ = ["CardBlock"]

B = TypeVar("B", bound="CardBlock")


class CardBlock:
    """Mixin for a frozen dataclass with ``from_dict(block, where)`` and ``to_dict()``."""

    CARD_KEY: ClassVar[str]

    @classmethod
    def from_dict(cls: type[B], block: Any, where: str) -> B:  # pragma: no cover - each block has its own
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - each block has its own
        raise NotImplementedError

    @classmethod
    def from_card(cls: type[B], card: Mapping[str, Any], where: str = "model card") -> B | None:
        """The card's block, or None when it has none (then serve as before)."""
        block = card.get(cls.CARD_KEY)
        if block is None:
            return None
        return cls.from_dict(block, f"{where} {cls.CARD_KEY!r}")

    def into_card(self, card: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``card`` with this block under its key; nothing else changes."""
        out = dict(card)
        out[self.CARD_KEY] = self.to_dict()
        return out
