"""Metric points and log lines of runs: ingestion from agents, series, the live WebSocket."""
