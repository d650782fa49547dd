"""The ``tritonbp`` command-line tool.

Each subcommand lives in its own module, listed in :data:`SUBCOMMANDS`, which defines

- ``add_arguments(parser: argparse.ArgumentParser) -> None``: declares its options;
- ``run(args: argparse.Namespace) -> int``: does the work and returns the exit status.

A module is imported only when its subcommand runs, so ``tritonbp --help`` stays fast and one
subcommand's imports (Triton, matplotlib, ...) never slow down another. To add a subcommand,
write such a module and add one row to :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

__all__ = ["SUBCOMMANDS", "Subcommand", "main"]


@dataclass(frozen=True)
class Subcommand:
    """One row of the subcommand table.

    Attributes:
        name: what the user types, e.g. ``"check"``.
        module: dotted name of the module holding ``add_arguments`` and ``run``.
        summary: one line for ``tritonbp --help``.
    """

    name: str
    module: str
    summary: str


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        name="check",
        module="tritonbp.check",
        summary="check the fused layers against PyTorch on this machine's device",
    ),
    Subcommand(
        name="audit",
        module="tritonbp.audit",
        summary="compile every kernel for sm_80 and sm_90; check registers, shared memory, mma",
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``tritonbp`` command line.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 on success, 1 when a subcommand reports a failure, 2 for a usage
        error (argparse exits with 2 itself).

    Example:
        >>> main(["check", "--dtype", "float32"])  # doctest: +SKIP
        0
    """
    parser = _top_level_parser()
    args = parser.parse_args(argv)
    subcommand = next(entry for entry in SUBCOMMANDS if entry.name == args.command)

    module = importlib.import_module(subcommand.module)
    sub_parser = argparse.ArgumentParser(
        prog=f"{parser.prog} {subcommand.name}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(sub_parser)
    return int(module.run(sub_parser.parse_args(args.args)))


def _top_level_parser() -> argparse.ArgumentParser:
    """The parser that picks a subcommand and hands the rest of the line to it."""
    width = max(len(entry.name) for entry in SUBCOMMANDS)
    listing = "\n".join(f"  {entry.name:<{width}}  {entry.summary}" for entry in SUBCOMMANDS)
    parser = argparse.ArgumentParser(
        prog="tritonbp",
        usage="%(prog)s [-h] [--version] COMMAND [ARGS ...]",
        description="Fused Linear + activation layers for PyTorch, written in Triton.",
        epilog=f"commands:\n{listing}\n\n'tritonbp COMMAND --help' describes a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "command",
        choices=[entry.name for entry in SUBCOMMANDS],
        metavar="COMMAND",
        help="the command to run, from the list below",
    )
    # Everything after the command, its --help included, belongs to the command's own parser,
    # which exists only once the command's module is imported.
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _version() -> str:
    """The installed package's version, or a marker when run from an uninstalled tree."""
    try:
        return metadata.version("tritonbp")
    except metadata.PackageNotFoundError:
        return "(not installed)"
