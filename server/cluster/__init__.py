"""Cluster mode (`serve --cluster`, docs/cluster.md): this process is the gateway, Ray actors are the workers.

The gateway keeps everything network-facing (transports, auth, limits, metrics, the pacer of each
session); each session's model side runs on a worker (`streaming.production_host.ProductionHost`
inside a Ray actor). Ray is imported only by the modules that need it, and only when `--cluster` is given.
"""
