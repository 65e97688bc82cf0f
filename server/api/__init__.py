"""Request handling: transport-agnostic handlers (``handlers``) and thin transport adapters."""
