"""The process edge: spawn, signal and reap the training tree, and pump its output.

- `children`: spawn with a clean signal state, reap as subreaper, kill the whole tree.
- `logpump`: copy the child's stdout/stderr to ours unchanged, feeding the matchers.
- `torchrun_errorfile`: torchrun's `TORCHELASTIC_ERROR_FILE` content as evidence.
"""
