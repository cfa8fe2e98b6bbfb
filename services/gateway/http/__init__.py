"""The gateway's HTTP door: the OpenAI-compatible API and JSON for every RPC.

It runs on the gateway's event loop and calls the same methods the gRPC door forwards,
through the same admission (keys, quotas, in-flight limit), retries and deadlines; each
call is recorded in the same RED metrics with ``protocol="http"``.
"""
