"""The production template is valid CloudFormation and wires the same names the code uses."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from shared.config import QUEUE_ROLES, Settings

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "template.yaml"


def test_template_passes_cfn_lint() -> None:
    lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent))
    assert lint, "cfn-lint comes with moto[server]"
    done = subprocess.run([lint, str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_template_names_match_the_settings_and_the_lambda_handler_exists() -> None:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load(TEMPLATE.read_text(), Loader=Loader)  # noqa: S506 - SafeLoader subclass
    resources = template["Resources"]
    assert resources["QueryFunction"]["Properties"]["Handler"] == "services.query.lambda_handler.handler"
    import services.query.lambda_handler as module

    assert callable(module.handler)
    names = [r["Properties"].get("QueueName") for r in resources.values() if r["Type"] == "AWS::SQS::Queue"]
    assert len(names) == 2 * len(QUEUE_ROLES)
    settings = Settings(name_prefix="wideviews")
    assert settings.datasets_table == "wideviews-datasets" and settings.versions_table == "wideviews-versions"
