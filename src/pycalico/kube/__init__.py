"""Kubernetes integration: the policy/profile/pod conversion and pycalico-kube-controllers."""
