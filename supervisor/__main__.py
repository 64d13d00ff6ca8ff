"""`python -m supervisor` is `supervise`."""

from supervisor.cli import main

main()
