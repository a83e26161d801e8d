"""Operator controls of a workflow (README "Operator controls"): forced levels, manual
pauses and tools forced open, as compacted records on `W.control`, and the level the
ladder published there.

Modules:
  records   ControlRecord, its Avro codec (schemas/control.avsc) and ControlState (pure)
  state     read_control_state: the whole topic read once (for the CLI and the monitor)
  follow    ControlFollower: a live reader for workers and intakes
  writer    ControlWriter: writes one record and waits for the broker's acknowledgement
  commands  what each `streams control` command writes (pure)
  cli       `streams control TOPOLOGY ...`
  topic     ensure_control_topic: W.control created if missing (compacted)
"""
