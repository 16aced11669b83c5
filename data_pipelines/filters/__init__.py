"""Document filters: callables `Document -> Document | str` (the kept document or a reason)."""
