"""Felix's policy metrics under Felix's own names, so a Felix Grafana dashboard works.

Counters are exposed untyped under the exact names Felix's Go client exports
(prometheus_client would append ``_total`` to a counter); values are read from
the engine at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Summary
from prometheus_client.core import GaugeMetricFamily, UntypedMetricFamily
from prometheus_client.registry import Collector


class _EngineCollector(Collector):
    def __init__(self, engine: Callable[[], Any]) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        engine = self.engine()
        dp = engine.dataplane if engine is not None else None
        model = engine.model if engine is not None else None
        counters = {
            "felix_iptables_restore_calls": ("Number of iptables-restore calls.", dp.restore_calls if dp else 0),
            "felix_iptables_restore_errors": ("Number of iptables-restore errors.", dp.restore_errors if dp else 0),
            "felix_ipset_calls": ("Number of ipset commands executed.", dp.ipset_calls if dp else 0),
            "felix_ipset_errors": ("Number of ipset command failures.", dp.ipset_errors if dp else 0),
        }
        for name, (text, value) in counters.items():
            yield UntypedMetricFamily(name, text, value=value)
        gauges = {
            "felix_active_local_endpoints": ("Number of active endpoints on this host.",
                                             engine.local_endpoints if engine else 0),
            "felix_active_local_policies": ("Number of active policies on this host.",
                                            engine.calculator.active_policies if engine else 0),
            "felix_active_local_selectors": ("Number of active selectors on this host.",
                                             sum(1 for s in model.ipsets.values() if s.kind == "hash:net")
                                             if model else 0),
            "felix_ipsets_total": ("Total number of active IP sets.", dp.set_count if dp else 0),
        }
        for name, (text, value) in gauges.items():
            yield GaugeMetricFamily(name, text, value=value)
        chains = GaugeMetricFamily("felix_iptables_chains", "Number of active iptables chains.",
                                   labels=["ip_version", "table"])
        for table in ("filter", "raw", "mangle"):
            chains.add_metric(["4", table], dp.chain_count(table) if dp else 0)
        yield chains
        rules = GaugeMetricFamily("felix_iptables_rules", "Number of active iptables rules.",
                                  labels=["ip_version", "table"])
        for table in ("filter", "raw", "mangle"):
            rules.add_metric(["4", table], dp.rule_count(table) if dp else 0)
        yield rules


class PolicyMetrics:
    def __init__(self, registry: CollectorRegistry, engine: Callable[[], Any]) -> None:
        registry.register(_EngineCollector(engine))
        self.apply_time = Summary("felix_int_dataplane_apply_time_seconds",
                                  "Time in seconds that it took to apply a dataplane update.", registry=registry)
        self.applied_revision = Gauge("pycalico_agent_applied_revision",
                                      "Latest datastore revision of each watched prefix that the dataplane reflects",
                                      ["source"], registry=registry)
