"""The gang: what the pods of one training run tell each other through the run ledger.

- `records`: the ledger's records (attempt start, verdict, claim), their JSON encoding with
  a schema version, and the object names they live under. Plain data.
- `roles`: which verdicts hold a cause and which only saw a symptom of a peer's failure.
- `attribution`: whether a pod's verdict stays its own or becomes PEER_LEFT, so that one
  incident is counted at most once across the gang; and when a running pod stops with it.
- `node_history`: the device verdicts a node has had in the run, and the bound on how many
  uncounted exits it may have before the next one is counted.

All of it is pure: the storage-backed ledger (listing, reading, create-only writes) and the
loop that polls it call these functions with what they read and the time they measured.
"""
