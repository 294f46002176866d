"""Prompt templates: a small typed object that knows its variables and refuses a missing one.

Templates live in ``prompts/<name>.md`` (``$KBGEN_PROMPTS`` overrides the folder) and use
:class:`string.Template` placeholders (``$action``, ``$joints``, ``$dataset``). Their name and the
sha256 of their exact content are stored with every call, so each stored text can be traced to the
prompt that produced it.
"""

from __future__ import annotations

import hashlib
import os
import string
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dataspec import ActionClass, DatasetSpec
from dataspec.resources import resource_dir

GLOBAL_TEMPLATE = "global_action"
JOINTS_TEMPLATE = "joint_motion"


class TemplateError(ValueError):
    """A template is missing, malformed, or was rendered with missing or unknown variables."""


def prompts_dir() -> Path:
    """The folder with the prompt templates: ``$KBGEN_PROMPTS`` or the toolkit's ``prompts/`` (the
    checkout's, or the installed copy: :func:`dataspec.resources.resource_dir`)."""
    env = os.environ.get("KBGEN_PROMPTS")
    return Path(env) if env else resource_dir("prompts")


@dataclass(frozen=True)
class PromptTemplate:
    """A named prompt template with ``$variable`` placeholders."""

    name: str
    content: str

    @cached_property
    def sha256(self) -> str:
        """Content hash: identifies the exact wording that produced a stored text."""
        return hashlib.sha256(self.content.encode("utf-8")).hexdigest()

    @cached_property
    def variables(self) -> frozenset[str]:
        """The placeholder names the template uses."""
        tpl = string.Template(self.content)
        if not tpl.is_valid():
            raise TemplateError(
                f"template '{self.name}' has a malformed placeholder: write $name, or $$ for a literal '$'"
            )
        return frozenset(tpl.get_identifiers())

    def render(self, **values: str) -> str:
        """The prompt text with every placeholder filled.

        Refuses a missing variable and an unknown one (a typo would otherwise be silently ignored).
        """
        missing = sorted(self.variables - values.keys())
        if missing:
            raise TemplateError(f"template '{self.name}' needs variable(s) {', '.join(missing)}")
        unknown = sorted(values.keys() - self.variables)
        if unknown:
            raise TemplateError(
                f"template '{self.name}' has no variable(s) {', '.join(unknown)}; "
                f"it uses {', '.join(sorted(self.variables))}"
            )
        return string.Template(self.content).substitute(values)


def load_template(name: str, folder: Path | None = None) -> PromptTemplate:
    """Load ``<folder>/<name>.md`` (or ``.txt``) as a :class:`PromptTemplate`."""
    base = folder or prompts_dir()
    for suffix in (".md", ".txt"):
        path = base / f"{name}{suffix}"
        if path.is_file():
            template = PromptTemplate(name=name, content=path.read_text(encoding="utf-8"))
            _ = template.variables  # validate placeholders at load time, not mid-run
            return template
    raise TemplateError(f"no prompt template '{name}' in {base}: expected {name}.md or {name}.txt")


def prompt_variables(spec: DatasetSpec, action: ActionClass) -> dict[str, str]:
    """The variables every kbgen prompt receives for one action class of a dataset."""
    return {
        "action": action.name,
        "joints": ", ".join(spec.joint_names),
        "dataset": spec.title,
    }
