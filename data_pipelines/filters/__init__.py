"""Document filters: each is a callable `Document -> Document | str` (kept document or removal reason)."""
