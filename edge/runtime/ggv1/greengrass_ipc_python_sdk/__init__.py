"""The HTTP client ``greengrasssdk.Lambda`` uses to reach the core (edgectl's implementation)."""
