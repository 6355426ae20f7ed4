"""The policy as a Ray Serve deployment: one replica holding ``tradebot.rl.policy.Policy`` and its per-symbol streams.

```python
from ray import serve
from tradebot.serving.app import build_app
serve.start(http_options={"host": "127.0.0.1", "port": 8000})
handle = serve.run(build_app("models:/tradebot-ppo-lstm/3"), name="tradebot-policy", route_prefix="/")
handle.act.remote("NSE:SBIN-EQ", obs.tolist()).result()   # {"action": 1, "action_name": "BUY_LONG", ...}
```

HTTP (FastAPI ingress):

* ``POST /act``   ``{"symbol": "NSE:SBIN-EQ", "obs": [...], "client": "..."}`` -> ``{"symbol", "action",
  "action_name", "probs", "model_version"}``, and for a mixture of experts (``tradebot.rl.moe.mixture``)
  ``"gate": {"expert": "trend", "weights": {"trend": 0.7, ...}}``, the gate of that decision; 422 for an
  observation of the wrong size or with NaN/inf values.
* ``POST /reset`` ``{"symbol": "NSE:SBIN-EQ", "client": "..."}`` (one stream) or ``{"client": "..."}`` (all of that
  client's streams) -> ``{"reset": ..., "streams": n}``.
* ``GET /health`` -> ``{"status": "ok", "model_version", "obs_dim", "num_actions", "streams"}`` (and
  ``"experts"``, their names in weight order, for a mixture).
* ``GET /metrics`` -> Prometheus text: acts, act latency histogram, live streams.

Recurrent state: each (client, symbol) is one ``Policy`` stream (its LSTM state carried from call to
call; in a mixture, every expert's and the gate's, all under that one stream id). ``client`` is an id
the caller picks for itself (``policy_client`` uses a random one per process), so two callers trading
the same symbol never share, or reset, each other's state. The deployment runs
exactly one replica and serialises calls with a lock (``Policy`` is not thread-safe). A stream lives
until ``/reset`` or a replica restart.

Auth: every endpoint needs ``Authorization: Bearer <token>`` (401 otherwise), always. The token is
``TRADEBOT_SERVE_TOKEN`` where the app is built, else one generated at start (``tradebot serve`` writes
it to a 0600 file, ``token_file()``, for its HTTP callers). A host other than loopback is refused
without a token set explicitly (``check_bind``). Only the token's SHA-256 travels to the replica; the
token itself is never logged or stored in the deployment config.

Serve config: ``serving/serve_config.yaml`` (``serve run serving/serve_config.yaml``) builds the app
with ``tradebot.serving.app:app_builder`` from ``args: {model: URI}``.

Running it from Python: ``start_serve`` / ``local_serve`` (Ray and Serve in this process, for the live
loop and tests) and ``serve_until_stopped`` (``tradebot serve``). The callers' side is
``tradebot.serving.policy_client``.
"""

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from ray import serve

from tradebot.core.errors import UserInputError

TOKEN_ENV = "TRADEBOT_SERVE_TOKEN"
TOKEN_FILE_ENV = "TRADEBOT_SERVE_TOKEN_FILE"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
APP_NAME = "tradebot-policy"
DEPLOYMENT_NAME = "PolicyServer"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

# metric names (one place; dashboards read these)
ACTS = "tradebot_serve_acts_total"
ACT_LATENCY = "tradebot_serve_act_latency_seconds"
STREAMS = "tradebot_serve_streams"
RESETS = "tradebot_serve_resets_total"
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ActRequest(BaseModel):
    symbol: str = Field(min_length=1, description="the symbol, e.g. NSE:SBIN-EQ")
    obs: list[float] = Field(description="the env's flat observation at this bar")
    client: str = Field("", max_length=100, description="the caller's own id: its streams are (client, symbol)")


class ResetRequest(BaseModel):
    symbol: str | None = Field(None, description="the stream to forget; omitted: all of the client's streams")
    client: str = Field("", max_length=100, description="whose streams")


