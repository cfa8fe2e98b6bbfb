"""Training of the demo model pack (``make demo-models``): data, training loops, quality."""
