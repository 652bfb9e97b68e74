"""Names Kubernetes and registries accept: DNS labels, label keys and values, image references."""

from __future__ import annotations

import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

# The distribution/reference grammar: [domain[:port]/]path[:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
IMAGE_REF = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)


def dns1123_label_problem(value: str, what: str = "name") -> str | None:
    if not value:
        return f"{what} is empty"
    if len(value) > 63:
        return f"{what} '{value}' is {len(value)} characters; the limit is 63"
    if not DNS1123_LABEL.match(value):
        return (
            f"{what} '{value}' must be a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def dns1123_subdomain_problem(value: str, what: str = "name") -> str | None:
    """Names of Secrets, ConfigMaps and PersistentVolumeClaims: what Kubernetes accepts."""
    if not value:
        return f"{what} is empty"
    if len(value) > 253:
        return f"{what} '{value[:40]}...' is {len(value)} characters; the limit is 253"
    if not DNS1123_SUBDOMAIN.match(value):
        return (
            f"{what} '{value}' must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


# What people leave in a file copied from docs or a template: ACR_SECRET_HERE, <your-secret>,
# ${SECRET}, {{ .Values.secret }}, your-secret, changeme.
_PLACEHOLDER = re.compile(
    r"^(?:[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+"
    r"|.*[-_](?i:here)"
    r"|<[^>]*>"
    r"|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*"
    r"|\{\{.*\}\}"
    r"|(?i:your)[-_].*"
    r"|(?i:changeme|change-me|replace-?me|todo|tbd|xxx+))$"
)


def looks_like_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.match(value.strip()))


def label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return f"label key prefix '{prefix}' must be a DNS subdomain"
    if not name or len(name) > 63 or not LABEL_NAME.match(name):
        return f"label key '{key}' must be at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    return None


def label_value_problem(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > 63 or not LABEL_NAME.match(value):
        return f"label value '{value}' must be at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    return None


def image_ref_problem(ref: str) -> str | None:
    if not ref:
        return "image reference is empty"
    if len(ref) > 4096 or not IMAGE_REF.match(ref):
        return f"'{ref}' is not a valid image reference (registry/repository[:tag][@sha256:digest], lower-case repository)"
    return None


def image_registry(ref: str) -> str:
    """The registry host of an image reference (docker.io when none is written)."""
    m = IMAGE_REF.match(ref)
    domain = m.group("domain") if m else None
    if domain and ("." in domain or ":" in domain or domain == "localhost"):
        return domain
    return "docker.io"
