"""Fleet scale: a per-device baseline for thousands of devices on Dask, signed and reported.

- :mod:`~tinywarden.fleet.manifest`: who is in a simulated fleet, how each device was made, who was attacked.
- :mod:`~tinywarden.fleet.dataset`: the fleet as a Parquet dataset partitioned by ``device_id``.
- :mod:`~tinywarden.fleet.device`: one device's job on a worker (train, quantize, size, unsigned bundle, score).
- :mod:`~tinywarden.fleet.ledger`: signing, atomic writes, versions and resume in the output folder.
- :mod:`~tinywarden.fleet.run`: the Dask client (local cluster or a scheduler) and the fleet loop.
- :mod:`~tinywarden.fleet.report`: the self-contained HTML page and JSON summary.

Dask is an optional dependency (``pip install 'tinywarden[fleet]'``), imported only when a fleet runs.
"""
