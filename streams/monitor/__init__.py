"""The monitor (`streams monitor TOPOLOGY`): lag, time lag, oldest queued age, Burrow
status, pauses, workers, dead letters and intake decisions of one workflow, read from
Kafka alone; shown as a terminal view, JSON, a Prometheus exporter and a status page.

Owns nothing itself; see the modules: model (the snapshot), stage_view (pure assembly),
counts, collector (the Kafka reads), view, page, exporter, run.
"""
