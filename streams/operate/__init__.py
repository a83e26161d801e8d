"""Operating a workflow from the command line: `streams dlq replay` (dead letters back
through admission, recorded on `W.replays`) and `streams runs get` (where a run is).

Owns no state: replay_plan is pure (requests, keys, results), doors reach the intake,
replay_log reads and writes `W.replays`, replay paces and records, runs reads the ledger.
"""
