"""The `ganinv` command: one group, subcommands registered explicitly from the modules beside this one."""
from __future__ import annotations

import sys

import click

from . import align, data, demo, edit, encoder, flow, interop, invert, models, serve, train
from .common import run_main


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="ganinv")
def main() -> None:
    """ganinv: invert photos into StyleGAN2 latents and edit them."""


def _register() -> None:
    for module in (models, data, train, align, invert, edit, demo, serve, encoder, interop, flow):
        for command in module.COMMANDS:
            main.add_command(command)


_register()


def entry() -> None:
    sys.exit(run_main(main))
