"""/readyz against the real servers: HAPI up, then down after `scripts/hapi stop`; PostgreSQL reachable."""

import os
import socket
import subprocess
from pathlib import Path

from service import create_app
from service.settings import Settings

ROOT = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readyz_reports_the_shared_hapi_up(tmp_path, hapi_url):
    app = create_app(Settings(data_dir=tmp_path, auth_disabled=True, fhir_url=hapi_url))
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["checks"]["fhir_server"] == {"ok": True, "configured": True}


def test_readyz_reports_postgresql(tmp_path, pg_url):
    app = create_app(Settings(data_dir=tmp_path, auth_disabled=True, db_url=pg_url))
    resp = app.test_client().get("/readyz")
    app.extensions["ivclms"].engine.dispose()  # close the pooled connection now, not at GC time
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["checks"]["database"] == {"ok": True, "backend": "postgresql"}


def test_readyz_goes_down_after_scripts_hapi_stop(tmp_path):
    """Its own HAPI instance (own port and state), so stopping it does not disturb other tests."""
    port = _free_port()
    env = {**os.environ, "IVCLMS_HAPI_PORT": str(port), "IVCLMS_HAPI_STATE_DIR": str(tmp_path / "hapi")}
    script = str(ROOT / "scripts/hapi")
    subprocess.run([script, "start"], env=env, check=True, timeout=600)
    try:
        url = f"http://127.0.0.1:{port}/fhir"
        client = create_app(Settings(data_dir=tmp_path, auth_disabled=True, fhir_url=url)).test_client()
        assert client.get("/readyz").status_code == 200
        subprocess.run([script, "stop"], env=env, check=True, timeout=120)
        status = subprocess.run([script, "status"], env=env, timeout=30)
        assert status.returncode == 3
        resp = client.get("/readyz")
        assert resp.status_code == 503
        check = resp.get_json()["checks"]["fhir_server"]
        assert check["ok"] is False and "ConnectionError" in check["reason"]
    finally:
        subprocess.run([script, "stop"], env=env, timeout=120)
