"""Broker adapters: one folder per broker; only that folder imports its SDK."""
