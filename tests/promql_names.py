"""The series names a PromQL expression reads, from a real PromQL parser (promql-parser,
the Rust implementation's bindings), so a name inside a label matcher, a `by` clause or a
string is never mistaken for a metric."""

from __future__ import annotations

import re

import promql_parser

# Grafana's built-in range variables, and dashboard variables ($workflow, ${stage}) that
# stand outside label values: replaced by something the parser accepts.
_GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)\b")
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")


def grafana_to_promql(expr: str) -> str:
    return _GRAFANA_VARIABLE.sub("x", _GRAFANA_RANGES.sub("5m", expr))


def series_names(expr: str) -> set[str]:
    """Metric names of every vector selector in `expr`; raises ValueError if it does not
    parse."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            else:  # {__name__="..."}: still a name
                for matcher in node.matchers.matchers:
                    if matcher.name == "__name__":
                        names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names
