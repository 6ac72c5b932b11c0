"""The domain core: plain functions and types with no I/O (codes, calendars, consent, feed arithmetic)."""
