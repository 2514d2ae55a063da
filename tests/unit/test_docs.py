"""The user documentation keeps up with the code: every setting is documented."""

from flows.settings import REPO_ROOT, Settings


def test_every_setting_is_in_the_configuration_page():
    page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    missing = [f"AISHIP_{name.upper()}" for name in Settings.model_fields if f"`AISHIP_{name.upper()}`" not in page]
    assert not missing, f"document these in docs/configuration.md: {missing}"
