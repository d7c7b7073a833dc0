"""Download statistics: counted in memory on the hot path, flushed to the database in batches.

- :mod:`~mirrorhub.stats.counter`: the hot-path :class:`Recorder` (a few dict operations).
- :mod:`~mirrorhub.stats.flush`: swaps the counters out every few seconds and adds them to
  the daily tables with atomic upserts; keeps them in a bounded buffer while the database
  is unreachable.
- :mod:`~mirrorhub.stats.retention`: daily rows older than ``stats_raw_days`` become
  monthly totals.
- :mod:`~mirrorhub.stats.queries`: top files, per mirror, per country, over time.

Only ``counter`` is imported by the dispatcher at start-up; it does not import the ORM.
"""
