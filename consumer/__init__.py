"""ordermail."""
