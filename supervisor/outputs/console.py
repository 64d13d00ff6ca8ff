"""The verdict for a person, where it matters most: one line on stderr when the run never
got going.

A CONFIG_ERROR (a bad flag, a command that cannot be found) or any refusal before the
command started is something a person must fix, and the JSON `exit` event may go where
nobody reads (`--event-log /dev/null`, a collector). So these verdicts also print
`supervise: error: REASON`, once, on a line of their own. Other verdicts stay on the event
log and in the termination message. Writing raises `OSError` to the router.
"""

from __future__ import annotations

from supervisor.core.exitcodes import ExitCode
from supervisor.core.outputs import Exited, Output
from supervisor.outputs.eventlog import stderr_line
from supervisor.process.logpump import SharedStream


class Console:
    name = "stderr"
    path = "-"

    def __init__(self, stderr: SharedStream) -> None:
        self._stderr = stderr

    def write(self, output: Output, wall: float, mono: float) -> None:
        if isinstance(output, Exited) and _for_a_person(output):
            stderr_line(self._stderr, f"supervise: error: {output.reason}\n".encode())

    def close(self) -> None:
        pass


def _for_a_person(verdict: Exited) -> bool:
    """A CONFIG_ERROR, or a refusal (supervise stopped before starting the command)."""
    refused = bool(verdict.evidence) and verdict.evidence[0].source == "supervise"
    return verdict.code is ExitCode.CONFIG_ERROR or refused
