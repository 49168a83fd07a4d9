"""CDS Hooks service that suggests where to refer a patient with leg cramps."""

__version__ = "0.1.0"
SERVICE_ID = "leg-cramp-referral"
