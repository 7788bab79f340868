"""MkDocs hook (mkdocs.yml: hooks): docs/reference/cli.md's command reference, from the typer app.

The page holds the marker ``<!-- synthdet-commands -->``; the build puts every command of
``synthdet.cli.app`` there, with its help, usage, arguments and options as ``synthdet
COMMAND --help`` gives them, so the reference cannot drift from the code. (mkdocs-click
cannot read the app: typer 0.29 builds its commands on a click of its own.)
"""

from __future__ import annotations

import html

MARKER = "<!-- synthdet-commands -->"


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, command_reference())


def command_reference() -> str:
    """Markdown for every command and sub-command of ``synthdet``, in ``synthdet --help``'s order."""
    import typer

    from synthdet.cli import command

    root = typer.Context(command, info_name="synthdet")
    return "\n".join(_commands(command, root))


def _commands(group, parent):
    for name in group.list_commands(parent):
        sub = group.get_command(parent, name)
        ctx = type(parent)(sub, info_name=name, parent=parent)
        if hasattr(sub, "list_commands"):
            yield from _commands(sub, ctx)
        else:
            yield from _command(sub, ctx)


def _command(command, ctx):
    path = ctx.command_path
    yield f"## `{path}`\n"
    yield from (f"{_text(paragraph)}\n" for paragraph in (command.help or "").split("\n\n"))
    yield f"```console\n{path} {' '.join(command.collect_usage_pieces(ctx))}\n```\n"
    rows = [record for param in command.get_params(ctx)
            if (record := param.get_help_record(ctx)) and record[0] != "--help"]
    yield "| argument or option | meaning |\n|---|---|"
    yield from (f"| `{names}` | {_text(meaning)} |" for names, meaning in rows)
    yield ""


def _text(text: str) -> str:
    """Help text as Markdown that shows it literally: no HTML tags, emphasis or table cells made of it."""
    return html.escape(text, quote=False).replace("*", r"\*").replace("|", r"\|")
