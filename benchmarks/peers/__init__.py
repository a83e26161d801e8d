"""The peers benchmark: streams, the bare confluent-kafka loop, Quix Streams, arroyo and
faust-streaming on the same passthrough and I/O-bound work (python -m benchmarks.peers).

Imports nothing: the peer children (quix_peer, arroyo_peer, faust_peer, and the helpers
envelope and child) run in the peers' own virtual environments, where neither streams
nor this project's dependencies are installed.
"""
