"""Exposition text written directly, and a registry that lets collectors render their own.

At 10,000 caches the per-cache families hold ~150,000 samples. prometheus_client
renders each sample with name checks and label escaping (seconds per scrape), so
these families render their own text, and keep each cache's lines until that
cache's object changes (the local store hands back the same objects while
nothing changed). `collect()` parses that same text, so registry reads
(tests, `get_sample_value`) see exactly what a scrape sees.

Apart from the families that use it, so that the text format (escaping, HELP
and TYPE lines, numbers) is written in one place and the collectors above it
only say which lines they hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector


class TextCollector(Collector, ABC):
    """A collector that can also render its exposition text directly."""

    FAMILIES: tuple[tuple[str, str, str], ...] = ()  # (name, type, help)

    @abstractmethod
    def render(self) -> bytes:
        """The exposition text of every family in FAMILIES."""

    def describe(self) -> Iterator[Metric]:
        for name, kind, documentation in self.FAMILIES:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, documentation)

    def collect(self) -> Iterator[Metric]:
        yield from text_string_to_metric_families(self.render().decode())


def escape_value(value: str) -> str:
    """A label value as the text format writes it: backslash, newline and quote escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_set(**labels: str) -> str:
    """`{name="value",…}` in the order given."""
    return "{" + ",".join(f'{k}="{escape_value(v)}"' for k, v in labels.items()) + "}"


def family_header(name: str, kind: str, documentation: str) -> str:
    """A family's HELP and TYPE lines; a counter's samples are named with `_total`."""
    sample = f"{name}_total" if kind == "counter" else name
    return f"# HELP {sample} {documentation}\n# TYPE {sample} {kind}\n"


def sample_value(value: float) -> str:
    """A sample's value as prometheus_client writes it (`1.0`, `1e+20`, `inf`)."""
    return repr(float(value))


class ExpositionRegistry(CollectorRegistry):
    """A CollectorRegistry whose `exposition()` lets `TextCollector`s render themselves."""

    def exposition(self) -> bytes:
        with self._lock:
            collectors = list(self._collector_to_names)
        slow = [c for c in collectors if not isinstance(c, TextCollector)]
        fast = [c for c in collectors if isinstance(c, TextCollector)]

        class _Slow:
            @staticmethod
            def collect() -> Iterator[Metric]:
                for collector in slow:
                    yield from collector.collect()

        body = generate_latest(_Slow())  # generate_latest only calls collect()
        return b"".join([body, *(c.render() for c in fast)])
