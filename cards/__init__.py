"""Not code: makes the rule files an importable package for ``importlib.resources``.

The build ships this folder inside the wheel as ``cds_service.bundled_cards`` (setup.py),
so an installed service finds its rules without the source tree.
"""
