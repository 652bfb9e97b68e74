"""kaito-gitops: a GitOps daemon for Kaito-style LLM Workspaces.

Data flows one way: source (git revision) -> load -> validate -> plan -> apply
(provisioner + target) -> status -> report. Load, validate and plan are pure.
"""

__version__ = "0.1.0"  # the one version; scripts/set-version.py writes it and the image tags in deploy/
