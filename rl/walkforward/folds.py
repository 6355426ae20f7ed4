"""Walk-forward folds: how the trading sessions are cut into train / validation / test windows.

The fold rule
-------------
Sessions are the IST trading dates that have bars in ``[data.start, data.end)``.

* ``unit: sessions``: fold ``k`` trains on ``train`` sessions starting at session ``k * step``
  (``anchored``: always at the first session, growing by ``step``), skips ``purge`` sessions,
  validates on the next ``validation`` sessions, skips ``purge`` sessions, tests on the next
  ``test`` sessions.
* ``unit: months``: the same with calendar months (``train``/``validation``/``test``/``step``
  counted in months from the first month with data); the purge gaps (in sessions) are cut from the
  end of the training window and from the end of the validation window, so each test window is a
  whole calendar month (or several).
* Folds continue while the test window lies inside the data; ``max_folds`` keeps the first N.
* ``step`` must be at least ``test``: test windows never overlap, and the stitched out-of-sample
  record uses each session at most once. ``embargo``: the first ``embargo`` sessions after a test
  window are also left out of the next fold's test window (training always precedes testing in a
  walk-forward, so the embargo of purged k-fold CV, which drops training data that follows a test
  window, has nothing to drop inside a fold; here it keeps consecutive test windows apart).
* Train -> validation -> test never overlap and are strictly ordered (tested).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from pydantic import Field, model_validator

from tradebot.core.config import FrozenConfig
from tradebot.core.errors import UserInputError
from tradebot.rl.train_config import DateRange

_DAY = dt.timedelta(days=1)


class FoldSpec(FrozenConfig):
    """How the dates are cut into train / validation / test windows (see the module docstring)."""

    unit: Literal["sessions", "months"] = Field("months", description="unit of train/validation/test/step")
    train: int = Field(6, ge=1, description="training window length")
    validation: int = Field(1, ge=1, description="validation window length")
    test: int = Field(1, ge=1, description="test window length")
    step: int | None = Field(None, ge=1, description="shift between folds; null: the test length")
    purge: int = Field(0, ge=0, description="sessions left out between train and validation and between "
                                            "validation and test")
    embargo: int = Field(0, ge=0, description="sessions after a test window left out of the next test window")
    anchored: bool = Field(False, description="training windows all start at the first session and grow")
    max_folds: int | None = Field(None, ge=1, description="keep only the first N folds")

    @property
    def step_size(self) -> int:
        return self.step if self.step is not None else self.test

    @model_validator(mode="after")
    def _no_overlapping_tests(self) -> "FoldSpec":
        if self.step_size < self.test:
            raise ValueError(f"step {self.step_size} is shorter than the test window {self.test}: test windows "
                             "would overlap; use step >= test")
        return self


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: the IST sessions of each window (each tuple sorted, windows in order)."""

    index: int
    train: tuple[dt.date, ...]
    validation: tuple[dt.date, ...]
    test: tuple[dt.date, ...]
    purged: tuple[dt.date, ...] = ()  # sessions left out between the windows (purge gaps)
    embargoed: tuple[dt.date, ...] = ()  # sessions left out of the start of the test window

    @property
    def train_range(self) -> DateRange:
        return DateRange(start=self.train[0], end=self.train[-1] + _DAY)

    @property
    def validation_range(self) -> DateRange:
        return DateRange(start=self.validation[0], end=self.validation[-1] + _DAY)

    @property
    def test_range(self) -> DateRange:
        return DateRange(start=self.test[0], end=self.test[-1] + _DAY)

    @property
    def label(self) -> str:
        return f"fold {self.index} (test {self.test[0]}..{self.test[-1]})"

    def to_dict(self) -> dict[str, Any]:
        def window(days: tuple[dt.date, ...]) -> dict[str, Any]:
            return {"first": days[0].isoformat(), "last": days[-1].isoformat(), "sessions": len(days)}

        return {"index": self.index, "train": window(self.train), "validation": window(self.validation),
                "test": window(self.test), "purged": [d.isoformat() for d in self.purged],
                "embargoed": [d.isoformat() for d in self.embargoed]}


