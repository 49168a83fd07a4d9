"""The HTTP layer: the only code that imports Flask (import-linter checks); it chooses
every HTTP status."""
