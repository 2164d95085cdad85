"""Absolute links: from ``IVCLMS_HTTP_PUBLIC_BASE_URL``, never from a Host header the service did not trust.

With the setting, every absolute URL the service writes (Content-Location, fullUrl, Location, next
links, ``$export`` manifests) starts with it, whatever Host the request carried. Without it, the
request's own Host is used, and Flask's ``TRUSTED_HOSTS`` (``IVCLMS_HTTP_TRUSTED_HOSTS``, set in
``service.api.build_app``) has already answered 400 to a request whose Host is not on the list.
"""

from __future__ import annotations

from typing import Any

from flask import request, url_for

from service.api.context import ctx


def root() -> str:
    """The service's root URL without a trailing slash (``https://ivclms.example.org``)."""
    configured = ctx().settings.http_public_base_url
    if configured:
        return configured.rstrip("/")
    return request.root_url.rstrip("/")


def absolute(path: str) -> str:
    """``path`` (starting with ``/``, relative to the service's root) as an absolute URL."""
    return root() + path


def fhir_base() -> str:
    return absolute("/fhir")


def this_url() -> str:
    """The request's own URL (path and query, quoted as werkzeug quotes ``request.url``) under the
    public root."""
    here = request.root_url.rstrip("/")
    if not request.url.startswith(here):  # not expected: both are built from the same host and root
        return absolute(request.full_path.rstrip("?"))
    return root() + request.url[len(here) :]


def url_to(endpoint: str, **values: Any) -> str:
    """``url_for`` as an absolute URL under the public root."""
    return absolute(url_for(endpoint, **values).removeprefix(request.script_root))
