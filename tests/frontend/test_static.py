"""Static files as production serves them (DEBUG off, ``collectstatic`` run): hashed names
cached for good, gzipped when the browser accepts it, plotly.js among them."""
import json

import requests

from frontend.staticfinders import PLOTLY_JS

SOURCES = {"vendor/plotly.min.js": PLOTLY_JS}


def test_it_serves_the_pages_scripts_gzipped_under_hashed_names(asgi_server, collected_static):
    manifest = json.loads((collected_static / "staticfiles.json").read_text())["paths"]
    for name in ("vendor/plotly.min.js", "frontend/devices.js", "frontend/api.js",
                 "frontend/estuary.css"):
        answer = requests.get(f"{asgi_server}/static/{manifest[name]}", timeout=30,
                              headers={"Accept-Encoding": "gzip"})
        assert answer.status_code == 200, name
        assert answer.headers["Content-Encoding"] == "gzip", name
        assert "immutable" in answer.headers["Cache-Control"], name
        source = SOURCES.get(name) or collected_static / name
        assert answer.content == source.read_bytes(), name  # requests un-gzips

    # Pages link the hashed names; an ES module's relative import ("./api.js") still works.
    login = requests.get(f"{asgi_server}/accounts/login/", timeout=30)
    assert f"/static/{manifest['frontend/estuary.css']}" in login.text
    assert requests.get(f"{asgi_server}/static/frontend/api.js", timeout=30).ok


def test_it_sends_plain_bytes_to_a_client_that_does_not_accept_gzip(asgi_server,
                                                                     collected_static):
    manifest = json.loads((collected_static / "staticfiles.json").read_text())["paths"]
    answer = requests.get(f"{asgi_server}/static/{manifest['vendor/plotly.min.js']}",
                          headers={"Accept-Encoding": "identity"}, timeout=30)
    assert "Content-Encoding" not in answer.headers
    assert answer.content == PLOTLY_JS.read_bytes()
