"""``report.html``: per-fold Sharpe ratio and return of the agent against every baseline, the stitched
out-of-sample equity and the summary tables, in one self-contained page (plotly.js inline)."""

from __future__ import annotations

from pathlib import Path

from tradebot.envs.performance import METRIC_LABELS, M
from tradebot.rl.walkforward.evaluation_config import WalkForwardConfig
from tradebot.rl.walkforward.results import (
    AGENT,
    AGENT_SELECTED,
    SCOPE_FOLD,
    SCOPE_FOLDS,
    SCOPE_STITCHED,
    EvaluationResult,
)
from tradebot.rl.walkforward.summary import KEY_COLUMNS, summary_rows
from tradebot.rl.walkforward.verdicts import overfitting_lines


def render_report(result: EvaluationResult, cfg: WalkForwardConfig) -> str:
    """One self-contained HTML page (plotly.js inline): per-fold Sharpe/return and the stitched equity."""
    import html

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from tradebot.core.nse_time import IST

    s = result.summary
    folds = s[s["scope"] == SCOPE_FOLD]
    labels = [f"F{f.index} {f.test[0]:%Y-%m-%d}" for f in result.folds]
    names = [AGENT, AGENT_SELECTED] + cfg.baseline_names
    palette = ["#2c7fb8", "#08306b", "#9e9e9e", "#1a9850", "#d73027", "#fdae61", "#984ea3", "#a6761d", "#e7298a"]
    colour = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.08, row_heights=[0.28, 0.28, 0.44],
                        subplot_titles=("Sharpe ratio per test window (after costs, annualised)",
                                        "Total return per test window (after costs)",
                                        "Stitched out-of-sample equity (session closes; test windows back to back)"))
    for row, key, scale in ((1, M.SHARPE, 1.0), (2, M.TOTAL_RETURN, 100.0)):
        for name in names:
            part = folds[folds["strategy"] == name].sort_values("fold")
            err = part[f"{key}_std"].astype(float).fillna(0.0).to_numpy() * scale if name == AGENT else None
            fig.add_trace(go.Bar(name=name, x=labels, y=part[f"{key}_mean"].astype(float).to_numpy() * scale,
                                 marker_color=colour[name], legendgroup=name, showlegend=row == 1,
                                 error_y=dict(type="data", array=err, visible=True) if err is not None else None),
                          row=row, col=1)
    for name, eq in result.stitched.items():
        closes = eq.groupby(eq.index.tz_convert(IST).date).last()
        x = [d.isoformat() for d in closes.index]
        seed_line = name.startswith(f"{AGENT}_seed_")
        fig.add_trace(go.Scatter(x=x, y=closes.to_numpy(), mode="lines", name=name,
                                 line=dict(color=colour.get(AGENT) if seed_line else colour.get(name, "#333333"),
                                           width=1 if seed_line else 2, dash="dot" if seed_line else "solid"),
                                 legendgroup=AGENT if seed_line else name, showlegend=seed_line),
                      row=3, col=1)
    fig.update_layout(barmode="group", height=1100, template="plotly_white", margin=dict(l=60, r=30, t=60, b=40))
    fig.update_xaxes(type="category", row=3, col=1, nticks=12)
    fig.update_yaxes(title_text="Sharpe", row=1, col=1)
    fig.update_yaxes(title_text="%", row=2, col=1)
    fig.update_yaxes(title_text="equity (Rs)", row=3, col=1)
    plot = fig.to_html(full_html=False, include_plotlyjs=True)

    def table(scope: str) -> str:
        head = "".join(f"<th>{html.escape(METRIC_LABELS[k])}</th>" for k in KEY_COLUMNS)
        body = "".join(f"<tr><td>{html.escape(w)}</td><td>{html.escape(n)}</td>"
                       + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                       for w, n, cells in summary_rows(s, scope))
        return f"<table><tr><th>window</th><th>strategy</th>{head}</tr>{body}</table>"

    lines = [v.line for v in result.verdicts] + overfitting_lines(result)
    bullet = "".join(f"<li>{html.escape(x)}</li>" for x in lines)
    title = (f"Walk-forward evaluation: {Path(cfg.data.path).name}, {len(result.folds)} folds x "
             f"{len(cfg.evaluation.seeds)} seeds")
    style = ("body{font-family:sans-serif;margin:24px;color:#222} table{border-collapse:collapse;margin:8px 0 24px}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}"
             "td:nth-child(-n+2){text-align:left}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Metrics after NSE costs and slippage; mean ± std over seeds (per fold) or over folds (folds).</p>"
            f"<ul>{bullet}</ul>{plot}<h2>Per fold</h2>{table(SCOPE_FOLD)}<h2>Over folds</h2>{table(SCOPE_FOLDS)}"
            f"<h2>Stitched out-of-sample record</h2>{table(SCOPE_STITCHED)}</body></html>\n")
