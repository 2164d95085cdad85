"""Issue 13, finding 7, on the real HAPI FHIR server and PostgreSQL: cases posted while sync is off
reach HAPI exactly once after sync is turned on.

The scenario of the issue: the service runs without IVCLMS_FHIR_URL and takes cases over HTTP; it is
restarted with IVCLMS_FHIR_URL, and re-posting a case answers 200 (unchanged, nothing queued). Then
two `ivclms worker` processes start at the same moment on the same PostgreSQL database: each runs the
backfill at start, and between them every case is queued once and sent once (counted by the proxy in
front of HAPI, and by our business identifiers on HAPI).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter

from sqlalchemy import func, select

from service import create_app
from service.settings import Settings
from service.store.tables import outbox
from tests.support.sync import (
    EXAMPLES,
    ROOT,
    Proxy,
    _start_worker,
    _worker_env,
    assert_hapi_holds_exactly,
    newest_bundles,
    states,
    tagged,
    wait_for,
)


def test_finding_7_cases_posted_with_sync_off_reach_hapi_exactly_once_after_sync_is_turned_on(
    package_loaded, hapi, engine, db_url, hapi_url, tag, tmp_path
):
    cases = [tagged(p, tag) for p in EXAMPLES]
    off = create_app(Settings(data_dir=tmp_path, db_url=db_url, auth_disabled=True, fhir_url=""))
    with off.test_client() as http:
        for case in cases:
            assert http.post("/cases", json=case).status_code == 201
    off.extensions["ivclms"].engine.dispose()
    assert states(engine) == Counter()  # stored while sync was off: nothing queued

    proxy = Proxy(hapi_url, delay_s=0.05)
    try:
        on = create_app(Settings(data_dir=tmp_path, db_url=db_url, auth_disabled=True, fhir_url=proxy.url))
        with on.test_client() as http:
            again = http.post("/cases", json=cases[0])
        on.extensions["ivclms"].engine.dispose()
        assert again.status_code == 200  # unchanged: still nothing queued, as the issue saw
        assert states(engine) == Counter()

        env = _worker_env(db_url, proxy.url, tmp_path)
        log = tmp_path / "workers.log"
        workers = [_start_worker(env, log), _start_worker(env, log)]  # both backfill at start
        try:
            wait_for(lambda: states(engine) == Counter({"done": len(cases)}), "every case delivered")
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                assert worker.wait(timeout=60) == 0, log.read_text()
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()

        with engine.connect() as conn:
            refs = list(conn.execute(select(outbox.c.case_ref)).scalars())
            servers = set(conn.execute(select(outbox.c.server_url)).scalars())
            queued = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
        assert queued == len(cases)  # queued once, though two workers backfilled at the same moment
        assert servers == {proxy.url}
        bundles = newest_bundles(engine, refs)
        assert proxy.forwarded == Counter(dict.fromkeys(bundles, 1))  # each sent once
        assert_hapi_holds_exactly(hapi, list(bundles.values()), tag)  # each identifier once on HAPI
        assert "backfill for " + proxy.url in log.read_text()

        rerun = subprocess.run(
            [sys.executable, "-m", "service.cli", "sync", "backfill"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert f"0 cases queued for {proxy.url}" in rerun.stdout
    finally:
        proxy.close()
