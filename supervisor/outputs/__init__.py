"""What supervise tells the world: the event log and the termination message."""
