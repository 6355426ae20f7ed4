"""One self-contained HTML report of a backtest: charts, metrics, monthly returns and the run's config.

``write_report(result, bars, metrics, path, title)`` writes a single ``report.html`` that opens
offline: plotly.js is embedded once, inline (no CDN, nothing fetched at view time). Contents:

* price (candles, aggregated when there are many bars) with trade entries and exits marked, the
  equity curve (with the instrument itself, scaled to the starting capital, for reference) and the
  underwater (drawdown) curve, on one shared, zoomable time axis with nights, weekends and
  holidays removed;
* monthly returns as a heatmap;
* the metrics table (``tradebot.envs.performance.M``), notes on undefined metrics, a trade summary;
* the run's configuration (strategy, engine settings, data file), as given by the caller;
* for a mixture of experts (``decisions``: one row per decision with ``w_<expert>`` weights and the
  chosen ``expert``, as ``decisions.csv`` holds them): the equity curve shaded by the chosen expert
  (one background band per stretch of decisions with the same expert) above the gate's weights per
  expert over time (stacked to 1), each expert's share of the decisions in the legend.

Long series are thinned for display only (lines keep each bucket's first, lowest, highest and last
point, so peaks and troughs survive; candles are merged within a session), which keeps the file a
few megabytes even for years of minute bars.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.offline as po
from plotly.subplots import make_subplots

from tradebot.envs.performance import DRAWDOWN_WINDOW_DAYS, METRIC_LABELS, M, Metrics, drawdown_series, format_metric, worst_window_drawdown
from tradebot.features.bars import Bars
from tradebot.core.nse_time import IST, SESSION_CLOSE_MINUTE, SESSION_OPEN_MINUTE, is_intraday, session_day
from tradebot.core.files import write_text_atomic
from tradebot.core.serialize import csv_text, json_text

MAX_LINE_POINTS = 6000
MAX_CANDLES = 2500
MAX_TRADE_MARKERS = 4000
MAX_REGIME_BANDS = 400  # background bands of the chosen expert: decisions are bucketed above this

_GREEN, _RED, _BLUE, _GREY = "#1a9850", "#d73027", "#2c7fb8", "#9e9e9e"
_EXPERT_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# --------------------------------------------------------------------------- display helpers

def _local(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """IST wall-clock time without the zone: what plotly should print on the axis."""
    index = pd.DatetimeIndex(index)
    return index.tz_convert(IST).tz_localize(None) if index.tz is not None else index


def thin_line(series: pd.Series, max_points: int = MAX_LINE_POINTS) -> pd.Series:
    """At most about ``max_points`` points for a line chart, keeping each bucket's extremes.

    Each bucket of consecutive points keeps its first, lowest, highest and last point (in time order),
    so a drawdown's trough or an equity peak is never smoothed away.
    """
    n = len(series)
    if n <= max_points:
        return series
    buckets = max(1, max_points // 4)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    values = series.to_numpy(dtype="float64")
    keep: list[int] = []
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        seg = values[a:b]
        keep.extend((a, a + int(np.nanargmin(seg)), a + int(np.nanargmax(seg)), b - 1))
    return series.iloc[np.unique(np.asarray(keep, dtype=np.int64))]


def aggregate_candles(frame: pd.DataFrame, max_candles: int = MAX_CANDLES) -> tuple[pd.DataFrame, int]:
    """Merge consecutive bars of the same session into at most about ``max_candles`` candles.

    Returns the candles (labelled by their first bar) and how many bars each merges (1 = untouched).
    """
    n = len(frame)
    if n <= max_candles:
        return frame, 1
    k = int(math.ceil(n / max_candles))
    day = session_day(frame.index)
    pos_in_day = pd.Series(np.arange(n)).groupby(day).cumcount().to_numpy()
    key = day * 1_000_000 + pos_in_day // k
    grouped = frame.groupby(key, sort=False)
    out = pd.DataFrame({
        "open": grouped["open"].first().to_numpy(),
        "high": grouped["high"].max().to_numpy(),
        "low": grouped["low"].min().to_numpy(),
        "close": grouped["close"].last().to_numpy(),
    }, index=frame.index[np.flatnonzero(np.r_[True, key[1:] != key[:-1]])])
    return out, k


def _rangebreaks(index: pd.DatetimeIndex, timeframe: str) -> list[dict[str, Any]]:
    """Hide weekends, trading holidays and (intraday) the hours outside the session."""
    local = _local(index)
    if len(local) == 0:
        return []
    days = pd.DatetimeIndex(local.normalize().unique())
    all_weekdays = pd.bdate_range(days.min(), days.max())
    holidays = all_weekdays.difference(days)
    breaks: list[dict[str, Any]] = [dict(bounds=["sat", "mon"])]
    if len(holidays):
        breaks.append(dict(values=[d.strftime("%Y-%m-%d") for d in holidays]))
    if is_intraday(timeframe):
        breaks.append(dict(bounds=[SESSION_CLOSE_MINUTE / 60.0, SESSION_OPEN_MINUTE / 60.0], pattern="hour"))
    return breaks


# --------------------------------------------------------------------------- trades

def trades_view(trades: pd.DataFrame | None) -> pd.DataFrame:
    """The report's view of a trade list: ``entry_time, exit_time, side (+1/-1), entry_price,
    exit_price, pnl, exit_reason``; columns the backtester names differently are mapped here."""
    cols = ["entry_time", "exit_time", "side", "entry_price", "exit_price", "pnl", "exit_reason"]
    if trades is None or len(trades) == 0:
        return pd.DataFrame(columns=cols)
    aliases = {
        "entry_time": ("entry_time", "entry_timestamp", "entry_ts", "entry"),
        "exit_time": ("exit_time", "exit_timestamp", "exit_ts", "exit"),
        "side": ("side", "direction"),
        "entry_price": ("entry_price",),
        "exit_price": ("exit_price",),
        "pnl": ("pnl", "net_pnl", "pnl_net"),
        "exit_reason": ("exit_reason", "reason"),
    }
    out = pd.DataFrame(index=range(len(trades)))
    for col, names in aliases.items():
        src = next((n for n in names if n in trades.columns), None)
        out[col] = trades[src].to_numpy() if src is not None else np.nan
    side = out["side"]
    if not pd.api.types.is_numeric_dtype(side.dtype):  # "long" / "short" (strings or categories)
        text = side.astype(str).str.lower()
        out["side"] = np.where(text.str.startswith(("s", "-")), -1, 1)
    out["side"] = pd.to_numeric(out["side"], errors="coerce").fillna(1).astype(int)
    out["side"] = np.where(out["side"] < 0, -1, 1)
    for col in ("entry_time", "exit_time"):
        out[col] = pd.to_datetime(out[col])
    return out


def _trade_markers(tv: pd.DataFrame) -> list[go.Scatter]:
    if len(tv) == 0:
        return []
    if len(tv) > MAX_TRADE_MARKERS:  # evenly spaced subset; the count is stated in the legend
        tv = tv.iloc[np.linspace(0, len(tv) - 1, MAX_TRADE_MARKERS).astype(int)]
    shown = f" ({len(tv):,} shown)" if len(tv) >= MAX_TRADE_MARKERS else ""
    traces = []
    for side, name, symbol, color in ((1, "long entry", "triangle-up", _GREEN), (-1, "short entry", "triangle-down", _RED)):
        t = tv[tv["side"] == side]
        if len(t):
            traces.append(go.Scatter(
                x=_local(pd.DatetimeIndex(t["entry_time"])), y=t["entry_price"], mode="markers", name=name + shown,
                marker=dict(symbol=symbol, size=9, color=color, line=dict(width=1, color="#333")),
                hovertemplate=f"{name}<br>%{{x}}<br>price %{{y:.2f}}<extra></extra>",
            ))
    closed = tv.dropna(subset=["exit_time"])
    if len(closed):
        pnl = closed["pnl"].to_numpy(dtype="float64")
        reason = closed["exit_reason"].astype(str).to_numpy()
        traces.append(go.Scatter(
            x=_local(pd.DatetimeIndex(closed["exit_time"])), y=closed["exit_price"], mode="markers", name="exit" + shown,
            marker=dict(symbol="x", size=8, color=np.where(pnl > 0, _GREEN, _RED)),
            customdata=np.column_stack([pnl, reason]),
            hovertemplate="exit (%{customdata[1]})<br>%{x}<br>price %{y:.2f}<br>P&L %{customdata[0]:,.2f}<extra></extra>",
        ))
    return traces


# --------------------------------------------------------------------------- figures

def _main_figure(bars: Bars, equity: pd.Series, trades: pd.DataFrame, initial_capital: float | None,
                 title: str) -> go.Figure:
    frame = bars.frame
    candles, k = aggregate_candles(frame[["open", "high", "low", "close"]])
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.5, 0.3, 0.2],
                        subplot_titles=(
                            f"{bars.symbol or 'price'} ({bars.timeframe}"
                            + (f" bars, shown as candles of {k} bars" if k > 1 else " bars") + ") and trades",
                            "Equity", "Drawdown (underwater)"))
    fig.add_trace(go.Candlestick(
        x=_local(candles.index), open=candles["open"], high=candles["high"], low=candles["low"], close=candles["close"],
        name="price", increasing_line_color=_GREEN, decreasing_line_color=_RED, showlegend=False,
    ), row=1, col=1)
    for tr in _trade_markers(trades):
        fig.add_trace(tr, row=1, col=1)

    eq = thin_line(equity)
    fig.add_trace(go.Scatter(x=_local(eq.index), y=eq.to_numpy(), name="equity", line=dict(color=_BLUE, width=1.6),
                             hovertemplate="%{x}<br>equity %{y:,.2f}<extra></extra>"), row=2, col=1)
    start = initial_capital if initial_capital is not None else (float(equity.iloc[0]) if len(equity) else 1.0)
    close = frame["close"]
    if len(close):
        ref = thin_line(close / close.iloc[0] * start)
        fig.add_trace(go.Scatter(x=_local(ref.index), y=ref.to_numpy(), name=f"{bars.symbol or 'instrument'} (scaled)",
                                 line=dict(color=_GREY, width=1, dash="dot"),
                                 hovertemplate="%{x}<br>instrument, scaled %{y:,.2f}<extra></extra>"), row=2, col=1)

    dd = thin_line(drawdown_series(equity, initial_capital) * 100.0)
    fig.add_trace(go.Scatter(x=_local(dd.index), y=dd.to_numpy(), name="drawdown %", fill="tozeroy",
                             line=dict(color=_RED, width=1), fillcolor="rgba(215,48,39,0.25)",
                             hovertemplate="%{x}<br>drawdown %{y:.2f}%<extra></extra>"), row=3, col=1)
    worst = worst_window_drawdown(equity, DRAWDOWN_WINDOW_DAYS, initial_capital)
    if worst.peak is not None and worst.trough is not None:
        x0, x1 = _local(pd.DatetimeIndex([worst.peak, worst.trough]))
        fig.add_vrect(x0=x0, x1=x1, fillcolor="rgba(255,165,0,0.18)", line_width=0, row=3, col=1,
                      annotation_text=f"worst {DRAWDOWN_WINDOW_DAYS}-day fall {worst.depth * 100:.1f}%",
                      annotation_position="bottom left", annotation_font_size=10)

    fig.update_xaxes(rangebreaks=_rangebreaks(frame.index, bars.timeframe))
    fig.update_xaxes(rangeslider_visible=False)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="₹", row=2, col=1)
    fig.update_yaxes(title_text="%", row=3, col=1)
    fig.update_layout(template="plotly_white", height=900, hovermode="x unified" if len(frame) < 3000 else "closest",
                      margin=dict(l=60, r=20, t=60, b=30), legend=dict(orientation="h", y=1.04, x=0),
                      title=dict(text=html.escape(title), x=0.01))
    return fig


def gate_weights(decisions: pd.DataFrame) -> pd.DataFrame:
    """The weight columns of ``decisions`` (``w_<expert>``), indexed by time, named by expert."""
    cols = [c for c in decisions.columns if c.startswith("w_")]
    out = decisions[cols].astype("float64")
    out.columns = [c[2:] for c in cols]
    out.index = pd.DatetimeIndex(pd.to_datetime(decisions["timestamp"]))
    return out


def _buckets(n: int, max_buckets: int) -> np.ndarray:
    """Bucket number of each of ``n`` consecutive rows: at most ``max_buckets`` equal runs."""
    return (np.arange(n) * min(n, max_buckets) // max(n, 1)).astype(np.int64)


def _gate_figure(decisions: pd.DataFrame, equity: pd.Series, bars: Bars) -> go.Figure:
    """Equity shaded by the chosen expert, and the gate's weights per expert over time (stacked)."""
    weights = gate_weights(decisions)
    experts = list(weights.columns)
    colour = {e: _EXPERT_COLOURS[i % len(_EXPERT_COLOURS)] for i, e in enumerate(experts)}
    chosen = decisions["expert"].astype(str).to_numpy()
    share = {e: float((chosen == e).mean()) if len(chosen) else 0.0 for e in experts}
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.55, 0.45],
                        subplot_titles=("Equity, shaded by the chosen expert", "Gate weights per expert (stacked)"))
    eq = thin_line(equity)
    fig.add_trace(go.Scatter(x=_local(eq.index), y=eq.to_numpy(), name="equity", line=dict(color=_BLUE, width=1.4),
                             hovertemplate="%{x}<br>equity %{y:,.2f}<extra></extra>"), row=1, col=1)
    # the bands: runs of the same chosen expert (in buckets of decisions, each its most chosen, when there are many)
    times = _local(weights.index)
    bucket = _buckets(len(chosen), MAX_REGIME_BANDS)
    first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])  # each bucket's first decision
    picked = np.array([pd.Series(part).mode().iloc[0] for part in np.split(chosen, first[1:])])
    runs = np.flatnonzero(np.r_[True, picked[1:] != picked[:-1]])  # each run's first bucket
    run = first[runs]  # each run's first decision
    end = _local(bars.index)[-1] if len(bars) else times[-1]
    shapes = [dict(type="rect", xref="x", yref="y domain", x0=times[a], x1=times[b] if b < len(times) else end,
                   y0=0, y1=1, fillcolor=colour.get(expert, _GREY), opacity=0.18, line_width=0, layer="below")
              for a, b, expert in zip(run, np.r_[run[1:], len(times)], picked[runs])]
    for e in experts:  # legend entries for the bands
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"chosen: {e} ({share[e] * 100:.0f}% of "
                                 "decisions)", marker=dict(symbol="square", size=12, color=colour[e], opacity=0.5)),
                      row=1, col=1)
    # the weights: bucket means (display only), stacked
    wb = _buckets(len(weights), MAX_LINE_POINTS)
    mean = weights.groupby(wb).mean()
    mean.index = times[np.flatnonzero(np.r_[True, wb[1:] != wb[:-1]])]
    for e in experts:
        fig.add_trace(go.Scatter(x=mean.index, y=mean[e].to_numpy(), name=f"weight: {e}", stackgroup="gate",
                                 mode="lines", line=dict(width=0.5, color=colour[e]),
                                 hovertemplate=f"%{{x}}<br>{html.escape(e)} %{{y:.3f}}<extra></extra>"), row=2, col=1)
    fig.update_layout(shapes=shapes)
    fig.update_xaxes(rangebreaks=_rangebreaks(bars.index, bars.timeframe))
    fig.update_yaxes(title_text="₹", row=1, col=1)
    fig.update_yaxes(title_text="weight", range=[0, 1], row=2, col=1)
    fig.update_layout(template="plotly_white", height=620, hovermode="closest",
                      margin=dict(l=60, r=20, t=60, b=30), legend=dict(orientation="h", y=1.08, x=0),
                      title=dict(text="Mixture of experts: the gate", x=0.01))
    return fig


