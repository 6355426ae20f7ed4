"""Text forms of run records: JSON (numpy-aware, non-finite numbers as null) and CSV (ISO timestamps)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd


def _default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    return str(obj)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def json_text(data: Any) -> str:
    """Indented JSON with a final newline; NaN and infinities become null (JSON has neither)."""
    return json.dumps(_clean(data), indent=2, allow_nan=False, default=_default, ensure_ascii=False) + "\n"


def csv_text(frame: pd.DataFrame, index: bool) -> str:
    """CSV with ISO 8601 timestamps (offset kept) and full float precision."""
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = [t.isoformat() if pd.notna(t) else "" for t in out[col]]
    if index and isinstance(out.index, pd.DatetimeIndex):
        out.index = pd.Index([t.isoformat() for t in out.index], name=out.index.name or "timestamp")
    return out.to_csv(index=index, float_format="%.10g")
