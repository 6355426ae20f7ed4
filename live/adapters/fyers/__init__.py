"""The Fyers (API v3) broker adapter and its local simulator."""

# The adapter's public names, imported on first use (the SDK itself only when a client/feed is built).
_EXPORTS = {
    "FyersExecutionClient": "client", "FyersOrder": "client",
    "FyersDataFeed": "data", "TickClock": "data", "fetch_history": "data", "fetch_into_store": "data",
    "StoredFetch": "data",
    "FyersToken": "auth", "AuthSettings": "auth", "load_token": "auth", "save_token": "auth", "login_url": "auth",
    "exchange": "auth", "verify_token": "auth", "complete_login": "auth", "LoginResult": "auth",
    "ReauthRequired": "error_translation", "FyersRejected": "error_translation", "FyersRetryable": "error_translation",
    "RetryPolicy": "error_translation",
    "retry": "error_translation",
    "RateLimiter": "ratelimit", "RateLimits": "ratelimit", "shared_limiter": "ratelimit",
    "Endpoints": "rest", "FyersRest": "rest", "make_model": "rest",
    "build_fyers_paper_loop": "loops", "build_fyers_live_loop": "loops",
}


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'tradebot.live.adapters.fyers' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"tradebot.live.adapters.fyers.{mod}"), name)


__all__ = sorted(_EXPORTS)
