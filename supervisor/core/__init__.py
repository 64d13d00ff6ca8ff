"""The decision core: plain data and pure decisions, no I/O.

- `exitcodes`: the exit-code contract, the single source of truth.
- `errors`: the exception hierarchy; each error carries its exit class.
- `clock`: the monotonic clock protocol and its fake.
- `events`: what reaches the policy (events), what it returns (actions), and findings.
- `options`: the run's frozen, validated options.
- `policy`: the pure transition table, `step(config, state, event) -> (state, actions)`.
- `classify`: how a child's exit and the findings become a class.
- `matchers`: log-line patterns (NCCL, CUDA, gloo) as findings.

Layer rule: `exitcodes`, `errors`, `clock`, `events` and `options` use the standard library
only; `policy`, `classify` and `matchers` import nothing but those.
"""