def token_digest(token: str | None) -> str | None:
    """SHA-256 hex of a bearer token (None for no token)."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None


fastapi_app = FastAPI(title="tradebot policy", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(name=DEPLOYMENT_NAME, num_replicas=1, max_ongoing_requests=64,
                  ray_actor_options={"num_cpus": 0})
@serve.ingress(fastapi_app)
class PolicyServer:
    """One replica: the policy, its streams, the metrics."""

    def __init__(self, model: str, token_sha256: str | None = None, deterministic: bool = True):
        import torch
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from tradebot.envs.engine import Action
        from tradebot.rl.policy import Policy

        torch.set_num_threads(1)  # one observation at a time: more threads only contend
        self.policy = Policy.load(model, deterministic=deterministic)
        # an alias (models:/NAME@champion) was resolved once, at load: the server keeps serving that version
        self.model_version = self.policy.source if model.startswith("models:/") else model
        self._token_sha256 = token_sha256
        self._lock = threading.Lock()
        self._names = {int(a): a.name for a in Action}
        r = self.registry = CollectorRegistry()
        self._acts = Counter(ACTS, "Policy decisions served", registry=r)
        self._resets = Counter(RESETS, "Stream resets (one symbol, or all)", registry=r)
        self._latency = Histogram(ACT_LATENCY, "Time of one policy step inside the replica",
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self._streams = Gauge(STREAMS, "Symbols with a recurrent state held", registry=r)

    # ---- methods (called through a DeploymentHandle, and by the HTTP routes) ----------------
    def act(self, symbol: str, obs: list[float], client: str = "") -> dict[str, Any]:
        from tradebot.core.errors import UserInputError

        t0 = time.perf_counter()
        with self._lock:
            try:
                action, probs = self.policy.act((client, symbol), obs)
            except UserInputError as err:
                raise ValueError(str(err)) from None
            explain = getattr(self.policy, "explain", None)  # a mixture of experts: the gate of this act
            gate = explain((client, symbol)) if explain is not None else None
            self._streams.set(len(self.policy.streams))
        self._acts.inc()
        self._latency.observe(time.perf_counter() - t0)
        out = {"symbol": symbol, "action": action, "action_name": self._names.get(action, str(action)),
               "probs": [float(p) for p in probs], "model_version": self.model_version}
        if gate is not None:
            out["gate"] = gate.as_dict()
        return out

    def reset(self, symbol: str | None = None, client: str = "") -> dict[str, Any]:
        with self._lock:
            for key in [k for k in self.policy.streams if k[0] == client and (symbol is None or k[1] == symbol)]:
                self.policy.reset(key)
            n = len(self.policy.streams)
            self._streams.set(n)
        self._resets.inc()
        return {"reset": symbol if symbol is not None else "all", "streams": n}

    def info(self) -> dict[str, Any]:
        out = {"status": "ok", "model_version": self.model_version, "obs_dim": self.policy.obs_dim,
               "num_actions": self.policy.num_actions, "streams": len(self.policy.streams)}
        experts = getattr(self.policy, "expert_names", ())
        if experts:
            out["experts"] = list(experts)
        return out

    # ---- HTTP ------------------------------------------------------------------------------
    def _authorise(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or not hmac.compare_digest(token_digest(token.strip()),
                                                                              self._token_sha256):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @fastapi_app.post("/act")
    def http_act(self, body: ActRequest, request: Request) -> dict[str, Any]:
        self._authorise(request)
        try:
            return self.act(body.symbol, body.obs, body.client)
        except ValueError as err:
            raise HTTPException(status_code=422, detail=str(err)) from None

    @fastapi_app.post("/reset")
    async def http_reset(self, request: Request) -> dict[str, Any]:
        self._authorise(request)
        raw = await request.body()  # optional body: no body, or {} resets every stream
        try:
            body = ResetRequest.model_validate_json(raw) if raw.strip() else ResetRequest()
        except ValueError as err:
            raise HTTPException(status_code=422, detail=f"reset body: {err}") from None
        return self.reset(body.symbol, body.client)

    @fastapi_app.get("/health")
    def http_health(self, request: Request) -> dict[str, Any]:
        self._authorise(request)
        return self.info()

    @fastapi_app.get("/metrics")
    def http_metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self._authorise(request)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def resolve_token(token: str | None = None) -> tuple[str, bool]:
    """The bearer token to require: ``token``, else ``$TRADEBOT_SERVE_TOKEN``, else a new random one.
    Returns ``(token, generated)``."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token:
        return token, False
    return secrets.token_urlsafe(32), True


def token_file() -> Path:
    """Where ``tradebot serve`` writes a generated token (0600): ``$TRADEBOT_SERVE_TOKEN_FILE``, else
    ``~/.config/tradebot/serve_token``."""
    env = os.environ.get(TOKEN_FILE_ENV)
    return Path(env) if env else Path.home() / ".config" / "tradebot" / "serve_token"


def check_bind(host: str, token: str | None) -> None:
    """Refuse (one line) to serve a host other than loopback without a token set explicitly."""
    if host not in LOOPBACK and not (token or os.environ.get(TOKEN_ENV)):
        raise UserInputError(f"--host {host} is reachable from other machines: set {TOKEN_ENV} to a long random "
                             "token first (callers send it as 'Authorization: Bearer ...'), or keep 127.0.0.1")


