"""etcd v3 access: TLS, several endpoints, CAS transactions, list+watch, leases."""

from pycalico.datastore.etcd import EtcdClient, KeyValue, TlsConfig, WatchEvent, retry_on_conflict

__all__ = ["EtcdClient", "KeyValue", "TlsConfig", "WatchEvent", "retry_on_conflict"]
