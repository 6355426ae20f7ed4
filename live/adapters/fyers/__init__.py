"""The Fyers (API v3) broker adapter and its local simulator."""

# The adapter's public names, imported on first use (the SDK itself only when a client/feed is built).
_EXPORTS = {
    "FyersExecutionClient": "client", "FyersOrder": "client",
    "FyersDataFeed": "data", "TickClock": "data", "fetch_history": "data",
    "FyersToken": "auth", "AuthSettings": "auth", "load_token": "auth", "save_token": "auth", "login_url": "auth",
    "exchange": "auth", "verify_token": "auth",
    "ReauthRequired": "errors", "FyersRejected": "errors", "FyersRetryable": "errors", "RetryPolicy": "errors",
    "retry": "errors",
    "RateLimiter": "ratelimit", "RateLimits": "ratelimit", "shared_limiter": "ratelimit",
    "Endpoints": "rest", "FyersRest": "rest", "make_model": "rest",
    "build_fyers_paper_loop": "session", "build_fyers_live_loop": "session",
}


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'tradebot.live.adapters.fyers' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"tradebot.live.adapters.fyers.{mod}"), name)
