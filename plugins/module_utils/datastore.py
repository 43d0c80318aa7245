# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""What every pycalico.network module shares: the etcd connection options, the
client, the one mapping of pycalico errors to fail_json, and diffs.

The modules are thin front ends over the ``pycalico`` package: resources,
validation and key layout come from ``pycalico.model``, never from here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import copy
import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    from pycalico.config import DatastoreSettings
    from pycalico.errors import PycalicoError, ValidationError
except ImportError:
    HAS_PYCALICO = False
    PYCALICO_IMPORT_ERROR = traceback.format_exc()  # type: str | None

    class PycalicoError(Exception):  # type: ignore[no-redef]
        pass

    class ValidationError(PycalicoError):  # type: ignore[no-redef]
        pass
else:
    HAS_PYCALICO = True
    PYCALICO_IMPORT_ERROR = None

# Metadata that changes on every write and says nothing about the desired state.
VOLATILE_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")


def connection_argument_spec():
    """The etcd connection options (documented by the pycalico.network.etcd doc fragment)."""
    return dict(
        etcd_endpoints=dict(type="list", elements="str", required=True),
        etcd_ca_cert_file=dict(type="path"),
        etcd_cert_file=dict(type="path"),
        etcd_key_file=dict(type="path", no_log=False),
    )


def check_pycalico(module):
    if not HAS_PYCALICO:
        module.fail_json(msg=missing_required_lib("pycalico (run the module with the pycalico venv's python, "
                                                  "e.g. ansible_python_interpreter=/opt/pycalico/current/bin/python3)"),
                         exception=PYCALICO_IMPORT_ERROR)


def etcd_client(module):
    """An EtcdClient built from the module's connection options through DatastoreSettings."""
    p = module.params
    settings = DatastoreSettings(
        endpoints=tuple(e.strip() for e in p["etcd_endpoints"] if e and e.strip()),
        ca_file=p.get("etcd_ca_cert_file") or "",
        cert_file=p.get("etcd_cert_file") or "",
        key_file=p.get("etcd_key_file") or "",
    )
    return settings.client()


@contextlib.contextmanager
def pycalico_errors(module, fields=None):
    """Map every pycalico error to ``fail_json`` (the one place that does it).

    ``fields`` maps model field names (``spec.ipipMode``) to module options
    (``ipip_mode``) so a validation message names the option the user wrote.
    """
    try:
        yield
    except ValidationError as err:
        option = (fields or {}).get(getattr(err, "field", None))
        msg = "%s: %s" % (option, err) if option else str(err)
        module.fail_json(msg=msg, field=getattr(err, "field", None), allowed=getattr(err, "allowed", None))
    except PycalicoError as err:
        module.fail_json(msg=str(err))


@contextlib.contextmanager
def connected(module, fields=None):
    """An etcd client for the module's connection options, closed on the way out, with
    every pycalico error mapped by pycalico_errors()."""
    with pycalico_errors(module, fields):
        client = etcd_client(module)
        try:
            yield client
        finally:
            client.close()


def comparable(resource):
    """Resource JSON without volatile metadata, or {} for none."""
    if resource is None:
        return {}
    data = resource.to_json() if hasattr(resource, "to_json") else copy.deepcopy(resource)
    meta = data.get("metadata") or {}
    for field in VOLATILE_METADATA:
        meta.pop(field, None)
    return data


def diff(before, after):
    return {"before": comparable(before), "after": comparable(after)}


def set_if_given(target, key, value):
    """Set ``target[key]`` when the module option was given (not None)."""
    if value is not None:
        target[key] = value
