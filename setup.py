"""Package layout only; everything else is in pyproject.toml.

``cards/`` stays at the repository root, where the clinicians keep the rules, and is
shipped inside the package as ``cds_service.bundled_cards``, so an installed wheel finds
its rules without the source tree (``cds_service.config.bundled_cards_dir``).
``fhir_examples/`` is shipped the same way as ``cds_service.bundled_examples``, for
``cds-service example`` (``cds_service/examples.py``).
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["cds_service", "cds_service.*"]),
        "cds_service.bundled_cards",
        "cds_service.bundled_examples",
    ],
    package_dir={
        "cds_service.bundled_cards": "cards",
        "cds_service.bundled_examples": "fhir_examples",
    },
)
