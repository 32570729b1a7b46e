"""Every Prometheus metric memesearch exports, on a registry owned by one app instance."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from memesearch.embed.batcher import Kind, Priority
from memesearch.ingest.pipeline import IndexReport
from memesearch.search.query import Term

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_REPORT_OUTCOMES = ("added", "updated", "renamed", "copied", "removed")


class Metrics:
    """Counters, gauges and histograms; live gauges read their value when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.files_indexed = Gauge(
            "memesearch_files_indexed", "Files with a vector of the current model.", registry=r
        )
        self.files_failed = Gauge(
            "memesearch_files_failed", "Files recorded as failed, with a reason.", registry=r
        )
        self.index_vectors = Gauge(
            "memesearch_index_vectors", "Vectors in the in-memory search index.", registry=r
        )
        self.embed_queue_depth = Gauge(
            "memesearch_embed_queue_depth", "Items waiting for a forward pass.", registry=r
        )
        self.indexing = Gauge("memesearch_indexing", "1 while an indexing pass runs.", registry=r)
        self.embed_batch_size = Histogram(
            "memesearch_embed_batch_size",
            "Items per forward pass.",
            ["kind", "priority"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.embed_seconds = Histogram(
            "memesearch_embed_seconds", "Duration of one forward pass.", ["kind"], registry=r
        )
        self.index_changes = Counter(
            "memesearch_index_changes",
            "Files changed by indexing passes.",
            ["outcome"],
            registry=r,
        )
        self.index_failures = Counter(
            "memesearch_index_failures", "Files that failed to index.", registry=r
        )
        self.query_terms = Counter(
            "memesearch_query_terms", "Query terms received, by type.", ["type"], registry=r
        )
        self.searches = Counter("memesearch_searches", "Searches answered.", registry=r)

    def bind(
        self,
        *,
        index_size: Callable[[], int],
        queue_depth: Callable[[], int],
        indexing: Callable[[], bool],
    ) -> None:
        """Connect live gauges to the running parts."""
        self.index_vectors.set_function(lambda: float(index_size()))
        self.embed_queue_depth.set_function(lambda: float(queue_depth()))
        self.indexing.set_function(lambda: float(indexing()))

    def observe_batch(self, kind: Kind, priority: Priority, size: int, seconds: float) -> None:
        """Record one forward pass (a MicroBatcher observer)."""
        self.embed_batch_size.labels(kind.value, priority.name.lower()).observe(size)
        self.embed_seconds.labels(kind.value).observe(seconds)

    def observe_report(self, report: IndexReport) -> None:
        """Record what an indexing pass changed."""
        for outcome in _REPORT_OUTCOMES:
            self.index_changes.labels(outcome).inc(getattr(report, outcome))
        self.index_failures.inc(len(report.failed))

    def observe_query(self, terms: Sequence[Term]) -> None:
        """Count a search and its terms by type."""
        self.searches.inc()
        for term in terms:
            self.query_terms.labels(term.kind).inc()

    def set_counts(self, *, indexed: int, failed: int) -> None:
        """Store totals (refreshed after every pass and on /api/status)."""
        self.files_indexed.set(indexed)
        self.files_failed.set(failed)
