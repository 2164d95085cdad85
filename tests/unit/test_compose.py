"""docker-compose.yml stays consistent with what the test harness runs."""

import re
import tomllib
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


def test_every_image_is_pinned():
    for name, svc in _compose()["services"].items():
        image = svc.get("image")
        if image:
            assert ":" in image and not image.endswith(":latest"), name


# ---- healthchecks read against what each image provides (tests/data/images/, facts recorded from
# the Dockerfile each image is built from; this machine has no Docker to run them) -------------------

IMAGES = ROOT / "tests" / "data" / "images"


def _facts_by_image() -> dict[str, dict]:
    facts = [yaml.safe_load(p.read_text()) for p in sorted(IMAGES.glob("*.yaml"))]
    return {f["image"]: f for f in facts}


def _built_image_facts() -> dict:
    """The image `build: .` makes: its base image's facts plus the console script pip installs."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE).group(1)
    facts = dict(_facts_by_image()[base])
    assert "pip install" in dockerfile
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    facts["executables"] = [*facts["executables"], *scripts]
    return facts


def _image_facts(svc: dict) -> dict:
    if "build" in svc:
        assert svc["build"] == ".", svc["build"]
        return _built_image_facts()
    return _facts_by_image()[svc["image"]]


def test_every_image_has_recorded_facts():
    missing = {s["image"] for s in _compose()["services"].values() if "image" in s} - set(_facts_by_image())
    assert not missing, f"record what these images provide in tests/data/images/: {missing}"


def test_hapi_facts_are_those_of_the_tag_the_compose_file_names():
    facts = _facts_by_image()[_compose()["services"]["hapi"]["image"]]
    tag = _compose()["services"]["hapi"]["image"].split(":")[1]
    assert facts["source"]["tag"] == f"image/{tag}"
    assert facts["base"].startswith("gcr.io/distroless/")
    assert facts["shell"] is False and "wget" not in facts["executables"]


def test_each_healthcheck_calls_only_programs_its_image_has():
    for name, svc in _compose()["services"].items():
        check = svc.get("healthcheck")
        if check is None:
            continue
        facts = _image_facts(svc)
        kind, *command = check["test"]
        if kind == "CMD-SHELL":
            assert facts["shell"], f"{name}: CMD-SHELL needs /bin/sh, which {facts['image']} lacks"
            program = command[0].split()[0]
        else:
            assert kind == "CMD", f"{name}: {kind}"
            program = command[0]
        assert program in facts["executables"], f"{name}: {program} is not in {facts['image']}"


def test_a_service_whose_image_cannot_probe_itself_is_probed_from_outside_and_waited_for():
    services = _compose()["services"]
    for name, svc in services.items():
        facts = _image_facts(svc)
        if facts["shell"] or facts["http_probe"]:
            assert "healthcheck" in svc, name
            continue
        assert "healthcheck" not in svc, f"{name}: its image cannot run a healthcheck"
        probes = [
            other
            for other, o in services.items()
            if f"//{name}:" in " ".join(o.get("healthcheck", {}).get("test", []))
            and name in o.get("depends_on", {})
        ]
        assert probes, f"{name}: nothing probes it"
        for dependant in ("service", "worker"):
            assert any(
                services[dependant]["depends_on"].get(p) == {"condition": "service_healthy"} for p in probes
            ), dependant


def test_service_healthy_conditions_name_services_with_a_healthcheck():
    services = _compose()["services"]
    for name, svc in services.items():
        for other, condition in svc.get("depends_on", {}).items():
            if condition == {"condition": "service_healthy"}:
                assert "healthcheck" in services[other], f"{name} waits forever for {other}"


def test_the_validator_cache_is_built_into_the_image_before_it_drops_root():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    user = next(i for i, line in enumerate(lines) if line.startswith("USER "))
    warm = next(
        i for i, line in enumerate(lines) if "python -m service.validation.warm /app/data/fhir-r4" in line
    )
    fetch = next(i for i, line in enumerate(lines) if "service.validation.fetch /app/data/fhir-r4" in line)
    assert fetch <= warm < user
