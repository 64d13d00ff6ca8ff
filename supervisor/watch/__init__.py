"""Watchdogs over the channel other than hang detection: step time and the checkpoint
handshake, and the one poller thread they share.

- `steptime`: the pure step-time degradation decision.
- `steptime_watchdog`: feeds it from the ranks' heartbeat slots.
- `handshake`: checkpoint requests out to the ranks, commits back.
- `poller`: one thread that runs every polling watchdog.
"""
