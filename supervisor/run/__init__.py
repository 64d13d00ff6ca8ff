"""The run: `session` assembles a run's edges from its options; `loop` owns the threads,
feeds events to the policy and executes its actions."""
