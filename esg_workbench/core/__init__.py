"""Plain types and errors shared by every layer. No I/O, no Qt."""
