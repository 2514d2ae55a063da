"""App registrations kept in the local Prefect server's Variables, read back page by page."""

from __future__ import annotations

import uuid

from flows import apps
from flows.apps import AppRegistration, registered_apps
from flows.settings import Environment


def test_registered_apps_are_read_page_by_page_and_only_aiship_apps(prefect_api, monkeypatch):
    from prefect.variables import Variable

    monkeypatch.setattr(apps, "PAGE", 2)  # five apps over three pages of the real API
    run = uuid.uuid4().hex[:6]
    names = [f"itpage-{run}-{i}" for i in range(5)]
    for i, name in enumerate(names):
        env = Environment(name="staging", namespace=f"{name}-staging", node_port=16100 + i)
        registration = AppRegistration(name=name, repository="/nowhere", sources=[f"it/{name}"],
                                       models=[f"{name}-model"], environments={"staging": env})
        Variable.set(registration.variable, registration.model_dump(mode="json"), overwrite=True)
    Variable.set(f"itpage-{run}-not-an-app", {"name": "x"}, overwrite=True)  # no aiship-app- prefix: not read
    broken = f"{apps.VARIABLE_PREFIX}itpage-{run}-broken"  # one bad registration must not hide the others
    Variable.set(broken, {"name": f"itpage-{run}-broken", "branch": "refs/heads/main"}, overwrite=True)
    try:
        found = [app.name for app in registered_apps()]
        assert [n for n in found if n.startswith(f"itpage-{run}")] == names
        assert found == sorted(found)
    finally:
        for name in names:
            Variable.unset(f"{apps.VARIABLE_PREFIX}{name}")
        Variable.unset(f"itpage-{run}-not-an-app")
        Variable.unset(broken)
