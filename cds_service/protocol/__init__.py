"""The CDS Hooks protocol: decode and validate requests, discovery, prefetch, fetch from
the FHIR server, feedback."""
