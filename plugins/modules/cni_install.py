#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cni_install
short_description: Install the pycalico CNI executables (the launcher, compiled for one interpreter)
version_added: "0.1.0"
description:
  - Writes C(pycalico) and C(pycalico-ipam) into O(bin_dir) with the code of C(pycalico.cni.install)
    (the same as C(python -m pycalico.cni.install)).
  - Each file is the CNI launcher compiled for O(python), behind C(#!<python> -IS); a file is rewritten only
    when its interpreter, Python version or launcher would change, or its mode is not C(0755).
  - Run it with the pycalico interpreter (C(ansible_python_interpreter)), since the launcher is compiled
    for the Python that runs the module.
author:
  - pycalico developers (@pycalico)
requirements:
  - the pycalico package importable by the interpreter that runs the module
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without writing a file.
    support: full
  diff_mode:
    description: Returns each executable's first two lines (interpreter, launcher digest) before and after.
    support: full
options:
  bin_dir:
    description: The CNI plugin directory.
    type: path
    default: /opt/cni/bin
  python:
    description:
      - The absolute interpreter path written into the executables' first line.
      - Default the interpreter that runs the module (for a venv, its C(bin/python), not the file it links to).
    type: path
"""

EXAMPLES = r"""
- name: Install the CNI executables
  pycalico.network.cni_install:
    bin_dir: /opt/cni/bin
  vars:
    ansible_python_interpreter: /opt/pycalico/current/bin/python
"""

RETURN = r"""
executables:
  description: Each executable with whether it was (or, in check mode, would be) rewritten.
  returned: always
  type: list
  elements: dict
  sample: [{path: /opt/cni/bin/pycalico, changed: false}, {path: /opt/cni/bin/pycalico-ipam, changed: true}]
"""

import os
import sys
import traceback
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from pycalico.cni import install as cni_install
except ImportError:
    HAS_PYCALICO = False
    PYCALICO_IMPORT_ERROR = traceback.format_exc()  # type: str | None
else:
    HAS_PYCALICO = True
    PYCALICO_IMPORT_ERROR = None


def _describe(path, head):
    return "{0}: {1}".format(path, "absent or not mode 0755" if head is None else " / ".join(head.splitlines()))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bin_dir=dict(type="path", default="/opt/cni/bin"),
            python=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    if not HAS_PYCALICO:
        module.fail_json(msg=missing_required_lib("pycalico", reason="run the module with the pycalico venv's python "
                                                  "(ansible_python_interpreter)"),
                         exception=PYCALICO_IMPORT_ERROR)
    python = module.params["python"] or sys.executable
    if not os.path.isabs(python):
        module.fail_json(msg="python: {0!r} is not an absolute path; allowed: the absolute path of the interpreter "
                             "the executables run with".format(python))
    if not os.path.exists(python):
        module.fail_json(msg="python: {0} does not exist on this host; allowed: an installed interpreter with "
                             "pycalico".format(python))
    bin_dir = module.params["bin_dir"]
    paths = [os.path.join(bin_dir, name) for name in cni_install.NAMES]
    # read before the install rewrites them, and only for the diff
    before = [cni_install.installed_header(Path(path)) for path in paths] if module._diff else []
    try:
        results = cni_install.install(bin_dir, python, dry_run=module.check_mode)
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cannot install the CNI executables into {0}: {1}".format(bin_dir, exc))
    executables = [dict(path=str(path), changed=changed) for path, changed in results]
    changed = any(item["changed"] for item in executables)
    result = dict(changed=changed, executables=executables)
    if module._diff:
        wanted = cni_install.header(cni_install.launcher_source(python))
        result["diff"] = dict(
            before="".join(_describe(path, head) + "\n" for path, head in zip(paths, before)),
            after="".join(_describe(path, wanted) + "\n" for path in paths),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
