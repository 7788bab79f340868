"""The README and the manual stay true to the code and to the scripts' outputs (the manual's
own links are checked by `make docs`, which builds it strictly)."""

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_numbers_are_what_readme_numbers_py_writes_from_the_default_models_json():
    numbers = _script("readme_numbers")
    readme = (ROOT / "README.md").read_text()
    table = numbers.numbers_table(json.loads((ROOT / "docs" / "default_model.json").read_text()))
    assert numbers.with_numbers(readme, table) == readme, "run scripts/readme_numbers.py"


def test_readme_numbers_replaces_only_the_block_between_its_markers():
    numbers = _script("readme_numbers")
    readme = f"intro\n{numbers.START}\nold\n{numbers.END}\noutro\n"
    assert numbers.with_numbers(readme, "new") == f"intro\n{numbers.START}\nnew\n{numbers.END}\noutro\n"


def test_every_relative_link_in_the_readme_names_a_file_of_the_repository():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    relative = [link for link in links if "://" not in link]
    assert relative and [link for link in relative if not (ROOT / link).exists()] == []


def test_the_command_reference_documents_every_command_and_option():
    from synthdet.cli import command

    reference = _script("docs_hooks").command_reference()
    sections = {part.split("`", 1)[0]: part for part in reference.split("## `synthdet ")[1:]}
    leaves = {f"{name} {leaf}": sub.commands[leaf] for name, sub in command.commands.items()
              for leaf in getattr(sub, "commands", {})}
    leaves.update({name: sub for name, sub in command.commands.items() if not hasattr(sub, "commands")})
    assert sorted(sections) == sorted(leaves)
    for name, leaf in leaves.items():
        for option in (p for p in leaf.params if p.param_type_name == "option"):
            assert option.opts[0] in sections[name], (name, option.opts)
