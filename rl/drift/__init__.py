"""Drift detection: is the market still the one the model learned, does it still act and earn as it did?

* ``DriftReference`` (``reference.py``): the model's training features, validation actions and trades;
  saved with the model (``drift_reference.json``).
* ``DriftMonitors`` (``monitors.py``): streaming monitors (features, actions, performance), each
  OK / WARN / ALARM, fed one bar and one closed trade at a time (the live loop does).
* ``DriftConfig`` (``drift_config.py``): thresholds, and what WARN and ALARM do in a live run.
* ``drift_check`` (``offline.py``): the same monitors over a bar file (``tradebot drift check``).
"""

from tradebot.rl.drift.drift_config import DriftConfig
from tradebot.rl.drift.monitors import DriftMonitors, MonitorState, Transition
from tradebot.rl.drift.reference import REFERENCE_FILE, DriftReference, build_reference

__all__ = ["REFERENCE_FILE", "DriftConfig", "DriftMonitors", "DriftReference", "MonitorState", "Transition",
           "build_reference"]
