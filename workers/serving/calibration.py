"""Calibrated halting for the tiny recursive models: what a halting logit means, per checkpoint.

A TRM's halting head is trained with BCE against "the whole answer is correct", an HRM's
``q_halt`` the same way, so ``sigmoid(logit)`` was meant to be P(correct). Measured on held-out
items it is not: the heads of short CPU runs are over- or under-confident, and halting on
``logit > 0`` stops 9x9 sudoku after 1.8 steps at 78% exact where 8 steps give 94%.

A :class:`Calibration` fixes both per checkpoint, after training, on a held-out split
(``python -m workers.training.calibrate``). It maps the raw halting logit to a confidence that
means P(correct) on that checkpoint's items, either by a temperature and bias
(``sigmoid(logit / temperature + bias)``, Platt scaling) or by an isotonic map (a monotone
piecewise-linear curve through ``knots`` of (logit, confidence)), and it names the halting
threshold: a row halts at the first supervision step whose calibrated confidence reaches it.
It lives in the model card under ``"calibration"``; a card without one is served as before
(the model's own halting rule and ``sigmoid(logit)``).

The block in a card::

    "calibration": {
      "method": "isotonic",              # or "temperature"
      "threshold": 0.97,                  # halt once calibrated confidence >= threshold
      "temperature": 1.0, "bias": 0.0,    # used by method "temperature"
      "knots": [[-6.1, 0.002], ...],      # (logit, confidence), used by method "isotonic"
      "measured": {...}                   # what calibrate measured (numbers only, not read here)
    }

No torch here: :meth:`Calibration.apply` takes and returns numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast

import numpy as np
import numpy.typing as npt

from tinyfleet_core.errors import ConfigError
from workers.serving.card_block import CardBlock

__all__ = ["METHODS", "Calibration", "Method"]

Method = Literal["temperature", "isotonic"]
METHODS: tuple[Method, ...] = ("temperature", "isotonic")
CARD_KEY = "calibration"
_EPS = 1e-9
_FIX = "re-run `python -m workers.training.calibrate` on the checkpoint, or delete the card's \"calibration\" key"


@dataclass(frozen=True)
class Calibration(CardBlock):
    """How one checkpoint's halting logits become a confidence, and when a row halts.

    ``method`` "temperature": ``conf = sigmoid(logit / temperature + bias)``; "isotonic":
    ``conf`` is linear between ``knots`` (logit, confidence), both ascending, and flat beyond
    the first and last. A row halts at the first step with ``conf >= threshold``; threshold 1.0
    is above every confidence either method gives, so it means "always run the step cap" (both are clipped to [1e-9, 1 - 1e-9])."""

    CARD_KEY: ClassVar[str] = CARD_KEY

    method: Method
    threshold: float
    temperature: float = 1.0
    bias: float = 0.0
    knots: tuple[tuple[float, float], ...] = ()
    measured: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check("calibration")

    # ----------------------------------------------------------------------------------- #

    def apply(self, logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Calibrated confidence in [0, 1] for raw halting logits of any shape."""
        h = np.asarray(logits, dtype=np.float64)
        if self.method == "temperature":
            z = h / self.temperature + self.bias
            conf: npt.NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
            return np.clip(conf, _EPS, 1.0 - _EPS)  # so threshold 1.0 means "never halt early"
        xs = np.fromiter((k[0] for k in self.knots), np.float64, len(self.knots))
        ys = np.fromiter((k[1] for k in self.knots), np.float64, len(self.knots))
        return np.clip(np.interp(h, xs, ys), _EPS, 1.0 - _EPS)

    def halts(self, logits: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """True where a row with these logits halts."""
        return self.apply(logits) >= self.threshold

    # ----------------------------------------------------------------------------------- #
    # the card's "calibration" block

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "threshold": self.threshold,
            "temperature": self.temperature,
            "bias": self.bias,
            "knots": [[x, y] for x, y in self.knots],
        }
        if self.measured:
            out["measured"] = dict(self.measured)
        return out

    @classmethod
    def from_dict(cls, block: object, where: str = "calibration") -> Calibration:
        """Parse a card's block; a ConfigError naming ``where`` and the bad field otherwise."""
        if not isinstance(block, Mapping):
            raise ConfigError(f"{where} must be an object with method and threshold, got {type(block).__name__}; {_FIX}")
        unknown = set(block) - {"method", "threshold", "temperature", "bias", "knots", "measured"}
        if unknown:
            raise ConfigError(f"{where} has unknown field(s) {sorted(unknown)}; {_FIX}")
        method = block.get("method")
        if method not in METHODS:
            raise ConfigError(f"{where}.method must be one of {list(METHODS)}, got {method!r}; {_FIX}")
        raw_knots = block.get("knots", [])
        if not isinstance(raw_knots, list) or not all(
            isinstance(k, (list, tuple)) and len(k) == 2 for k in raw_knots
        ):
            raise ConfigError(f"{where}.knots must be a list of [logit, confidence] pairs; {_FIX}")
        measured = block.get("measured", {})
        if not isinstance(measured, Mapping):
            raise ConfigError(f"{where}.measured must be an object, got {type(measured).__name__}; {_FIX}")
        try:
            knots = tuple((_num(k[0], f"{where}.knots"), _num(k[1], f"{where}.knots")) for k in raw_knots)
            threshold = _num(block.get("threshold"), f"{where}.threshold")
            temperature = _num(block.get("temperature", 1.0), f"{where}.temperature")
            bias = _num(block.get("bias", 0.0), f"{where}.bias")
            _validate(method, threshold, temperature, bias, knots, where)
        except _Bad as e:
            raise ConfigError(f"{e}; {_FIX}") from None
        return cls(cast(Method, method), threshold, temperature, bias, knots, dict(measured))

    # ----------------------------------------------------------------------------------- #

    def _check(self, where: str) -> None:
        try:
            _validate(self.method, self.threshold, self.temperature, self.bias, self.knots, where)
        except _Bad as e:
            raise ConfigError(f"{e}; {_FIX}") from None


class _Bad(Exception):
    """A field failed validation (turned into one ConfigError with the fix appended)."""


def _num(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _validate(
    method: object, threshold: float, temperature: float, bias: float,
    knots: tuple[tuple[float, float], ...], where: str,
) -> None:
    if method not in METHODS:
        raise _Bad(f"{where}.method must be one of {list(METHODS)}, got {method!r}")
    for name, value in (("threshold", threshold), ("temperature", temperature), ("bias", bias)):
        _num(value, f"{where}.{name}")
    if not 0.0 <= threshold <= 1.0:
        raise _Bad(f"{where}.threshold must be a confidence in [0, 1], got {threshold}")
    if temperature <= 0:
        raise _Bad(f"{where}.temperature must be positive, got {temperature}")
    if method == "isotonic":
        if not knots:
            raise _Bad(f"{where}.knots must hold at least one [logit, confidence] pair for method 'isotonic'")
        xs = [x for x, _ in knots]
        ys = [y for _, y in knots]
        if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
            raise _Bad(f"{where}.knots' logits must be strictly ascending")
        if any(b < a for a, b in zip(ys, ys[1:], strict=False)):
            raise _Bad(f"{where}.knots' confidences must not decrease (the map is monotone)")
        if not all(0.0 <= y <= 1.0 for y in ys):
            raise _Bad(f"{where}.knots' confidences must lie in [0, 1]")
