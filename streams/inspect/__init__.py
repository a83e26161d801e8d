"""Reading a workflow's topics for people: `streams dlq list|show` (dead letters, decoded
as far as they decode) and `streams tail` (records as they pass).

Owns nothing itself: dead_letters and records are pure (decode, filter, print), reading
does the Kafka reads (through streams.kafka).
"""
