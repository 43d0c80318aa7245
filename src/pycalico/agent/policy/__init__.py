"""Network policy the way Felix enforces it (calico-policy.md).

``labels`` and ``selectors`` turn datastore objects into what selectors see;
``rules`` converts Calico rules into backend-neutral matches; ``resolve``
decides which tiers, policies and profiles apply to each local endpoint and
which IP sets exist (the ``PolicyModel``); ``iptables`` renders that model
into Felix's chain layout and ``dataplane`` writes it incrementally. A native
nftables backend would be a second renderer/writer pair over the same model.
"""
