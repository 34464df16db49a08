"""Deployment helpers: TLS certificates, SuperNode keys, per-site data and state.

fedsim runs on Flower's own deployment engine (``flower-superlink``,
``flower-supernode``, ``flwr run``); this package only removes friction around it:
certificates (:mod:`fedsim.deploy.certs`), SuperNode authentication keys
(:mod:`fedsim.deploy.nodekeys`), a site's local data (:mod:`fedsim.deploy.site`), its
persistent privacy state (:mod:`fedsim.deploy.state`), and the containers: the compose
file (:mod:`fedsim.deploy.compose`) and their health probe (:mod:`fedsim.deploy.health`).
"""
