"""Drift monitor settings (YAML section ``drift`` of the live config, or ``tradebot drift check --config``).

The thresholds below were chosen from measured false-alarm rates and times to alarm (docs/results.md,
"Drift detection"; ``bench/drift.py`` reproduces the figures). A monitor leaves WARN or ALARM only
when its statistic is 10 % of the threshold back past it (no flapping at a threshold).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tradebot.core.config import FrozenConfig


class FeatureDriftConfig(FrozenConfig):
    """Market features against their training percentiles.

    Each bar, every feature value becomes its training percentile u; the bar's score is
    3 x mean over features of (2u - 1)^2, which is 1 on average when the features are distributed as
    in training. river's ADWIN keeps the longest recent window without a change in that score; its
    mean's distance from 1 is the drift statistic.
    """

    enabled: bool = True
    warn: float = Field(0.5, gt=0, description="|window mean score - 1| at or above this: WARN")
    alarm: float = Field(0.7, gt=0, description="|window mean score - 1| at or above this: ALARM")
    min_bars: int = Field(150, ge=10, description="bars in the window before any state but OK")
    delta: float = Field(0.002, gt=0, lt=1, description="ADWIN's confidence parameter")

    @model_validator(mode="after")
    def _ordered(self) -> FeatureDriftConfig:
        if self.alarm < self.warn:
            raise ValueError("alarm must be at or above warn")
        return self


class ActionDriftConfig(FrozenConfig):
    """The policy's action frequencies against those of its out-of-sample validation: the
    Jensen-Shannon distance (scipy, base 2, in [0, 1]) between the frequencies of the last ``window``
    decisions and the reference's."""

    enabled: bool = True
    window: int = Field(750, ge=10, description="decisions in the rolling window (750: ten sessions of 5m bars)")
    warn: float = Field(0.25, gt=0, le=1, description="Jensen-Shannon distance at or above this: WARN")
    alarm: float = Field(0.4, gt=0, le=1, description="Jensen-Shannon distance at or above this: ALARM")
    min_decisions: int = Field(375, ge=10, description="decisions seen before any state but OK")

    @model_validator(mode="after")
    def _ordered(self) -> ActionDriftConfig:
        if self.alarm < self.warn:
            raise ValueError("alarm must be at or above warn")
        if self.min_decisions > self.window:
            raise ValueError("min_decisions must not exceed window")
        return self


class PerformanceDriftConfig(FrozenConfig):
    """Closed trades' net returns and hit rate against the validation reference (one-sided: decay).

    river's ADWIN keeps the recent trades without a change; their mean net return is compared with
    the reference mean as a z-score, and their wins with the reference hit rate by a one-sided
    binomial test (scipy).
    """

    enabled: bool = True
    z_warn: float = Field(-2.0, lt=0, description="z of the window's mean net return at or below this: WARN")
    z_alarm: float = Field(-3.0, lt=0, description="z at or below this: ALARM")
    p_warn: float = Field(0.05, gt=0, lt=1, description="binomial p-value of the window's hit rate at or below: WARN")
    p_alarm: float = Field(0.01, gt=0, lt=1, description="... at or below: ALARM")
    min_trades: int = Field(10, ge=3, description="trades seen before any state but OK")
    delta: float = Field(0.002, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> PerformanceDriftConfig:
        if self.z_alarm > self.z_warn or self.p_alarm > self.p_warn:
            raise ValueError("the alarm thresholds must be stricter than the warn thresholds")
        return self


class DriftConfig(FrozenConfig):
    """The three monitors and what their states do in a live run."""

    features: FeatureDriftConfig = FeatureDriftConfig()
    actions: ActionDriftConfig = ActionDriftConfig()
    performance: PerformanceDriftConfig = PerformanceDriftConfig()
    on_alarm: Literal["reduce", "halt", "none"] = Field(
        "reduce", description="risk engine on any ALARM: REDUCING (exits only), HALTED (flatten), or nothing")
    on_warn: Literal["retrain_request", "none"] = Field(
        "retrain_request", description="on any WARN: journal a retraining request, or nothing")
