"""What ``greengrasssdk`` imports from the Greengrass v1 core (edgectl's implementation)."""
