"""The `ganinv` command: one group, subcommands registered explicitly from the modules beside this one."""
from __future__ import annotations

import sys

import click

from .common import run_main


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="ganinv")
def main() -> None:
    """ganinv: invert photos into StyleGAN2 latents and edit them."""


def _register() -> None:
    from . import models as models_cmds
    for command in models_cmds.COMMANDS:
        main.add_command(command)
    for module_name in ("data", "train", "invert", "edit", "demo", "serve", "encoder"):
        try:
            module = __import__(f"{__name__}.{module_name}", fromlist=["COMMANDS"])
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{module_name}":
                continue  # that part of the CLI is not built yet
            raise
        for command in module.COMMANDS:
            main.add_command(command)


_register()


def entry() -> None:
    sys.exit(run_main(main))