def monthly_returns(equity: pd.Series, initial_capital: float | None = None) -> pd.DataFrame:
    """Calendar-month returns (fractions) as a year × month table (``Jan`` … ``Dec``, ``Year``)."""
    if len(equity) == 0:
        return pd.DataFrame(columns=list(_MONTHS) + ["Year"])
    local = equity.copy()
    local.index = _local(equity.index)
    month_end = local.groupby([local.index.year, local.index.month]).last()
    start = initial_capital if initial_capital is not None else float(local.iloc[0])
    prev = np.concatenate([[start], month_end.to_numpy()[:-1]])
    rets = month_end.to_numpy() / prev - 1.0
    table = pd.DataFrame(np.nan, index=sorted({y for y, _ in month_end.index}), columns=list(_MONTHS) + ["Year"])
    for (year, month), r in zip(month_end.index, rets):
        table.loc[year, _MONTHS[month - 1]] = r
    for year in table.index:
        vals = table.loc[year, list(_MONTHS)].dropna().to_numpy()
        table.loc[year, "Year"] = float(np.prod(1.0 + vals) - 1.0) if len(vals) else np.nan
    table.index.name = "year"
    return table


def _monthly_figure(table: pd.DataFrame) -> go.Figure:
    z = table.to_numpy(dtype="float64") * 100.0
    text = [[("" if np.isnan(v) else f"{v:+.2f}%") for v in row] for row in z]
    lim = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=list(table.columns), y=[str(y) for y in table.index], text=text, texttemplate="%{text}",
        colorscale=[[0.0, _RED], [0.5, "#f7f7f7"], [1.0, _GREEN]], zmin=-lim, zmax=lim, zmid=0.0,
        hovertemplate="%{y} %{x}: %{z:.2f}%<extra></extra>", colorbar=dict(title="%"),
    ))
    fig.update_layout(template="plotly_white", title=dict(text="Monthly returns", x=0.01),
                      height=140 + 45 * len(table), margin=dict(l=60, r=20, t=50, b=30))
    fig.update_yaxes(autorange="reversed", type="category")
    return fig


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
background:#fafafa;color:#222}
main{max-width:1280px;margin:0 auto;padding:16px 24px 40px}
h1{font-size:22px;margin:8px 0 4px} h2{font-size:17px;margin:28px 0 8px}
.sub{color:#666;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin:16px 0}
.card{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:10px 12px}
.card .k{font-size:12px;color:#666} .card .v{font-size:19px;font-weight:600;margin-top:2px}
.pos{color:#1a7f37} .neg{color:#c62828}
.panel{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:8px;margin:10px 0}
table{border-collapse:collapse;font-size:13px;background:#fff}
td,th{border:1px solid #e3e3e3;padding:4px 10px;text-align:right} th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.cols{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
pre{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:10px;font-size:12px;overflow:auto}
ul.notes{font-size:13px;color:#555}
"""

_CARD_KEYS = (M.TOTAL_RETURN, M.CAGR, M.SHARPE, M.SORTINO, M.MAX_DRAWDOWN, M.WORST_30D_DRAWDOWN,
              M.TRADES, M.WIN_RATE, M.PROFIT_FACTOR, M.COSTS)


def _sign_class(key: str, value: float) -> str:
    if key in (M.TOTAL_RETURN, M.CAGR, M.SHARPE, M.SORTINO, M.EXPECTANCY, M.CALMAR):
        return "pos" if value > 0 else ("neg" if value < 0 else "")
    if key in (M.MAX_DRAWDOWN, M.WORST_30D_DRAWDOWN):
        return "neg" if value < 0 else ""
    return ""


def _metrics_html(metrics: Mapping[str, float]) -> tuple[str, str]:
    cards = "".join(
        f'<div class="card"><div class="k">{html.escape(METRIC_LABELS.get(k, k))}</div>'
        f'<div class="v {_sign_class(k, metrics[k])}">{html.escape(format_metric(k, metrics[k]))}</div></div>'
        for k in _CARD_KEYS if k in metrics
    )
    rows = "".join(
        f"<tr><td>{html.escape(METRIC_LABELS.get(k, k))}</td><td>{html.escape(format_metric(k, float(v)))}</td>"
        f"<td><code>{html.escape(k)}</code></td></tr>"
        for k, v in metrics.items()
    )
    table = f"<table><tr><th>metric</th><th>value</th><th>key</th></tr>{rows}</table>"
    return cards, table


def _trade_summary_html(tv: pd.DataFrame) -> str:
    if len(tv) == 0:
        return "<p class='sub'>No trades.</p>"
    t = tv.assign(side_name=np.where(tv["side"] > 0, "long", "short"),
                  exit_reason=tv["exit_reason"].fillna("open").astype(str))
    g = t.groupby(["side_name", "exit_reason"])["pnl"]
    summary = pd.DataFrame({"trades": g.size(), "win rate": g.apply(lambda s: float((s > 0).mean())),
                            "net P&L": g.sum(), "mean P&L": g.mean()}).reset_index()
    rows = "".join(
        f"<tr><td>{html.escape(side)}</td><td>{html.escape(reason)}</td><td>{int(count):,}</td>"
        f"<td>{win * 100:.1f}%</td><td>{net:,.2f}</td><td>{mean:,.2f}</td></tr>"
        for side, reason, count, win, net, mean in summary.itertuples(index=False, name=None)
    )
    return ("<table><tr><th>side</th><th>exit reason</th><th>trades</th><th>win rate</th><th>net P&amp;L</th>"
            f"<th>mean P&amp;L</th></tr>{rows}</table>")


def _monthly_table_html(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        f"<tr><td>{year}</td>" + "".join(
            f"<td class='{'pos' if v > 0 else 'neg' if v < 0 else ''}'>{'' if np.isnan(v) else f'{v * 100:+.2f}%'}</td>"
            for v in row) + "</tr>"
        for year, row in zip(table.index, table.to_numpy(dtype="float64"))
    )
    return f"<table><tr><th>year</th>{head}</tr>{body}</table>"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (pd.Timestamp, datetime)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return str(obj)


def render_report(result: Any, bars: Bars, metrics: Mapping[str, float] | Metrics, title: str,
                  config: Mapping[str, Any] | None = None, initial_capital: float | None = None,
                  decisions: pd.DataFrame | None = None) -> str:
    """The report as one HTML string (see ``write_report``)."""
    equity: pd.Series = result.equity
    if initial_capital is None:
        initial_capital = _initial_capital(result)
    tv = trades_view(getattr(result, "trades", None))
    values = metrics.values if isinstance(metrics, Metrics) else dict(metrics)
    notes = list(metrics.notes) if isinstance(metrics, Metrics) else []

    main_fig = _main_figure(bars, equity, tv, initial_capital, title)
    table = monthly_returns(equity, initial_capital)
    month_fig = _monthly_figure(table)
    plot_cfg = {"displaylogo": False, "responsive": True}
    main_div = po.plot(main_fig, output_type="div", include_plotlyjs=False, config=plot_cfg)
    month_div = po.plot(month_fig, output_type="div", include_plotlyjs=False, config=plot_cfg)
    gate_html = ""
    if decisions is not None and len(decisions):
        gate_div = po.plot(_gate_figure(decisions, equity, bars), output_type="div", include_plotlyjs=False,
                           config=plot_cfg)
        gate_html = f"<h2>Gate: the chosen expert and its weights</h2>\n<div class=\"panel\">{gate_div}</div>"
    plotly_js = po.get_plotlyjs()

    cards, metrics_table = _metrics_html(values)
    idx = bars.index
    span = f"{idx[0]:%Y-%m-%d %H:%M} → {idx[-1]:%Y-%m-%d %H:%M} IST" if len(idx) else "no bars"
    subtitle = (f"{html.escape(bars.symbol or 'unknown symbol')} · {html.escape(bars.timeframe)} bars · {len(bars):,} bars · "
                f"{span}")
    notes_html = ("<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>") if notes else ""
    if config is None:  # at least the engine settings the result carries
        engine = getattr(result, "config", None)
        config = {"engine": engine} if engine is not None else {}
    config_text = json.dumps(dict(config), indent=2, default=_json_default, ensure_ascii=False)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style>
<script type="text/javascript">{plotly_js}</script>
</head><body><main>
<h1>{html.escape(title)}</h1>
<div class="sub">{subtitle}</div>
<div class="cards">{cards}</div>
<div class="panel">{main_div}</div>
{gate_html}
<h2>Monthly returns</h2>
<div class="panel">{month_div}</div>
{_monthly_table_html(table)}
<div class="cols">
<div><h2>Metrics (after costs)</h2>{metrics_table}{notes_html}</div>
<div><h2>Trades</h2>{_trade_summary_html(tv)}
<h2>Configuration</h2><pre>{html.escape(config_text)}</pre></div>
</div>
<p class="sub">Generated {generated} by tradebot. Sharpe and Sortino are annualised with 375-minute sessions ×
252 sessions a year, risk-free rate 0; Sortino uses the downside deviation below 0 over all bars. Drawdowns are
fractions of the running peak; the worst {DRAWDOWN_WINDOW_DAYS}-day drawdown is the largest fall with peak and trough
at most {DRAWDOWN_WINDOW_DAYS} calendar days apart.</p>
</main></body></html>
"""


def _initial_capital(result: Any) -> float | None:
    for owner in (result, getattr(result, "config", None)):
        for name in ("initial_cash", "initial_capital", "capital"):
            value = getattr(owner, name, None) if owner is not None else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
    return None


def equity_frame(result: Any) -> pd.DataFrame:
    """Equity, cash, signed position and drawdown per bar (``equity.csv``)."""
    equity = result.equity
    return pd.DataFrame({
        "equity": equity.to_numpy(),
        "cash": result.cash.to_numpy(),
        "position": result.positions.to_numpy(),
        "drawdown": drawdown_series(equity, result.config.initial_cash).to_numpy(),
    }, index=equity.index.rename("timestamp"))


def write_run_files(out_dir: str | Path, result: Any, bars: Bars, metrics: Metrics, info: Mapping[str, Any],
                    title: str, decisions: pd.DataFrame | None = None) -> None:
    """The four files of a run, each written atomically: ``equity.csv``, ``trades.csv``, ``metrics.json``
    (metrics plus ``run``: what produced it) and ``report.html``. Used by backtests and paper sessions.
    ``decisions`` (a mixture of experts' gate per decision) adds ``decisions.csv`` and its charts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "equity.csv", csv_text(equity_frame(result), index=True))
    write_text_atomic(out_dir / "trades.csv", csv_text(result.trades, index=False))
    if decisions is not None:
        write_text_atomic(out_dir / "decisions.csv", csv_text(decisions, index=False))
    write_text_atomic(out_dir / "metrics.json", json_text({**metrics.to_dict(), "run": dict(info)}))
    write_report(result, bars, metrics, out_dir / "report.html", title, config=info,
                 initial_capital=result.config.initial_cash, decisions=decisions)


def run_record(data: str | Path, bars: Bars, strategy: str, config: Any, seed: int,
               params: Mapping[str, Any] | None = None, actions_file: str | Path | None = None) -> dict[str, Any]:
    """What produced a backtest (the ``run`` of ``metrics.json`` and ``compare.json``): strategy, data,
    the evaluated bars, seed, the strategy's parameters and the engine settings (``config``)."""
    info: dict[str, Any] = {
        "strategy": strategy,
        "data": str(data),
        "symbol": bars.symbol,
        "timeframe": bars.timeframe,
        "bars": len(bars),
        "start": bars.index[0].isoformat(),
        "end": bars.index[-1].isoformat(),
        "seed": seed,
    }
    if params is not None:
        info["params"] = dict(params)
    if actions_file is not None:
        info["actions_file"] = str(actions_file)
    info["engine"] = config.model_dump(mode="json")
    return info


def write_compare_files(out_dir: str | Path, rows: Mapping[str, Metrics], params: Mapping[str, Mapping[str, Any]],
                        run: Mapping[str, Any], policy: Mapping[str, Any] | None = None) -> None:
    """``compare.csv`` (one row of every metric per strategy; an infinite profit factor is ``inf``) and
    ``compare.json`` (the same with each strategy's notes and parameters, ``run`` and ``policy``;
    an infinite value is null there), each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([m.values for m in rows.values()], index=pd.Index(list(rows), name="strategy"))
    write_text_atomic(out_dir / "compare.csv", table.loc[:, list(M.ALL)].to_csv(float_format="%.10g"))
    payload: dict[str, Any] = {
        "strategies": {name: {**m.to_dict(), "params": dict(params[name])} for name, m in rows.items()},
        "run": dict(run),
    }
    if policy is not None:
        payload["policy"] = dict(policy)
    write_text_atomic(out_dir / "compare.json", json_text(payload))


def write_report(result: Any, bars: Bars, metrics: Mapping[str, float] | Metrics, path: str | Path, title: str,
                 config: Mapping[str, Any] | None = None, initial_capital: float | None = None,
                 decisions: pd.DataFrame | None = None) -> Path:
    """Write the self-contained HTML report of ``result`` (a ``BacktestResult``) to ``path`` atomically.

    ``config``: what produced the run (strategy, engine settings, data file …), shown verbatim.
    ``decisions``: a mixture of experts' gate per decision (``decisions.csv``), charted when given.
    """
    path = Path(path)
    write_text_atomic(path, render_report(result, bars, metrics, title, config, initial_capital, decisions))
    return path
