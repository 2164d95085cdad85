"""docker-compose.yml stays consistent with what the test harness runs."""

import re
from pathlib import Path

import yaml

from service.settings import SETTINGS_DOC

ROOT = Path(__file__).parents[2]


def _compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_hapi_image_tag_matches_the_pinned_harness_version():
    pom = (ROOT / "tests/hapi/pom.xml").read_text()
    version = re.search(r"<hapi\.fhir\.version>([^<]+)</hapi\.fhir\.version>", pom).group(1)
    image = _compose()["services"]["hapi"]["image"]
    assert re.fullmatch(rf"hapiproject/hapi:v{re.escape(version)}-\d+", image), (image, version)


def test_service_environment_uses_only_known_settings():
    known = {env for env, _d, _doc in SETTINGS_DOC}
    for name in ("service", "worker"):
        env = _compose()["services"][name]["environment"]
        unknown = set(env) - known
        assert not unknown, f"{name}: {unknown}"


def test_every_service_has_a_healthcheck_and_pinned_image():
    for name, svc in _compose()["services"].items():
        assert "healthcheck" in svc, name
        image = svc.get("image")
        if image:
            assert ":" in image and not image.endswith(":latest"), name
