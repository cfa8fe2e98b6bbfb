"""GPT-2 served by Triton: loading (loading.py), batched decoding over a shared key/value
cache (decoder.py), sampling (sampling.py), the green-list watermark (watermark.py), the
continuous batcher (batching.py), token delivery off its loop (delivery.py), and the types
they share (types.py)."""
