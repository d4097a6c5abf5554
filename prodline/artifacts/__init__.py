"""Artifacts out of workflow history: the store, release bundles, the worker's bundle cache.

History holds references (keys and digests); the bytes live in an artifact store
every worker and the CLI reach:

* :mod:`.store` -- the store interface, the local folder (the embedded default) and
  :func:`open_store`, which picks the backend from ``PRODLINE_ARTIFACTS``
* :mod:`.s3` -- S3-compatible object storage through boto3
* :mod:`.bundle` -- packing a folder into a canonical, content-addressed archive
* :mod:`.cache` -- a worker's verified, extracted copies of bundles, and each
  activity attempt's own writable copy

The workflow never imports this package (it does I/O); the CLI packs and uploads,
activities fetch and verify.
"""
