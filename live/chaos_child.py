"""One live process of the chaos soak (``tradebot.live.chaos``): the real loop, the real Fyers adapter on the
real SDK, against the soak's simulator, until it is killed or stopped.

    python -m tradebot.live.chaos_child SETTINGS.json

``SETTINGS.json`` (written by the soak): ``base_url``, ``token_file``, ``journal``, ``log_dir``, ``symbols``,
``risk`` (a ``RiskConfig`` mapping), ``loop`` (a ``LoopConfig`` mapping), ``start_ns`` (the simulator's clock
when the soak began). It prints ``READY`` once reconciled with the broker, runs as ``tradebot live`` runs
(``run_fyers_loop``: Ctrl-C / SIGTERM stop it, the broker is always disconnected) and exits 0 when
stopped, 2 on bad input (another loop holds the journal), 3 on a fatal broker error (a dead token).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tradebot.core.errors import FatalError, UserInputError

FEATURES = {"returns": {"horizons": [1]}, "trend": {"enabled": False}, "momentum": {"enabled": False},
            "volatility": {"enabled": False}, "volume": {"enabled": False}, "regime": {"enabled": False},
            "calendar": {"enabled": False}, "candles": {"enabled": False}, "normalisation": {"method": "none"}}


def build(settings: dict[str, Any]) -> Any:
    """The soak's live loop: the token from its 0600 file, REST and both sockets on the simulator, the policy
    over HTTP (the simulator's scripted policy server), 1-minute bars, the exchange's clock."""
    from tradebot.live.adapters.fyers.auth import load_token
    from tradebot.live.adapters.fyers.data import FyersDataFeed, TickClock, default_socket_factory
    from tradebot.live.adapters.fyers.loops import build_fyers_live_loop
    from tradebot.live.adapters.fyers.rest import Endpoints, FyersRest, make_model
    from tradebot.live.risk import RiskConfig
    from tradebot.live.runner import LiveConfig
    from tradebot.serving.policy_client import HttpPolicy

    token = load_token(settings["token_file"])
    ep = Endpoints.from_base(settings["base_url"])
    logs = Path(settings["log_dir"])
    rest = FyersRest(make_model(token.app_id, token.secret(), endpoints=ep, log_path=logs, timeout=(2.0, 4.0)))
    feed = FyersDataFeed(default_socket_factory(token, endpoints=ep, log_path=logs), timeframe="1m", rest=rest,
                         clock=TickClock(int(settings["start_ns"])), heartbeat_s=0.25, stall_s=20.0)
    config = LiveConfig.model_validate({"features": FEATURES, "loop": settings["loop"]})
    policy = HttpPolicy(settings["base_url"] + "/policy", timeout_s=3.0)
    return build_fyers_live_loop(settings["symbols"], journal=settings["journal"], policy=policy,
                                 risk_config=RiskConfig.model_validate(settings["risk"]), i_understand_real_money=True,
                                 config=config, timeframe="1m", token=token, endpoints=ep, rest=rest, feed=feed,
                                 warmup_days=5, log_path=logs, ledger_path=Path(settings["journal"]).with_suffix(
                                     ".ledger.json"))


def main(argv: list[str]) -> int:
    from tradebot.live.launch import check_journal_free, run_fyers_loop

    settings = json.loads(Path(argv[0]).read_text())
    loop = None
    try:
        check_journal_free(Path(settings["journal"]))  # as `tradebot live` does: before anything connects
        loop = build(settings)
        try:
            loop.start()
            print("READY", flush=True)
            summary, interrupted = run_fyers_loop(loop, notify=lambda line: print(line, flush=True))
        finally:
            loop.journal.close()
    except KeyboardInterrupt:  # stopped while starting up
        if loop is not None:
            loop.broker.disconnect()
        print("STOPPED while starting", flush=True)
        return 0
    except UserInputError as err:
        print(f"error: {err}", flush=True)
        return 2
    except FatalError as err:
        print(f"fatal: {err}", flush=True)
        return 3
    print(f"STOPPED bars={summary.bars} orders={summary.orders} fills={summary.fills}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
