"""``GET /metrics``: the server's counters in Prometheus text (prometheus-client, a registry of
the app's own, so two apps in one process do not collide).

jailpy_runs_total{verdict}, jailpy_run_seconds (histogram of a /v1/run request's sandbox time),
jailpy_judgings_total{verdict}, jailpy_requests_in_flight, jailpy_requests_rejected_total (429s),
jailpy_slots / jailpy_slots_free (permits), and the pool's jailpy_pool_* counters: runs,
verifications, verification failures (and by kind), destroyed slots, canary probes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class _PoolCollector:
    def __init__(self, pool, permits) -> None:
        self.pool, self.permits = pool, permits

    def collect(self):
        st = self.pool.stats()
        for key, doc in (("runs", "Sandbox runs in pooled slots"), ("verifications", "Slot verifications after a run"),
                         ("verification_failures", "Verifications that found a doubt"),
                         ("destroyed", "Slots destroyed on a doubt"), ("canary_probes", "Canary probes run"),
                         ("created", "Slots created")):
            yield CounterMetricFamily(f"jailpy_pool_{key}", doc, value=st[key])
        fam = CounterMetricFamily("jailpy_pool_verification_failures_by_kind", "Failed verifications by check",
                                  labels=["check"])
        for kind, n in st["failures"].items():
            fam.add_metric([kind], n)
        yield fam
        yield GaugeMetricFamily("jailpy_slots", "Sandbox slots (permits)", value=self.permits.n)
        yield GaugeMetricFamily("jailpy_slots_free", "Free sandbox slots", value=self.permits.free)
        yield GaugeMetricFamily("jailpy_pool_slots_cleaning", "Slots being verified", value=st["cleaning"])


class Metrics:
    def __init__(self, pool, permits) -> None:
        self.registry = r = CollectorRegistry()
        self.runs = Counter("jailpy_runs", "Commands run, by jailpy verdict", ["verdict"], registry=r)
        self.run_seconds = Histogram("jailpy_run_seconds", "Seconds a /v1/run request spent running", registry=r,
                                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.judged = Counter("jailpy_judgings", "Submissions judged, by verdict", ["verdict"], registry=r)
        self.in_flight = Gauge("jailpy_requests_in_flight", "Requests running now (the queue depth: there is no "
                               "other queue in the server)", registry=r)
        self.rejected = Counter("jailpy_requests_rejected", "Requests refused with 429 (all slots busy)", registry=r)
        r.register(_PoolCollector(pool, permits))

    def observe(self, results: list[dict], seconds: float) -> None:
        for res in results:
            self.runs.labels(verdict=res["verdict"]).inc()
        self.run_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
