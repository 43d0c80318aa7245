"""Felix's length-limited names for chains and IP sets (calico-policy.md §4.10)."""

from __future__ import annotations

import base64
import functools
import hashlib

MAX_CHAIN = 28
MAX_IPSET = 31


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def length_limited(prefix: str, suffix: str, limit: int = MAX_CHAIN) -> str:
    """``prefix + suffix`` when it fits; otherwise ``prefix + '_' +`` a SHA-256 prefix of the suffix."""
    name = prefix + suffix
    if len(name) < limit or (len(name) == limit and not suffix.startswith("_")):
        return name
    return prefix + "_" + _b64(hashlib.sha256(suffix.encode()).digest())[:limit - 1 - len(prefix)]


@functools.lru_cache(maxsize=65536)  # every rule of a policy names the same few sets
def set_id(kind: str, text: str) -> str:
    """``s:`` + 23 chars of base64url(SHA-224(kind + ':' + text)), Felix's unique set IDs."""
    return f"{kind}:" + _b64(hashlib.sha224(f"{kind}:{text}".encode()).digest())[:MAX_IPSET - 6 - len(kind) - 1]


def ipset_name(ident: str, version: int = 4) -> str:
    return (f"cali{version}0" + ident)[:MAX_IPSET]


def rule_hash(previous: str, chain: str, rule: str) -> str:
    """Felix-style ``cali:<16 chars>`` rule IDs: a hash chained over the chain's rules,
    so a rule's ID changes when anything before it changes (used to detect drift)."""
    digest = hashlib.sha224(f"{previous}\x00{chain}\x00{rule}".encode()).digest()
    return _b64(digest)[:16]
