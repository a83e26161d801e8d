"""Workflow topologies (.yaml) and the example workflow's handlers."""
