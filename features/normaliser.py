"""Causal normalisation of feature columns (rolling / expanding z-scores), with a JSON-ready state."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from tradebot.features.feature_config import NormalisationConfig

_STD_FLOOR = 1e-12

# ---------------------------------------------------------------------------------- normaliser
def _to_json_array(a: np.ndarray) -> list:
    """Floats to a list (NaN -> None, so the state is strict JSON); float64 round-trips exactly."""
    return np.where(np.isnan(a), None, a).tolist()


def _from_json_array(values: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    a = np.array(values if values is not None else [], dtype=np.float64)
    return a.reshape((-1, *shape_tail)) if shape_tail else a


class CausalNormaliser:
    """Causal z-score of selected columns: rolling, expanding or none (see the module docstring).

    ``transform(raw)`` normalises a whole matrix at once (each row from rows <= itself);
    ``update(row)`` does the same for one new row and keeps the state; ``fit_state(raw)`` sets the
    state as if every row of ``raw`` had been passed to ``update``.
    """

    def __init__(self, config: NormalisationConfig, zscore: np.ndarray):
        self.config = config
        self.zscore = np.asarray(zscore, dtype=bool)
        self.cols = np.flatnonzero(self.zscore)
        self.reset()

    def reset(self) -> None:
        k, w = len(self.cols), self.config.window
        if self.config.method == "rolling":
            self._buf = np.full((2 * w, k), np.nan)
            self._end = 0  # rows self._buf[max(0, end - w):end] are the window
        else:
            self._count = np.zeros(k)
            self._mean = np.zeros(k)
            self._m2 = np.zeros(k)

    def _finish(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray, count: np.ndarray) -> np.ndarray:
        cfg = self.config
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(std > _STD_FLOOR, (x - mean) / std, 0.0)
        z = np.where((count >= cfg.min_periods) & ~np.isnan(x), z, np.nan)
        return np.clip(z, -cfg.clip, cfg.clip)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        out = np.array(raw, dtype=np.float64, copy=True)
        if self.config.method == "none" or len(self.cols) == 0:
            return out
        cfg = self.config
        x = pd.DataFrame(out[:, self.cols])
        roll = x.rolling(cfg.window, min_periods=1) if cfg.method == "rolling" else x.expanding(min_periods=1)
        mean, std, count = roll.mean().to_numpy(), roll.std(ddof=1).to_numpy(), roll.count().to_numpy()
        out[:, self.cols] = self._finish(x.to_numpy(), mean, std, count)
        return out

    def update(self, row: np.ndarray) -> np.ndarray:
        out = np.array(row, dtype=np.float64, copy=True)
        if self.config.method == "none" or len(self.cols) == 0:
            return out
        x = out[self.cols]
        if self.config.method == "rolling":
            w = self.config.window
            if self._end == len(self._buf):
                self._buf[: w - 1] = self._buf[self._end - w + 1:self._end]
                self._end = w - 1
            self._buf[self._end] = x
            self._end += 1
            win = self._buf[max(0, self._end - w):self._end]
            if np.isnan(win).any():
                count = np.count_nonzero(~np.isnan(win), axis=0).astype(np.float64)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(win, axis=0)
                    std = np.nanstd(win, axis=0, ddof=1)
            else:
                count = np.full(len(self.cols), float(len(win)))
                mean = win.mean(axis=0)
                std = win.std(axis=0, ddof=1) if len(win) > 1 else np.full(len(self.cols), np.nan)
        else:  # expanding, Welford per column, NaN skipped
            ok = ~np.isnan(x)
            self._count[ok] += 1
            delta = x[ok] - self._mean[ok]
            self._mean[ok] += delta / self._count[ok]
            self._m2[ok] += delta * (x[ok] - self._mean[ok])
            count, mean = self._count.copy(), self._mean.copy()
            with np.errstate(invalid="ignore", divide="ignore"):
                std = np.where(count > 1, np.sqrt(self._m2 / np.maximum(count - 1, 1)), np.nan)
        out[self.cols] = self._finish(x, mean, std, count)
        return out

    def fit_state(self, raw: np.ndarray) -> None:
        self.reset()
        if self.config.method == "none" or len(self.cols) == 0 or len(raw) == 0:
            return
        x = np.asarray(raw, dtype=np.float64)[:, self.cols]
        if self.config.method == "rolling":
            tail = x[-self.config.window:]
            self._buf[: len(tail)] = tail
            self._end = len(tail)
        else:
            ok = ~np.isnan(x)
            self._count = ok.sum(axis=0).astype(np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(x, axis=0)
            self._mean = np.where(self._count > 0, mean, 0.0)
            self._m2 = np.nansum((x - self._mean) ** 2, axis=0)

    def state_dict(self) -> dict[str, Any]:
        cfg = self.config
        state: dict[str, Any] = {"method": cfg.method, "window": cfg.window, "min_periods": cfg.min_periods,
                                 "clip": cfg.clip, "columns": self.cols.tolist()}
        if cfg.method == "rolling":
            state["values"] = _to_json_array(self._buf[max(0, self._end - cfg.window):self._end])
        elif cfg.method == "expanding":
            state.update(count=self._count.tolist(), mean=_to_json_array(self._mean), m2=_to_json_array(self._m2))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        cfg = self.config
        mine = {"method": cfg.method, "window": cfg.window, "min_periods": cfg.min_periods, "clip": cfg.clip,
                "columns": self.cols.tolist()}
        for key, value in mine.items():
            if state.get(key) != value:
                raise ValueError(f"normaliser state has {key}={state.get(key)!r}, this normaliser {value!r}")
        self.reset()
        k = len(self.cols)
        if cfg.method == "rolling":
            values = _from_json_array(state["values"], (k,))
            self._buf[: len(values)] = values
            self._end = len(values)
        elif cfg.method == "expanding":
            self._count = _from_json_array(state["count"])
            self._mean = _from_json_array(state["mean"])
            self._m2 = _from_json_array(state["m2"])
