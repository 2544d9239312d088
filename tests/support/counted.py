"""What this process's metrics have counted, read as a scrape reads them (idp.metrics)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from idp import metrics


def counted(sample_name: str, **labels: str) -> float:
    """The sum of this process's samples named ``sample_name`` (``idp_..._total`` for a counter)
    whose labels include ``labels``; 0 when none has been counted yet."""
    text, _ = metrics.exposition()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == sample_name
        and all(sample.labels.get(name) == value for name, value in labels.items())
    )
