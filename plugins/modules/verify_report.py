#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: verify_report
short_description: The report of playbooks/verify.yml (a table per check, the broken pairs named) and its JSON
version_added: "0.1.0"
description:
  - Writes O(json_path) (every row, and whether all passed) and O(text_path) (the tables), then fails when any row
    failed, with the failed pairs in the message.
author:
  - pycalico developers (@pycalico)
options:
  rows:
    description: Rows from node_check, test_pod and pod_probe.
    type: list
    elements: dict
    required: true
  json_path:
    description: Where to write the JSON report.
    type: path
    required: true
  text_path:
    description: Where to write the readable report; empty skips.
    type: path
    default: ""
"""

EXAMPLES = r"""
- name: Report
  pycalico.network.verify_report:
    rows: "{{ rows }}"
    json_path: /tmp/verify.json
  delegate_to: localhost
"""

RETURN = r"""
report:
  description: The readable report.
  returned: always
  type: str
failed_rows:
  description: The rows that failed.
  returned: always
  type: list
  elements: dict
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils import netcheck


def main():
    module = AnsibleModule(argument_spec=dict(
        rows=dict(type="list", elements="dict", required=True),
        json_path=dict(type="path", required=True),
        text_path=dict(type="path", default=""),
    ), supports_check_mode=True)
    p = module.params
    rows = p["rows"]
    failed = [r for r in rows if not r.get("ok")]
    text = netcheck.render(rows)
    for path in filter(None, (os.path.dirname(p["json_path"]), os.path.dirname(p["text_path"] or ""))):
        if not os.path.isdir(path):
            os.makedirs(path)
    with open(p["json_path"], "w") as f:
        json.dump({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "ok": not failed,
                   "failed": len(failed), "rows": rows}, f, indent=2)
    if p["text_path"]:
        with open(p["text_path"], "w") as f:
            f.write(text)
    result = dict(changed=False, report=text, failed_rows=failed, report_lines=text.splitlines())
    if failed:
        module.fail_json(msg="verify: %d of %d checks failed: %s" % (len(failed), len(rows), "; ".join(
            "%s %s%s" % (r["check"], r["node"], " -> " + r["peer"] if r.get("peer") else "") for r in failed)),
            **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
