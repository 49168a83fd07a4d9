"""Rendering: the engine's facts as words, CDS Hooks cards and explanation pages."""
