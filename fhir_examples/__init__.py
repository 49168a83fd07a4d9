"""Not code: makes the example hook requests an importable package for ``importlib.resources``.

The build ships this folder inside the wheel as ``cds_service.bundled_examples`` (setup.py),
so ``cds-service example NAME`` works without the source tree (``cds_service/examples.py``).
"""
