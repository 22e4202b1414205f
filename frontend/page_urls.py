"""URL templates that pages hand their ES modules, which fill in an id client-side."""
from __future__ import annotations

import uuid

from django.urls import reverse


def experiment_url_template() -> tuple[str, str]:
    """(the experiment page's URL with a placeholder id, the placeholder)."""
    placeholder = str(uuid.UUID(int=0))
    return reverse("frontend:experiment", args=[placeholder]), placeholder
