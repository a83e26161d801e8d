"""Fixture topologies and handler modules for tests/unit/test_topology.py."""
