"""Intake: admits new runs into a workflow over HTTP, with backpressure at the door.

Owns the service side of admission (settings, later the HTTP app and its Kafka I/O); the
decisions themselves live in streams.policy.admission and must stay there.
"""
