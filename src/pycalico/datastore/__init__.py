"""etcd v3 access: TLS, several endpoints, CAS transactions, paged list+watch, leases."""

from pycalico.datastore.etcd import EtcdClient, KeyValue, Pages, TlsConfig, WatchEvent, replay_safe, retry_on_conflict

__all__ = ["EtcdClient", "KeyValue", "Pages", "TlsConfig", "WatchEvent", "replay_safe", "retry_on_conflict"]