def trading_sessions(index: pd.DatetimeIndex, start: dt.date | None = None,
                     end: dt.date | None = None) -> list[dt.date]:
    """The IST calendar dates that have bars, sorted, within ``[start, end)``."""
    from tradebot.core.nse_time import IST

    days = pd.DatetimeIndex(index).tz_convert(IST).normalize().unique()
    out = sorted({d.date() for d in days})
    return [d for d in out if (start is None or d >= start) and (end is None or d < end)]


def _month_key(d: dt.date) -> int:
    return d.year * 12 + d.month - 1


def _window_months(sessions: Sequence[dt.date], first_month: int, lo: int, hi: int) -> list[dt.date]:
    """Sessions in calendar months ``[first_month + lo, first_month + hi)``."""
    return [d for d in sessions if first_month + lo <= _month_key(d) < first_month + hi]


def _month_end(key: int) -> dt.date:
    """The day after the last day of month ``key``."""
    year, month = divmod(key, 12)
    return dt.date(year, month + 1, calendar.monthrange(year, month + 1)[1]) + _DAY


def make_folds(sessions: Sequence[dt.date], spec: FoldSpec, end: dt.date | None = None) -> list[Fold]:
    """The walk-forward folds over ``sessions`` (sorted IST dates) by the rule in the module docstring.

    ``end``: the first day after the usable data (months unit: a test month must end by then); None:
    the day after the last session.
    """
    sessions = sorted(sessions)
    if not sessions:
        return []
    end = end or sessions[-1] + _DAY
    raw: list[tuple[list[dt.date], list[dt.date], list[dt.date], list[dt.date]]] = []
    step, p = spec.step_size, spec.purge
    k = 0
    while spec.max_folds is None or len(raw) < spec.max_folds:
        if spec.unit == "sessions":
            t0 = 0 if spec.anchored else k * step
            t1 = t0 + spec.train + (k * step if spec.anchored else 0)
            v0, v1 = t1 + p, t1 + p + spec.validation
            s0, s1 = v1 + p, v1 + p + spec.test
            if s1 > len(sessions):
                break
            train, val, test = sessions[t0:t1], sessions[v0:v1], sessions[s0:s1]
            purged = sessions[t1:v0] + sessions[v1:s0]
        else:
            m0 = _month_key(sessions[0])
            a = 0 if spec.anchored else k * step
            b = spec.train + k * step
            c = b + spec.validation
            e = c + spec.test
            if _month_end(m0 + e - 1) > end or not _window_months(sessions, m0, c, e):
                break
            train_all = _window_months(sessions, m0, a, b)
            val_all = _window_months(sessions, m0, b, c)
            train, val = train_all[:len(train_all) - p], val_all[:len(val_all) - p]
            purged = train_all[len(train_all) - p:] + val_all[len(val_all) - p:] if p else []
            test = _window_months(sessions, m0, c, e)
        if not train or not val or not test:
            raise UserInputError(f"fold {k}: the purge of {p} sessions leaves an empty training or validation "
                                 "window; lower folds.purge or lengthen the windows")
        raw.append((train, val, test, purged))
        k += 1
    folds: list[Fold] = []
    position = {d: i for i, d in enumerate(sessions)}
    for i, (train, val, test, purged) in enumerate(raw):
        embargoed: list[dt.date] = []
        if i > 0 and spec.embargo:
            last_test = position[raw[i - 1][2][-1]]
            embargoed = [d for d in test if position[d] <= last_test + spec.embargo]
            test = [d for d in test if position[d] > last_test + spec.embargo]
            if not test:
                raise UserInputError(f"fold {i}: the embargo of {spec.embargo} sessions empties its test window; "
                                     "lower folds.embargo or raise folds.step")
        folds.append(Fold(i, tuple(train), tuple(val), tuple(test), tuple(purged), tuple(embargoed)))
    return folds
