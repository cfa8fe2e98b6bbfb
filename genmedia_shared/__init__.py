"""What the services and the model code both need, torch-free, importing neither.

The services (``services``) and the code Triton runs (``genmedia_models``)
agree on a few things: where the repository is, the public development keys
and the rule that refuses them outside development, the text watermark's
keyed hashing (the model marks with it, the gateway detects with it), and
the range of a seed. They live here, once; both sides import this package
and it imports neither (tests/unit/test_import_direction.py).
"""
