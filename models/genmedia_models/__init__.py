"""PyTorch model code that runs inside Triton's python backend.

Imported only by the model repository (models/repository/*/1/model.py), by
the test-weights writer and by tests; the gRPC services never import torch.
"""
