"""aiship's non-secret configuration: one pydantic-settings class, read from `AISHIP_*` variables.

Secrets never live here: they live in Prefect blocks, which settings only name.
Build `Settings()` inside a flow or command, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.app_config import BranchName, CpuQuantity, MemoryQuantity, ServeSection, cpu_millis, memory_bytes

REPO_ROOT = Path(__file__).resolve().parent.parent


class Environment(BaseModel):
    """Where one environment (staging, production) runs in the cluster."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Environment name, also the Prefect concurrency limit's name.")
    namespace: str = Field(description="Kubernetes namespace the app is deployed to.")
    replicas: int | None = Field(default=None, ge=1, description="Pods of the app in this environment; empty means what the app's aiship.toml asks for ([serve] replicas).")
    node_port: int = Field(ge=16100, le=16199, description="NodePort the app answers on, on 127.0.0.1.")
    app_env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables the app gets in this environment (the Deployment's env; AISHIP_APP_ENVIRONMENT is always set).")
    # The operator's ceiling on what a commit's [serve] may ask for here: a commit cannot take the cluster.
    max_replicas: int = Field(default=10, ge=1, le=100, description="Most pods the app's [serve] replicas may ask for here.")
    max_cpu_limit: CpuQuantity = Field(default="2", description="Highest [serve.resources] cpu_limit allowed here.")
    max_memory_limit: MemoryQuantity = Field(default="2Gi", description="Highest [serve.resources] memory_limit allowed here.")

    def refusals(self, serve: ServeSection) -> list[str]:
        """What in an app's [serve] goes past this environment's ceilings (empty when nothing does)."""
        found = []
        if self.replicas is None and serve.replicas > self.max_replicas:
            found.append(f"replicas {serve.replicas} (at most {self.max_replicas})")
        if cpu_millis(serve.resources.cpu_limit) > cpu_millis(self.max_cpu_limit):
            found.append(f"resources.cpu_limit {serve.resources.cpu_limit} (at most {self.max_cpu_limit})")
        if memory_bytes(serve.resources.memory_limit) > memory_bytes(self.max_memory_limit):
            found.append(f"resources.memory_limit {serve.resources.memory_limit} (at most {self.max_memory_limit})")
        return found


def _default_environments() -> dict[str, Environment]:
    return {
        "staging": Environment(name="staging", namespace="aiship-staging", node_port=16180),
        "production": Environment(name="production", namespace="aiship-production", node_port=16190),
    }


class Settings(BaseSettings):
    """All of aiship's settings; each field reads `AISHIP_<FIELD>` from the environment."""

    model_config = SettingsConfigDict(env_prefix="AISHIP_", extra="ignore")

    # --- the local platform (local/*.sh read the same variables) ---
    state_dir: Path = Field(default=REPO_ROOT / ".aiship", description="Pids, logs, generated certificates and kubeconfig of the local platform.")
    cache_dir: Path = Field(default=Path("/var/cache/aiship"), description="Slow builds kept across checkouts (Kubernetes binaries, base image, wheels), keyed by version.")
    registry_port: int = Field(default=5000, description="Port of the local registry on 127.0.0.1.")
    azurite_port: int = Field(default=10000, description="Port of Azurite's blob service on 127.0.0.1.")
    s3_port: int = Field(default=9000, description="Port of the local S3 server on 127.0.0.1.")
    postgres_port: int = Field(default=15432, description="Port of the local PostgreSQL (the Prefect server's database) on 127.0.0.1.")
    prefect_port: int = Field(default=4200, description="Port of the local Prefect server on 127.0.0.1.")
    kube_api_port: int = Field(default=16443, description="Port of the local kube-apiserver on 127.0.0.1.")
    webhook_port: int = Field(default=8700, description="Port of the webhook receiver on 127.0.0.1.")

    # --- the webhook receiver (flows/webhooks.py) ---
    webhook_secret_block: str = Field(default="aiship-webhook-secret", description="Name of the Prefect Secret block holding the shared secret of GitHub webhooks.")
    eventgrid_key_block: str = Field(default="aiship-eventgrid-key", description="Name of the Prefect Secret block holding the key Event Grid sends in its aeg-sas-key header.")
    azure_repos_secret_block: str = Field(default="aiship-azure-repos-secret", description="Name of the Prefect Secret block holding the password (or X-Aiship-Secret header) of the Azure DevOps service hook.")
    keep_images: int = Field(default=5, ge=1, description="Images of each app kept in the local Docker engine after a delivery (newest first; the registry keeps every pushed digest).")
    notify_block: str = Field(default="aiship-notify", description="Name of the Prefect notification block (e.g. a CustomWebhookNotificationBlock for a Slack or Teams webhook) told of every failed or crashed delivery, promotion and rollback; without it nothing is sent.")
    webhook_max_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest webhook body accepted; larger ones get 413.")

    # --- model store ---
    model_store: Literal["local", "azure", "s3"] = Field(default="local", description="Which model store to use.")
    model_store_path: Path = Field(default=REPO_ROOT / ".aiship" / "model-store", description="Root folder of the local model store.")
    azure_container: str = Field(default="models", description="Blob container holding models/<name>/<version>/.")
    azure_credentials_block: str = Field(default="azurite", description="Name of the AzureBlobStorageCredentials block.")
    s3_bucket: str = Field(default="aiship-models", description="S3 bucket holding models/<name>/<version>/.")
    s3_credentials_block: str = Field(default="local-s3", description="Name of the S3 credentials block.")

    # --- delivery ---
    # The first app (its registration needs no file): apps registered with `aiship app register` add to it.
    git_repository: str | None = Field(default=None, description="Git repository (URL or path) the first app's code is checked out from; defaults to this project's own repository.")
    default_model: str = Field(default="breast-cancer", description="Model delivered with a pushed commit of the first app when nothing serves yet.")
    app_name: str = Field(default="aiship-app", description="The first app's name: its aiship.toml must say the same; its image repository and Kubernetes name.")
    app_models: list[str] = Field(default_factory=lambda: ["*"], description="Model names the first app serves (globs; JSON list); another app's more specific claim wins.")
    app_sources: list[str] = Field(default_factory=lambda: ["local/aiship"], description="Repository names (owner/repo) whose pushes deliver the first app (JSON list; the repository part may be a glob, the owner may not). The default is the local git repository's.")
    app_approvers: list[str] = Field(default_factory=list, description="Who may approve the first app's promotions (JSON list of reviewer names); empty means anyone holding the Prefect API's credential.")
    app_approver_keys: dict[str, str] = Field(default_factory=dict, description="Who may approve the first app's promotions, with their ed25519 public keys (JSON object of name to .pub line); their answers must be signed. Instead of AISHIP_APP_APPROVERS.")
    app_branch: BranchName = Field(default="main", description="The first app's branch: its pushes deliver the app, and model registrations deliver it at this branch.")
    registry: str | None = Field(default=None, description="Registry host[:port] images are pushed to; defaults to the local registry.")
    registry_credentials_block: str = Field(default="local-registry", description="Name of the DockerRegistryCredentials block.")
    kubernetes_credentials_block: str = Field(default="local-kubernetes", description="Name of the KubernetesAccess block (flows/blocks.py): the kubeconfig, every value secret.")
    base_image: str = Field(default="aiship/base:bookworm-py311", description="Base image of the app image (built locally by local/base-image.sh).")
    smoke_test_model: Literal["load", "mount"] = Field(default="load", description="How the smoke test gets the model. `load`: dockerd gets the whole image (`docker load`), with any Docker engine. `mount`: dockerd gets the code image only, and the smoke test runs it with the model's files mounted read-only where the model layer puts them; it skips the load (most of a large model-only change) and needs the engine to see this machine's files.")
    build_nocache: bool = Field(default=False, description="Build the code image without dockerd's layer cache (every Dockerfile step runs again).")
    environments: dict[str, Environment] = Field(default_factory=_default_environments, description="Environments by name (JSON in AISHIP_ENVIRONMENTS).")
    rollout_progress_deadline_seconds: int = Field(default=90, ge=10, description="The Deployment's progressDeadlineSeconds: a rollout making no progress that long is rolled back.")
    rollout_min_ready_seconds: int = Field(default=30, ge=0, description="The Deployment's minReadySeconds: how long a new pod must stay ready before an old one leaves (above 30 to catch an app that crashes 30 s after start).")
    rollout_max_surge: int | str = Field(default="100%", description="The Deployment's maxSurge: new pods started at once, a count or a percentage (maxUnavailable is always 0); 100% starts all new pods together, so minReadySeconds is paid once.")
    lock_lease_seconds: float = Field(default=300, ge=60, description="Lease of an environment's lock (a Prefect concurrency slot), renewed every three quarters of it while held (Prefect accepts 60 s at least); a holder that cannot renew it stops, undoes its rollout and fails, since the slot may be given to another run.")
    flow_run_silence_seconds: int = Field(default=600, ge=240, description="A flow run that sent no heartbeat (Prefect sends one every 180 s by default, paused or not) and reached no final state for this long is marked Crashed: its process died with its machine or worker.")

    @property
    def registry_host(self) -> str:
        """The registry host[:port] to push to."""
        return self.registry or f"127.0.0.1:{self.registry_port}"

    @property
    def git_repository_url(self) -> str:
        """The git repository to check out the app's code from."""
        return self.git_repository or str(REPO_ROOT)

    @property
    def prefect_api_url(self) -> str:
        """The local Prefect server's API URL."""
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def prefect_auth_file(self) -> Path:
        """Where local/prefect.sh keeps the local server's API credential (`user:password`, mode 600)."""
        return self.state_dir / "prefect" / "api-auth-string"

    def default_app(self):
        """The first app's registration, made from these settings (`flows.apps.AppRegistration`)."""
        from pydantic import ValidationError

        from flows.apps import AppRegistration
        from flows.errors import ConfigurationError

        try:
            return AppRegistration(name=self.app_name, repository=self.git_repository_url, sources=self.app_sources,
                                   branch=self.app_branch, models=self.app_models, default_model=self.default_model,
                                   environments=self.environments, approvers=self.app_approvers,
                                   approver_keys=self.app_approver_keys)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            raise ConfigurationError(f"the first app's settings (AISHIP_APP_*, AISHIP_ENVIRONMENTS) are not a valid "
                                     f"registration: {problems}; fix them, e.g. AISHIP_APP_SOURCES='[\"owner/repo\"]'") from exc

    def environment(self, name: str) -> Environment:
        """The environment called `name`, or a clear error listing the known ones."""
        from flows.errors import ConfigurationError

        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise ConfigurationError(
                f"unknown environment {name!r}; known environments: {known} (set AISHIP_ENVIRONMENTS to add one)"
            ) from None


def use_local_prefect(settings: Settings | None = None) -> None:
    """Points this process's Prefect client at the local server, with that server's credential.

    Call it before Prefect is imported: Prefect reads its settings once. An API URL already in the
    environment wins; the local credential is only ever sent to the local server's URL.
    """
    settings = settings or Settings()
    os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    if os.environ["PREFECT_API_URL"].rstrip("/") != settings.prefect_api_url or "PREFECT_API_AUTH_STRING" in os.environ:
        return
    try:
        os.environ["PREFECT_API_AUTH_STRING"] = settings.prefect_auth_file.read_text().strip()
    except OSError:
        pass  # not set up yet, or not ours to read: the first call then says the server refused or is down
