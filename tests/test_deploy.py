"""The deployment files under deploy/, validated without a container engine.

Static checks (fast): every YAML/JSON file parses; deploy/prefect.yaml passes Prefect's own model of
the file and names the real flow functions; docker-compose.yml has the services, healthchecks and
one-shots, takes every secret from the environment (``${VAR:?}``), and validates against the
Compose JSON schema (vendored by ``check-jsonschema``) and, where a compose CLI is on PATH, against
``docker compose config``; the Kubernetes manifests are well-formed and reference secrets by name;
the GPU base job template references its ``nvidia.com/gpu`` variable in ``job_configuration`` and
renders it with Prefect's templating; the Dockerfiles are multi-stage and run as a non-root user.

The real thing (``test_prefect_deploy_all_against_a_real_server``): a ``prefect server start`` on
127.0.0.1 behind an auth string, the ``cpu`` (process) and ``gpu`` (kubernetes, our base job
template) work pools created with the CLI, ``prefect deploy --all --prefect-file
deploy/prefect.yaml`` from the repository root, then the deployments, their work pools,
entrypoints, parameters, pull steps and cron schedules read back through the API, and the runs the
server schedules from those crons checked against them.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PREFECT_YAML = DEPLOY / "prefect.yaml"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
GPU_TEMPLATE = DEPLOY / "work-pools" / "gpu-kubernetes-base-job-template.json"
K8S = DEPLOY / "k8s"
VENV_BIN = Path(sys.executable).parent
PREFECT = str(VENV_BIN / "prefect")

# deployment name -> (flow name, entrypoint, work pool, cron or None)
EXPECTED = {
    "ingest-every-15m": ("ingest", "flows/ingest.py:ingest_flow", "cpu", "*/15 * * * *"),
    "score-hourly": ("score", "flows/score.py:score_flow", "cpu", "5 * * * *"),
    "train-weekly": ("train", "flows/train.py:train_flow", "gpu", "0 2 * * 0"),
    "pipeline": ("pipeline", "flows/pipeline.py:pipeline_flow", "cpu", None),
}
SECRET_WORD = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH_STRING|ACCESS_KEY|PRIVATE", re.I)
ENV_REF = re.compile(r"^\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}$")


def _yaml_docs(path: Path) -> list[Any]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


# ----------------------------------------------------------------------------- prefect.yaml


def test_prefect_yaml_passes_prefects_model_and_names_real_flows() -> None:
    raw = _prefect_yaml()
    try:  # the model `prefect deploy` validates the file with (private module: may move)
        from prefect.cli.deploy._models import PrefectYamlModel
    except ImportError:  # pragma: no cover - depends on the Prefect version
        PrefectYamlModel = None
    if PrefectYamlModel is not None:
        PrefectYamlModel.model_validate(raw)

    by_name = {d["name"]: d for d in raw["deployments"]}
    assert set(by_name) == set(EXPECTED)
    for name, (_flow, entrypoint, pool, cron) in EXPECTED.items():
        d = by_name[name]
        assert d["entrypoint"] == entrypoint
        assert d["work_pool"]["name"] == pool
        assert d["parameters"] == {"config": "configs/hapt.yaml"}, "paths only, no secrets"
        if cron is None:
            assert not d.get("schedules")
        else:
            assert d["schedules"] == [
                {"cron": cron, "timezone": "UTC", "slug": d["schedules"][0]["slug"], "active": True}
            ]
        # the entrypoint's file defines that function as a flow (read, not imported)
        path, func = entrypoint.split(":")
        src = ROOT / path
        assert src.is_file(), f"{path} is missing"
        fns = {
            n.name: n
            for n in ast.walk(ast.parse(src.read_text()))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        assert func in fns, f"{path} defines no {func}()"
        decorators = [ast.unparse(dec) for dec in fns[func].decorator_list]
        assert any(dec.startswith("flow") for dec in decorators), f"{func} is not a @flow"

    assert by_name["train-weekly"]["work_pool"]["job_variables"] == {"gpu_limit": 1}
    # the flow runs change into the image's working directory, nothing else
    assert raw["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}
    ]
    assert (ROOT / "configs" / "hapt.yaml").is_file()


# ----------------------------------------------------------------------------- compose


def _env_items(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_has_the_stack_with_healthchecks() -> None:
    c = _compose()
    services = c["services"]
    long_running = {"postgres", "minio", "prefect-server", "mlflow", "prefect-worker"}
    one_shots = {"postgres-init", "minio-init", "mlflow-init"}
    assert long_running | one_shots <= set(services)
    for name in long_running:
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test"), f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped"
    for name in one_shots:
        assert services[name].get("restart") == "no"

    def needs(svc: str, dep: str, condition: str) -> None:
        assert services[svc]["depends_on"][dep]["condition"] == condition, (svc, dep)

    needs("postgres-init", "postgres", "service_healthy")
    needs("minio-init", "minio", "service_healthy")
    needs("prefect-server", "postgres-init", "service_completed_successfully")
    needs("mlflow", "postgres-init", "service_completed_successfully")
    needs("mlflow", "minio-init", "service_completed_successfully")
    needs("mlflow-init", "mlflow", "service_healthy")
    needs("prefect-worker", "prefect-server", "service_healthy")
    needs("prefect-worker", "mlflow-init", "service_completed_successfully")

    # Prefect on PostgreSQL behind an auth string; the worker serves the cpu (process) pool
    server = _env_items(services["prefect-server"])
    assert server["PREFECT_SERVER_DATABASE_DRIVER"] == "postgresql+asyncpg"
    assert "PREFECT_SERVER_API_AUTH_STRING" in server
    worker = services["prefect-worker"]
    assert worker["command"][:6] == ["prefect", "worker", "start", "--pool", "cpu", "--type"]
    assert worker["command"][6] == "process"
    assert _env_items(worker)["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert "PREFECT_API_AUTH_STRING" in _env_items(worker)

    # MLflow: PostgreSQL store, artifacts proxied to MinIO, basic-auth app
    mlflow = services["mlflow"]
    menv = _env_items(mlflow)
    script = mlflow["command"][0]
    assert "mlflow server --app-name basic-auth" in script
    assert "--serve-artifacts" in script
    assert 'MLFLOW_BACKEND_STORE_URI="postgresql://' in script
    assert menv["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert menv["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in menv and "MLFLOW_AUTH_CONFIG_PATH" in menv

    # published ports only on the loopback interface
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_compose_takes_every_secret_from_the_environment() -> None:
    c = _compose()
    for name, svc in c["services"].items():
        for key, value in _env_items(svc).items():
            if SECRET_WORD.search(key):
                assert ENV_REF.match(value), f"{name}.{key} is not a ${{VAR}} reference"
                if "?" not in value:
                    pytest.fail(f"{name}.{key}: a secret must be required (${{VAR:?...}})")
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", json.dumps(c)))  # values, not comments
    assert required >= {
        "POSTGRES_PASSWORD",
        "PREFECT_AUTH_STRING",
        "MLFLOW_ADMIN_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "S3_SECRET_ACCESS_KEY",
    }
    # .env.example documents each of them (placeholders), and the real .env is git-ignored
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required <= set(example), f"missing in .env.example: {required - set(example)}"
    for key in required:
        if SECRET_WORD.search(key):
            assert "change-me" in example[key], f".env.example: {key} is not a placeholder"
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert ".env" in ignored
    if shutil.which("git") and (ROOT / ".git").exists():
        r = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=ROOT)
        assert r.returncode == 0, "deploy/.env is not git-ignored"


def test_compose_matches_the_compose_schema() -> None:
    pytest.importorskip("check_jsonschema", reason="dev extra check-jsonschema not installed")
    from importlib.resources import files

    import jsonschema

    schema_file = files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if r.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_config_with_the_real_compose_cli(tmp_path: Path) -> None:
    """`compose config` loads, interpolates and validates without a daemon."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no compose CLI on PATH (docker compose plugin or docker-compose)")
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    base = [*cli, "-f", str(COMPOSE)]
    ok = subprocess.run(
        [*base, "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    # without the secrets compose refuses to start, naming the missing variable
    empty = tmp_path / "empty.env"
    empty.write_text("")
    missing = subprocess.run(
        [*base, "--env-file", str(empty), "config", "-q"], capture_output=True, text=True, env=env
    )
    assert missing.returncode != 0
    assert "required variable" in missing.stderr


# ----------------------------------------------------------------------------- Kubernetes


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _yaml_docs(path):
            assert isinstance(doc, dict) and doc.get("kind"), f"{path.name}: not a manifest"
            docs.append(doc)
    return docs


def test_k8s_manifests_parse_and_reference_secrets_by_name() -> None:
    docs = _k8s_docs()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        if d["kind"] == "Kustomization":
            listed = set(d["resources"])
            assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
            continue
        assert d.get("apiVersion") and d["metadata"].get("name"), d
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "cnnlstm", d["metadata"]["name"]
    assert "Secret" not in by_kind, "secrets are created out of band, never committed"
    assert {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "PersistentVolumeClaim",
        "ConfigMap",
    } <= set(by_kind)

    role = by_kind["Role"][0]
    job_rule = next(r for r in role["rules"] if "jobs" in r["resources"])
    assert {"create", "get", "list", "watch", "delete"} <= set(job_rule["verbs"])
    binding = by_kind["RoleBinding"][0]
    worker = by_kind["Deployment"][0]
    pod = worker["spec"]["template"]["spec"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"] == "prefect-worker"
    container = pod["containers"][0]
    assert container["args"][:6] == ["prefect", "worker", "start", "--pool", "gpu", "--type"]
    assert container["args"][6] == "kubernetes"
    auth = next(e for e in container["env"] if e["name"] == "PREFECT_API_AUTH_STRING")
    assert auth["valueFrom"]["secretKeyRef"] == {"name": "prefect-api", "key": "auth-string"}
    for e in container.get("env", []):
        if SECRET_WORD.search(e["name"]):
            assert "value" not in e, f"{e['name']} has a literal value"
    cm = by_kind["ConfigMap"][0]["data"]
    assert not any(SECRET_WORD.search(k) and not k.endswith(("_NAME", "_KEY")) for k in cm)

    # the template's defaults point at the objects defined here
    template = json.loads(GPU_TEMPLATE.read_text())["variables"]["properties"]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs if "metadata" in d}
    assert ("ServiceAccount", template["service_account_name"]["default"]) in names
    assert ("PersistentVolumeClaim", template["runs_pvc"]["default"]) in names
    assert ("Namespace", template["namespace"]["default"]) in names


# ----------------------------------------------------------------------------- GPU template


def test_gpu_template_references_its_gpu_variable_and_renders_it() -> None:
    from prefect.utilities.templating import apply_values, find_placeholders

    t = json.loads(GPU_TEMPLATE.read_text())
    jc, variables = t["job_configuration"], t["variables"]["properties"]
    container = jc["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_limit }}"
    assert variables["gpu_limit"]["type"] == "integer"
    # every placeholder of job_configuration is a declared variable (the server checks this
    # too); a variable that job_configuration does not reference would be silently dropped
    used = {p.name for p in find_placeholders(jc)}
    assert used <= set(variables), used - set(variables)
    assert {"gpu_limit", "node_selector", "secret_name", "runs_pvc", "image"} <= used

    def render(job_variables: dict[str, Any]) -> dict[str, Any]:
        values = {k: v["default"] for k, v in variables.items() if "default" in v}
        values.update(job_variables)
        return apply_values(jc, values)

    train = next(d for d in _prefect_yaml()["deployments"] if d["name"] == "train-weekly")
    manifest = render(train["work_pool"]["job_variables"])["job_manifest"]
    pod = manifest["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1  # an int, as Kubernetes accepts
    assert c["envFrom"] == [{"secretRef": {"name": "cnnlstm-runtime"}}]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        pod["tolerations"]
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert manifest["spec"]["completions"] == 1 and "completions" not in pod
    two = render({"gpu_limit": 2, "node_selector": {"gpu": "a100"}})["job_manifest"]
    pod2 = two["spec"]["template"]["spec"]
    assert pod2["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod2["nodeSelector"] == {"gpu": "a100"}


# ----------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_are_multistage_and_non_root(name: str) -> None:
    lines = []
    for raw in (DEPLOY / name).read_text().replace("\\\n", " ").splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            lines.append(raw.strip())
    froms = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(froms) >= 2, "not multi-stage"
    assert re.search(r"\bAS\s+build\b", lines[froms[0]], re.I)
    final = lines[froms[-1] :]
    assert any(line.startswith("COPY --from=build") for line in final)
    users = [line.split(None, 1)[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    build_stage = lines[froms[0] : froms[-1]]
    assert any(re.search(r"pip install (\S+ )*\.( |$)", line) for line in build_stage)
    for line in lines:  # nothing secret-looking is baked in with ARG/ENV
        if line.upper().startswith(("ARG ", "ENV ")):
            assert not SECRET_WORD.search(line.split(None, 1)[1]), line


# ----------------------------------------------------------------------------- real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _RetryingClient(httpx.Client):
    """The throwaway SQLite-backed server answers 503 now and then on a loaded 2-core machine
    (the database is busy): retry those, a transient condition, a few times."""

    def request(self, *args, **kwargs):  # type: ignore[override]
        for _ in range(10):
            r = super().request(*args, **kwargs)
            if r.status_code != 503:
                return r
            time.sleep(1)
        return r


def _run(cmd: list[str], env: dict[str, str], timeout: float = 120) -> str:
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@contextlib.contextmanager
def running_prefect_server(
    home: Path, server_extra: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """A `prefect server start` on 127.0.0.1 (SQLite under ``home``, auth string; more server
    settings in ``server_extra``); yields the client environment. Also used by test_serve.py."""
    port = _free_port()
    auth = f"deploy-test:{os.urandom(12).hex()}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    server_env = (
        base
        | {
            "PREFECT_HOME": str(home / "server-home"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_API_AUTH_STRING": auth,
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
        | (server_extra or {})
    )
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=home,
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    client_env = base | {
        "PREFECT_HOME": str(home / "client-home"),
        "PREFECT_API_URL": api,
        "PREFECT_API_AUTH_STRING": auth,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    try:
        import httpx

        # the migrations of a fresh database take a while on a loaded machine
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up in 180 s"
            time.sleep(0.3)
        yield client_env
    finally:
        with_group = os.getpgid(proc.pid) if proc.poll() is None else None
        if with_group is not None:
            os.killpg(with_group, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(with_group, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with running_prefect_server(tmp_path_factory.mktemp("prefect-server")) as env:
        yield env


def _cron_matches(cron: str, t: datetime) -> bool:
    """Minute/hour/day-of-week match for the crons used here."""
    minute, hour, _dom, _month, dow = cron.split()

    def ok(field: str, value: int) -> bool:
        if field == "*":
            return True
        if field.startswith("*/"):
            return value % int(field[2:]) == 0
        return value == int(field)

    return (
        ok(minute, t.minute)
        and ok(hour, t.hour)
        and ok(dow, (t.isoweekday() % 7))
        and t.second == 0
    )


def test_prefect_deploy_all_against_a_real_server(prefect_server: dict[str, str]) -> None:
    env = prefect_server
    import httpx

    api = env["PREFECT_API_URL"]
    user, password = env["PREFECT_API_AUTH_STRING"].split(":", 1)
    # the auth string is enforced (health stays open for probes)
    assert httpx.post(f"{api}/deployments/filter", json={}, timeout=10).status_code == 401

    _run([PREFECT, "--no-prompt", "work-pool", "create", "cpu", "--type", "process"], env)
    _run(
        [
            PREFECT,
            "--no-prompt",
            "work-pool",
            "create",
            "gpu",
            "--type",
            "kubernetes",
            "--base-job-template",
            str(GPU_TEMPLATE),
        ],
        env,
    )
    out = _run(
        [
            PREFECT,
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(PREFECT_YAML.relative_to(ROOT)),
        ],
        env,
        timeout=180,
    )
    assert password not in out, "the auth string leaked into the deploy output"

    client = _RetryingClient(base_url=api, auth=(user, password), timeout=30)
    pools = {p["name"]: p for p in client.post("/work_pools/filter", json={}).json()}
    assert pools["cpu"]["type"] == "process"
    assert pools["gpu"]["type"] == "kubernetes"
    assert pools["gpu"]["base_job_template"] == json.loads(GPU_TEMPLATE.read_text())

    flows = {f["id"]: f["name"] for f in client.post("/flows/filter", json={}).json()}
    deployments = {d["name"]: d for d in client.post("/deployments/filter", json={}).json()}
    assert set(deployments) == set(EXPECTED)
    now = datetime.now(UTC)
    for name, (flow, entrypoint, pool, cron) in EXPECTED.items():
        d = deployments[name]
        assert flows[d["flow_id"]] == flow
        assert d["entrypoint"] == entrypoint
        assert d["work_pool_name"] == pool
        assert d["parameters"] == {"config": "configs/hapt.yaml"}
        assert "config" in d["parameter_openapi_schema"]["properties"]
        assert d["enforce_parameter_schema"] is True
        assert d["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}
        ]
        assert d["global_concurrency_limit"]["limit"] == 1
        assert d["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        if cron is None:
            assert d["schedules"] == []
            continue
        [s] = d["schedules"]
        assert s["active"] is True
        assert s["schedule"]["cron"] == cron and s["schedule"]["timezone"] == "UTC"

        # the server expands the cron into scheduled runs on the given minutes (UTC)
        r = client.post(f"/deployments/{d['id']}/schedule", json={"max_runs": 3})
        assert r.status_code < 300, r.text
        runs = client.post(
            "/flow_runs/filter",
            json={
                "deployments": {"id": {"any_": [d["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            },
        ).json()
        assert runs, f"no scheduled runs for {name}"
        for run in runs:
            t = datetime.fromisoformat(run["expected_start_time"]).astimezone(UTC)
            assert _cron_matches(cron, t), (name, t)
            assert now - timedelta(minutes=1) <= t <= now + timedelta(days=31)
            assert run["parameters"] == {"config": "configs/hapt.yaml"}

    train = deployments["train-weekly"]
    assert train["job_variables"] == {"gpu_limit": 1}
    assert {"cnnlstm", "train", "gpu"} <= set(train["tags"])


# ----------------------------------------------------------------------------- security defaults

CHECK_SECRETS = DEPLOY / "check-secrets.sh"
IMAGE_TAG = re.compile(r"^(?P<repo>[a-z0-9./_-]+):(?P<tag>[A-Za-z0-9._-]+)$")


def _compose_image_defaults() -> dict[str, str]:
    """service -> the image it runs without overrides (the default of a ${VAR:-default})."""
    out = {}
    for name, svc in _compose()["services"].items():
        image = svc.get("image")
        if image is None:
            continue
        m = re.fullmatch(r"\$\{[A-Z0-9_]+:-([^}]+)\}", image)
        out[name] = m.group(1) if m else image
    return out


def test_images_are_pinned_to_released_tags() -> None:
    images = dict(_compose_image_defaults())
    for doc in _k8s_docs():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            images[f"k8s {doc['metadata']['name']}/{c['name']}"] = c["image"]
    # the commented overrides of .env.example show the same pinned defaults
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"#\s*([A-Z_]+_IMAGE)=(\S+)", line)
        if m:
            images[f".env.example {m.group(1)}"] = m.group(2)
    for where, image in images.items():
        if image.startswith("cnnlstm:"):  # built from this repository (deploy/Dockerfile*)
            continue
        m = IMAGE_TAG.match(image)
        assert m, f"{where}: {image} has no explicit tag"
        assert m.group("tag") != "latest", f"{where}: {image} floats"
    minio = _compose_image_defaults()
    server, mc = minio["minio"], minio["minio-init"]
    assert re.fullmatch(r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", server), server
    assert re.fullmatch(r"minio/mc:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", mc), mc
    # mc learnt to accept an already attached policy in October 2024 (minio/mc PR 5058): the
    # attach step below is idempotent with this release, not by hiding its failures
    assert mc.split("RELEASE.")[1] >= "2024-10-09", mc


def test_mlflow_auth_denies_by_default_and_has_a_secret_key() -> None:
    mlflow = _compose()["services"]["mlflow"]
    script = mlflow["command"][0]
    perm = re.findall(r"^\s*default_permission\s*=\s*(\S+)\s*$", script, re.M)
    assert perm == ["NO_PERMISSIONS"], perm
    key = _env_items(mlflow).get("MLFLOW_FLASK_SERVER_SECRET_KEY", "")
    assert ENV_REF.match(key) and ":?" in key, key
    example = ENV_EXAMPLE.read_text()
    assert re.search(r"^MLFLOW_FLASK_SERVER_SECRET_KEY=change-me", example, re.M)


def test_security_steps_do_not_hide_failures() -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"\|\|\s*(true|:)\b", text), "a failure is hidden with || true"
    init = _compose()["services"]["minio-init"]
    assert init["entrypoint"][:2] == ["/bin/sh", "-ec"]  # any failing step fails the one-shot
    assert "mc admin policy attach local cnnlstm" in init["command"][0]


def test_a_one_shot_refuses_placeholder_secrets_before_anything_starts() -> None:
    services = _compose()["services"]
    check = services["check-secrets"]
    assert check.get("restart") == "no"
    assert any(str(v).split(":")[0].endswith("check-secrets.sh") for v in check["volumes"])
    env = _env_items(check)
    names = [a for a in check["command"]]
    assert set(names) == set(env), "every checked variable is passed in, and vice versa"
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", json.dumps(services)))
    assert required <= set(names), f"not checked: {required - set(names)}"
    for svc in ("postgres", "minio"):  # the roots of the dependency graph wait for it
        assert services[svc]["depends_on"]["check-secrets"] == {
            "condition": "service_completed_successfully"
        }


def _check_secrets(env: dict[str, str], *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(CHECK_SECRETS), *names],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")} | env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_secrets_script_refuses_placeholders_and_empty_values() -> None:
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    names = list(_env_items(_compose()["services"]["check-secrets"]))
    # .env.example as it is: refused, naming every placeholder, and no value is echoed
    r = _check_secrets({k: example[k] for k in names}, *names)
    assert r.returncode != 0
    for k in names:
        if example[k].startswith("change-me"):
            assert k in r.stderr, (k, r.stderr)
    assert "change-me-" not in r.stderr + r.stdout, "the check must not print secret values"

    good = {k: os.urandom(12).hex() for k in names}
    good["PREFECT_AUTH_STRING"] = "admin:" + os.urandom(12).hex()
    ok = _check_secrets(good, *names)
    assert ok.returncode == 0, ok.stderr

    for bad, why in (
        ({"MLFLOW_ADMIN_PASSWORD": "change-me-x"}, "placeholder"),
        ({"MLFLOW_ADMIN_PASSWORD": "CHANGE-ME"}, "placeholder"),
        ({"MLFLOW_FLASK_SERVER_SECRET_KEY": ""}, "empty"),
        ({"POSTGRES_PASSWORD": "short"}, "characters"),
        ({"PREFECT_AUTH_STRING": "admin"}, "user:password"),
        ({"PREFECT_AUTH_STRING": "admin:"}, "user:password"),
    ):
        r = _check_secrets(good | bad, *names)
        [key] = bad
        assert r.returncode != 0, bad
        assert key in r.stderr and why in r.stderr, (bad, r.stderr)
    # a variable that is not set at all is refused too
    r = _check_secrets({k: v for k, v in good.items() if k != "S3_SECRET_ACCESS_KEY"}, *names)
    assert r.returncode != 0 and "S3_SECRET_ACCESS_KEY" in r.stderr
