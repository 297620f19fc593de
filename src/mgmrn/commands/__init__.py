"""The commands of ``mgmrn``, one module each.

Every module exposes ``HELP`` (its line in ``mgmrn --help``), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status); :mod:`mgmrn.cli` builds the parser from :data:`COMMANDS`
and maps errors to exit statuses. A module imports torch and the models inside ``run``, so that
``--help`` and a refused argument answer at once.
"""

COMMANDS = {
    "train": "mgmrn.commands.train",
    "eval": "mgmrn.commands.eval",
    "predict": "mgmrn.commands.predict",
    "compare": "mgmrn.commands.compare",
    "convert-release": "mgmrn.commands.convert",
    "data": "mgmrn.commands.data",
    "serve": "mgmrn.commands.serve",
    "export": "mgmrn.commands.export",
    "features": "mgmrn.commands.features",
}


def add_checkpoint_argument(parser) -> None:
    """``--checkpoint``, as every command that reads a trained model takes it."""
    parser.add_argument("--checkpoint", required=True,
                        help="a .pt file written by mgmrn train, or a model folder written by "
                             "mgmrn export --format hub: local-dir:DIR or hf-hub:org/name")
