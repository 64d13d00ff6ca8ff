"""Watching an attempt from the shared-memory channel: one sampler thread, pure watchers.

- `sample`: what one read of the channel saw (`Sample`), the step intervals measured
  between reads, and the `Watcher` protocol every watcher follows.
- `sampler`: the attempt's one watch thread: reads every slot once per tick and feeds
  each watcher (hang, step time, handshake, log silence).
- `steptime`: the pure step-time degradation decision.
- `steptime_watchdog`: `StepTimeWatcher`, which feeds it per rank.
- `handshake`: checkpoint requests out to the ranks; `HandshakeWatcher` reports commits.
- `phases`: `PhaseClock`, where an attempt's time went (init, named phases, steady steps).
"""
