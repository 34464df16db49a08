"""Deployment helpers: TLS certificates, SuperNode keys, per-site data and state, and
who may run code at the sites.

fedsim runs on Flower's own deployment engine (``flower-superlink``,
``flower-supernode``, ``flwr run``); this package only removes friction around it:
certificates (:mod:`fedsim.deploy.certs`), SuperNode authentication keys
(:mod:`fedsim.deploy.nodekeys`), a site's local data (:mod:`fedsim.deploy.site`), its
persistent privacy state (:mod:`fedsim.deploy.state`), and the containers: the compose
file (:mod:`fedsim.deploy.compose`) and their health probe (:mod:`fedsim.deploy.health`).
It also closes what Flower 1.41 leaves open: the coordinator's TLS front with an
mTLS-only Control port (:mod:`fedsim.deploy.front`, :mod:`fedsim.deploy.coordinator`),
signed apps that sites check before running them (:mod:`fedsim.deploy.appsign`,
:mod:`fedsim.deploy.supernode`), confined run paths (:mod:`fedsim.deploy.confine`) and
client-id bindings (:mod:`fedsim.deploy.bindings`).
"""
