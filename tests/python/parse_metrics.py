"""Reads a Prometheus text exposition on stdin and prints it as JSON with the Prometheus
project's own parser (prometheus_client): a list of {"name", "type", "samples": [{"name",
"labels", "value"}]}. Exits non-zero, with the parser's message, on text it does not accept."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append(
        {
            "name": family.name,
            "type": family.type,
            "documentation": family.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
            ],
        }
    )
json.dump(families, sys.stdout)
