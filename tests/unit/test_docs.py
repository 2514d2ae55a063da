"""The user documentation keeps up with the code: every setting is documented."""

from flows.settings import REPO_ROOT, Settings


def test_every_setting_is_in_the_configuration_page():
    page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    missing = [f"AISHIP_{name.upper()}" for name in Settings.model_fields if f"`AISHIP_{name.upper()}`" not in page]
    assert not missing, f"document these in docs/configuration.md: {missing}"


def test_every_error_class_is_in_the_troubleshooting_page():
    import inspect

    from flows import app_config, errors, smoke_test

    page = (REPO_ROOT / "docs" / "troubleshooting.md").read_text()
    classes = {name for module in (errors, app_config, smoke_test) for name, obj in inspect.getmembers(module, inspect.isclass)
               if issubclass(obj, errors.AishipError) and obj.__module__ == module.__name__}
    assert len(classes) >= 12
    assert not [name for name in classes if f"`{name}`" not in page], "document these in docs/troubleshooting.md"


def test_the_readme_links_only_to_files_inside_the_repository():
    import re

    readme = (REPO_ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", readme) + re.findall(r"`(\.\./[^`]+)`", readme)
    assert links and not [link for link in links if not link.startswith("http") and not (REPO_ROOT / link).resolve().is_relative_to(REPO_ROOT)]
    assert not [link for link in links if not link.startswith("http") and not (REPO_ROOT / link).exists()]