def build_app(model: str, *, token: str | None = None, deterministic: bool = True):
    """The bound Serve application for ``model`` (a checkpoint folder or an MLflow model URI).

    ``token``: the bearer token to require (default: ``$TRADEBOT_SERVE_TOKEN``, else a random one: the app
    never runs without one)."""
    token, _ = resolve_token(token)
    return PolicyServer.bind(str(model), token_digest(token), deterministic)


def app_builder(args: dict[str, Any]):
    """For ``serve run`` / ``serve deploy`` configs: ``args: {model: URI, deterministic: true}``."""
    unknown = set(args) - {"model", "deterministic"}
    if unknown:
        raise ValueError(f"unknown serve args {sorted(unknown)}; expected 'model' (and optionally 'deterministic')")
    if not args.get("model"):
        raise ValueError("serve args need 'model': a checkpoint folder or an MLflow model URI")
    return build_app(str(args["model"]), deterministic=bool(args.get("deterministic", True)))


# ---- running the app ----------------------------------------------------------------------------

def check_model(model: str) -> None:
    """Fail fast (one line, before Ray starts) when ``model`` cannot be loaded as a policy."""
    from tradebot.rl.policy import Policy

    Policy.load(model)  # raises UserInputError naming the path/URI and the fix


def ensure_ray(num_cpus: int = 2) -> None:
    """A private local Ray (no dashboard) unless one is running in this process; its files under RAY_TMPDIR."""
    import ray

    if ray.is_initialized():
        return
    tmp = os.environ.setdefault("RAY_TMPDIR", os.path.join(tempfile.gettempdir(), f"tradebot-ray-{os.getuid()}"))
    os.makedirs(tmp, exist_ok=True)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=tmp, logging_level="ERROR",
             log_to_driver=False)


def start_serve(model: str, *, host: str = DEFAULT_HOST, port: int | None = None, token: str | None = None,
                deterministic: bool = True) -> Any:
    """Ray (if needed) + Serve + the policy app; returns the app's ``DeploymentHandle``.

    ``port`` None: no HTTP proxy is needed by the caller, but Serve still binds ``host`` on a free port.
    """
    ensure_ray()
    if port is None:
        port = _free_port(host)
    serve.start(http_options={"host": host, "port": port})
    return serve.run(build_app(model, token=token, deterministic=deterministic), name=APP_NAME, route_prefix="/",
                     blocking=False)


def serve_until_stopped(model: str, *, host: str = DEFAULT_HOST, port: int = 8000, deterministic: bool = True,
                        on_ready: Callable[[dict[str, Any]], None] | None = None,
                        on_stopping: Callable[[], None] | None = None) -> None:
    """Serve ``model`` on ``host:port`` until Ctrl-C (SIGINT) or SIGTERM, then shut Serve and Ray down.

    ``on_ready`` gets the server's ``info`` (model version, observation size, ``token_file`` when the token
    was generated) once it answers; a port that cannot be bound, or a host other than loopback without
    ``TRADEBOT_SERVE_TOKEN``, is a ``UserInputError`` (before Ray starts).
    """
    import signal

    import ray

    from tradebot.core.files import atomic_writer

    check_bind(host, None)
    token, generated = resolve_token()
    if generated:  # the HTTP callers read it from a file only this user can read
        path = token_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path, mode=0o600, text=True) as fh:
            fh.write(token)
    try:
        handle = start_serve(model, host=host, port=port, token=token, deterministic=deterministic)
        info = handle.info.remote().result(timeout_s=60)
        info = {**info, "token_file": str(token_file()) if generated else None}
    except OSError as err:
        raise UserInputError(f"cannot serve on {host}:{port} ({err}); pick another --port") from None

    def stop(signum, frame):  # Ctrl-C (SIGINT) and `kill` (SIGTERM): shut Serve down cleanly
        raise KeyboardInterrupt

    # installed once Ray runs: ray.init sets its own SIGTERM handler, which aborts the process
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        if on_ready is not None:
            on_ready(info)
        threading.Event().wait()
    except KeyboardInterrupt:
        if on_stopping is not None:
            on_stopping()
    finally:
        serve.shutdown()
        ray.shutdown()


@contextlib.contextmanager
def local_serve(model: str, **kwargs: Any) -> Iterator[Any]:
    """``start_serve`` for the duration of a ``with`` block; Serve is shut down after it."""
    handle = start_serve(model, **kwargs)
    try:
        yield handle
    finally:
        serve.shutdown()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
