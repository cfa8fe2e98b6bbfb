"""NVIDIA AIPerf against the gateway's HTTP door (``make aiperf``)."""
