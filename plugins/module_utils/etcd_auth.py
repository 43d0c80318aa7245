# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""etcd v3 authentication (users, roles, permissions, auth on) over the JSON gateway,
stdlib only, for the pycalico.network.etcd_auth module.

It does not need the ``pycalico`` package, so it runs with any Python 3 on the deploy
host. Facts about etcd 3.4 this relies on, measured (tests/collection/test_etcd_auth.py):

- gRPC clients (kube-apiserver, etcdctl, Calico's Go client) are the user named by
  their client certificate's Common Name.
- The JSON gateway, once auth is on, answers HTTP 400 to every client certificate
  that carries a Common Name, whatever token it sends. A certificate without a CN
  is accepted: with a token (``/v3/auth/authenticate``) it is that token's user,
  without one it is the user named by the CN of the member's own certificate,
  which the gateway presents when it forwards the request to etcd's gRPC server.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import http.client
import json
import ssl
from urllib.parse import urlsplit

PERM_TYPES = ("read", "write", "readwrite")
ROOT = "root"
_NOT_ENABLED = "authentication is not enabled"
_CN_REFUSED = "CommonName of client sending a request against gateway"
_CN_OID = b"\x06\x03\x55\x04\x03"


class EtcdAuthError(Exception):
    """An answer of etcd or the connection that the module reports as it is."""

    def __init__(self, message, status=0, code=0):
        super(EtcdAuthError, self).__init__(message)
        self.status = status
        self.code = code


def _b64(raw):
    return base64.b64encode(raw).decode("ascii")


def _unb64(text):
    return base64.b64decode(text) if text else b""


def prefix_range_end(prefix):
    """The range_end that selects every key starting with ``prefix`` (bytes)."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


class Permission(object):
    """One key permission of a role: a single key (range_end empty) or a range."""

    __slots__ = ("key", "range_end", "perm_type")

    def __init__(self, key, range_end, perm_type):
        self.key = key
        self.range_end = range_end
        self.perm_type = perm_type

    @classmethod
    def from_option(cls, option):
        perm_type = option.get("type") or "readwrite"
        if option.get("prefix"):
            key = option["prefix"].encode()
            return cls(key, prefix_range_end(key), perm_type)
        return cls(option["key"].encode(), b"", perm_type)

    @classmethod
    def from_gateway(cls, raw):
        # READ is the enum's zero value, which the gateway leaves out of its JSON.
        return cls(_unb64(raw.get("key")), _unb64(raw.get("range_end")), str(raw.get("permType") or "READ").lower())

    @property
    def span(self):
        return (self.key, self.range_end)

    def describe(self):
        key = self.key.decode("utf-8", "backslashreplace")
        if not self.range_end:
            return {"key": key, "type": self.perm_type}
        if self.range_end == prefix_range_end(self.key):
            return {"prefix": key, "type": self.perm_type}
        return {"key": key, "range_end": self.range_end.decode("utf-8", "backslashreplace"), "type": self.perm_type}

    def __eq__(self, other):
        return isinstance(other, Permission) and (self.span, self.perm_type) == (other.span, other.perm_type)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.span, self.perm_type))


def certificate_common_name(path):
    """The subject Common Name of the first certificate in a PEM file ('' when it has none).

    A small DER walk (Certificate > tbsCertificate > subject) so the module needs no
    cryptography library; the issuer's CN is skipped on purpose.
    """
    with open(path, "rb") as handle:
        pem = handle.read()
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        raise EtcdAuthError("%s holds no PEM certificate" % path)
    der = base64.b64decode(b"".join(pem[start + len(begin):stop].split()))
    certificate = _children(der, 0, len(der))[0]
    tbs = _children(der, certificate[1], certificate[2])[0]
    fields = _children(der, tbs[1], tbs[2])
    if fields and fields[0][0] == 0xA0:  # explicit version
        fields = fields[1:]
    # serial, signature algorithm, issuer, validity, subject
    subject = fields[4]
    for rdn in _children(der, subject[1], subject[2]):               # SET
        for attribute in _children(der, rdn[1], rdn[2]):             # SEQUENCE {OID, value}
            oid, value = _children(der, attribute[1], attribute[2])[:2]
            if der[oid[1] - 2:oid[2]] == _CN_OID:
                return der[value[1]:value[2]].decode("utf-8", "replace")
    return ""


def _children(der, pos, end):
    """The DER elements between ``pos`` and ``end``, each (tag, content start, content end)."""
    elements = []
    while pos < end:
        element = _tlv(der, pos)
        elements.append(element)
        pos = element[2]
    return elements


def _tlv(der, pos):
    """(tag, content start, content end) of the DER element at ``pos``."""
    tag = der[pos]
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[pos:pos + count], "big")
        pos += count
    return tag, pos, pos + length


class AuthGateway(object):
    """The auth API of an etcd cluster through its JSON gateway (one connection per call)."""

    def __init__(self, endpoints, ca_file=None, cert_file=None, key_file=None, timeout=10.0):
        self.endpoints = [e.strip().rstrip("/") for e in endpoints if e and e.strip()]
        if not self.endpoints:
            raise EtcdAuthError("etcd_endpoints is empty: give at least one URL such as https://192.0.2.1:2379")
        self.timeout = timeout
        self.token = None
        self._context = None
        if any(e.startswith("https://") for e in self.endpoints):
            if not (ca_file and cert_file and key_file):
                raise EtcdAuthError("https endpoints need etcd_ca_cert_file, etcd_cert_file and etcd_key_file")
            try:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.load_verify_locations(cafile=ca_file)
                ctx.load_cert_chain(certfile=cert_file, keyfile=key_file)
            except (OSError, ssl.SSLError) as exc:
                raise EtcdAuthError("cannot load the etcd TLS files (ca=%s, cert=%s, key=%s): %s"
                                    % (ca_file, cert_file, key_file, getattr(exc, "strerror", None) or exc)) from None
            self._context = ctx

    def _connection(self, endpoint):
        parts = urlsplit(endpoint)
        host, port = parts.hostname or "127.0.0.1", parts.port or 2379
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._context)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def call(self, path, body=None):
        """POST ``body`` to ``path`` on the first member that answers; EtcdAuthError on an etcd error."""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = self.token
        unreachable = []
        for endpoint in self.endpoints:
            conn = self._connection(endpoint)
            try:
                conn.request("POST", path, body=json.dumps(body or {}).encode(), headers=headers)
                resp = conn.getresponse()
                status, data = resp.status, resp.read()
            except (OSError, http.client.HTTPException) as exc:
                unreachable.append("%s: %s" % (endpoint, exc))
                continue
            finally:
                conn.close()
            if status == 200:
                return json.loads(data) if data else {}
            try:
                decoded = json.loads(data)
            except ValueError:
                decoded = {"message": data.decode("utf-8", "replace").strip()}
            message = str(decoded.get("message") or decoded.get("error") or "HTTP %d" % status)
            if status in (502, 503) or int(decoded.get("code") or 0) == 14:
                unreachable.append("%s: %s" % (endpoint, message))
                continue
            raise EtcdAuthError("%s from %s: %s" % (path, endpoint, message), status, int(decoded.get("code") or 0))
        raise EtcdAuthError("no etcd endpoint answered: %s" % "; ".join(unreachable))

    def member_common_names(self):
        """The subject CN of each endpoint's server certificate: the user the gateway acts as
        for a request without a token."""
        names = []
        for endpoint in self.endpoints:
            parts = urlsplit(endpoint)
            if parts.scheme != "https":
                continue
            conn = self._connection(endpoint)
            try:
                conn.connect()
                cert = conn.sock.getpeercert() or {}
            except (OSError, http.client.HTTPException) as exc:
                raise EtcdAuthError("cannot read the server certificate of %s: %s" % (endpoint, exc)) from None
            finally:
                conn.close()
            for rdn in cert.get("subject", ()):
                for field, value in rdn:
                    if field == "commonName" and value not in names:
                        names.append(value)
        return names

    # ---- state ------------------------------------------------------------------------

    def login(self, password):
        """Authenticate as root. True when auth is on (the token is kept), False when it is off."""
        try:
            resp = self.call("/v3/auth/authenticate", {"name": ROOT, "password": password})
        except EtcdAuthError as exc:
            text = str(exc)
            if _NOT_ENABLED in text:
                return False
            if _CN_REFUSED in text:
                raise EtcdAuthError(
                    "etcd auth is on and its JSON gateway refuses client certificates that carry a Common Name; "
                    "give etcd_cert_file a certificate without CN (the certs role's pycalico.pem)") from None
            if exc.code == 3 or "authentication failed" in text:
                raise EtcdAuthError("etcd auth is on and refused the root password (%s); give the root password "
                                    "of this etcd" % text) from None
            raise
        self.token = resp.get("token")
        return True

    def users(self):
        return sorted(self.call("/v3/auth/user/list").get("users") or [])

    def roles(self):
        return sorted(self.call("/v3/auth/role/list").get("roles") or [])

    def user_roles(self, name):
        return sorted(self.call("/v3/auth/user/get", {"name": name}).get("roles") or [])

    def role_permissions(self, name):
        raw = self.call("/v3/auth/role/get", {"role": name}).get("perm") or []
        return [Permission.from_gateway(p) for p in raw]

    # ---- changes ----------------------------------------------------------------------

    def add_role(self, name):
        self.call("/v3/auth/role/add", {"name": name})

    def grant(self, role, perm):
        body = {"permType": perm.perm_type.upper(), "key": _b64(perm.key)}
        if perm.range_end:
            body["range_end"] = _b64(perm.range_end)
        self.call("/v3/auth/role/grant", {"name": role, "perm": body})

    def revoke(self, role, perm):
        body = {"role": role, "key": _b64(perm.key)}
        if perm.range_end:
            body["range_end"] = _b64(perm.range_end)
        self.call("/v3/auth/role/revoke", body)

    def add_user(self, name, password=None):
        if password is None:
            # No password: only a client certificate with this CN (gRPC) is this user.
            self.call("/v3/auth/user/add", {"name": name, "options": {"no_password": True}})
        else:
            self.call("/v3/auth/user/add", {"name": name, "password": password})

    def grant_role(self, user, role):
        self.call("/v3/auth/user/grant", {"user": user, "role": role})

    def change_password(self, user, password):
        self.call("/v3/auth/user/changepw", {"name": user, "password": password})

    def enable(self):
        self.call("/v3/auth/enable")

    def disable(self):
        self.call("/v3/auth/disable")


class Desired(object):
    """What the module options ask for."""

    def __init__(self, roles, users, gateway_role, gateway_users, auth_enabled):
        self.roles = roles                  # {name: [Permission]}
        self.users = users                  # {name: [role]}
        self.gateway_role = gateway_role    # str or None
        self.gateway_users = gateway_users  # [name]
        self.auth_enabled = auth_enabled


def desired_from_options(params, gateway_users):
    roles = {}
    for role in params.get("roles") or []:
        perms = []
        for option in role.get("permissions") or []:
            perm = Permission.from_option(option)
            if perm not in perms:
                perms.append(perm)
        roles[role["name"]] = perms
    users = {ROOT: [ROOT]}
    for user in params.get("users") or []:
        wanted = users.setdefault(user["name"], [])
        for role in user.get("roles") or []:
            if role not in wanted:
                wanted.append(role)
    gateway_role = params.get("gateway_role") or None
    if gateway_role:
        for name in gateway_users:
            wanted = users.setdefault(name, [])
            if gateway_role not in wanted:
                wanted.append(gateway_role)
    return Desired(roles, users, gateway_role, list(gateway_users) if gateway_role else [],
                   bool(params.get("auth_enabled")))


class Plan(object):
    """The changes that bring the etcd to the desired state, in a lockout-safe order:
    roles and their permissions, users and their roles, then auth on (last)."""

    def __init__(self):
        self.steps = []  # (description, callable(gateway))

    def add(self, description, action):
        self.steps.append((description, action))

    @property
    def descriptions(self):
        return [step[0] for step in self.steps]


def read_state(gateway, desired):
    """Users, roles and permissions of the names the module manages; missing ones are None."""
    existing_users = set(gateway.users())
    existing_roles = set(gateway.roles())
    role_names = set(desired.roles)
    for wanted in desired.users.values():
        role_names.update(r for r in wanted if r != ROOT)
    roles = {}
    for name in sorted(role_names):
        roles[name] = gateway.role_permissions(name) if name in existing_roles else None
    users = {}
    for name in sorted(desired.users):
        users[name] = gateway.user_roles(name) if name in existing_users else None
    return {"roles": roles, "users": users}


def validate(desired, state):
    """Refuse what would lock someone out or open the gateway; messages name the option."""
    errors = []
    for user, wanted in sorted(desired.users.items()):
        for role in wanted:
            if role != ROOT and role not in desired.roles and state["roles"].get(role) is None:
                errors.append("users: %s asks for role %r, which neither exists in etcd nor is in roles" % (user, role))
    if desired.gateway_role:
        for name in desired.gateway_users:
            if name == ROOT:
                errors.append("gateway_users: a member certificate's CN is root; every client of the JSON gateway "
                              "would be root. Issue the member certificates with another CN")
                continue
            held = set(desired.users.get(name) or []) | set(state["users"].get(name) or [])
            extra = sorted(held - {desired.gateway_role})
            if extra:
                errors.append("gateway_users: %s (the CN of a member certificate, whom every JSON gateway client "
                              "acts as) would also hold %s; allowed is only gateway_role %s"
                              % (name, ", ".join(extra), desired.gateway_role))
    return errors


def plan_changes(desired, state, auth_on, root_password):
    plan = Plan()
    for name, perms in sorted(desired.roles.items()):
        current = state["roles"].get(name)
        if current is None:
            plan.add("add role %s" % name, lambda g, n=name: g.add_role(n))
            current = []
        wanted_spans = {p.span for p in perms}
        for perm in current:
            if perm.span not in wanted_spans:
                plan.add("revoke %s from role %s" % (_text(perm), name), lambda g, n=name, p=perm: g.revoke(n, p))
        for perm in perms:
            if perm not in current:
                plan.add("grant %s to role %s" % (_text(perm), name), lambda g, n=name, p=perm: g.grant(n, p))
    root_created = False
    for name, wanted in sorted(desired.users.items(), key=lambda item: (item[0] != ROOT, item[0])):
        current = state["users"].get(name)
        if current is None:
            if name == ROOT:
                root_created = True
                plan.add("add user root (with the root password)", lambda g: g.add_user(ROOT, root_password))
            else:
                plan.add("add user %s (no password: the client certificate CN)" % name,
                         lambda g, n=name: g.add_user(n))
            current = []
        for role in wanted:
            if role not in current:
                plan.add("grant role %s to user %s" % (role, name), lambda g, u=name, r=role: g.grant_role(u, r))
    if desired.auth_enabled and not auth_on:
        if not root_created:
            # With auth off an existing root's password cannot be checked: make it ours, or auth on would
            # lock this module (and whoever relies on the password) out.
            plan.add("set the root password", lambda g: g.change_password(ROOT, root_password))
        plan.add("enable auth", lambda g: g.enable())
    if not desired.auth_enabled and auth_on:
        plan.add("disable auth", lambda g: g.disable())
    return plan


def comparable(state, auth_on):
    """JSON-friendly state for the diff (never a password)."""
    return {
        "auth_enabled": auth_on,
        "roles": {n: (None if p is None else sorted((_sorted_perm(x) for x in p), key=json.dumps))
                  for n, p in sorted(state["roles"].items())},
        "users": {n: (None if r is None else sorted(r)) for n, r in sorted(state["users"].items())},
    }


def expected(desired, state):
    """The state after the plan, computed without asking etcd (check mode's 'after')."""
    after = {"roles": dict(state["roles"]), "users": dict(state["users"])}
    for name, perms in desired.roles.items():
        after["roles"][name] = list(perms)
    for name, wanted in desired.users.items():
        after["users"][name] = sorted(set(state["users"].get(name) or []) | set(wanted))
    return after


def _sorted_perm(perm):
    return perm.describe()


def _text(perm):
    d = perm.describe()
    where = ("prefix %s" % d["prefix"]) if "prefix" in d else ("key %s" % d["key"])
    if "range_end" in d:
        where += " .. %s" % d["range_end"]
    return "%s on %s" % (d["type"], where)
