"""``tradebot chaos``: the live path under a chaos soak (the real loop on the real Fyers SDK against the simulator,
killed, faulted, halted; then its invariants checked).

\b
  tradebot chaos --minutes 60 --seed 1 --out out/chaos

Writes ``OUT/invariants.json`` (restarts, faults injected by kind, orders, fills, each invariant and every
breach) and the loops' logs under ``OUT/logs``. Exit codes: 0 every invariant held; 1 a breach (listed);
2 bad input.
"""

from __future__ import annotations

from pathlib import Path

import click

from tradebot.core.errors import UserInputError


@click.command("chaos", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--minutes", type=float, default=60.0, show_default=True, help="how long the soak runs (wall minutes)")
@click.option("--seed", type=int, default=1, show_default=True, help="seed of the fault schedule and the policy")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="a new folder for the journal, the logs and invariants.json")
def chaos(minutes: float, seed: int, out_dir: Path) -> None:
    """Run the chaos soak and check its invariants (exit 1 on any breach)."""
    from tradebot.live.chaos import run_chaos

    try:
        if not minutes > 0:
            raise UserInputError(f"--minutes {minutes:g}: must be above 0")
        if out_dir.exists() and any(out_dir.iterdir()):
            raise UserInputError(f"{out_dir}: not empty; give a new folder (a soak starts from a fresh journal)")
    except UserInputError as err:
        click.echo(f"error: {err}", err=True)
        raise SystemExit(2) from None
    report = run_chaos(minutes, seed, out_dir, say=lambda line: click.echo(line, err=True))
    faults = ", ".join(f"{k} {v}" for k, v in report["faults"].items()) or "none"
    click.echo(f"{report['minutes']:g} min, seed {seed}: {report['restarts']} restarts ({report['kills']} SIGKILLs, "
               f"{report['sigints']} SIGINTs, {report['relogins']} re-logins), {report['halts']} halts, "
               f"{report['second_loops']} second loops refused; faults: {faults}; {report['orders']} orders, "
               f"{report['fills']} fills; breaches: {len(report['breaches'])}")
    for name, inv in report["invariants"].items():
        click.echo(f"  {'ok    ' if inv['ok'] else 'BREACH'} {name} ({inv['checked']} checked) {inv['detail']}".rstrip())
    click.echo(f"wrote {out_dir / 'invariants.json'}")
    if report["breaches"]:
        raise SystemExit(1)
