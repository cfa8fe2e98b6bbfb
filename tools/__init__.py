"""What genmedia is built and checked with but never ships: the demo-pack trainers
(tools/training), test checkpoints (tools/test_weights.py), the load test (tools/load),
the soak (tools/soak) and a keyed local stack for runs (tools/keyed_stack.py)."""
